"""The per-video flow of a build: each candidate moves to its next step as soon as its previous one is done.

One call of :meth:`VideoFlow.run` (the graph's ``videos`` node) takes every candidate of the run as far
as it can go:

1. **Metadata judgments** of every candidate not yet judged, all at once (the gateway bounds the
   requests in flight per endpoint, ``llm.concurrency``); placement (agents/assign.py) runs between
   passes, so a video judged out for one point can be judged again for a point that has nothing.
2. **Per-video chains.** Each knowledge point has ``agent.per_point`` slots; its metadata-accepted
   videos take them in rank order (judge score, then fit, then id). A started video runs its chain on
   a worker thread: download -> probe, rules, ASR -> two transcript judges (asked at once) ->
   keyframes, OCR -> clips (every paragraph's rewrite and clip judgment asked at once) -> accepted.
   A video that drops frees its slot for the next in rank, at once. So the ASR of one video overlaps
   the judges and rewrites of others.

Bounds: videos in flight ``agent.video_workers`` (default: the gateway's request limit); heavy stages
(ASR, keyframes, OCR) at most ``pipeline.workers`` at a time, on the runner's executor (local,
process pool or Ray); LLM requests by the gateway's per-endpoint limit. Writes go through the one
store connection under its lock (store/db.py): the build process stays DuckDB's single writer.

Faults are items, not crashes: a step that raises (a request that kept failing through the gateway's
re-sends: timeout, 429, 5xx; an answer that never validates under ``on_invalid: fail``; a tool error; a
stage's fault, which the step raises as graph.StageFailed; any other exception: ``internal``) marks
that candidate ``error`` with its kind (candidates.reason, an errors row, a trace event) and
the others go on. Two things stop the flow instead: a spent budget (``BudgetExceeded``: running chains
stop at their next step, the graph assembles what the run has) and an endpoint that is down
(``LLMUnavailable``: the build stops with one line and resumes later where each video stood).

Determinism: a point's slots are filled strictly in rank order and refilled only when a started video
drops, so the videos a point ends with are the first ``per_point`` in rank order that pass, whatever
the timing (with a global ``max_videos`` budget, which point gets the last slots can depend on timing).
Resume: statuses are in the store and every step is idempotent (LLM answers from the response cache,
stages from their stage status), so a killed build continues where each video stood. A failure is not
a result: the same command again puts each failed candidate back where it stood before the step that
failed (``retry_failed``), so a fixed library or a restarted endpoint completes it.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, as_completed, wait
from contextlib import nullcontext
from functools import partial
from typing import TYPE_CHECKING

from agents.llm import BudgetExceeded, LLMUnavailable
from pipeline.records import Status
from tools.errors import PERMANENT_KINDS, ToolError, failure_kind, failure_message

if TYPE_CHECKING:
    from agents.graph import BuildAgent

log = logging.getLogger(__name__)

# statuses of a video on its way through the pipeline: each holds a slot of its knowledge point
IN_FLIGHT = (Status.DOWNLOADED, Status.TRANSCRIBED, Status.TRANSCRIPT_ACCEPTED, Status.VISUALS)
HOLDS_SLOT = (*IN_FLIGHT, Status.REVIEW_TRANSCRIPT, Status.ACCEPTED)


class VideoFlow:
    """Moves one run's candidates through judges and pipeline stages concurrently (module docstring).

    ``agent``: the BuildAgent whose per-candidate steps (``_judge_metadata_one``, ``_download_one``,
    ``_transcribe_one``, ``_judge_transcript_one``, ``_visuals_one``, ``_clips_one``) it schedules.
    Raises BudgetExceeded when a budget stopped the flow (after running chains stopped)."""

    def __init__(self, agent: BuildAgent, run_id: str, spec: dict):
        self.a, self.d, self.run_id, self.spec = agent, agent.d, run_id, spec
        self.workers = agent.workers()
        self.heavy = threading.BoundedSemaphore(max(1, int(self.d.runner.cfg.workers)))
        self.stop: BudgetExceeded | None = None
        self.down: LLMUnavailable | None = None  # the endpoint is down: stop, the run resumes later
        self.outcomes: Counter[str] = Counter()
        self._lock = threading.Lock()

    # -- the two phases ------------------------------------------------------------------------------
    def run(self) -> dict[str, int]:
        """Run both phases; returns how many chains ended in each status (for the node's event)."""
        with ThreadPoolExecutor(self.workers, thread_name_prefix="llm") as calls, \
                ThreadPoolExecutor(self.workers, thread_name_prefix="video") as videos:
            self.calls = calls
            self.judge_metadata()
            if not self.halted:
                self.chains(videos)
        if self.down is not None:
            raise self.down
        if self.stop is not None:
            raise self.stop
        return dict(self.outcomes)

    @property
    def halted(self) -> bool:
        return self.stop is not None or self.down is not None

    def judge_metadata(self) -> None:
        """Phase 1: every unjudged candidate judged at once; placement between passes (it ends: each
        pass judges videos for points they were not judged for)."""
        a, store, run_id, cfg = self.a, self.d.store, self.run_id, self.d.cfg
        enforce = self.d.enforce["metadata"]
        done = 0
        for _ in range(50):
            a._reassign(run_id)
            todo = store.candidates(run_id, Status.FOUND)
            if not todo or self.halted:
                return
            total = done + len(todo)
            futures = [self.calls.submit(self._guard, "judge_metadata", c,
                                         lambda c=c: a._judge_metadata_one(run_id, self.spec, cfg, c, enforce))
                       for c in todo]
            for _f in as_completed(futures):
                done += 1
                a._progress("judge_metadata", done, total)
            if self.halted:
                return

    def chains(self, pool: ThreadPoolExecutor) -> None:
        """Phase 2: start the videos that hold or win a slot; refill a slot when its video drops."""
        running: dict[Future, dict] = {}
        finished = 0
        while True:
            if not self.halted:
                started = self._next(list(running.values()))
                for c in started:
                    running[pool.submit(self._chain, c)] = c
                if started:  # the count is known before the first video finishes (progress lines say x/N)
                    self.a._progress("videos", finished, finished + len(running))
            if not running:
                return
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for f in done:
                c = running.pop(f)
                f.result()  # _chain records its own faults; anything here is a bug worth seeing
                finished += 1
                self.a._progress("videos", finished, finished + len(running), c["video_id"])

    def _next(self, running: list[dict]) -> list[dict]:
        return startable(self.d.store, self.run_id, self.d.cfg, self.a.rank(self.run_id),
                         {c["video_id"] for c in running})

    # -- one video -----------------------------------------------------------------------------------
    def _chain(self, c: dict) -> None:
        """Take one candidate from its status as far as it goes: each step returns the new status, and
        the step for that status runs next (heavy ones hold a ``pipeline.workers`` slot)."""
        a, run_id = self.a, self.run_id
        steps = {Status.METADATA_ACCEPTED: ("download", a._download_one, False),
                 Status.DOWNLOADED: ("transcribe", a._transcribe_one, True),
                 Status.TRANSCRIBED: ("judge_transcripts", partial(a._judge_transcript_one, pool=self.calls), False),
                 Status.TRANSCRIPT_ACCEPTED: ("visuals", a._visuals_one, True),
                 Status.VISUALS: ("clips", partial(a._clips_one, pool=self.calls), False)}
        status, node = c["status"], "download"
        try:
            while status in steps:
                node, step, heavy = steps[status]
                self.d.budget.check_wall()
                with self.heavy if heavy else nullcontext():
                    status = step(run_id, c)
        except BudgetExceeded as exc:
            with self._lock:
                self.stop = self.stop or exc
            return
        except LLMUnavailable as exc:  # the endpoint, not this video: stop; the video resumes where it was
            with self._lock:
                self.down = self.down or exc
            return
        except Exception as exc:  # noqa: BLE001 - a fault of one item: recorded, the build goes on
            status = self._fail(node, c, exc)
        with self._lock:
            self.outcomes[str(status)] += 1

    def _guard(self, node: str, c: dict, step) -> None:
        try:
            step()
        except BudgetExceeded as exc:
            with self._lock:
                self.stop = self.stop or exc
        except LLMUnavailable as exc:
            with self._lock:
                self.down = self.down or exc
        except Exception as exc:  # noqa: BLE001 - as in _chain
            self._fail(node, c, exc)

    def _fail(self, node: str, c: dict, exc: BaseException) -> str:
        """Record one item's fault: candidate ``failed`` with its kind, an errors row, a trace event."""
        kind, message = failure_kind(exc), failure_message(exc, 300)
        if kind == "internal" and not isinstance(exc, ToolError):  # a bug: its traceback is worth a look
            log.exception("%s: %s failed", c["video_id"], node, exc_info=exc)
        store, vid = self.d.store, c["video_id"]
        store.update_candidate(self.run_id, vid, status=Status.ERROR, reason=f"{node}: {kind}")
        store.record_error(vid, node, "", kind, message, self.run_id)
        self.a._decision(node, vid, "failed", [f"{kind}: {message}"])
        self.d.on_event({"event": "item_failed", "node": node, "video_id": vid, "kind": kind, "message": message})
        return Status.ERROR


# the status a candidate that failed in a node had before it: where a rerun picks it up again
RESUME_AT = {"judge_metadata": Status.FOUND, "download": Status.METADATA_ACCEPTED, "transcribe": Status.DOWNLOADED,
             "judge_transcripts": Status.TRANSCRIBED, "visuals": Status.TRANSCRIPT_ACCEPTED,
             "clips": Status.VISUALS}


def retry_failed(store, run_id: str, cfg) -> Counter[str]:
    """Put the run's failed candidates (status ``error``, reason ``NODE: KIND``) back where they stood before
    the node that failed, so the next call of the flow redoes that node and what follows (the steps before
    it come from the store and the response cache: no LLM call is paid twice). A failure is not a result:
    a fixed library, a restarted endpoint or a new version may well pass. Left as they are: failures of a
    permanent kind (tools.errors.PERMANENT_KINDS: the input itself is corrupt, empty, ...; the stage cache
    keeps those too), and every judgment and rejection. A candidate whose point (``cfg.per_point``) or run
    (``cfg.budgets.max_videos``) has no free slot left goes back to ``accepted_meta`` and waits for one.
    Returns how many were put back per ``"NODE KIND"``."""
    cands = store.candidates(run_id)
    held: Counter[str] = Counter(c["point_id"] for c in cands if c["status"] in HOLDS_SLOT)
    budget = cfg.budgets.max_videos
    retried: Counter[str] = Counter()
    for c in cands:
        if c["status"] != Status.ERROR:
            continue
        node, _, kind = (c["reason"] or "").partition(": ")
        status = RESUME_AT.get(node)
        if status is None or kind in PERMANENT_KINDS:
            continue
        if status in IN_FLIGHT:
            if held[c["point_id"]] >= cfg.per_point or (budget is not None and sum(held.values()) >= budget):
                status = Status.METADATA_ACCEPTED
            else:
                held[c["point_id"]] += 1
        store.update_candidate(run_id, c["video_id"], status=status, reason=None)
        if store.run_video(run_id, c["video_id"]) is not None:
            store.update_run_video(run_id, c["video_id"], status=Status.PENDING, reason=None)
        retried[f"{node} {kind or 'internal'}"] += 1
    return retried


def startable(store, run_id: str, cfg, rank=None, busy: set[str] | frozenset = frozenset()) -> list[dict]:
    """The candidates to start now (none of ``busy``, the running ones): those left in flight by a
    killed run first, then per point the best-ranked (``rank``: a sort key) metadata-accepted ones while
    the point (``cfg.per_point``) and the run's video budget (``cfg.budgets.max_videos``) have slots."""
    cands = store.candidates(run_id)
    start = [c for c in cands if c["status"] in IN_FLIGHT and c["video_id"] not in busy]
    held: Counter[str] = Counter()
    for c in cands:
        if c["status"] in HOLDS_SLOT or c["video_id"] in busy:
            held[c["point_id"]] += 1
    budget = cfg.budgets.max_videos
    slots = None if budget is None else budget - sum(held.values())
    waiting = [c for c in cands if c["status"] == Status.METADATA_ACCEPTED and c["video_id"] not in busy]
    for c in sorted(waiting, key=rank) if rank else waiting:
        if slots is not None and slots <= 0:
            break
        if held[c["point_id"]] >= cfg.per_point:
            continue
        held[c["point_id"]] += 1
        if slots is not None:
            slots -= 1
        start.append(c)
    return start


def has_work(store, run_id: str, cfg) -> bool:
    """True when a call of the flow would move some candidate: one unjudged, one in flight, or one
    metadata-accepted with a free slot (what a human's review can release)."""
    if store.candidates(run_id, Status.FOUND):
        return True
    return bool(startable(store, run_id, cfg))
