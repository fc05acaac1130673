"""Runner.overlapped: ASR of the next video runs while keyframes and OCR of the previous one do, with
the same gating as the stages one after another (no visual work for a video ASR drops), and a fault
that ends the run stops the ASR lane after its video in progress."""

from __future__ import annotations

import threading

import pytest

from pipeline.config import PipelineConfig
from pipeline.runner import Runner
from pipeline.stages import AsrStage, KeyframesStage, OcrStage
from store.db import open_store

VIDEOS = [{"video_id": f"v{i}", "source": f"/nowhere/v{i}.mp4"} for i in range(4)]


@pytest.fixture
def runner(tmp_path):
    store = open_store(tmp_path / "runs.duckdb")
    yield Runner(store, PipelineConfig(), tmp_path / "out")
    store.close()


class Lanes:
    """Stand-ins for the three stages' ``run``: they record what ran, on which thread, in which order."""

    def __init__(self, monkeypatch, drop: set[str] = frozenset(), asr_fails: str | None = None,
                 keyframes_fails: str | None = None):
        self.log: list[tuple[str, str, str]] = []
        self.lock = threading.Lock()
        self.asr_started = {v["video_id"]: threading.Event() for v in VIDEOS}
        self.keyframes_tried = {v["video_id"]: threading.Event() for v in VIDEOS}
        self.drop, self.asr_fails, self.keyframes_fails = drop, asr_fails, keyframes_fails
        lanes = self

        def asr(stage, videos, announce=True):
            (v,) = videos
            lanes.asr_started[v["video_id"]].set()
            lanes.note("asr", v)
            prev = int(v["video_id"][1:]) - 1
            if prev >= 0:  # in step with the visual lane: ASR of v(i+1) ends after keyframes of v(i) began
                assert lanes.keyframes_tried[f"v{prev}"].wait(10)
            if v["video_id"] == lanes.asr_fails:
                raise RuntimeError("store gone")
            if v["video_id"] in lanes.drop:
                lanes.keyframes_tried[v["video_id"]].set()  # none will come
                return []
            return [v]

        def keyframes(stage, videos, announce=True):
            (v,) = videos
            nxt = int(v["video_id"][1:]) + 1
            # overlap: the next video's ASR starts before this video's keyframes end
            if nxt < len(VIDEOS) and f"v{nxt}" not in lanes.drop:
                assert lanes.asr_started[f"v{nxt}"].wait(10), "ASR of the next video did not start meanwhile"
            lanes.note("keyframes", v)
            lanes.keyframes_tried[v["video_id"]].set()
            if v["video_id"] == lanes.keyframes_fails:
                raise RuntimeError("disk full")
            return [v]

        def ocr(stage, videos, announce=True):
            lanes.note("ocr", videos[0])
            return list(videos)

        for cls, fn in ((AsrStage, asr), (KeyframesStage, keyframes), (OcrStage, ocr)):
            monkeypatch.setattr(cls, "run", fn)

    def note(self, stage: str, v: dict) -> None:
        with self.lock:
            self.log.append((stage, v["video_id"], threading.current_thread().name))

    def ran(self, stage: str) -> list[str]:
        return [vid for s, vid, _ in self.log if s == stage]


def test_asr_of_the_next_video_overlaps_the_visuals_of_the_previous(runner, monkeypatch):
    lanes = Lanes(monkeypatch)
    assert [v["video_id"] for v in runner.overlapped(VIDEOS)] == ["v0", "v1", "v2", "v3"]
    assert {t for s, _, t in lanes.log if s == "asr"} == {"textbook-asr"}
    assert {t for s, _, t in lanes.log if s != "asr"} == {threading.current_thread().name}
    for v in VIDEOS:  # a video's visuals start only after its transcript
        vid = v["video_id"]
        assert lanes.log.index(("asr", vid, "textbook-asr")) < [x[:2] for x in lanes.log].index(("keyframes", vid))


def test_a_video_asr_drops_gets_no_visual_work_and_order_is_kept(runner, monkeypatch):
    lanes = Lanes(monkeypatch, drop={"v1"})
    assert [v["video_id"] for v in runner.overlapped(VIDEOS)] == ["v0", "v2", "v3"]
    assert lanes.ran("keyframes") == ["v0", "v2", "v3"]
    assert lanes.ran("ocr") == ["v0", "v2", "v3"]


def test_a_fault_in_the_asr_lane_ends_the_run_with_that_error(runner, monkeypatch):
    lanes = Lanes(monkeypatch, asr_fails="v2")
    with pytest.raises(RuntimeError, match="store gone"):
        runner.overlapped(VIDEOS)
    assert lanes.ran("asr") == ["v0", "v1", "v2"]  # nothing after the fault
    assert not any(t.name == "textbook-asr" for t in threading.enumerate())


def test_a_fault_in_the_visual_lane_stops_asr_after_its_video_in_progress(runner, monkeypatch):
    lanes = Lanes(monkeypatch, keyframes_fails="v0")
    with pytest.raises(RuntimeError, match="disk full"):
        runner.overlapped(VIDEOS)
    assert lanes.ran("asr") == ["v0", "v1"]  # v1 was in progress when v0's keyframes failed
    assert lanes.ran("ocr") == []
    assert not any(t.name == "textbook-asr" for t in threading.enumerate())
