"""Executors run the heavy stages (ASR, keyframes, OCR): pure functions over files.

The flow (pipeline.flow) hands an executor one task at a time, ``submit(stage, fn, args)``, and gets a
``concurrent.futures.Future`` of its result (or of the task's own exception); ``map_unordered`` maps a
function over many tasks and yields (index, result or exception) as each finishes. Only the driver
writes the store. ``LocalExecutor`` runs in this
process; ``ProcessExecutor`` uses a process pool (models load once per worker);
``RayExecutor`` runs tasks on a local Ray instance or a Ray cluster. A task's
exception comes back as the original exception (a ``ToolError`` keeps its kind).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Any, Protocol

log = logging.getLogger(__name__)

# The repository root: Ray workers put it on their path to import the project's modules.
ROOT = Path(__file__).resolve().parent.parent


class Executor(Protocol):
    """Runs pure tasks; see the module docstring."""

    def submit(self, stage: str, fn: Callable[..., Any], args: tuple) -> Future:
        """``fn(*args)`` for a video's ``stage``; the Future's result, or the task's own exception."""

    def map_unordered(self, fn: Callable[..., Any], tasks: list[tuple]) -> Iterator[tuple[int, Any]]:
        """``fn`` over ``tasks``: (index, result or the task's exception) as each finishes."""

    def close(self) -> None:
        """Release the workers (idempotent)."""


class LocalExecutor:
    """Runs tasks in this process, in the calling thread (the flow's threads give the parallelism)."""

    def submit(self, stage, fn, args):
        """Run ``fn(*args)`` now; a Future holding its result or its exception."""
        fut: Future = Future()
        try:
            fut.set_result(fn(*args))
        except Exception as exc:  # noqa: BLE001 - the caller's .result() raises it
            fut.set_exception(exc)
        return fut

    def map_unordered(self, fn, tasks):
        """Each task in turn, in order."""
        for i, args in enumerate(tasks):
            try:
                yield i, fn(*args)
            except Exception as exc:  # the driver records it against the task's video
                yield i, exc

    def close(self) -> None:
        """Nothing to release."""


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

    def submit(self, stage, fn, args):
        """``fn(*args)`` in a worker process (models load once per worker)."""
        return self._get().submit(fn, *args)

    def map_unordered(self, fn, tasks):
        """The tasks on the pool, yielded as each finishes."""
        pool = self._get()
        pending = {pool.submit(fn, *args): i for i, args in enumerate(tasks)}
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for fut in done:
                i = pending.pop(fut)
                exc = fut.exception()
                yield i, exc if exc is not None else fut.result()

    def close(self) -> None:
        """Shut the pool down, cancelling what has not started."""
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None


class RayExecutor:
    """Runs tasks as Ray tasks, on a local Ray instance or a cluster: ``map_unordered`` only (the baseline
    of bench/bench_pools.py). The flow's Ray executor is pipeline.pools.RayPoolExecutor (actor pools).

    ``address=None`` starts a local Ray with ``workers`` CPUs (no dashboard, worker
    output not forwarded) on first use; ``"auto"`` or ``"ray://host:10001"``
    connects to a running cluster, whose nodes need the project installed. Ray
    is shut down on ``close()`` only if this executor started it. Starting a local
    Ray takes seconds: make one executor per run, not per stage.
    """

    def __init__(self, workers: int = 2, address: str | None = None):
        self.workers = max(1, workers)
        self.address = address
        self._started = False

    _init_lock = threading.Lock()  # the build's video threads may start their first Ray tasks at once

    def _init(self):
        if self.address is None:
            from pipeline.pools import local_auth_mode

            local_auth_mode()  # Ray's default mode named before Ray is imported: no warning line
        import ray

        with self._init_lock:
            return self._init_locked(ray)

    def _init_locked(self, ray):
        if not ray.is_initialized():
            # workers import the function's module by name; ${PYTHONPATH} is expanded by Ray on the worker
            env = {"PYTHONPATH": os.pathsep.join([str(ROOT), "${PYTHONPATH}"])}
            options: dict[str, Any] = {
                "ignore_reinit_error": True,
                "log_to_driver": False,
                "configure_logging": False,  # leave logging handlers to the CLI
                "runtime_env": {"env_vars": env},
            }
            if self.address is None:
                options.update(num_cpus=self.workers, include_dashboard=False)
            log.info("starting Ray (%s)", self.address or f"local, {self.workers} CPUs")
            ray.init(self.address, **options)
            self._started = True
        return ray

    def map_unordered(self, fn, tasks):
        """The tasks as Ray tasks, yielded as each finishes; those left are cancelled if the caller stops."""
        ray = self._init()
        remote = ray.remote(fn)
        pending = {remote.remote(*args): i for i, args in enumerate(tasks)}
        try:
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                for ref in done:
                    i = pending.pop(ref)
                    try:
                        yield i, ray.get(ref)
                    except ray.exceptions.RayTaskError as exc:
                        yield i, _cause(exc)
                    except ray.exceptions.RayError as exc:  # worker died, task cancelled, out of memory
                        yield i, exc
        finally:
            if pending and ray.is_initialized():  # the caller stopped early
                for ref in pending:
                    ray.cancel(ref)

    def close(self) -> None:
        """Shut Ray down if this executor started it."""
        if self._started:
            import ray

            ray.shutdown()
            self._started = False


def _cause(exc: Exception) -> BaseException:
    """The exception the task raised, not Ray's wrapper around it."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, BaseException):
        return cause
    return exc.as_instanceof_cause()


def make_executor(kind: str, workers: int = 2, address: str | None = None) -> Executor:
    """``local``, ``process`` (``workers`` processes) or ``ray`` (``address``: None for a local Ray)."""
    if kind == "local":
        return LocalExecutor()
    if kind == "process":
        return ProcessExecutor(workers)
    if kind == "ray":
        return RayExecutor(workers, address)
    raise ValueError(f"unknown executor {kind!r} (local, process or ray)")
