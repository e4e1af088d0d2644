"""Exceptions with one-line messages that name the offending file and the reason."""
from __future__ import annotations

import os


class PipelineError(Exception):
    """Base class for every error the pipeline raises on purpose."""


class ConfigError(PipelineError, ValueError):
    """A parameter or config value is invalid (the message lists the valid options)."""


class DataError(PipelineError):
    """An input file is unreadable or inconsistent.

    ``str(err)`` is a single line ``"<path>: <reason>"`` so it can go straight into
    an ``errors.csv`` row or a log line.
    """

    def __init__(self, path: str | os.PathLike | None, reason: str):
        # a name that is not valid UTF-8 is shown with \xNN escapes: the message can always be printed
        self.path = os.fsencode(path).decode("utf-8", "backslashreplace") if path is not None else ""
        self.reason = " ".join(str(reason).split())  # keep it on one line
        super().__init__(f"{self.path}: {self.reason}" if self.path else self.reason)

    def __reduce__(self):  # picklable, so a worker process can hand it back to its pool
        return (type(self), (self.path or None, self.reason))
