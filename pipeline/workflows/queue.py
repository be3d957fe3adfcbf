"""One line for the GPU: the studio and the REST endpoint both wait here, so two generations never share
the device, and a full line is refused at once (HTTP 503, Retry-After) instead of piling up."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from pipeline.contract.errors import BackdropError
from pipeline.contract.settings import setting


class QueueFull(BackdropError):
    """Too many generations are already waiting."""

    exit_code = 1
    http_status = 503

    def __init__(self, waiting: int) -> None:
        super().__init__(f"the server is busy: {waiting} generation(s) are already waiting; try again shortly")


class GenerationQueue:
    """A lock for the device plus a bounded count of those waiting for it."""

    def __init__(self, max_waiting: int | None = None) -> None:
        self._max_waiting = max_waiting
        self._device = threading.Lock()
        self._state = threading.Lock()
        self._waiting = 0
        self._running = 0
        self.peak_running = 0  # never above 1: what tests and health checks can verify

    @property
    def max_waiting(self) -> int:
        """The most that may wait: the number given, else BACKDROP_QUEUE_SIZE, read when asked (the process-wide
        queue below is built at import, before a deployment's or a test's setting)."""
        return self._max_waiting if self._max_waiting is not None else setting("BACKDROP_QUEUE_SIZE")

    @max_waiting.setter
    def max_waiting(self, value: int | None) -> None:
        self._max_waiting = value

    @contextmanager
    def slot(self) -> Iterator[None]:
        """Wait for the device (or raise ``QueueFull`` at once), run the body, free it for the next."""
        with self._state:
            if self._waiting >= self.max_waiting:
                raise QueueFull(self._waiting)
            self._waiting += 1
        with self._device:
            with self._state:
                self._waiting -= 1
                self._running += 1
                self.peak_running = max(self.peak_running, self._running)
            try:
                yield
            finally:
                with self._state:
                    self._running -= 1

    def stats(self) -> dict[str, int]:
        with self._state:
            return {"waiting": self._waiting, "running": self._running, "max_waiting": self.max_waiting}


gpu_queue = GenerationQueue()  # the process-wide line that the studio and REST share
