"""A whole build against the OpenAI-compatible stand-in over real HTTP (agents/standin.py): requests in
flight, faults retried, a video whose answers are garbage fails alone, the run finishes."""

from __future__ import annotations

from pathlib import Path

import pytest

from agents.build import BuildSpec, run_build
from agents.config import AgentConfig, LLMConfig, TaxonomySize
from agents.standin import Fault, StandIn
from bench._videos import tiny_clips
from pipeline.config import PipelineConfig
from store import open_store

pytestmark = pytest.mark.slow  # a real build: HTTP, ffmpeg, probe of a dozen clips
CLIPS = 12


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> Path:
    """CLIPS distinct one-second silent clips, each with its own title (they are judged, then dropped by
    the probe rules: no audio), so every metadata judgment can be in flight at once."""
    folder = tmp_path_factory.mktemp("clips")
    tiny_clips(folder, CLIPS, "newton", lambda i: {
        "title": f"Newton's laws of motion, part {i}", "subject": "physics",
        "description": f"Forces and motion, lesson code L{i:02d}Q."})  # shown to the metadata judge only
    return folder


def test_the_build_keeps_requests_in_flight_and_faults_are_items(clips, tmp_path):
    faults = [Fault("429", requests=(4,), retry_after_s=0.5), Fault("503", requests=(5,)),
              Fault("timeout", requests=(6,), delay_s=5), Fault("garbage", match="code L07Q")]
    with StandIn(latency_s=0.5, faults=faults) as srv:
        llm = LLMConfig(base_url=srv.base_url, model="standin", structured="json_schema", timeout_s=2,
                        backoff_s=0.1)
        agent = AgentConfig(llm=llm, sources=[f"local:{clips}"], library_points=False, max_rounds=1,
                            taxonomy=TaxonomySize(courses=1, subcourses=1, points=1), results_per_query=CLIPS,
                            min_relevance=0.0, min_fit=0.0, on_invalid="fail", enforce_judges="yes")
        store = open_store(tmp_path / "standin.duckdb")
        try:
            result = run_build(store, BuildSpec("build a physics textbook", agent, PipelineConfig(), tmp_path / "out"))
            cands = {c["metadata"]["title"]: c for c in store.candidates(result["run_id"])}
            calls = store.llm_calls(result["run_id"])
        finally:
            store.close()
        peak, fired = srv.peak, dict(srv.fired)
    assert len(cands) == CLIPS
    assert peak >= 8  # the metadata judgments of a dozen videos at once (default concurrency 16)
    assert fired == {"429": 1, "503": 1, "timeout": 1, "garbage": fired.get("garbage", 0)} and fired["garbage"] >= 1
    garbage = cands["Newton's laws of motion, part 7"]
    assert garbage["status"] == "error" and garbage["reason"] == "judge_metadata: invalid_output"
    assert result["failed"] == [{"video_id": garbage["video_id"], "node": "judge_metadata", "kind": "invalid_output",
                                 "message": result["failed"][0]["message"]}]
    others = [c for t, c in cands.items() if t != garbage["metadata"]["title"]]
    # every other video was judged (the 429, the 503 and the timeout were re-sent) and went its way:
    # the probe rules drop a one-second silent clip
    assert all(c["status"] in ("accepted_meta", "rejected") for c in others)
    reasons = {c["reason"] for c in others if c["status"] == "rejected"}
    assert reasons and reasons <= {"too_short", "no_audio"}
    assert not [c for c in calls if c["error"] and c["node"] != "judge_metadata"]


def test_a_truncated_download_is_flagged_in_the_build(tmp_path, capsys):
    """Issue 20: a half download (index first, cut at 55% of its bytes) found by a build is taken at what
    decodes, and its `truncated` warning is in the build's result, its printed summary and its trace."""
    import json
    import subprocess

    from textbook.cli_agent import _print_build

    folder = tmp_path / "found"
    folder.mkdir()
    whole = tmp_path / "whole.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "testsrc=size=160x120:rate=10:duration=30",
                    "-c:v", "libx264", "-g", "20", "-pix_fmt", "yuv420p", "-movflags", "+faststart", str(whole)],
                   check=True)
    data = whole.read_bytes()
    (folder / "newton_half.mp4").write_bytes(data[:int(len(data) * 0.55)])
    (folder / "newton_half.json").write_text(json.dumps({"title": "Newton's laws of motion", "subject": "physics"}))
    with StandIn(latency_s=0.0) as srv:
        llm = LLMConfig(base_url=srv.base_url, model="standin", structured="json_schema", timeout_s=5)
        agent = AgentConfig(llm=llm, sources=[f"local:{folder}"], library_points=False, max_rounds=1,
                            taxonomy=TaxonomySize(courses=1, subcourses=1, points=1), min_relevance=0.0,
                            min_fit=0.0, enforce_judges="yes")
        store = open_store(tmp_path / "build.duckdb")
        try:
            result = run_build(store, BuildSpec("build a physics textbook", agent, PipelineConfig(), tmp_path / "out"))
            (cand,) = store.candidates(result["run_id"])
            video = store.video(cand["video_id"])
            events = [e for e in store.events(result["run_id"], "probe") if e["decision"] == "warning"]
        finally:
            store.close()
    assert 14 < video["duration"] < 19 and video["header_duration"] == 30.0  # about 55% of the half minute
    # it has no audio track: the probe rules drop it after the warning (the policy keeps what decodes)
    assert (cand["status"], cand["reason"]) == ("rejected", "no_audio")
    (warned,) = result["warnings"]
    assert (warned["video_id"], warned["kind"], warned["status"]) == (cand["video_id"], "truncated", "rejected")
    assert warned["message"] == f"the file ends early: {video['duration']:.1f}s decode of the 30.0s its header claims"
    assert [json.loads(e["reasons"]) for e in events] == [[f"truncated: {warned['message']}",
                                                           "filters.truncated = keep: what decodes is used"]]
    _print_build(result, None)
    shown = capsys.readouterr().out
    assert f"warnings: 1 (truncated 1); in the trace: textbook trace {result['run_id']} --node probe" in shown
    assert f"{cand['video_id']} (rejected): truncated: {warned['message']}" in shown
