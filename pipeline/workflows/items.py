"""``batch --items FILE``: a catalogue as a table, one row per product with its photo and any request field.

CSV (a header row naming the columns; empty cells mean "not set") or JSON Lines (one object per line).
Columns: ``image`` (required), ``ref_image`` (or ``reference``), ``mask``, ``preset`` and any setting
(``prompt``, ``seed``, ``cn_weight``, ...). Paths are relative to the file's folder. Every message names
the row (and its line in the file), so a mistake in row 212 is found before the first image is made.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.contract.errors import BackdropError
from pipeline.contract.request import FIELDS, IMAGE_FIELDS, loads_json

PATH_COLUMNS = ("image", "ref_image", "mask")
ALIASES = {"reference": "ref_image", "ref": "ref_image"}
COLUMNS = (*PATH_COLUMNS, "preset", *(name for name in FIELDS if name not in IMAGE_FIELDS))


@dataclass(frozen=True)
class ItemRow:
    number: int  # 1 = the first product
    line: int  # where it starts in the file
    values: dict[str, Any]  # the row's own values; paths resolved against the file's folder

    def where(self, source: Path) -> str:
        return f"{source.name} row {self.number} (line {self.line})"


def read_items(source: Path) -> list[ItemRow]:
    """Every row of a .csv or .jsonl items file, with its columns and image paths checked."""
    source = Path(source)
    if not source.is_file():
        raise BackdropError(f"no file at {source}", field="--items")
    suffix = source.suffix.lower()
    if suffix == ".csv":
        raw = _read_csv(source)
    elif suffix in (".jsonl", ".ndjson"):
        raw = _read_json_lines(source)
    else:
        raise BackdropError(f"{source.name}: use a .csv file (with a header row) or a .jsonl file (JSON Lines)",
                            field="--items")
    rows = [_checked_row(source, number, line, values) for number, (line, values) in enumerate(raw, start=1)]
    if not rows:
        raise BackdropError(f"{source.name} has no product rows", field="--items")
    return rows


def _read_csv(source: Path) -> list[tuple[int, dict[str, Any]]]:
    try:
        with open(source, newline="", encoding="utf-8-sig") as file:
            reader = csv.DictReader(file)
            rows = []
            for values in reader:
                cells = {(key or "").strip(): (value or "").strip() if isinstance(value, str) else value
                         for key, value in values.items()}
                cells = {key: value for key, value in cells.items() if value not in ("", None)}
                if cells:
                    rows.append((reader.line_num, cells))
            return rows
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise BackdropError(f"cannot read {source.name} as UTF-8 CSV ({exc})", field="--items") from None


def _read_json_lines(source: Path) -> list[tuple[int, dict[str, Any]]]:
    try:
        lines = source.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise BackdropError(f"cannot read {source.name} as UTF-8 text ({exc})", field="--items") from None
    rows = []
    for line_number, text in enumerate(lines, start=1):
        if not text.strip():
            continue
        where = f"{source.name} row {len(rows) + 1} (line {line_number})"
        try:
            values = loads_json(text)
        except (ValueError, BackdropError) as exc:
            raise BackdropError(f"{where}: not a JSON object ({exc})", field="--items") from None
        if not isinstance(values, dict):
            raise BackdropError(f"{where}: must be a JSON object, not {type(values).__name__}", field="--items")
        rows.append((line_number, values))
    return rows


def _checked_row(source: Path, number: int, line: int, values: dict[str, Any]) -> ItemRow:
    row = ItemRow(number, line, {})
    named = {ALIASES.get(str(key).strip(), str(key).strip()): value for key, value in values.items()}
    unknown = sorted(set(named) - set(COLUMNS))
    if unknown:
        raise BackdropError(f"{row.where(source)}: unknown column {unknown[0]!r}; allowed: {', '.join(COLUMNS)}",
                            field="--items")
    if not named.get("image"):
        raise BackdropError(f"{row.where(source)}: image: is required (the product photo's path)", field="--items")
    for name in PATH_COLUMNS:
        if name in named and named[name] not in (None, ""):
            named[name] = _path(source, row, name, named[name])
    return ItemRow(number, line, named)


def _path(source: Path, row: ItemRow, name: str, value: Any) -> Path:
    if not isinstance(value, str):
        raise BackdropError(f"{row.where(source)}: {name}: {value!r} is not a file path", field="--items")
    path = Path(value).expanduser()
    path = path if path.is_absolute() else source.parent / path
    if not path.is_file():
        raise BackdropError(f"{row.where(source)}: {name}: no file at {path}", field="--items")
    return path
