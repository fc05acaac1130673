"""The stage contract: one per-video step of ``process`` and ``build``, with its name, version and needs.

A stage takes a :class:`~pipeline.records.Video` and returns it (passed) or a :class:`Drop` (a rule's or
a judge's rejection, or a failure with its kind): datatrove's shape. A stage implements only its own
logic:

- ``config_hash(video)``: the hash of everything its output depends on (its version, its config, the
  hashes of the outputs it reads); outputs are stored under (video, stage, config hash), so runs with
  other policies keep theirs side by side;
- ``task(video, h)``: the work as a pure function and its arguments (an executor may run it in another
  process, on a Ray actor, on another node), or ``compute(video, h)`` for work that runs in the driver
  (``needs.lane`` None or an LLM stage);
- ``save(video, h, result, seconds)``: store the result (one transaction);
- ``keep(video, h)``: None to pass the video on, or a drop reason read from the stored output.

The base (:meth:`Stage.step`) does the rest, the same for every stage: skip what is done
(``stage_status`` holds a done row, or a permanent error, for this hash), run the rest (on the
executor for a stage with a ``task``), record each error with its kind and go on (any exception of a
video's compute or save is that video's error: a ToolError with its kind, anything else ``internal``;
only ``RunStopped`` and interrupts end the run), count results per reason, and record in the run's
``run_videos`` row the hash it used and the status it ends in. Bumping a stage's version changes its
hash and, through their inputs' hashes, those of the stages after it: they run again, nothing else does.

``needs`` says what a stage needs to run (:class:`Needs`: the lane that bounds it in the flow, CPU
threads, GPUs, a model), so a scheduler (pipeline.flow.Flow) and an executor (pipeline.executors) can
place it. Thread-safety: stages of different videos run at once on the flow's threads; the store
serializes writes and ``Context`` guards its own counters.
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
from pipeline.records import Status, Video
from store import Store
from tools.errors import PERMANENT_KINDS, RunStopped, failure_kind, failure_message

log = logging.getLogger(__name__)

# a stage's version is part of its config hash: bump it when its code changes what it stores, so a
# rerun redoes that stage (and the stages after it) and nothing else
STAGE_VERSIONS = {"probe": 3, "asr": 2, "keyframes": 5, "ocr": 5, "clips": 2, "pack": 4}


class Reporter(Protocol):
    """A progress display: ``stage(name, total)`` announces how many videos a stage will see,
    ``advance(name)`` counts one done (passed, dropped, failed or skipped)."""

    def stage(self, name: str, total: int) -> None:
        """``total`` videos will pass through stage ``name``."""

    def advance(self, name: str) -> None:
        """One video is done with stage ``name``."""


class NullReporter:
    """A progress display that shows nothing (tests, ``--quiet``)."""

    def stage(self, name: str, total: int) -> None:
        """Ignore the announcement."""

    def advance(self, name: str) -> None:
        """Ignore the step."""


@dataclass(frozen=True)
class Needs:
    """What a stage needs to run, for the flow and the executor that place it.

    ``lane``: the flow bounds the videos inside all stages of one lane (``Flow(limits={lane: n})``); None:
    unbounded (quick driver work, LLM stages: the gateway bounds requests per endpoint). ``cpus``: CPU
    threads one task uses; ``gpus``: GPUs (fractional allowed: a Ray actor may share one); ``model``: the
    model the task loads once per worker (an actor pool keeps it), or None."""

    lane: str | None = None
    cpus: float = 1.0
    gpus: float = 0.0
    model: str | None = None


@dataclass(frozen=True)
class Drop:
    """A video leaving the flow at a stage: ``status`` REJECTED (a rule), a judge's status
    (METADATA_REJECTED, TRANSCRIPT_REJECTED, DOWNLOAD_FAILED, ...), DUPLICATE, or ERROR (``reason`` is then
    the failure kind: corrupt, timeout, internal, ...); ``message``: what failed or why, for the trace."""

    status: Status
    reason: str
    message: str = ""
    traced: bool = False  # the stage put its decision in the run's trace already

    @property
    def failed(self) -> bool:
        """True for a failure (never a judgment): the video may pass when the command runs again."""
        return self.status == Status.ERROR


@dataclass
class Context:
    """What every stage of one run shares: the store, the config, the media folder, the run, the
    executor (made on first use, one per run), the progress display, and the counters
    (``ran``: stage -> videos computed; ``reasons``: stage -> {drop reason: videos}; failures are not drops)."""

    store: Store
    cfg: PipelineConfig
    media: Path | str  # the media root: a local folder, or an object-store URI (tools.storage)
    run_id: str = ""
    executor: Callable[[], Any] | None = None
    reporter: Reporter = field(default_factory=NullReporter)
    ran: Counter = field(default_factory=Counter)
    reasons: dict[str, Counter] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def count(self, stage: str, reason: str | None = None) -> None:
        """Count one video computed by ``stage`` (``reason`` None) or dropped by it for ``reason``."""
        with self.lock:
            if reason is None:
                self.ran[stage] += 1
            else:
                self.reasons.setdefault(stage, Counter())[reason] += 1


class Stage:
    """The base of every per-video stage (see the module docstring for the contract).

    Class attributes: ``name`` (the stage_status name and the trace's node), ``needs``, ``passed`` (the
    status of a build's candidate that passed it: where a video stands in a run is the last stage it
    passed), ``hash_field`` (the run_videos column that records the hash a run used)."""

    name: ClassVar[str]
    needs: ClassVar[Needs] = Needs()
    passed: ClassVar[Status | None] = None
    hash_field: ClassVar[str | None] = None

    def __init__(self, ctx: Context):
        self.ctx = ctx
        self.store = ctx.store
        self.cfg = ctx.cfg

    @property
    def version(self) -> int:
        """The stage's version (STAGE_VERSIONS), part of its config hash."""
        return STAGE_VERSIONS[self.name]

    # -- what a stage implements --------------------------------------------------------------------------
    def config_hash(self, video: Video) -> str:
        """The hash the stage's output for ``video`` is stored under."""
        raise NotImplementedError

    def applies(self, video: Video) -> bool:
        """False: the video is a duplicate and leaves the flow here (no status change)."""
        return True

    def cached(self, video: Video, h: str) -> bool:
        """Whether the output for ``h`` is stored (or failed for good); a stage may also check its files."""
        row = self.store.stage(video.video_id, self.name, h)
        if row is None:
            return False
        return row["status"] != "error" or row["detail"] in PERMANENT_KINDS

    def task(self, video: Video, h: str) -> tuple[Callable, tuple] | None:
        """The pure work as (function, arguments) for the executor; None (the default): ``compute`` runs
        in the driver."""
        return None

    def compute(self, video: Video, h: str) -> Any:
        """The work, in the driver (a stage without ``task``)."""
        raise NotImplementedError

    def save(self, video: Video, h: str, result: Any, seconds: float) -> None:
        """Store ``result`` (one transaction); ``seconds``: how long the work took."""
        raise NotImplementedError

    def keep(self, video: Video, h: str) -> str | Drop | None:
        """None to pass the video on; a drop reason (a rule's: ``status`` REJECTED), or a :class:`Drop`."""
        return None

    # -- the base -------------------------------------------------------------------------------------------
    def step(self, video: Video) -> Video | Drop:
        """Run the stage on one video: the video (passed) or a :class:`Drop` (DUPLICATE when the stage does
        not apply). Raises only RunStopped and interrupts; a fault of the video is recorded (:meth:`error`)
        and returned as a Drop with status ERROR."""
        if not self.applies(video):
            return Drop(Status.DUPLICATE, "duplicate")
        h = self.config_hash(video)
        if not self.cached(video, h):
            self._compute(video, h)
        return self._outcome(video, h)

    def _compute(self, video: Video, h: str) -> None:
        started = time.perf_counter()
        try:
            call = self.task(video, h)
            if call is None:
                result = self.compute(video, h)
            else:
                fn, args = call
                result = self.ctx.executor().submit(self.name, fn, args).result()
            self.save(video, h, result, time.perf_counter() - started)
        except RunStopped:
            raise
        except Exception as exc:  # noqa: BLE001 - a fault of this video: recorded, the run goes on
            self.error(video.video_id, h, exc)
        else:
            self.ctx.count(self.name)

    def _outcome(self, video: Video, h: str) -> Video | Drop:
        vid = video.video_id
        row = self.store.stage(vid, self.name, h)
        if row is None:
            return Drop(Status.ERROR, "internal", f"{self.name} stored no result")
        if row["status"] == "error":
            self._run_status(vid, Status.ERROR, row["detail"])
            return Drop(Status.ERROR, row["detail"] or "internal", self._error_message(vid, row["detail"]))
        if self.hash_field and self.ctx.run_id:
            self.store.update_run_video(self.ctx.run_id, vid, **{self.hash_field: h})
        drop = self.keep(video, h)
        if drop is None:
            return video
        if not isinstance(drop, Drop):
            drop = Drop(Status.REJECTED, str(drop))
        self.ctx.count(self.name, drop.reason)
        if drop.status == Status.REJECTED:
            self.reject(vid, drop.reason)
        return drop

    def _error_message(self, vid: str, kind: str | None) -> str:
        err = self.store.last_error(vid, kind or "internal")
        return err["message"] if err else f"{self.name} failed"

    def error(self, vid: str, h: str, exc: BaseException) -> None:
        """Record the video's fault: a ``stage_status`` error row (retried by the next run unless its kind is
        permanent, tools.errors.PERMANENT_KINDS), an ``errors`` row, the run's video ``error`` with the kind
        as reason (``failure_kind``: the exception's kind, else ``internal``)."""
        kind, msg = failure_kind(exc), failure_message(exc)
        log.warning("%s: %s failed (%s): %s", vid, self.name, kind, msg)
        log.debug("%s: %s failed", vid, self.name, exc_info=exc)
        self.store.record_error(vid, self.name, h, kind, msg, self.ctx.run_id or None)
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
        """A rule dropped the video: ``videos`` and the run's row say ``rejected`` with the reason."""
        self.store.update_video(vid, status=Status.REJECTED.value, reason=reason)
        self._run_status(vid, Status.REJECTED, reason)

    def _run_status(self, vid: str, status: Status, reason: str | None) -> None:
        if self.ctx.run_id:
            self.store.update_run_video(self.ctx.run_id, vid, status=status, reason=reason)
