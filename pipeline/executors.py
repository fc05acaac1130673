"""Executors run the heavy stages (ASR, keyframes, OCR): pure functions over files.

An executor maps a function over tasks and yields (index, result or exception) as
each finishes; only the driver writes the store. ``LocalExecutor`` runs in this
process; ``ProcessExecutor`` uses a process pool (models load once per worker).
A Ray executor only needs the same two methods.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from typing import Any, Protocol


class Executor(Protocol):
    def map_unordered(self, fn: Callable[..., Any], tasks: list[tuple]) -> Iterator[tuple[int, Any]]: ...

    def close(self) -> None: ...


class LocalExecutor:
    """Runs tasks one after another in this process."""

    def map_unordered(self, fn, tasks):
        for i, args in enumerate(tasks):
            try:
                yield i, fn(*args)
            except Exception as exc:  # the driver records it against the task's video
                yield i, exc

    def close(self) -> None:
        pass


class ProcessExecutor:
    """Runs tasks in a pool of ``workers`` processes (forkserver: no inherited threads)."""

    def __init__(self, workers: int = 2):
        self.workers = max(1, workers)
        self._pool: ProcessPoolExecutor | None = None

    def _get(self) -> ProcessPoolExecutor:
        if self._pool is None:
            ctx = multiprocessing.get_context("forkserver")
            self._pool = ProcessPoolExecutor(max_workers=self.workers, mp_context=ctx)
        return self._pool

    def map_unordered(self, fn, tasks):
        pool = self._get()
        pending = {pool.submit(fn, *args): i for i, args in enumerate(tasks)}
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for fut in done:
                i = pending.pop(fut)
                exc = fut.exception()
                yield i, exc if exc is not None else fut.result()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None


def make_executor(kind: str, workers: int = 2) -> Executor:
    if kind == "local":
        return LocalExecutor()
    if kind == "process":
        return ProcessExecutor(workers)
    raise ValueError(f"unknown executor {kind!r} (local or process)")
