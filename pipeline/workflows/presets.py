"""Presets: flat JSON files whose keys are request fields, plus a name, a description and an optional
reference picture. The shipped ones live in ``presets/``; users save theirs to BACKDROP_PRESETS_DIR
(default ``~/.config/backdrop/presets``), outside the repository."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.contract.errors import BackdropError
from pipeline.contract.request import FIELDS, IMAGE_FIELDS
from pipeline.contract.settings import setting
from pipeline.workflows.outputs import write_atomically

ROOT = Path(__file__).resolve().parents[2]  # the checkout: pipeline/workflows/presets.py
BUILTIN_DIR = ROOT / "presets"
ASSETS_DIR = ROOT / "assets"
META_KEYS = ("name", "description", "reference")
SETTING_KEYS = tuple(name for name in FIELDS if name not in IMAGE_FIELDS)
MAX_NAME_CHARS = 80  # the file name is made from it: well under a file system's 255-byte limit


@dataclass(frozen=True)
class Preset:
    slug: str  # the file's name without .json: what the UI's dropdown and the CLI's --preset use
    name: str
    description: str = ""
    settings: dict[str, Any] = field(default_factory=dict)
    reference: Path | None = None
    source: Path | None = None


def user_dir() -> Path:
    return setting("BACKDROP_PRESETS_DIR")


def load_preset_file(path: Path) -> Preset:
    """Read and check one preset; every problem names the file, the key and what is allowed."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise BackdropError(f"preset {path}: cannot read it as JSON ({exc})") from None
    if not isinstance(data, dict):
        raise BackdropError(f"preset {path}: must be a JSON object of settings")
    unknown = sorted(set(data) - set(META_KEYS) - set(SETTING_KEYS))
    if unknown:
        raise BackdropError(f"preset {path}: unknown key {unknown[0]!r}; allowed: "
                            f"{', '.join(META_KEYS + SETTING_KEYS)}")
    settings = {}
    for key in SETTING_KEYS:
        if key in data:
            try:
                settings[key] = FIELDS[key].coerce(data[key])
            except BackdropError as error:
                raise BackdropError(f"preset {path}: {error}") from None
    return Preset(slug=Path(path).stem, name=str(data.get("name") or Path(path).stem),
                  description=str(data.get("description") or ""), settings=settings,
                  reference=_reference(path, data.get("reference")), source=Path(path))


def _reference(path: Path, value: Any) -> Path | None:
    if value in (None, ""):
        return None
    if not isinstance(value, str):
        raise BackdropError(f"preset {path}: 'reference' must be a file name in assets/ or a path")
    candidate = Path(value).expanduser()
    for folder in (Path(path).parent, ASSETS_DIR):
        if not candidate.is_absolute() and (folder / candidate).is_file():
            return folder / candidate
    if candidate.is_absolute() and candidate.is_file():
        return candidate
    raise BackdropError(f"preset {path}: 'reference' {value!r} is not a file beside the preset or in assets/")


def list_presets() -> dict[str, Preset]:
    """Shipped presets, then the user's (a user preset with a shipped one's name replaces it)."""
    presets: dict[str, Preset] = {}
    for folder in (BUILTIN_DIR, user_dir()):
        if folder.is_dir():
            for path in sorted(folder.glob("*.json")):
                preset = load_preset_file(path)
                presets[preset.slug] = preset
    return presets


def get_preset(slug: str) -> Preset:
    presets = list_presets()
    if slug not in presets:
        raise BackdropError(f"{slug!r} is unknown; available: {', '.join(presets)}", field="preset")
    return presets[slug]


def save_user_preset(name: str, settings: dict[str, Any], description: str = "") -> Path:
    """Write ``settings`` (checked like any preset) as a user preset named ``name``; return its path."""
    slug = re.sub(r"[^a-z0-9]+", "-", name.strip().lower()).strip("-")
    if not slug:
        raise BackdropError("give the preset a name with letters or digits", field="preset_name")
    if len(name.strip()) > MAX_NAME_CHARS:
        raise BackdropError(f"{len(name.strip())} characters is too long; at most {MAX_NAME_CHARS}",
                            field="preset_name")
    data = {"name": name.strip(), "description": description.strip()}
    for key in SETTING_KEYS:
        if key in settings:
            data[key] = FIELDS[key].coerce(settings[key])
    path = user_dir() / f"{slug}.json"
    _refuse_a_different_preset_in(path, data["name"])
    write_atomically(path, (json.dumps(data, indent=2, ensure_ascii=False) + "\n").encode("utf-8"))
    return path


def _refuse_a_different_preset_in(path: Path, name: str) -> None:
    """Saving "My preset" again updates it; saving "my-preset" over it (the same file name) would silently
    replace another preset, so it is refused."""
    if not path.is_file():
        return
    try:
        existing = json.loads(path.read_text(encoding="utf-8")).get("name")
    except (OSError, ValueError, AttributeError):
        existing = None
    if existing != name:
        raise BackdropError(f"{name!r} would be saved as {path.name}, which already holds the preset "
                            f"{existing or path.stem!r}; choose another name (or that one's, to update it)",
                            field="preset_name")
