"""A catalogue's record: ``manifest.jsonl`` in the output folder, one JSON line per finished item.

Lines are appended and flushed as items finish: a crash or Ctrl-C loses at most the item in flight, never a
finished one, and a rerun skips every item already done. An item's images are announced ("writing") before
they are written and recorded ("done") after, so a killed run leaves a record of exactly which files to
remove. Any runner of a catalogue (this machine's batch, a distributed one) writes the same manifest.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any

from pipeline.contract.result import BgReplaceResult
from pipeline.workflows.outputs import plan_paths, write_atomically, write_result

MANIFEST = "manifest.jsonl"


FINISHED = ("done", "review")  # review: made and its best images kept, but its quality check asks for a look

class Manifest:
    """One row per input: the last line written for it wins. Appends are flushed and fsynced."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.rows: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()
        if path.exists():
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    row = json.loads(line)
                except ValueError:
                    continue  # a line cut short by a crash: that item simply runs again
                if isinstance(row, dict) and "input" in row:
                    self.rows[row["input"]] = row
            self.compact()

    def compact(self) -> None:
        """Rewrite the file with one line per item (its last), dropping superseded and torn lines."""
        text = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in self.rows.values())
        write_atomically(self.path, text.encode("utf-8"))

    def is_done(self, key: str) -> bool:
        row = self.rows.get(key)
        return bool(row and row.get("status") in FINISHED and all(Path(p).exists() for p in row.get("outputs", [])))

    def remove_unfinished_writes(self) -> int:
        """Delete the images of items a killed run was writing (recorded as "writing", never "done"): the
        rerun makes them again under the same names, so no item ever ends up with two sets of images."""
        return sum(remove_outputs(row.get("outputs", [])) for row in self.rows.values()
                   if row.get("status") == "writing")

    def record(self, row: dict[str, Any]) -> None:
        """Record one row (a finished item's, or the files it is about to write), durably, before returning."""
        with self._lock:
            self.rows[row["input"]] = row
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a", encoding="utf-8") as file:
                file.write(json.dumps(row, ensure_ascii=False) + "\n")
                file.flush()
                os.fsync(file.fileno())


def open_manifest(out: Path) -> Manifest:
    """The output folder's manifest, with what a killed run left half-written removed first."""
    out.mkdir(parents=True, exist_ok=True)
    for leftover in out.rglob(".*.part"):  # an image a killed run was writing: never given a final name
        leftover.unlink(missing_ok=True)
    manifest = Manifest(out / MANIFEST)
    manifest.remove_unfinished_writes()
    return manifest


def remove_outputs(outputs: list[str]) -> int:
    """Delete an item's images and their sidecars; return how many files there were."""
    removed = 0
    for output in outputs:
        for path in (Path(output), Path(output).with_suffix(".json")):
            removed += path.exists()
            path.unlink(missing_ok=True)
    return removed


class ResultWriter:
    """Records an item's file names as "writing" before writing them, and "done" after: a run killed in
    between leaves a record of exactly which files to remove (never another item's, never the user's)."""

    def __init__(self, manifest: Manifest, out: Path) -> None:
        self.manifest, self.out = manifest, out
        self._lock = threading.Lock()  # two items with one name (front.jpg, front.png) must not pick one path

    def save(self, key: str, relative: Path, result: BgReplaceResult) -> list[Path]:
        """Write the result of the item called ``key`` (its photo's path below the inputs: ``relative``)."""
        with self._lock:
            old = self.manifest.rows.get(key, {})
            if old.get("status") in FINISHED:  # --redo: the old images go, the new ones take their place
                remove_outputs(old.get("outputs", []))
            folder = self.out / relative.parent
            paths = plan_paths(result, folder, stem=relative.stem)
            self.manifest.record({"input": key, "status": "writing", "outputs": [str(p) for p in paths]})
            write_result(result, paths)
        return paths
