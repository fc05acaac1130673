"""The build's per-video flow (agents/flow.py): same samples as `process`, slots filled in rank order."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from agents.build import BuildSpec, run_build
from agents.config import AgentConfig, LLMConfig
from agents.flow import startable
from pipeline.config import PipelineConfig
from pipeline.records import Status
from pipeline.runner import Runner
from store import open_store
from tests.agents.scripted import ScriptedChatModel, models_for, physics_script

LESSONS = Path(__file__).resolve().parents[1] / "data" / "lessons"
pytestmark = pytest.mark.slow  # real ASR, keyframes and OCR of two lessons


@pytest.fixture(scope="module")
def two_lessons(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("two")
    for name in ("chemistry_atoms", "physics_newton"):
        for suffix in (".mp4", ".json"):
            shutil.copy(LESSONS / f"{name}{suffix}", folder / f"{name}{suffix}")
    return folder


def _by_video(samples: list[dict]) -> dict[str, list[tuple]]:
    """Each video's interleaved positions (image file name or text), whatever the packing order."""
    out: dict[str, list[tuple]] = {}
    for s in samples:
        for img, text, meta in zip(s["images"], s["texts"], s["metadata"], strict=True):
            vid = (meta or {}).get("video_id") or Path(img or "").parent.name
            out.setdefault(vid, []).append((Path(img).name if img else None, text))
    return out


def test_build_and_process_give_the_same_samples(two_lessons, tmp_path):
    """Same videos, same policies (judges accept, no rewrite, clip decisions by the rules alone): the
    build's samples hold the same keyframes and texts per video as `process` writes."""
    store = open_store(tmp_path / "same.duckdb")
    try:
        processed = Runner(store, PipelineConfig(), tmp_path / "process").run([two_lessons])
        assert processed.samples > 0
        by_process = _by_video(store.samples(processed.run_id))
        agent = AgentConfig(llm=LLMConfig(model="scripted-same"), sources=[f"local:{two_lessons}"],
                            library_points=False, results_per_query=1, max_rounds=1, polish=False,
                            clip_judge="rules")
        built = run_build(store, BuildSpec("build a physics textbook", agent, PipelineConfig(), tmp_path / "build"),
                          models=models_for(ScriptedChatModel(script=physics_script())))
        assert built["accepted_videos"] == 2 and not built["failed"]
        by_build = _by_video(store.samples(built["run_id"]))
    finally:
        store.close()
    assert len(by_process) == 2 and all(by_process.values())
    assert by_build == by_process


@pytest.mark.parametrize("max_videos, first", [(None, ["d", "c", "a", "e"]), (3, ["d", "c", "a"])])
def test_slots_go_in_rank_order_and_refill_when_a_video_drops(tmp_path, max_videos, first):
    """startable(): videos left in flight first; then each point's best-ranked accepted videos while it
    has slots (per_point 2); the run's video budget caps the total; a drop frees its slot for the next."""
    store = open_store(tmp_path / "slots.duckdb")
    try:
        run = "build-slots"
        for vid, point, status in [("a", "p1", Status.METADATA_ACCEPTED), ("b", "p1", Status.METADATA_ACCEPTED),
                                   ("c", "p1", Status.METADATA_ACCEPTED), ("d", "p2", Status.TRANSCRIBED),
                                   ("e", "p2", Status.METADATA_ACCEPTED), ("f", "p3", Status.REJECTED)]:
            store.add_candidate(run, vid, point, "local", f"file:///{vid}", "q", 1, {"title": vid})
            store.update_candidate(run, vid, status=str(status))
        order = {"c": 0, "a": 1, "b": 2, "e": 3}
        cfg = AgentConfig(per_point=2, budgets={"max_videos": max_videos})

        def ids(busy=frozenset()):
            return [c["video_id"] for c in startable(store, run, cfg, lambda c: order[c["video_id"]], busy)]

        assert ids() == first
        assert ids(set(first)) == []  # every slot is taken by a running video
        store.update_candidate(run, "a", status=str(Status.TRANSCRIPT_REJECTED))
        assert ids(set(first) - {"a"}) == ["b"]  # a dropped: its slot (and its share of the budget) goes to b
    finally:
        store.close()
