"""The build's per-video flow (pipeline/flow.py with agents/stages.py and agents/slots.py): same samples as
`process`, slots filled in rank order, faults as items."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from agents.build import BuildSpec, run_build
from agents.config import AgentConfig, LLMConfig
from agents.slots import SlotAdmission, retry_failed, startable
from pipeline.config import PipelineConfig
from pipeline.records import Status
from pipeline.runner import Runner
from pipeline.stats import search_funnel
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


@pytest.mark.parametrize("max_videos", [None, 3, 4])
def test_the_admission_starts_what_startable_would_as_videos_leave(tmp_path, max_videos):
    """SlotAdmission keeps the slot rule up to date as videos leave (no whole re-read): at every step it
    starts exactly what startable() gives for the same store and running set, in the same order."""
    store = open_store(tmp_path / "admission.duckdb")
    try:
        run = "build-admission"
        rows = [(f"v{i:02d}", f"p{i % 4}", Status.METADATA_ACCEPTED) for i in range(20)]
        rows += [("w00", "p1", Status.TRANSCRIBED), ("w01", "p2", Status.ACCEPTED), ("w02", "p3", Status.REJECTED)]
        for vid, point, status in rows:
            store.add_candidate(run, vid, point, "local", f"file:///{vid}", "q", 1, {"title": vid})
            store.update_candidate(run, vid, status=str(status))
        order = {vid: (i * 7) % 23 for i, (vid, _, _) in enumerate(rows)}  # a rank unlike the ids' order
        rank = lambda c: order[c["video_id"]]  # noqa: E731
        cfg = AgentConfig(per_point=2, budgets={"max_videos": max_videos})
        admission = SlotAdmission(store, run, cfg, [], lambda c: c["video_id"], rank)
        running: set[str] = set()
        outcomes = [Status.REJECTED, Status.ACCEPTED, Status.ERROR, Status.TRANSCRIPT_REJECTED]
        for step in range(30):
            expected = [c["video_id"] for c in startable(store, run, cfg, rank, running)]
            got = [vid for vid, _ in admission.start(running)]
            assert got == expected, step
            running |= set(got)
            if not running:
                break
            leaving = sorted(running, key=lambda v: order[v])[0]  # the best-ranked running video leaves
            store.update_candidate(run, leaving, status=str(outcomes[step % len(outcomes)]))
            running.discard(leaving)
        assert step > 5
    finally:
        store.close()


def test_a_rerun_puts_failed_videos_back_where_they_failed_and_leaves_judgments(tmp_path):
    """retry_failed(): each failed candidate goes back to the status before its node (its point's slot
    taken: accepted_meta, to wait for one); permanent kinds, rejections and judgments stay as they are."""
    store = open_store(tmp_path / "retry.duckdb")
    try:
        run = "build-retry"
        rows = [("a", "p1", "error", "visuals: internal"), ("b", "p1", "error", "judge_metadata: timeout"),
                ("c", "p2", "error", "clips: server_error"), ("d", "p2", "accepted", None),
                ("e", "p3", "error", "transcribe: corrupt"), ("f", "p3", "rejected", "silent"),
                ("g", "p3", "judged_out", "off topic"), ("h", "p4", "error", "download: network"),
                ("i", "p4", "transcript_rejected", "both transcript judges")]
        for vid, point, status, reason in rows:
            store.add_candidate(run, vid, point, "local", f"file:///{vid}", "q", 1, {"title": vid})
            store.update_candidate(run, vid, status=status, reason=reason)
        store.update_run_video(run, "a", status=Status.ERROR, reason="internal")
        retried = retry_failed(store, run, AgentConfig(per_point=1))
        assert retried == {"visuals internal": 1, "judge_metadata timeout": 1, "clips server_error": 1,
                           "download network": 1}
        assert {c["video_id"]: (c["status"], c["reason"]) for c in store.candidates(run)} == {
            "a": ("judged", None), "b": ("found", None),
            "c": ("accepted_meta", None),  # p2's one slot went to d meanwhile: c waits for a slot
            "d": ("accepted", None), "e": ("error", "transcribe: corrupt"), "f": ("rejected", "silent"),
            "g": ("judged_out", "off topic"), "h": ("accepted_meta", None),
            "i": ("transcript_rejected", "both transcript judges")}
        assert (store.run_video(run, "a")["status"], store.run_video(run, "a")["reason"]) == ("pending", None)
        assert retry_failed(store, run, AgentConfig(per_point=1)) == {}  # nothing failed any more
    finally:
        store.close()


def _broken_display_matrix(frame):
    raise TypeError("'Type' object is not subscriptable")  # PyAV 18.1.1 under the old tools/keyframes.py


def test_a_crashing_heavy_step_fails_the_video_and_the_same_build_after_the_fix_completes_it(
        two_lessons, tmp_path, monkeypatch, capsys):
    """The keyframe detector raises (not a ToolError): the video is ``error`` with ``keyframes: internal``, a
    ``failed`` entry and a short point that says failed, never a rejection. The same build once the fault is
    gone retries that video from where it failed, pays no LLM call for what was already judged, and leaves
    the metadata judge's rejection as it was."""
    import tools.keyframes
    from agents.llm import BudgetExceeded, LLMUnavailable
    from tests.agents.scripted import fenced
    from textbook.cli_agent import _print_build
    from tools.errors import RunStopped

    assert issubclass(BudgetExceeded, RunStopped) and issubclass(LLMUnavailable, RunStopped)

    def no_chemistry(t):  # the metadata judge rejects the chemistry lesson wherever it is placed
        title = (fenced(t, "title") or "").lower()
        if "atom" in title:
            return {"verdict": "reject", "score": 2, "reasons": ["not physics"]}
        return {"verdict": "accept", "score": 8, "reasons": ["a lesson"]}

    store = open_store(tmp_path / "faults.duckdb")
    agent = AgentConfig(llm=LLMConfig(model="scripted-faults"), sources=[f"local:{two_lessons}"],
                        library_points=False, results_per_query=1, max_rounds=1)
    spec = BuildSpec("build a physics textbook", agent, PipelineConfig(), tmp_path / "out")
    try:
        with monkeypatch.context() as m:
            m.setattr(tools.keyframes, "_display_matrix", _broken_display_matrix)
            first_model = ScriptedChatModel(script=physics_script(MetadataVerdict=no_chemistry))
            first = run_build(store, spec, models=models_for(first_model))
        run = first["run_id"]
        cands = {c["video_id"].split("-")[0]: c for c in store.candidates(run)}
        newton = next(c for c in store.candidates(run) if "newton" in c["video_id"])
        chem = next(c for c in store.candidates(run) if "atoms" in c["video_id"])
        assert (newton["status"], newton["reason"]) == ("error", "keyframes: internal"), cands
        assert chem["status"] == "judged_out"
        assert first["accepted_videos"] == 0 and first["candidates"].get("rejected") is None
        [failed] = first["failed"]
        assert (failed["video_id"], failed["node"], failed["kind"]) == (newton["video_id"], "keyframes", "internal")
        assert failed["message"] == "TypeError: 'Type' object is not subscriptable"
        why = {s["point"]: s["why"] for s in first["short_points"]}
        assert why["Newton's laws of motion"].startswith("failed: 1 of 1 videos failed"), why
        assert why["Atoms and molecules"].startswith("all judged out"), why
        assert search_funnel(store, run)["lost"] == {"failed:keyframes: internal": 1, "judged_out": 1}
        decisions = [e["decision"] for e in store.events(run, video_id=newton["video_id"]) if e["decision"]]
        assert "failed" in decisions and "rejected" not in decisions
        _print_build(first, None)
        printed = capsys.readouterr().out
        assert "failed: 1 video (keyframes internal 1)" in printed and "retried" not in printed, printed
        paid = {c["cache_key"] for c in store.llm_calls(run) if not c["cached"] and not c["error"]}

        # the fault is gone (a fixed PyAV): the same command again
        second_model = ScriptedChatModel(script=physics_script(MetadataVerdict=no_chemistry))
        second = run_build(store, spec, models=models_for(second_model))
        assert second["run_id"] == run and second["retried"] == {"keyframes internal": 1}
        assert second["failed"] == [] and second["accepted_videos"] == 1 and second["samples"] > 0
        assert {c["video_id"]: c["status"] for c in store.candidates(run)} == {
            newton["video_id"]: "accepted", chem["video_id"]: "judged_out"}
        # the model is asked only what was never answered: the retried video's rewrites and clip judgments
        assert {r["tool"] for r in second_model.requests} == {"Polished", "ClipDecision"}
        again = [c["cache_key"] for c in store.llm_calls(run) if not c["cached"] and not c["error"]]
        assert len(again) == len(set(again)) and paid <= set(again)  # nothing paid twice
        assert {c["node"] for c in store.llm_calls(run) if not c["cached"] and c["cache_key"] not in paid} \
            <= {"polish", "clips"}
        _print_build(second, None)
        assert f"{run}: retried 1 video that failed in the last run of this command (keyframes internal 1)" in \
            capsys.readouterr().out

        third_model = ScriptedChatModel(script=physics_script(MetadataVerdict=no_chemistry))
        third = run_build(store, spec, models=models_for(third_model))
        assert third["retried"] == {} and third["accepted_videos"] == 1 and third_model.requests == []
    finally:
        store.close()


def test_a_download_that_keeps_failing_on_the_network_is_a_failure_the_rerun_retries(tmp_path, monkeypatch):
    """A transient download fault that outlived its re-tries (network) is ``error`` (``download: network``),
    not ``download_failed`` (which says the video cannot be had: private, removed, ...); the same build
    later downloads it and completes it."""
    import tools.download
    from tools.download import DownloadError

    def offline(url, *args, **kwargs):
        raise DownloadError("network", "Unable to download webpage: [Errno 101] Network is unreachable", 4)

    lessons = tmp_path / "in"
    lessons.mkdir()
    for suffix in (".mp4", ".json"):
        shutil.copy(LESSONS / f"physics_newton{suffix}", lessons / f"physics_newton{suffix}")
    store = open_store(tmp_path / "offline.duckdb")
    agent = AgentConfig(llm=LLMConfig(model="scripted-offline"), sources=[f"local:{lessons}"],
                        library_points=False, results_per_query=1, max_rounds=1, polish=False, clip_judge="rules")
    spec = BuildSpec("build a physics textbook", agent, PipelineConfig(), tmp_path / "out")
    try:
        with monkeypatch.context() as m:
            m.setattr(tools.download, "download", offline)
            first = run_build(store, spec, models=models_for(ScriptedChatModel(script=physics_script())))
        run = first["run_id"]
        status = {c["video_id"].split("-")[0]: (c["status"], c["reason"]) for c in store.candidates(run)}
        assert status == {"physics_newton": ("error", "download: network")}
        assert [(f["node"], f["kind"]) for f in first["failed"]] == [("download", "network")]
        assert first["short_points"][0]["why"].startswith("failed: 1 of 1 videos failed")
        model = ScriptedChatModel(script=physics_script())
        second = run_build(store, spec, models=models_for(model))
        assert second["retried"] == {"download network": 1} and second["failed"] == []
        assert second["accepted_videos"] == 1 and {r["tool"] for r in model.requests} == {"TranscriptVerdict"}
    finally:
        store.close()
