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
