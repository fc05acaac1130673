"""The stage contract: one per-video step of the pipeline, with its name, version and config hash.

A stage implements only its own logic:

- ``config_hash(video)``: the hash of everything its output depends on (its version, its config, the
  hashes of the outputs it reads); outputs are stored under (video, stage, config hash), so runs with
  other policies keep theirs side by side;
- ``task(video, h)``: the work, as a pure function and its arguments (an executor may run it in another
  process or on a Ray cluster), or ``compute(video, h)`` for work that runs in the driver;
- ``save(video, h, result, seconds)``: store the result (one transaction);
- ``keep(video, h)``: None to pass the video on, or a drop reason read from the stored output.

The base (``Stage.run``) does the rest, the same for every stage: skip what is done (``stage_status``
holds a done row, or a permanent error, for this hash), run the rest on the executor, record each
error with its kind and go on (any exception of a video's compute or save is that video's error: a
ToolError with its kind, anything else ``internal``; only ``RunStopped`` and interrupts end the run),
advance the progress display, count results per reason, and record in the run's ``run_videos`` row
the hash it used and the status it ends in. Bumping a stage's version changes its hash and, through
their inputs' hashes, those of the stages after it: they run again, nothing else does.

Thread-safety: stages of different videos may run at once on worker threads; the store serializes
writes (one lock) and ``Context`` guards its own counters.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol

from pipeline.config import PipelineConfig
from pipeline.records import Status
from store import Store
from tools.errors import PERMANENT_KINDS, RunStopped, failure_kind, failure_message

log = logging.getLogger(__name__)

# a stage's version is part of its config hash: bump it when its code changes what it stores, so a
# rerun redoes that stage (and the stages after it) and nothing else
STAGE_VERSIONS = {"probe": 3, "asr": 2, "keyframes": 5, "ocr": 5, "clips": 2, "pack": 4}


class Reporter(Protocol):
    def stage(self, name: str, total: int) -> None: ...

    def advance(self, name: str) -> None: ...


class NullReporter:
    def stage(self, name: str, total: int) -> None:
        pass

    def advance(self, name: str) -> None:
        pass


@dataclass
class Context:
    """What every stage of one run shares: the store, the config, the media folder, the run, the
    executor (made on first use, one per run), the progress display, and the counters
    (``ran``: stage -> videos computed; ``reasons``: stage -> {reason or error kind: videos})."""

    store: Store
    cfg: PipelineConfig
    media: Path
    run_id: str = ""
    executor: Callable[[], Any] | None = None
    reporter: Reporter = field(default_factory=NullReporter)
    ran: Counter = field(default_factory=Counter)
    reasons: dict[str, Counter] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def count(self, stage: str, reason: str | None = None) -> None:
        with self.lock:
            if reason is None:
                self.ran[stage] += 1
            else:
                self.reasons.setdefault(stage, Counter())[reason] += 1


class Stage:
    """The base of every per-video stage (see the module docstring for the contract)."""

    name: ClassVar[str]
    hash_field: ClassVar[str | None] = None  # the run_videos column that records the hash a run used

    def __init__(self, ctx: Context):
        self.ctx = ctx
        self.store = ctx.store
        self.cfg = ctx.cfg

    @property
    def version(self) -> int:
        return STAGE_VERSIONS[self.name]

    # -- what a stage implements --------------------------------------------------------------------------
    def config_hash(self, video: dict) -> str:
        raise NotImplementedError

    def applies(self, video: dict) -> bool:
        """False: the video skips this stage and leaves the flow silently (a duplicate)."""
        return True

    def cached(self, video: dict, h: str) -> bool:
        """Whether the output for ``h`` is stored (or failed for good); a stage may also check its files."""
        row = self.store.stage(video["video_id"], self.name, h)
        if row is None:
            return False
        return row["status"] != "error" or row["detail"] in PERMANENT_KINDS

    def task(self, video: dict, h: str) -> tuple[Callable, tuple]:
        """The pure work as (function, arguments) for the executor; default: ``compute`` in the driver."""
        return self.compute, (video, h)

    def compute(self, video: dict, h: str) -> Any:
        raise NotImplementedError

    def save(self, video: dict, h: str, result: Any, seconds: float) -> None:
        raise NotImplementedError

    def keep(self, video: dict, h: str) -> str | None:
        """A drop reason, or None to pass the video on."""
        return None

    on_driver: ClassVar[bool] = False  # True: compute runs in this process, never on the executor

    # -- the base -------------------------------------------------------------------------------------------
    def run(self, videos: list[dict], announce: bool = True) -> list[dict]:
        """Run the stage over ``videos``; the videos that pass, in the order given. ``announce=False``:
        the caller has already told the progress display how many videos this stage will see (a
        pipeline that feeds the stage one video at a time)."""
        ctx, store = self.ctx, self.store
        if announce:
            ctx.reporter.stage(self.name, len(videos))
        hashes: dict[str, str] = {}
        todo: list[dict] = []
        for v in videos:
            if not self.applies(v):
                continue
            h = hashes[v["video_id"]] = self.config_hash(v)
            if not self.cached(v, h):
                todo.append(v)
        for _ in range(len(videos) - len(todo)):
            ctx.reporter.advance(self.name)
        self._compute(todo, hashes)
        active = []
        for v in videos:
            vid = v["video_id"]
            if vid not in hashes:
                continue
            h = hashes[vid]
            row = store.stage(vid, self.name, h)
            if row is None:
                continue
            if row["status"] == "error":
                self._run_status(vid, Status.ERROR, row["detail"])
                continue
            if self.hash_field and ctx.run_id:
                store.update_run_video(ctx.run_id, vid, **{self.hash_field: h})
            reason = self.keep(v, h)
            if reason:
                ctx.count(self.name, str(reason))
                self.reject(vid, str(reason))
            else:
                active.append(v)
        return active

    def _compute(self, todo: list[dict], hashes: dict[str, str]) -> None:
        if not todo:
            return
        if self.on_driver:
            results = ((i, self._call(self.compute, (v, hashes[v["video_id"]]))) for i, v in enumerate(todo))
        else:
            calls = [self.task(v, hashes[v["video_id"]]) for v in todo]
            fn = calls[0][0]
            results = self.ctx.executor().map_unordered(fn, [args for _, args in calls])
        started = time.perf_counter()
        for i, result in results:
            v = todo[i]
            if isinstance(result, RunStopped):
                raise result
            if isinstance(result, BaseException):
                self.error(v["video_id"], hashes[v["video_id"]], result)
            else:
                seconds = result[1] if self.on_driver else time.perf_counter() - started
                try:
                    self.save(v, hashes[v["video_id"]], result[0] if self.on_driver else result, seconds)
                except RunStopped:
                    raise
                except Exception as exc:  # noqa: BLE001 - a result that cannot be stored fails its video
                    self.error(v["video_id"], hashes[v["video_id"]], exc)
                else:
                    self.ctx.count(self.name)
            self.ctx.reporter.advance(self.name)

    @staticmethod
    def _call(fn, args):
        """A driver-side compute, as the executors run theirs: an exception is a fault of the video (a
        ToolError with its kind, a bug ``internal``, an LLM call of the agent's ``decide`` that kept
        failing with its kind), recorded against it while the run goes on. ``RunStopped`` (the agent's
        budget spent, its endpoint down) and interrupts end the call, so a resumed run redoes the video."""
        t = time.perf_counter()
        try:
            return fn(*args), time.perf_counter() - t
        except RunStopped:
            raise
        except Exception as exc:  # noqa: BLE001 - recorded by ``error``
            return exc

    def error(self, vid: str, h: str, exc: BaseException) -> None:
        """Record the video's fault: a ``stage_status`` error row (retried by the next run unless its kind is
        permanent, tools.errors.PERMANENT_KINDS), an ``errors`` row, the run's video ``error`` with the kind
        as reason (``failure_kind``: the exception's kind, else ``internal``)."""
        kind, msg = failure_kind(exc), failure_message(exc)
        log.warning("%s: %s failed (%s): %s", vid, self.name, kind, msg)
        log.debug("%s: %s failed", vid, self.name, exc_info=exc)
        self.store.record_error(vid, self.name, h, kind, msg, self.ctx.run_id or None)
        self.ctx.count(self.name, kind)
        self._run_status(vid, Status.ERROR, kind)

    def trace_warning(self, vid: str, kind: str, message: str, policy: str = "") -> None:
        """A warning the video survives (stored in ``warnings``), as an event of the run's trace: node
        this stage, decision "warning", reasons ``KIND: MESSAGE`` and what the policy made of it. Once
        per run, video and kind."""
        run_id = self.ctx.run_id
        if not run_id:
            return
        first = f"{kind}: {message}"
        with self.store.lock:
            if any(e["decision"] == "warning" and (json.loads(e["reasons"] or "[]") or [""])[0] == first
                   for e in self.store.events(run_id, self.name, vid)):
                return
            ev = self.store.event_start(run_id, self.name, vid, None)
            self.store.event_end(ev, None, decision="warning", reasons=[first] + ([policy] if policy else []))

    def reject(self, vid: str, reason: str) -> None:
        self.store.update_video(vid, status=Status.REJECTED.value, reason=reason)
        self._run_status(vid, Status.REJECTED, reason)

    def _run_status(self, vid: str, status: Status, reason: str | None) -> None:
        if self.ctx.run_id:
            self.store.update_run_video(self.ctx.run_id, vid, status=status, reason=reason)
