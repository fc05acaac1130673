"""`textbook estimate`: the arithmetic on known rates, rates read from a real `textbook process` store,
durations summed by ffprobe, and one-line errors. Expected values are derived from the inputs."""

from __future__ import annotations

import json
import math
import os
import subprocess

import duckdb
import pytest

from agents import estimate as est
from agents.config import ROLES
from tests.conftest import run_cli
from tools.search import UNIT_COST


def _rates(**over) -> est.Rates:
    roles = {r: est.RoleRate(r, 100.0 + 37 * i, 11.0 + 5 * i, f"test {r}") for i, r in enumerate(ROLES)}
    base = dict(
        stages=[est.StageRate("probe", "cpu", "video", 0.7, "t-probe"),
                est.StageRate("asr", "gpu", "media_hour", 40.0, "t-asr-gpu"),
                est.StageRate("asr", "cpu", "media_hour", 900.0, "t-asr-cpu", cores=4),
                est.StageRate("keyframes", "cpu", "media_hour", 120.0, "t-kf"),
                est.StageRate("ocr", "cpu", "keyframe", 0.9, "t-ocr")],
        roles=roles, clips_per_hour=est.Figure(150.0, "t"), keyframes_per_hour=est.Figure(250.0, "t"),
        minutes_per_video=est.Figure(12.0, "t"), metadata_keep=est.Figure(0.8, "t"),
        transcript_keep=est.Figure(0.5, "t"), llm_calls_per_s=est.Figure(25.0, "t"))
    base.update(over)
    return est.Rates(**base)


def test_projection_multiplies_sizes_by_rates():
    rates = _rates()
    sizes = est.Sizes(points=37, found=1234, transcribed=700, kept=333, hours_transcribed=140.5, hours_kept=66.6,
                      clips=9876, keyframes=15432)
    design = est.Design(queries_per_point=2, results_per_query=75, rounds=3, comments=5)
    cluster = est.Cluster(gpus=3, cpu_cores=40, llm_calls_per_s=est.Figure(12.5, "given"), daily_search_units=7000)
    e = est.project(sizes, rates, design, cluster)

    calls = {r.role: r.calls for r in e.roles}
    assert calls == {"planner": 2 + 37 * 3, "metadata_judge": 1234, "transcript_judge_a": 700,
                     "transcript_judge_b": 700, "polisher": 9876, "clip_judge": 9876}
    for r in e.roles:
        assert r.input_tokens == round(r.calls * rates.roles[r.role].input_tokens)
        assert r.output_tokens == round(r.calls * rates.roles[r.role].output_tokens)
    assert e.llm_calls == sum(calls.values())

    pages = math.ceil(75 / 50)
    per_query = pages * (UNIT_COST["search.list"] + UNIT_COST["videos.list"]) + 75 * UNIT_COST["commentThreads.list"]
    assert e.queries == 37 * 2 * 3 and e.search_units == e.queries * per_query
    assert e.search_days == pytest.approx(e.search_units / 7000)

    hours = {s.stage: s for s in e.stages}
    assert hours["asr"].device == "gpu"  # the cluster has GPUs: the GPU rate
    assert hours["asr"].device_hours == pytest.approx(140.5 * 40.0 / 3600)
    assert hours["probe"].device_hours == pytest.approx(700 * 0.7 / 3600)  # per video transcribed
    assert hours["keyframes"].device_hours == pytest.approx(66.6 * 120.0 / 3600)  # kept hours only
    assert hours["ocr"].device_hours == pytest.approx(15432 * 0.9 / 3600)
    cpu = (700 * 0.7 + 66.6 * 120.0 + 15432 * 0.9) / 3600
    assert e.cpu_hours == pytest.approx(cpu) and e.gpu_hours == pytest.approx(140.5 * 40.0 / 3600)
    bounds = {"gpu": e.gpu_hours / 3, "cpu": cpu / 40, "llm": sum(calls.values()) / 12.5 / 3600,
              "search": (math.ceil(e.search_units / 7000) - 1) * 24.0}
    assert e.bounds == pytest.approx(bounds)
    assert e.bottleneck == max(bounds, key=bounds.get) and e.wall_hours == pytest.approx(max(bounds.values()))
    assert e.serial_hours == pytest.approx(sum(bounds.values()))

    # no GPU: ASR on CPU at its rate, counting the worker's cores
    cpu_only = est.project(sizes, rates, design, est.Cluster(0, 40, est.Figure(12.5, "given")))
    asr = next(s for s in cpu_only.stages if s.stage == "asr")
    assert asr.device == "cpu" and asr.device_hours == pytest.approx(140.5 * 900.0 * 4 / 3600)
    assert cpu_only.bounds["gpu"] == 0 and cpu_only.bounds["cpu"] == pytest.approx(cpu_only.cpu_hours / 40)

    # one transcript judge, no rewrite, rules for clips, no YouTube, no model at all
    lean = est.project(sizes, rates, est.Design(transcript_judges=1, polish=False, clip_judge=False, youtube=False),
                       cluster)
    assert {r.role: r.calls for r in lean.roles} == {"planner": 2 + 37, "metadata_judge": 1234,
                                                     "transcript_judge_a": 700, "polisher": 0, "clip_judge": 0}
    assert lean.search_units == 0 and lean.bounds["search"] == 0
    assert est.project(sizes, rates, est.Design(llm=False), cluster).llm_calls == 0


def test_sizes_derived_from_points_and_yields():
    rates = _rates()
    s = est.derive_sizes(rates, points=24, per_point=3, candidates_per_point=10)
    kept = 24 * 3
    transcribed = math.ceil(kept / 0.5)
    assert (s.kept, s.transcribed) == (kept, transcribed)
    assert s.found == max(math.ceil(transcribed / 0.8), 24 * 10)
    assert s.hours_kept == pytest.approx(kept * 12.0 / 60)
    assert s.hours_transcribed == pytest.approx(transcribed * 12.0 / 60)
    assert s.clips == round(s.hours_kept * 150.0) and s.keyframes == round(s.hours_kept * 250.0)
    assert est.derive_sizes(rates, points=24, per_point=3, max_videos=10).kept == 10  # the budget caps it
    # from the videos found: each keep share in turn
    f = est.derive_sizes(rates, found=1000)
    assert f.kept == round(1000 * 0.8 * 0.5) and f.transcribed == math.floor(1000 * 0.8)
    assert "given" in f.sources["found"] and "metadata keep" in f.sources["kept"]


def test_paper_corpus_is_about_8_5_million_calls_and_4_million_captions():
    p = est.PAPER
    cluster = est.Cluster(8, 128, est.Figure(30, "given"))
    e = est.project(est.paper_sizes(), est.default_rates(p["points"]), est.paper_design(visual_filter=False), cluster)
    expected = (2 + p["points"]) + p["found"] + 2 * p["found"] + 2 * p["clips"]
    assert e.llm_calls == expected
    assert 8.4e6 < e.llm_calls < 8.6e6  # issue 19's "about 8.5M LLM calls at our per-clip design"
    # the paper's visual filter captions every clip: 4M calls more, each with the clip's keyframes (6.58M / 4M)
    with_captions = est.project(est.paper_sizes(), est.default_rates(p["points"]), est.paper_design(), cluster)
    [cap] = [r for r in with_captions.roles if r.role == "captioner"]
    assert cap.calls == p["clips"] and with_captions.llm_calls == expected + p["clips"]
    images = p["keyframes"] / p["clips"]
    prompt = cap.input_tokens / p["clips"] - images * est.IMAGE_TOKENS  # the caption prompt's own tokens on top
    assert 50 < prompt < 500
    asr = next(s for s in e.stages if s.stage == "asr")
    # ASR runs before the transcript judges: over every video transcribed, at the kept videos' mean length
    assert asr.work == pytest.approx(p["found"] * p["hours_kept"] / p["kept"])
    assert asr.device_hours == pytest.approx(asr.work / est.ASR_GPU_AUDIO_HOURS_PER_GPU_HOUR)
    assert e.search_units == p["points"] * (100 + 1 + 50)


@pytest.fixture(scope="module")
def processed_run(tmp_path_factory) -> dict:
    """`textbook process` on a generated narrated four-slide lesson: a real store with stage timings."""
    work = tmp_path_factory.mktemp("estimate_run")
    video = est.calibration_video(work / "in")
    proc = run_cli("process", str(video), "--db", str(work / "r.duckdb"), "--out", str(work / "out"), "-q",
                   "--json", "--device", "cpu")
    assert proc.returncode == 0, proc.stderr
    return {"db": work / "r.duckdb", "run_id": json.loads(proc.stdout)["run_id"]}


@pytest.mark.slow
@pytest.mark.e2e
def test_from_run_reads_the_stage_timings_of_a_real_store(processed_run):
    db, run_id = processed_run["db"], processed_run["run_id"]
    proc = run_cli("estimate", "--videos", "120", "--transcribed", "50", "--kept", "40", "--hours", "20",
                   "--keyframes", "1000", "--gpus", "0", "--cpus", "16", "--llm-rps", "5",
                   "--from-run", run_id, "--db", str(db), "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    con = duckdb.connect(str(db), read_only=True)
    seconds = dict(con.execute("SELECT stage, sum(seconds) FROM stage_status WHERE seconds IS NOT NULL "
                               "GROUP BY stage").fetchall())
    media_s = con.execute("SELECT sum(duration) FROM videos").fetchone()[0]
    frames = con.execute("SELECT count(*) FROM ocr").fetchone()[0]
    clips = con.execute("SELECT count(*) FROM clips").fetchone()[0]
    threads = json.loads(con.execute("SELECT options FROM transcripts").fetchone()[0])["cpu_threads"] or os.cpu_count()
    con.close()
    assert {"probe", "asr", "keyframes", "ocr"} <= set(seconds) and frames > 0

    sizes = out["sizes"]
    assert (sizes["found"], sizes["transcribed"], sizes["kept"], sizes["hours_kept"]) == (120, 50, 40, 20)
    assert sizes["hours_transcribed"] == pytest.approx(50 * 20 / 40)
    assert sizes["clips"] == round(20 * clips / (media_s / 3600))  # the run's clips per kept hour
    st = {s["stage"]: s for s in out["stages"]}
    assert st["asr"]["device"] == "cpu"
    assert st["asr"]["device_hours"] == pytest.approx(25 * seconds["asr"] / (media_s / 3600) * threads / 3600)
    assert st["keyframes"]["device_hours"] == pytest.approx(20 * seconds["keyframes"] / (media_s / 3600) / 3600)
    assert st["ocr"]["device_hours"] == pytest.approx(1000 * seconds["ocr"] / frames / 3600)
    assert st["probe"]["device_hours"] == pytest.approx(50 * seconds["probe"] / 3600)
    assert all(s["source"].startswith(f"run {run_id}") for s in out["stages"])
    assert out["bounds"]["cpu"] == pytest.approx(sum(s["device_hours"] for s in out["stages"]) / 16)
    assert out["bounds"]["llm"] == pytest.approx(out["llm_calls"] / 5 / 3600)
    # no LLM calls in a process run: token rates stay the prompts' own
    assert all(r["source"].startswith("prompt") for r in out["roles"])


@pytest.mark.slow
def test_calibration_measures_every_cpu_stage_here():
    rates = est.calibrate(est.default_rates())
    for name in ("probe", "keyframes", "ocr"):
        rate = rates.stage(name, "cpu")
        assert rate is not None and rate.seconds > 0 and rate.source.startswith("measured here"), name
    # ASR on the device the settings pick (auto): on a machine without a GPU, the published GPU rate stays
    asr = [s for s in rates.stages if s.stage == "asr" and s.source.startswith("measured here")]
    assert len(asr) == 1 and asr[0].seconds > 0 and "whisper" in asr[0].source
    if asr[0].device == "cpu":
        assert rates.stage("asr", "gpu").source == est.ASR_GPU_SOURCE
    assert rates.clips_per_hour == est.default_rates().clips_per_hour  # a 40 s fixture sizes nothing


def _video(path, seconds: float) -> None:
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i",
                    f"testsrc=size=64x48:rate=10:duration={seconds}", "-f", "lavfi", "-i",
                    f"sine=frequency=440:duration={seconds}", "-c:v", "libx264", "-c:a", "aac", "-shortest", str(path)],
                   check=True)


@pytest.mark.slow
def test_paths_are_summed_by_ffprobe(tmp_path):
    (tmp_path / "sub").mkdir()
    _video(tmp_path / "a.mp4", 3)
    _video(tmp_path / "sub" / "b.mp4", 7.5)
    proc = run_cli("estimate", str(tmp_path), "--no-calibrate", "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["sizes"]["found"] == out["sizes"]["kept"] == 2
    assert out["sizes"]["hours_kept"] * 3600 == pytest.approx(10.5, abs=0.15)
    assert out["llm_calls"] == 0 and out["search_units"] == 0  # `process` asks no model and searches nothing
    judged = json.loads(run_cli("estimate", str(tmp_path / "a.mp4"), "--llm", "--no-calibrate", "--json").stdout)
    assert {r["role"]: r["calls"] for r in judged["roles"]}["metadata_judge"] == 1


@pytest.mark.slow
def test_asr_gpu_rate_flag_replaces_the_published_rate():
    proc = run_cli("estimate", "--paper", "--gpus", "4", "--asr-gpu-rate", "70", "--no-calibrate", "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    asr = next(s for s in out["stages"] if s["stage"] == "asr")
    assert asr["source"] == "given" and asr["device"] == "gpu"
    assert asr["device_hours"] == pytest.approx(out["sizes"]["hours_transcribed"] / 70)
    assert out["bounds"]["gpu"] == pytest.approx(asr["device_hours"] / 4)


def _one_line(proc) -> str:
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode != 0 and len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert lines[0].startswith("error: ")
    return lines[0]


@pytest.mark.slow
def test_bad_input_is_one_line(tmp_path):
    assert "nothing sizes the run" in _one_line(run_cli("estimate", "--no-calibrate"))
    assert "contradict" in _one_line(run_cli("estimate", "--videos", "5", "--kept", "10", "--no-calibrate"))
    assert "--gpus" in _one_line(run_cli("estimate", "--paper", "--gpus", "-1", "--no-calibrate"))
    assert "--llm-rps" in _one_line(run_cli("estimate", "--paper", "--llm-rps", "0", "--no-calibrate"))
    assert "--asr-gpu-rate" in _one_line(run_cli("estimate", "--paper", "--asr-gpu-rate", "0", "--no-calibrate"))
    assert "leave out the goal" in _one_line(run_cli("estimate", "physics", "--paper", "--no-calibrate"))
    assert "--kept: the paper sizes the run" in _one_line(run_cli("estimate", "--paper", "--kept", "9",
                                                                  "--no-calibrate"))
    assert "--from-run" in _one_line(run_cli("estimate", "--paper", "--db", str(tmp_path / "x.duckdb")))
    assert "no database" in _one_line(run_cli("estimate", "--paper", "--from-run", "run-x",
                                              "--db", str(tmp_path / "none.duckdb")))
    assert "no such file" in _one_line(run_cli("estimate", str(tmp_path / "nope.mp4"), "--no-calibrate"))
    fake = tmp_path / "lesson.mp4"
    fake.write_text("not a video\n")
    assert "lesson.mp4" in _one_line(run_cli("estimate", str(fake), "--no-calibrate"))


def test_bad_sizes_and_cluster_fail_before_the_calibration():
    """With the calibration on (it runs ffmpeg and `process` for ~40 s), a run nothing sizes or a bad cluster
    is still one line at once: with no ffmpeg on PATH the calibration could not even start."""
    import sys

    from tests.conftest import ROOT

    env = {**os.environ, "PYTHONPATH": str(ROOT), "PATH": "/nonexistent"}
    for args, says in ((["estimate"], "nothing sizes the run"), (["estimate", "--gpus", "-1"], "nothing sizes"),
                       (["estimate", "--paper", "--gpus", "-1"], "--gpus must be 0 or more (got -1)"),
                       (["estimate", "--paper", "--cpus", "0"], "--cpus must be at least 1 (got 0)")):
        proc = subprocess.run([sys.executable, "-m", "textbook.cli", *args], capture_output=True, text=True,
                              env=env, timeout=120)
        assert says in _one_line(proc), proc.stderr


@pytest.mark.slow
def test_unknown_run_is_one_line(processed_run):
    line = _one_line(run_cli("estimate", "--paper", "--from-run", "run-nope", "--db", str(processed_run["db"])))
    assert "no run run-nope" in line


@pytest.mark.slow
def test_from_run_of_a_build_reads_keep_shares_tokens_and_endpoint_rate(processed_run, tmp_path):
    """A build's run (rows written through the store's own methods, as tests/web/seed.py does) over the
    processed video: the judges' shares, the paid calls' mean tokens, concurrency / mean latency."""
    import shutil

    from store import open_store

    db = tmp_path / "b.duckdb"
    shutil.copy(processed_run["db"], db)
    store = open_store(db)
    run = "build-estimate0001"
    video = store.rows("SELECT video_id FROM videos")[0]["video_id"]
    store.start_run(run, "build", ["build a physics textbook"], {"agent": {"llm": {"concurrency": 8}},
                                                                 "pipeline": {}}, "estimate")
    store.set_run_videos(run, [video])
    verdicts = {"v1": ("accept", "accepted"), "v2": ("accept", "transcript_rejected"),
                "v3": ("accept", "transcript_rejected"), "v4": ("reject", "judged_out")}
    tokens_in = {"v1": 100, "v2": 200, "v3": 300, "v4": 400}
    for i, (vid, (verdict, status)) in enumerate(verdicts.items()):
        store.add_candidate(run, vid, "s1.c1.u1.p1", "local", f"file:///{vid}.mp4", "q", 1, {"title": vid})
        for cached in (False, True):  # a cache hit pays nothing: its tokens are not a rate
            store.record_llm_call({
                "call_id": f"c-{vid}-{cached}", "run_id": run, "node": "judge_metadata", "role": "metadata_judge",
                "video_id": vid, "prompt_name": "metadata_judge", "prompt_sha256": "ab" * 32, "model": "m",
                "cache_key": f"k-{vid}", "cached": cached, "messages": [], "response": {},
                "input_tokens": 99999 if cached else tokens_in[vid], "output_tokens": 10 + i,
                "tokens_estimated": False, "cost_usd": 0.0, "latency_s": 0.0 if cached else 2.0, "attempts": 1,
                "error": None})
        store.save_judgment(run, vid, "metadata", verdict, 5, [], None, f"c-{vid}-False")
        store.update_candidate(run, vid, status=status)
    try:
        rates = est.rates_from_run(store, run, est.default_rates())
    finally:
        store.close()
    assert rates.metadata_keep.value == pytest.approx(3 / 4)
    assert rates.transcript_keep.value == pytest.approx(1 / 3)
    meta = rates.roles["metadata_judge"]
    assert meta.input_tokens == pytest.approx(sum(tokens_in.values()) / 4)
    assert meta.output_tokens == pytest.approx((10 + 11 + 12 + 13) / 4)
    assert meta.source == f"run {run}: 4 paid calls"
    assert rates.llm_calls_per_s.value == pytest.approx(8 / 2.0)
    assert rates.roles["polisher"] == est.default_rates().roles["polisher"]  # not asked in the run: the prompt's
    assert rates.stage("asr", "cpu").source.startswith(f"run {run}")  # the video's stage timings count too
