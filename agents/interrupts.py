"""SIGINT and SIGTERM that never lose a paid answer.

``install()`` (the CLI calls it) makes SIGINT raise ``KeyboardInterrupt`` and SIGTERM raise
``SystemExit(143)`` in the main thread, as usual, except inside ``protected()`` blocks: there
the signal is held and raised when the outermost block ends. The LLM gateway writes each
answer to the response cache inside such a block, so an interrupt that arrives while an
answer is being saved takes effect right after it is saved. (SIGKILL cannot be held: the
gateway writes the answer to the cache before anything else, which leaves no window but the
DuckDB commit itself.)
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

_held: list[int] = []
_depth = 0  # protected blocks open, in all threads
_lock = threading.Lock()  # guards _depth and _held outside the signal handler (which never takes it)


class Interrupted(BaseException):
    """Raised for SIGTERM (SIGINT stays KeyboardInterrupt); ``code`` is the exit status (128 + signal)."""

    def __init__(self, signum: int):
        super().__init__(f"stopped by {signal.Signals(signum).name}")
        self.signum = signum
        self.code = 128 + signum


def _raise(signum: int) -> None:
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    raise Interrupted(signum)


def _handler(signum, frame) -> None:
    if _depth > 0:
        _held.append(signum)
        return
    _raise(signum)


def install() -> None:
    """Route SIGINT and SIGTERM through the holding handler (main thread only; a no-op elsewhere)."""
    if threading.current_thread() is not threading.main_thread():
        return
    signal.signal(signal.SIGINT, _handler)
    signal.signal(signal.SIGTERM, _handler)


@contextmanager
def protected() -> Iterator[None]:
    """Hold SIGINT/SIGTERM until the block ends (blocks nest, in any thread); when the last open block
    of all threads ends, the first signal held is raised: here in the main thread, or re-sent to the
    process from a worker thread, so the main thread raises it."""
    global _depth
    with _lock:
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            signum = _held[0] if _depth == 0 and _held else None
            if signum is not None:
                _held.clear()
        if signum is not None:
            if threading.current_thread() is threading.main_thread():
                _raise(signum)
            signal.raise_signal(signum)  # the main thread's handler raises it (no block is open now)


def is_interrupt(exc: BaseException) -> bool:
    """Whether ``exc`` is a user's interrupt (SIGINT's KeyboardInterrupt or SIGTERM's Interrupted), not a failure."""
    return isinstance(exc, KeyboardInterrupt | Interrupted)
