"""pipeline.flow.Flow, the one scheduler of process and build, with scripted stages: a video moves to its
next stage as soon as it can, lanes bound what runs at once, a drop ends a video's chain, a fault is
that video's failure, a RunStopped stops the flow, an Admission refills as videos leave."""

from __future__ import annotations

import threading
import time
from collections import Counter

import pytest

from pipeline.flow import Flow
from pipeline.records import Status, Video
from pipeline.stage import Drop, Needs, Stage
from tools.errors import RunStopped

VIDEOS = [Video(video_id=f"v{i}", source=f"/nowhere/v{i}.mp4") for i in range(5)]


class Scripted(Stage):
    """A stage whose ``step`` records what ran (and when), and drops, fails or stops where told."""

    def __init__(self, name: str, lane: str | None, log: list, lock: threading.Lock, seconds: float = 0.02,
                 drop: set[str] = frozenset(), fail: set[str] = frozenset(), stop: set[str] = frozenset()):
        self.name, self.needs, self.passed = name, Needs(lane=lane), None
        self.log, self.lock, self.seconds = log, lock, seconds
        self.drop, self.fail, self.stop = drop, fail, stop
        self.inside, self.peak = 0, 0

    def step(self, video: Video) -> Video | Drop:
        with self.lock:
            self.inside += 1
            self.peak = max(self.peak, self.inside)
            self.log.append((self.name, video.video_id, "start", time.monotonic()))
        try:
            time.sleep(self.seconds)
            if video.video_id in self.stop:
                raise RunStopped("budget spent")
            if video.video_id in self.fail:
                raise RuntimeError("disk full")
            if video.video_id in self.drop:
                return Drop(Status.REJECTED, "silent")
            return video
        finally:
            with self.lock:
                self.inside -= 1
                self.log.append((self.name, video.video_id, "end", time.monotonic()))


class Ledger:
    def __init__(self):
        self.passed_, self.dropped_, self.failed_ = Counter(), [], []

    def passed(self, video, stage):
        self.passed_[stage.name] += 1

    def dropped(self, video, stage, drop):
        self.dropped_.append((video.video_id, stage.name, drop.reason))

    def failed(self, video, stage, exc):
        self.failed_.append((video.video_id, stage.name, str(exc)))
        return Drop(Status.ERROR, "internal", str(exc))


class Reporter:
    def __init__(self):
        self.totals, self.done = {}, Counter()

    def stage(self, name, total):
        self.totals[name] = total

    def advance(self, name):
        self.done[name] += 1


def _stages(log, lock, **kw):
    asr = Scripted("asr", "asr", log, lock, seconds=0.05, **kw.pop("asr", {}))
    kf = Scripted("keyframes", "visual", log, lock, seconds=0.05, **kw.pop("keyframes", {}))
    ocr = Scripted("ocr", "visual", log, lock, seconds=0.01, **kw.pop("ocr", {}))
    return [Scripted("probe", None, log, lock, seconds=0.0), asr, kf, ocr]


def _first(log, stage, vid, what):
    return next(t for s, v, w, t in log if (s, v, w) == (stage, vid, what))


def test_asr_of_one_video_overlaps_the_visual_work_of_another_within_the_lanes():
    log, lock = [], threading.Lock()
    stages = _stages(log, lock)
    reporter = Reporter()
    result = Flow(stages, limits={"asr": 1, "visual": 1}, workers=3, reporter=reporter).run(VIDEOS)
    assert [v.video_id for v in result.passed] == [v.video_id for v in VIDEOS]
    asr, kf, ocr = stages[1:]
    assert asr.peak == 1 and max(kf.peak, ocr.peak) == 1  # the lanes' bounds hold
    # some ASR ran while some keyframes ran (the two lanes overlap)
    assert any(_first(log, "asr", f"v{i + 1}", "start") < _first(log, "keyframes", f"v{i}", "end")
               for i in range(len(VIDEOS) - 1))
    for v in VIDEOS:  # a video's keyframes start only after its transcript
        assert _first(log, "asr", v.video_id, "end") <= _first(log, "keyframes", v.video_id, "start")
    assert reporter.totals == dict.fromkeys(("probe", "asr", "keyframes", "ocr"), len(VIDEOS))
    assert reporter.done == reporter.totals


def test_a_drop_ends_the_chain_counts_the_later_stages_done_and_keeps_the_order():
    log, lock = [], threading.Lock()
    ledger, reporter = Ledger(), Reporter()
    stages = _stages(log, lock, asr={"drop": {"v1"}})
    result = Flow(stages, limits={"asr": 1, "visual": 1}, workers=3, ledger=ledger, reporter=reporter).run(VIDEOS)
    assert [v.video_id for v in result.passed] == ["v0", "v2", "v3", "v4"]
    assert ("keyframes", "v1") not in {(s, v) for s, v, _, _ in log}
    assert ledger.dropped_ == [("v1", "asr", "silent")]
    assert result.dropped == {"asr": Counter({"silent": 1})} and result.outcomes["rejected"] == 1
    assert reporter.done == reporter.totals  # the dropped video counts as done in keyframes and ocr too


def test_a_fault_in_a_stage_fails_that_video_and_the_others_go_on():
    log, lock = [], threading.Lock()
    ledger = Ledger()
    stages = _stages(log, lock, keyframes={"fail": {"v0"}})
    result = Flow(stages, limits={"asr": 1, "visual": 1}, workers=3, ledger=ledger).run(VIDEOS)
    assert [v.video_id for v in result.passed] == ["v1", "v2", "v3", "v4"]
    assert ledger.failed_ == [("v0", "keyframes", "disk full")]
    assert ("ocr", "v0") not in {(s, v) for s, v, _, _ in log}
    assert result.outcomes == Counter({"passed": 4, "error": 1})


def test_a_run_stopped_stops_the_flow_running_videos_stop_before_their_next_stage():
    log, lock = [], threading.Lock()
    stages = _stages(log, lock, asr={"stop": {"v1"}})
    flow = Flow(stages, limits={"asr": 1, "visual": 1}, workers=1)
    with pytest.raises(RunStopped, match="budget spent"):
        flow.run(VIDEOS)
    started = {v for s, v, w, _ in log if s == "probe"}
    assert started == {"v0", "v1"}  # one video at a time: nothing started after the stop
    assert ("keyframes", "v1") not in {(s, v) for s, v, _, _ in log}


def test_an_admission_is_asked_again_as_videos_leave():
    """Slots: two at a time; a video that drops frees its slot for the next in line at once."""
    log, lock = [], threading.Lock()
    stages = _stages(log, lock, asr={"drop": {"v0"}})

    class TwoSlots:
        def __init__(self):
            self.waiting, self.asked, self.peak = list(VIDEOS), 0, 0

        def start(self, running):
            self.asked += 1
            free = 2 - len(running)
            out, self.waiting = self.waiting[:free], self.waiting[free:]
            self.peak = max(self.peak, len(running) + len(out))
            return [(v, 0) for v in out]

    slots = TwoSlots()
    result = Flow(stages, limits={"asr": 1, "visual": 1}, workers=4).admit(slots)
    assert sorted(v.video_id for v in result.passed) == ["v1", "v2", "v3", "v4"]
    assert slots.asked >= len(VIDEOS) and slots.peak == 2  # refilled as each left, never more than two in


def test_an_admission_can_start_a_video_at_a_later_stage():
    log, lock = [], threading.Lock()
    stages = _stages(log, lock)

    class Resume:
        done = False

        def start(self, running):
            if self.done:
                return []
            self.done = True
            return [(VIDEOS[0], 2)]  # transcribed before: keyframes next

    result = Flow(stages, limits={"asr": 1, "visual": 1}, workers=2).admit(Resume())
    assert [v.video_id for v in result.passed] == ["v0"]
    assert [s for s, _, w, _ in log if w == "start"] == ["keyframes", "ocr"]
