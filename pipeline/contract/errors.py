"""The one exception type every adapter (UI, REST, CLI) knows how to show a person."""

from __future__ import annotations


class BackdropError(Exception):
    """Something the user can fix: a bad value, an unreadable image, a missing model.

    The message is written for a person: it names the field (when there is one), what was given and
    what is allowed. Adapters turn it into ``gr.Error``, an HTTP ``http_status`` reply, or the CLI's
    ``exit_code``; they never show a stack trace for it.
    """

    exit_code = 2
    http_status = 400

    def __init__(self, message: str, *, field: str | None = None) -> None:
        self.field = field
        self.detail = message  # without the field's name: an adapter may name the field its own way
        super().__init__(f"{field}: {message}" if field else message)

    @property
    def message(self) -> str:
        return str(self)


class ModelLoadError(BackdropError):
    """A model could not be loaded (missing files, no network, bad id). Not the request's fault."""

    exit_code = 1
    http_status = 503


class NoGpu(ModelLoadError):
    """The real (sdxl) models would run on a CPU: a download of many GB, then tens of minutes per image.
    Refused before anything is downloaded unless the CPU is asked for by name (BACKDROP_DEVICE=cpu)."""


class GenerationCancelled(BackdropError):
    """The user pressed Cancel (or the caller's cancel check said so) during denoising."""

    exit_code = 130
    http_status = 499


class OutOfMemory(BackdropError):
    """The device ran out of memory; the message says what to lower. Memory was freed, so the next
    request can run."""

    exit_code = 1
    http_status = 503
