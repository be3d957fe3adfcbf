"""The README's table of request fields ("The request") against ``FIELDS``, both ways.

``FIELDS`` is the one definition of the request; the README shows it to people. A field, default, range or
list of choices changed in one and not the other fails here, naming the field.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pipeline.contract.request import FIELDS, HOSTED_FIELDS, MAX_PROMPT_CHARS, FieldSpec

README = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")

REQUIRED = "required"  # what the default column says of a field without a default
NUMBER = r"-?\d+(?:\.\d+)?"
RANGE = re.compile(rf"^({NUMBER})\.\.({NUMBER})\b")
LINK = re.compile(r"\[[^\]]*\]\(#([\w-]+)\)")
COUNTS = {"ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14, "fifteen": 15}


def _section(anchor: str) -> str:
    """The text of the README section whose heading GitHub turns into ``#anchor``."""
    headings = list(re.finditer(r"^(#+) (.+)$", README, flags=re.MULTILINE))
    for index, heading in enumerate(headings):
        if re.sub(r"[^\w -]", "", heading[2]).strip().lower().replace(" ", "-") == anchor:
            end = headings[index + 1].start() if index + 1 < len(headings) else len(README)
            return README[heading.end():end]
    raise AssertionError(f"README has no section #{anchor}")


def _table_rows(section: str) -> dict[str, tuple[str, str]]:
    """The first table's rows: field name -> (default cell, allowed cell), in the README's order."""
    table_text = re.search(r"^\|.*?(?=^[^|]|\Z)", section, flags=re.MULTILINE | re.DOTALL)
    assert table_text, "README, The request: the table of fields is gone"
    lines = [line.strip() for line in table_text[0].splitlines()]
    header, rows = lines[0], lines[2:]  # lines[1] is the |---| rule
    assert [cell.strip() for cell in header.strip("|").split("|")][:3] == ["field", "default", "allowed"]
    table = {}
    for row in rows:
        name, default, allowed = (cell.strip() for cell in row.strip("|").split("|")[:3])
        assert re.fullmatch(r"`\w+`", name), f"one field a row, in backticks: {name!r}"
        table[name.strip("`")] = (default, allowed)
    return table


TABLE = _table_rows(_section("the-request"))


def _code_names(text: str) -> list[str]:
    """The `quoted` names in ``text``, each once, in the order they first appear."""
    return list(dict.fromkeys(re.findall(r"`([^`]+)`", text)))


def _split_note(cell: str) -> tuple[str, str]:
    """``"`x` (a note)"`` -> ``("x", "a note")``: the value the cell shows and its explanation."""
    match = re.fullmatch(r"(.*?)\s*\((.*)\)", cell)
    value, note = (match[1], match[2]) if match else (cell, "")
    return value.strip().strip("`"), note


def _shown_default(spec: FieldSpec) -> object:
    """What the default column should show for ``spec``, in the form ``_read_default`` gives."""
    if spec.required:
        return REQUIRED
    if spec.default is None:
        return "none"
    if isinstance(spec.default, bool):
        return str(spec.default).lower()
    if isinstance(spec.default, (int, float)):
        return float(spec.default)
    return spec.default


def _read_default(value: str) -> object:
    return float(value) if re.fullmatch(NUMBER, value) else value


def test_the_table_lists_FIELDS_names_in_the_same_order():
    assert list(TABLE) == list(FIELDS)


def test_the_hosted_fields_are_the_first_ones_and_the_readme_counts_them():
    assert list(FIELDS)[: len(HOSTED_FIELDS)] == list(HOSTED_FIELDS)
    said = re.search(r"The first (\w+) fields are the hosted API's", README)
    assert said, "README, The request: the sentence that counts the hosted fields is gone"
    assert COUNTS[said[1]] == len(HOSTED_FIELDS)


@pytest.mark.parametrize("name", list(FIELDS))
def test_each_default_is_the_one_FIELDS_holds(name):
    spec = FIELDS[name]
    value, note = _split_note(TABLE[name][0])
    assert _read_default(value) == _shown_default(spec), f"README default of {name}: {TABLE[name][0]!r}"
    named_variables = set(re.findall(r"BACKDROP_\w+", note))
    assert named_variables == ({spec.env} if spec.env else set()), f"{name}: the variable that sets its default"


@pytest.mark.parametrize("name", [name for name, spec in FIELDS.items() if spec.kind in ("int", "float")])
def test_each_range_is_the_one_FIELDS_holds(name):
    spec = FIELDS[name]
    allowed = TABLE[name][1]
    shown = RANGE.match(allowed)
    assert shown, f"README range of {name}: {allowed!r} is not low..high"
    assert (float(shown[1]), float(shown[2])) == (spec.minimum, spec.maximum), name


@pytest.mark.parametrize("name", [name for name, spec in FIELDS.items() if spec.kind == "choice"])
def test_each_list_of_choices_is_the_one_FIELDS_holds(name):
    """Listed in the cell, or in the section the cell links to (the schedulers have their own)."""
    allowed = TABLE[name][1]
    link = LINK.search(allowed)
    shown = _code_names(_section(link[1]) if link else allowed)
    assert shown == list(FIELDS[name].choices), name


@pytest.mark.parametrize("name", [name for name, spec in FIELDS.items() if spec.kind in ("bool", "str", "image")])
def test_the_other_kinds_are_described_as_their_kind(name):
    spec, allowed = FIELDS[name], TABLE[name][1]
    assert not RANGE.match(allowed), f"{name} is not a number"
    if spec.kind == "bool":
        assert allowed == "true/false"
    if spec.kind == "str":
        assert allowed.startswith("text"), name
        for limit in re.findall(r"up to (\d+) characters", allowed):
            assert int(limit) == MAX_PROMPT_CHARS
