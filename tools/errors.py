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


class RunStopped(Exception):
    """An exception that ends the whole run rather than failing one item (a spent budget, an LLM
    endpoint that is down): the pipeline's stages let it through, where they record any other
    exception as an error of that video (pipeline.stage)."""


def failure_kind(exc: BaseException) -> str:
    """The kind recorded for a failed item: the exception's own ``kind`` (ToolError and the gateway's
    LLMError carry one: timeout, rate_limited, invalid_output, corrupt, ...), else ``internal`` (a bug,
    or a library that broke: something a new version may fix)."""
    kind = getattr(exc, "kind", None)
    return kind if isinstance(kind, str) and kind else "internal"


def failure_message(exc: BaseException, limit: int = 2000) -> str:
    """One line saying what failed: a ToolError's or LLMError's message; for an exception without a kind
    (``internal``) its type first (``KeyError: 'rotate'``)."""
    text = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    text = (str(text).splitlines() or [type(exc).__name__])[0]
    if not isinstance(getattr(exc, "kind", None), str) and not text.startswith(type(exc).__name__):
        text = f"{type(exc).__name__}: {text}"
    return text[:limit]
