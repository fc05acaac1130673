"""The one scheduler of per-video work: ``process`` and ``build`` both move their videos through a list of
stages with a :class:`Flow`.

    video -> stage 1 -> stage 2 -> ... -> stage n -> passed
                 \\-> Drop (rejected, judged out, failed with a kind): the video leaves the flow

Rules:

1. **As soon as it can.** Each video runs its chain of stages on a flow thread and moves to its next stage
   the moment the previous one returns; a video never waits for the others (no stage-wide barriers), so
   the ASR of one video overlaps the keyframes, OCR and LLM calls of others.
2. **Bounded per lane.** A stage's ``needs.lane`` names the lane that bounds it: at most
   ``limits[lane]`` videos are inside the stages of one lane at once (``asr``: the ASR model;
   ``visual``: keyframes and OCR); stages without a lane (quick driver work, LLM stages, whose requests
   the gateway bounds per endpoint) are unbounded. ``workers`` bounds the videos in flight.
3. **Admission.** The videos to run come from a list (all of them, in order) or from an
   :class:`Admission`, asked again whenever a video leaves the flow: the build's per-point slot rule
   (agents/slots.py) starts the best-ranked video of a point when a slot frees.
4. **Where a video stands** is the last stage it passed: the :class:`Ledger` hears every pass, drop and
   failure (the build's records the candidate's status; ``process`` needs none: its stages record the
   run's row themselves).
5. **Faults are items.** A stage records its own failures and returns a Drop; an exception that escapes a
   stage (an LLM call that kept failing, a bug) is the video's failure through ``Ledger.failed``. A
   :class:`~tools.errors.RunStopped` (a spent budget, an endpoint that is down) stops the flow: no new
   video starts, running ones stop before their next stage, and ``run`` raises it once they have.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Protocol

from pipeline.records import Status, Video
from pipeline.stage import Drop, NullReporter, Reporter, Stage
from tools.errors import RunStopped, failure_kind, failure_message

log = logging.getLogger(__name__)


class Ledger(Protocol):
    """Where a video stands in a run: told of each stage a video passes, each drop and each failure."""

    def passed(self, video: Video, stage: Stage) -> None:
        """``video`` passed ``stage``."""

    def dropped(self, video: Video, stage: Stage, drop: Drop) -> None:
        """``stage`` dropped ``video`` (a rule, a judge, or a failure the stage recorded itself)."""

    def failed(self, video: Video, stage: Stage, exc: Exception) -> Drop:
        """An exception escaped ``stage`` for ``video``: record the failure; the Drop it becomes."""


class PipelineLedger:
    """The ledger of ``process``: the stages record the run's ``run_videos`` rows themselves; an exception
    that escapes a stage is recorded as its error (``Stage.error``)."""

    def passed(self, video: Video, stage: Stage) -> None:
        """Nothing to record: the stage recorded its hash in the run's row."""

    def dropped(self, video: Video, stage: Stage, drop: Drop) -> None:
        """Nothing to record: the stage recorded the rejection or the error."""

    def failed(self, video: Video, stage: Stage, exc: Exception) -> Drop:
        """The video's error row with the exception's kind."""
        stage.error(video.video_id, "", exc)
        return Drop(Status.ERROR, failure_kind(exc), failure_message(exc, 300))


class Admission(Protocol):
    """Which videos to start now (``running``: the ids in flight); asked again whenever one leaves."""

    def start(self, running: set[str]) -> list[tuple[Video, int]]:
        """The videos to start, each with the index of the stage it starts at."""


@dataclass
class FlowResult:
    """What one ``Flow.run`` did: ``passed`` the videos that passed every stage (in the order they were
    given, for a list), ``outcomes`` how many videos ended in each status (``passed``, or the Drop's
    status), ``dropped`` stage -> {reason: videos}."""

    passed: list[Video] = field(default_factory=list)
    outcomes: Counter = field(default_factory=Counter)
    dropped: dict[str, Counter] = field(default_factory=dict)


class Flow:
    """Moves videos through ``stages`` (module docstring for the rules).

    ``limits``: lane -> videos at once inside that lane's stages; ``workers``: videos in flight;
    ``ledger``: where outcomes are recorded (default: :class:`PipelineLedger`); ``reporter``: per-stage
    progress (a list input announces each stage's total); ``on_progress(video, done, total)``: called as
    each video leaves, and with ``video`` None when videos start (the count is known before the first is
    done); ``before_step()``: called before each stage of each video, may raise RunStopped (the
    build's wall-clock budget). Thread-safe to run once at a time per instance."""

    def __init__(self, stages: Sequence[Stage], *, limits: dict[str, int] | None = None, workers: int = 2,
                 ledger: Ledger | None = None, reporter: Reporter | None = None,
                 on_progress: Callable[[Video | None, int, int], None] | None = None,
                 before_step: Callable[[], None] | None = None):
        self.stages = list(stages)
        self.lanes = {lane: threading.BoundedSemaphore(max(1, n)) for lane, n in (limits or {}).items()}
        self.workers = max(1, workers)
        self.ledger = ledger or PipelineLedger()
        self.reporter = reporter or NullReporter()
        self.on_progress = on_progress
        self.before_step = before_step
        self.stopped: RunStopped | None = None
        self._lock = threading.Lock()

    # -- the entry points ----------------------------------------------------------------------------------
    def run(self, videos: Sequence[Video]) -> FlowResult:
        """Every video of ``videos`` from the first stage; raises the RunStopped that stopped the flow."""
        for stage in self.stages:
            self.reporter.stage(stage.name, len(videos))
        waiting = [(v, 0) for v in videos]
        order = {v.video_id: i for i, v in enumerate(videos)}

        def start(running: set[str]) -> list[tuple[Video, int]]:
            nonlocal waiting
            out, waiting = waiting, []
            return out

        result = self._drive(start)
        result.passed.sort(key=lambda v: order[v.video_id])
        return result

    def admit(self, admission: Admission) -> FlowResult:
        """The videos ``admission`` starts, refilled as videos leave; raises the RunStopped that stopped it."""
        return self._drive(admission.start)

    # -- the scheduler -------------------------------------------------------------------------------------
    def _drive(self, start: Callable[[set[str]], list[tuple[Video, int]]]) -> FlowResult:
        result = FlowResult()
        with ThreadPoolExecutor(self.workers, thread_name_prefix="flow") as pool:
            try:
                self._loop(pool, start, result)
            except BaseException:  # an interrupt: running chains stop before their next stage
                self._stop(RunStopped("interrupted"))
                raise
        if self.stopped is not None:
            raise self.stopped
        return result

    def _loop(self, pool: ThreadPoolExecutor, start, result: FlowResult) -> None:
        """Start what ``start`` gives, then take each chain as it ends (a queue its future's callback feeds:
        the cost of one end does not grow with the videos in flight) and ask ``start`` again."""
        ended: queue.SimpleQueue[Future] = queue.SimpleQueue()
        running: dict[Future, Video] = {}
        ids: set[str] = set()  # the ids of ``running``, kept in step with it
        done = 0
        while True:
            if self.stopped is None:
                started = start(ids)
                for video, at in started:
                    f = pool.submit(self._chain, video, at, result)
                    running[f] = video
                    ids.add(video.video_id)
                    f.add_done_callback(ended.put)
                if started and self.on_progress:
                    self.on_progress(None, done, done + len(running))
            if not running:
                return
            f = ended.get()
            video = running.pop(f)
            ids.discard(video.video_id)
            f.result()  # _chain records its own faults; anything here is a bug worth seeing
            done += 1
            if self.on_progress:
                self.on_progress(video, done, done + len(running))

    def _stop(self, exc: RunStopped) -> None:
        with self._lock:
            self.stopped = self.stopped or exc

    def _chain(self, video: Video, at: int, result: FlowResult) -> None:
        """One video from stage ``at`` as far as it goes."""
        for i in range(at, len(self.stages)):
            stage = self.stages[i]
            if self.stopped is not None:
                return
            try:
                if self.before_step:
                    self.before_step()
                lane = self.lanes.get(stage.needs.lane) if stage.needs.lane else None
                with lane or nullcontext():
                    out = stage.step(video)
            except RunStopped as exc:
                self._stop(exc)
                return
            except Exception as exc:  # noqa: BLE001 - a fault of this video: recorded, the flow goes on
                if failure_kind(exc) == "internal":
                    log.exception("%s: %s failed", video.video_id, stage.name)
                out = self.ledger.failed(video, stage, exc)
            else:
                if isinstance(out, Drop):
                    self.ledger.dropped(video, stage, out)
            self.reporter.advance(stage.name)
            if isinstance(out, Drop):
                self._skip(i + 1)
                self._tally(result, stage, out)
                return
            video = out
            self.ledger.passed(video, stage)
        with self._lock:
            result.passed.append(video)
            result.outcomes[str(self.stages[-1].passed or "passed")] += 1

    def _skip(self, start: int) -> None:
        for stage in self.stages[start:]:
            self.reporter.advance(stage.name)

    def _tally(self, result: FlowResult, stage: Stage, drop: Drop) -> None:
        with self._lock:
            result.outcomes[str(drop.status)] += 1
            result.dropped.setdefault(stage.name, Counter())[drop.reason] += 1
