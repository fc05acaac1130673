"""The one error type tools raise: a message plus a kind the pipeline records."""

from __future__ import annotations

# Kinds a stage can record for a failed video. Permanent kinds are not retried on rerun.
PERMANENT_KINDS = frozenset({"corrupt", "no-video", "no-audio", "unsupported", "missing", "empty"})


class ToolError(Exception):
    """A failure of one input, classified by ``kind`` (corrupt, no-audio, timeout, ...)."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind
        self.message = message

    def __reduce__(self):  # keep kind when crossing a process pool
        return (ToolError, (self.kind, self.message))

    def __str__(self) -> str:
        return f"{self.kind}: {self.message}"
