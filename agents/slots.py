"""The build's slot rule: which metadata-accepted candidates may start down the per-video stages now.

Each knowledge point has ``agent.per_point`` slots; its metadata-accepted videos take them in rank order
(judge score, then fit, then id). A video on its way (downloaded .. visuals), waiting for a human's
transcript verdict, or accepted holds its point's slot; one that drops frees it, and the next in rank
starts at once (``SlotAdmission``, asked by pipeline.flow.Flow whenever a video leaves the flow).

Determinism: a point's slots are filled strictly in rank order and refilled only when a started video
drops, so the videos a point ends with are the first ``per_point`` in rank order that pass, whatever the
timing (with a global ``max_videos`` budget, which point gets the last slots can depend on timing).
Resume: a candidate's status is the last stage it passed, so a killed build continues each video at the
stage after it. A failure is not a result: the same command again puts each failed candidate back where
it stood before the stage that failed (``retry_failed``).
"""

from __future__ import annotations

import heapq
from collections import Counter, deque
from collections.abc import Callable, Sequence

from pipeline.records import Status, Video
from pipeline.stage import Stage
from tools.errors import PERMANENT_KINDS

# statuses of a video on its way through the stages (each stage's ``passed`` but the last): each holds a
# slot of its knowledge point
IN_FLIGHT = (Status.DOWNLOADED, Status.PROBED, Status.TRANSCRIBED, Status.TRANSCRIPT_ACCEPTED, Status.KEYFRAMES,
             Status.VISUALS)
HOLDS_SLOT = (*IN_FLIGHT, Status.REVIEW_TRANSCRIPT, Status.ACCEPTED)


# the status a candidate that failed in a stage had before it: where a rerun picks it up again (the
# stage before's ``passed``; "transcribe" and "visuals" are the nodes of builds before the one flow)
RESUME_AT = {"judge_metadata": Status.FOUND, "download": Status.METADATA_ACCEPTED, "probe": Status.DOWNLOADED,
             "asr": Status.PROBED, "judge_transcripts": Status.TRANSCRIBED, "keyframes": Status.TRANSCRIPT_ACCEPTED,
             "ocr": Status.KEYFRAMES, "clips": Status.VISUALS,
             "transcribe": Status.DOWNLOADED, "visuals": Status.TRANSCRIPT_ACCEPTED}


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


def start_index(stages: Sequence[Stage], status: str) -> int:
    """The index in ``stages`` of the stage a candidate of ``status`` runs next: the one after the stage
    whose ``passed`` it is (0 for a metadata-accepted one)."""
    for i, stage in enumerate(stages):
        if stage.passed == status:
            return i + 1
    return 0


class SlotAdmission:
    """The build's admission to the flow (pipeline.flow.Admission): the slot rule of ``startable``, kept up to
    date as videos leave instead of re-read whole, so a call costs what changed (a read per video that left,
    a heap of the points with room), not the whole run (issue 19: 20,000 candidates). ``to_video``: a
    candidate row -> Video; ``rank``: a sort key (None: the store's order). The candidates started are those
    ``startable`` would give, in the same order: those left in flight first, then the best-ranked waiting
    candidate of any point with room, while the run's video budget has slots."""

    def __init__(self, store, run_id: str, cfg, stages: Sequence[Stage], to_video: Callable[[dict], Video],
                 rank=None):
        self.store, self.run_id, self.cfg, self.stages = store, run_id, cfg, stages
        self.to_video, self.rank = to_video, rank
        self.held: Counter[str] | None = None

    def _load(self) -> None:
        cands = self.store.candidates(self.run_id)
        order = {c["video_id"]: i for i, c in enumerate(cands)}
        self.key = self.rank or (lambda c: order[c["video_id"]])
        self.point = {c["video_id"]: c["point_id"] for c in cands}
        self.held = Counter(c["point_id"] for c in cands if c["status"] in HOLDS_SLOT)
        self.total = sum(self.held.values())
        self.resume = [c for c in cands if c["status"] in IN_FLIGHT]
        self.queues: dict[str, deque] = {}
        for c in sorted((c for c in cands if c["status"] == Status.METADATA_ACCEPTED), key=self.key):
            self.queues.setdefault(c["point_id"], deque()).append(c)
        self.heap: list = []
        self.offered: set[str] = set()
        self.running: set[str] = set()
        for p in self.queues:
            self._offer(p)

    def _offer(self, point: str) -> None:
        """Put the point's best waiting candidate on the heap when the point has room (once)."""
        q = self.queues.get(point)
        if point not in self.offered and q and self.held[point] < self.cfg.per_point:
            heapq.heappush(self.heap, (self.key(q[0]), point))
            self.offered.add(point)

    def start(self, running: set[str]) -> list[tuple[Video, int]]:
        """The candidates to start now (none of ``running``), with their first stage's index."""
        if self.held is None:
            self._load()
        for vid in self.running - set(running):  # left the flow since the last call: a slot freed?
            if self.store.candidate_status(self.run_id, vid) not in HOLDS_SLOT:
                self.held[self.point[vid]] -= 1
                self.total -= 1
                self._offer(self.point[vid])
        out, self.resume = self.resume, []
        budget = self.cfg.budgets.max_videos
        while self.heap and (budget is None or self.total < budget):
            _, point = heapq.heappop(self.heap)
            self.offered.discard(point)
            out.append(self.queues[point].popleft())
            self.held[point] += 1
            self.total += 1
            self._offer(point)
        self.running = set(running) | {c["video_id"] for c in out}
        return [(self.to_video(c), start_index(self.stages, c["status"])) for c in out]
