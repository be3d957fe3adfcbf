"""Cancel, per caller: a caller's Cancel stops that caller's own runs and nobody else's.

Cancel is cooperative: a run's ``should_cancel`` is asked between denoising steps (and between a
comparison's cells), and the run then stops with ``GenerationCancelled`` and saves nothing. Each run in
progress holds its own flag, filed under its caller's key: Gradio's session hash, one per browser tab and
per ``gradio_client.Client``. A cancel sets the flags of that key's runs in progress, and only those.

A caller without a session (the studio's handlers called in-process) gets a key of its own for each run:
such runs used to share one key, "api", so one such caller's cancel stopped all of their runs.
A flag lives as long as its run: a cancel pressed when the caller has no run in progress stops nothing,
and leaves nothing behind to stop the caller's next run.
"""

from __future__ import annotations

import contextlib
import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any


def caller_key(request: Any) -> str | None:
    """The caller's session hash (``gr.Request.session_hash``), or None when there is no session."""
    return getattr(request, "session_hash", None) or None


class CancelBoard:
    """The flags of the runs in progress, by caller. Thread-safe: runs and cancels come from Gradio's workers."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._runs: dict[str, set[threading.Event]] = {}

    @contextlib.contextmanager
    def run(self, caller: str | None) -> Iterator[Callable[[], bool]]:
        """Register one run of ``caller`` for as long as the block lasts; yields its ``should_cancel``."""
        key = caller or f"no-session-{uuid.uuid4().hex}"
        flag = threading.Event()
        with self._lock:
            self._runs.setdefault(key, set()).add(flag)
        try:
            yield flag.is_set
        finally:
            with self._lock:
                flags = self._runs.get(key, set())
                flags.discard(flag)
                if not flags:
                    self._runs.pop(key, None)

    def cancel(self, caller: str | None) -> int:
        """Ask ``caller``'s runs in progress to stop; how many there were. Without a session, none."""
        if not caller:
            return 0
        with self._lock:
            flags = list(self._runs.get(caller, ()))
        for flag in flags:
            flag.set()
        return len(flags)

    def running(self, caller: str | None) -> int:
        """How many runs ``caller`` has in progress."""
        with self._lock:
            return len(self._runs.get(caller, ())) if caller else 0


# One board for the process: session hashes are unique across every studio it serves.
CANCELS = CancelBoard()
