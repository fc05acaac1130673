"""Task functions for the executor tests: importable by name in pool and Ray workers."""

from __future__ import annotations

import os
import time

from tools.errors import ToolError


def square(x: int, delay: float = 0.0) -> tuple[int, int]:
    """``x * x`` and the worker's pid; ``x < 0`` fails as a corrupt input."""
    time.sleep(delay)
    if x < 0:
        raise ToolError("corrupt", f"bad input {x}")
    return x * x, os.getpid()


def square_where(x: int, delay: float = 0.0) -> tuple[int, str, int]:
    """``x * x``, the Ray node id and the pid of the process that computed it (a Ray worker or actor)."""
    import ray

    time.sleep(delay)
    return x * x, ray.get_runtime_context().get_node_id(), os.getpid()


def exit_process(code: int = 1) -> None:
    """Ends the process that runs it at once, as a crash does (no exception, no cleanup)."""
    os._exit(code)
