"""The agent's CLI: bad input, SIGKILL then --resume, batch on the local and Ray executors, trace and runs.

The LLM here is tests/agents/fake_openai.py: a deterministic OpenAI-compatible server on
127.0.0.1 reached through the real ChatOpenAI client (the real llama.cpp server has its own
end-to-end test in tests/agents/test_e2e_llama.py).
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import duckdb
import pytest

from tests.agents.fake_openai import FakeOpenAI
from tests.conftest import LESSONS, ROOT, TEXTBOOK, run_cli

GOAL = "build a physics textbook"
SMALL = ("physics_newton", "chemistry_atoms")


def _one_line_error(proc) -> str:
    assert proc.returncode != 0, proc.stdout
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert lines[0].startswith("error: ")
    return lines[0]


@pytest.fixture(scope="module")
def llm():
    with FakeOpenAI() as server:
        yield server


@pytest.fixture(scope="module")
def small_lessons(tmp_path_factory) -> Path:
    """Two narrated lessons (with their sidecars) so each build stays short."""
    folder = tmp_path_factory.mktemp("small")
    for name in SMALL:
        for suffix in (".mp4", ".json"):
            shutil.copy(LESSONS / f"{name}{suffix}", folder / f"{name}{suffix}")
    return folder


def _build_args(llm, lessons: Path, work: Path, *extra: str) -> list[str]:
    return ["build", GOAL, "--source", f"local:{lessons}", "--llm-url", llm.base_url, "--llm", "scripted",
            "--db", str(work / "db.duckdb"), "--out", str(work / "out"), *extra]


def _samples(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]


def _paid_twice(db: Path) -> list:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute("SELECT cache_key, count(*) FROM llm_calls WHERE NOT cached GROUP BY 1 "
                           "HAVING count(*) > 1").fetchall()
    finally:
        con.close()


# -- bad input ---------------------------------------------------------------------------------
def test_empty_goal(tmp_path):
    line = _one_line_error(run_cli("build", "  ", "--db", str(tmp_path / "db.duckdb")))
    assert "goal is empty" in line
    assert not (tmp_path / "db.duckdb").exists()


def test_unknown_source(tmp_path):
    line = _one_line_error(run_cli("build", GOAL, "--source", "vimeo", "--db", str(tmp_path / "db.duckdb")))
    assert "unknown source 'vimeo'" in line
    assert not (tmp_path / "db.duckdb").exists()  # a bad source leaves no empty database behind


def test_youtube_without_key(tmp_path):
    env_key = os.environ.pop("TEXTBOOK_YOUTUBE_API_KEY", None)
    try:
        line = _one_line_error(run_cli("build", GOAL, "--source", "youtube", "--db", str(tmp_path / "db.duckdb")))
    finally:
        if env_key is not None:
            os.environ["TEXTBOOK_YOUTUBE_API_KEY"] = env_key
    assert "TEXTBOOK_YOUTUBE_API_KEY" in line


def test_unreachable_llm_endpoint(tmp_path, small_lessons):
    with __import__("socket").socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]  # bound, never listening: connection refused
        line = _one_line_error(run_cli("build", GOAL, "--source", f"local:{small_lessons}", "--llm-url",
                                       f"http://127.0.0.1:{dead}/v1", "--db", str(tmp_path / "db.duckdb")))
    assert "unreachable" in line and f"127.0.0.1:{dead}" in line


def test_missing_local_folder(tmp_path):
    line = _one_line_error(run_cli("build", GOAL, "--source", f"local:{tmp_path / 'nope'}",
                                   "--db", str(tmp_path / "db.duckdb")))
    assert "nope" in line
    assert not (tmp_path / "db.duckdb").exists()


@pytest.mark.e2e
def test_read_commands_on_a_missing_database_say_what_to_do(tmp_path):
    for args in (["runs"], ["stats"], ["trace", "build-000000000000"], ["export"], ["view", "--port", "0"],
                 ["review", "build-000000000000", "--approve"]):
        line = _one_line_error(run_cli(*args, cwd=tmp_path))  # the default database, textbook.duckdb, is absent
        assert "no database at textbook.duckdb" in line and "--db FILE" in line
    assert not (tmp_path / "textbook.duckdb").exists()
    doctor = run_cli("doctor", "--json", cwd=tmp_path)
    [db] = [c for c in json.loads(doctor.stdout) if c["part"] == "database"]
    assert db["status"] == "not created yet" and "does not exist" in db["detail"]


def _with_env(**env):
    import contextlib

    @contextlib.contextmanager
    def ctx():
        old = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        try:
            yield
        finally:
            for k, v in old.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
    return ctx()


@pytest.mark.e2e
def test_every_source_failing_exits_non_zero_with_one_line(llm, tmp_path):
    # a fake key: with no network the search fails to connect, with one the API refuses the key
    with _with_env(TEXTBOOK_YOUTUBE_API_KEY="AIzaSyFAKE-not-a-real-key-0000000000000"):
        args = ["build", GOAL, "--source", "youtube", "--llm-url", llm.base_url, "--llm", "scripted",
                "--db", str(tmp_path / "db.duckdb"), "--out", str(tmp_path / "out")]
        line = _one_line_error(run_cli(*args, "-q"))
        loud = run_cli(*args)
    assert line.startswith("error: every search failed: youtube: ")
    assert "AIzaSyFAKE" not in line
    assert loud.returncode == 2 and "Traceback" not in loud.stderr
    lines = loud.stderr.strip().splitlines()
    assert lines[-1].startswith("error: every search failed: youtube: ")
    assert any(x.startswith("warning: youtube failed") for x in lines[:-1])  # each failure shows as it happens
    con = duckdb.connect(str(tmp_path / "db.duckdb"), read_only=True)
    try:
        status = {r[0] for r in con.execute("SELECT status FROM runs").fetchall()}
        warned = con.execute("SELECT count(*) FROM events WHERE decision = 'warning'").fetchone()[0]
    finally:
        con.close()
    assert status == {"failed"} and warned >= 1


@pytest.mark.e2e
@pytest.mark.slow
def test_sigterm_after_an_answered_call_then_rerun_pays_nothing(small_lessons, tmp_path):
    with FakeOpenAI() as server:
        args = [*TEXTBOOK, *_build_args(server, small_lessons, tmp_path)]
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        # SIGTERM the build the moment the taxonomy answer has been sent back to it
        server.after = lambda name: name == "Taxonomy" and os.kill(proc.pid, signal.SIGTERM)
        out, err = proc.communicate(timeout=600)
        asked = [r for r in server.requests]
        assert proc.returncode == 143, err
        assert "interrupted: build-" in err and "resume with: textbook build --resume build-" in err
        assert "Traceback" not in err
        tools = [(r.get("tools") or [{}])[0].get("function", {}).get("name") for r in asked]
        assert tools == ["GoalSpec", "Taxonomy"]
        con = duckdb.connect(str(tmp_path / "db.duckdb"), read_only=True)
        try:
            status = con.execute("SELECT status FROM runs").fetchall()
        finally:
            con.close()
        assert status == [("interrupted",)]

        server.after = None
        again = run_cli(*_build_args(server, small_lessons, tmp_path, "--json"))
        assert again.returncode == 0, again.stderr
        names = [(r.get("tools") or [{}])[0].get("function", {}).get("name") for r in server.requests]
        assert names.count("GoalSpec") == 1 and names.count("Taxonomy") == 1  # answered before SIGTERM: not again
        assert json.loads(again.stdout)["accepted_videos"] >= 1
    assert _paid_twice(tmp_path / "db.duckdb") == []


@pytest.mark.e2e
@pytest.mark.slow
def test_resume_unknown_run_and_trace_unknown_run(tmp_path, reference):
    line = _one_line_error(run_cli("build", "--resume", "build-000000000000", "--db", str(reference["db"])))
    assert "no run build-000000000000" in line
    line = _one_line_error(run_cli("trace", "build-000000000000", "--db", str(reference["db"])))
    assert "no run build-000000000000" in line


@pytest.mark.e2e
def test_batch_bad_file(tmp_path):
    line = _one_line_error(run_cli("batch", str(tmp_path / "goals.yaml"), "--db", str(tmp_path / "db.duckdb")))
    assert "cannot read" in line
    (tmp_path / "goals.yaml").write_text("goals: []\n")
    line = _one_line_error(run_cli("batch", str(tmp_path / "goals.yaml"), "--db", str(tmp_path / "db.duckdb")))
    assert "non-empty list" in line


# -- an uninterrupted build, then SIGKILL + --resume ----------------------------------------------
@pytest.fixture(scope="module")
def reference(llm, small_lessons, tmp_path_factory) -> dict:
    work = tmp_path_factory.mktemp("reference")
    before = len(llm.requests)
    proc = run_cli(*_build_args(llm, small_lessons, work, "--json"))
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    return {"db": work / "db.duckdb", "out": work / "out", "result": result, "work": work,
            "requests": len(llm.requests) - before}


@pytest.mark.e2e
@pytest.mark.slow
def test_build_result_and_trace(reference):
    r = reference["result"]
    assert r["run_id"].startswith("build-") and r["accepted_videos"] >= 1 and r["samples"] >= 1
    samples = _samples(reference["out"])
    assert len(samples) == r["samples"]
    for s in samples:
        assert all((i is None) != (t is None) for i, t in zip(s["images"], s["texts"], strict=True))
        for img in s["images"]:
            if img:
                assert (reference["out"] / img).is_file()
    trace = run_cli("trace", r["run_id"], "--db", str(reference["db"]), "--json")
    assert trace.returncode == 0, trace.stderr
    data = json.loads(trace.stdout)
    nodes = {e["node"] for e in data["events"]}
    assert {"interpret_goal", "taxonomy", "plan_queries", "search_point", "judge_metadata", "download",
            "asr", "judge_transcripts", "ocr", "clips", "coverage", "assemble"} <= nodes
    assert all(c["input_tokens"] > 0 and c["prompt_sha256"] for c in data["llm_calls"])
    text = run_cli("trace", r["run_id"], "--db", str(reference["db"]), "--node", "judge_metadata")
    assert text.returncode == 0 and "-> accept" in text.stdout and "llm metadata_judge" in text.stdout
    # ids in square brackets print as they are (they used to be eaten as Rich markup)
    ids = {e["video_id"] for e in data["events"] if e["video_id"]}
    assert ids and all(f"judge_metadata [{vid}]  -> accept" in text.stdout for vid in ids
                       if any(e["node"] == "judge_metadata" and e["video_id"] == vid for e in data["events"]))
    assert 'because model: "' in text.stdout  # the model's own reasons are quoted as the model's
    line = _one_line_error(run_cli("trace", r["run_id"], "--db", str(reference["db"]), "--node", "nosuchnode"))
    assert "no node 'nosuchnode'" in line and "judge_metadata" in line
    line = _one_line_error(run_cli("trace", r["run_id"], "--db", str(reference["db"]), "--video", "nope"))
    assert "no video 'nope'" in line
    full = run_cli("trace", r["run_id"], "--db", str(reference["db"]))
    assert "LLM calls:" in full.stdout and " paid " in full.stdout and " cached" in full.stdout
    assert "(difficulty " in full.stdout
    runs = run_cli("runs", "--db", str(reference["db"]), "--json")
    assert [x["run_id"] for x in json.loads(runs.stdout)] == [r["run_id"]]


@pytest.mark.e2e
@pytest.mark.slow
def test_rerun_pays_nothing(llm, reference, small_lessons):
    before = len(llm.requests)
    proc = run_cli(*_build_args(llm, small_lessons, reference["work"], "--json"))
    assert proc.returncode == 0, proc.stderr
    again = json.loads(proc.stdout)
    assert len(llm.requests) == before  # every answer came from the response cache
    assert again["samples"] == reference["result"]["samples"]
    assert _paid_twice(reference["db"]) == []


@pytest.mark.e2e
@pytest.mark.slow
def test_sigkill_then_resume(llm, reference, small_lessons, tmp_path):
    """SIGKILL at a random point of the concurrent build (after the Kth answered request of this build,
    K drawn between the first judgments and the last rewrite), then --resume."""
    args = [*TEXTBOOK, *_build_args(llm, small_lessons, tmp_path)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    k = random.Random(os.environ.get("TEXTBOOK_TEST_SEED", "kill")).randint(4, reference["requests"] - 2)
    answered = [0]
    proc = None

    def kill_after(name: str) -> None:
        answered[0] += 1
        if answered[0] == k and proc is not None:
            proc.send_signal(signal.SIGKILL)

    llm.after = kill_after
    try:
        proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        run_id = None
        for line in proc.stderr:  # progress lines: "run build-…", then node lines
            if line.startswith("run build-"):
                run_id = line.split()[1]
        proc.wait(timeout=300)
    finally:
        llm.after = None
    assert proc.returncode == -signal.SIGKILL, f"the build ended before its request {k} (of {reference['requests']})"
    assert run_id == reference["result"]["run_id"]  # same goal and settings: the same run id

    resumed = run_cli("build", "--resume", run_id, "--llm-url", llm.base_url, "--db", str(tmp_path / "db.duckdb"),
                      "--json")
    assert resumed.returncode == 0, resumed.stderr
    result = json.loads(resumed.stdout)
    assert result["run_id"] == run_id
    assert _paid_twice(tmp_path / "db.duckdb") == []

    assert _samples(tmp_path / "out") == _samples(reference["out"])
    con = duckdb.connect(str(tmp_path / "db.duckdb"), read_only=True)
    try:
        status = con.execute("SELECT status, attempts FROM runs WHERE run_id = ?", [run_id]).fetchone()
        dupes = {t: con.execute(f"SELECT {key}, count(*) FROM {t} GROUP BY ALL HAVING count(*) > 1").fetchall()
                 for t, key in (("candidates", "run_id, video_id"), ("judgments", "run_id, video_id, kind"),
                                ("samples", "run_id, idx"), ("clips", "video_id, idx"), ("segments", "video_id, idx"))}
    finally:
        con.close()
    assert status == ("finished", 2)
    assert dupes == {t: [] for t in dupes}


# -- batch: local vs ray --------------------------------------------------------------------------
COUNTED = ("videos", "transcripts", "segments", "keyframes", "clips", "samples", "candidates", "judgments",
           "taxonomy", "queries", "runs")


def _table_counts(db: Path) -> dict:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return {t: con.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in COUNTED}
    finally:
        con.close()


def _batch(llm, lessons: Path, work: Path, executor: str) -> tuple[subprocess.CompletedProcess, list[dict]]:
    goals = work / "goals.yaml"
    goals.write_text(f"defaults:\n  sources: ['local:{lessons}']\n  max_rounds: 1\n"
                     "goals:\n  - build a physics textbook\n  - goal: build a chemistry textbook\n"
                     "    per_point: 1\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TEXTBOOK_AGENT__LLM__BASE_URL": llm.base_url,
           "TEXTBOOK_AGENT__LLM__MODEL": "scripted", "RAY_USAGE_STATS_ENABLED": "0"}
    proc = subprocess.run([*TEXTBOOK, "batch", str(goals), "--executor", executor, "--workers", "2",
                           "--db", str(work / "db.duckdb"), "--out", str(work / "out")],
                          capture_output=True, text=True, cwd=ROOT, env=env, timeout=900)
    lines = [json.loads(x) for x in proc.stdout.splitlines() if x.strip()]
    return proc, lines


@pytest.mark.e2e
@pytest.mark.slow
def test_batch_local_and_ray_agree(llm, small_lessons, tmp_path):
    results = {}
    for executor in ("local", "ray"):
        work = tmp_path / executor
        work.mkdir()
        proc, lines = _batch(llm, small_lessons, work, executor)
        assert proc.returncode == 0, proc.stderr[-2000:]
        done = [x for x in lines if x.get("event") == "goal_done"]
        assert [x["goal"] for x in done] == ["build a physics textbook", "build a chemistry textbook"]
        assert lines[-1]["event"] == "batch_done" and lines[-1]["failed"] == 0
        assert all(x["samples"] >= 1 for x in done)
        results[executor] = _table_counts(work / "db.duckdb")
    assert results["ray"] == results["local"]
    assert results["local"]["runs"] == 2


@pytest.mark.e2e
@pytest.mark.slow
def test_batch_reports_a_failed_goal(llm, small_lessons, tmp_path):
    goals = tmp_path / "goals.yaml"
    goals.write_text(f"goals:\n  - goal: build a physics textbook\n    sources: ['local:{small_lessons}']\n"
                     "    max_rounds: 1\n  - goal: build a chemistry textbook\n    sources: ['vimeo']\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TEXTBOOK_AGENT__LLM__BASE_URL": llm.base_url,
           "TEXTBOOK_AGENT__LLM__MODEL": "scripted"}
    proc = subprocess.run([*TEXTBOOK, "batch", str(goals), "--db", str(tmp_path / "db.duckdb"),
                           "--out", str(tmp_path / "out")], capture_output=True, text=True, cwd=ROOT, env=env,
                          timeout=600)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    lines = [json.loads(x) for x in proc.stdout.splitlines()]
    assert [x["event"] for x in lines if x["event"].startswith("goal_")].count("goal_done") == 1
    failed = [x for x in lines if x["event"] == "goal_failed"]
    assert len(failed) == 1 and "vimeo" in failed[0]["error"]
    assert lines[-1] == {**lines[-1], "event": "batch_done", "failed": 1}



# -- reading the store while a build writes it (store/serve.py) -----------------------------------------
@pytest.mark.slow
@pytest.mark.e2e
def test_runs_and_trace_show_a_running_build(small_lessons, tmp_path):
    """While `textbook build` holds the DuckDB file, `runs` and `trace` read it through the build's read
    server and show the run running with its node events; afterwards they read the file itself."""
    from agents.standin import StandIn

    db = tmp_path / "db.duckdb"
    with StandIn(latency_s=1.5) as srv:  # slow answers keep the build running for a while
        args = [*TEXTBOOK, "build", GOAL, "--source", f"local:{small_lessons}", "--llm-url", srv.base_url,
                "--llm", "standin", "--db", str(db), "--out", str(tmp_path / "out")]
        env = {**os.environ, "PYTHONPATH": str(ROOT), "TEXTBOOK_AGENT__LLM__STRUCTURED": "json_schema"}
        proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                text=True)
        try:
            run_id = None
            for line in proc.stderr:
                if line.startswith("run build-"):
                    run_id = line.split()[1]
                    break
            assert run_id, "the build printed no run id"
            import threading

            threading.Thread(target=proc.stderr.read, daemon=True).start()  # keep draining its progress lines
            seen_running = seen_events = False
            deadline = time.monotonic() + 240
            while time.monotonic() < deadline and proc.poll() is None and not (seen_running and seen_events):
                runs = run_cli("runs", "--db", str(db), "--json")
                assert runs.returncode == 0, runs.stderr
                rows = {r["run_id"]: r for r in json.loads(runs.stdout)}
                seen_running |= rows.get(run_id, {}).get("status") == "running"
                trace = run_cli("trace", run_id, "--db", str(db), "--json")
                if trace.returncode == 0:
                    nodes = {e["node"] for e in json.loads(trace.stdout)["events"]}
                    seen_events |= {"interpret_goal", "taxonomy"} <= nodes
                time.sleep(0.5)
            assert seen_running and seen_events, "runs/trace never showed the running build"
            assert proc.wait(timeout=600) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
    after = json.loads(run_cli("runs", "--db", str(db), "--json").stdout)
    assert [r["status"] for r in after if r["run_id"] == run_id] == ["finished"]
    assert not list(tmp_path.glob("*.reads.json"))  # the read server's endpoint file is gone


@pytest.mark.slow
@pytest.mark.e2e
def test_build_to_a_file_prints_progress_and_stops_at_a_closed_library(small_lessons, tmp_path):
    """stderr to a file (CI, nohup): plain status lines (node, done/total, eta) keep coming while the
    videos are worked on, never more than a few intervals apart; the folder is a closed library, so the
    short points are not searched again (max_rounds 3 notwithstanding) and the summary says why."""
    from agents.standin import StandIn

    db = tmp_path / "db.duckdb"
    with StandIn(latency_s=0.3) as srv:
        args = [*TEXTBOOK, "build", GOAL, "--source", f"local:{small_lessons}", "--llm-url", srv.base_url,
                "--llm", "standin", "--db", str(db), "--out", str(tmp_path / "out")]
        env = {**os.environ, "PYTHONPATH": str(ROOT), "TEXTBOOK_AGENT__LLM__STRUCTURED": "json_schema",
               "TEXTBOOK_PROGRESS_EVERY_S": "1"}
        env.pop("TEXTBOOK_DEBUG", None)
        with (tmp_path / "stderr.log").open("w") as err, (tmp_path / "stdout.log").open("w") as out:
            proc = subprocess.run(args, cwd=ROOT, env=env, stdout=out, stderr=err, timeout=600)
    text = (tmp_path / "stderr.log").read_text()
    assert proc.returncode == 0, text
    assert "\x1b" not in text and "Traceback" not in text
    stamped = [(float(m[1]), m[2]) for m in re.finditer(r"^\[ *(\d+\.\d)s\] (.*)$", text, re.M)]
    status = re.compile(r"videos: \d+/\d+ done, eta (unknown|\d+s|\d+m\d\ds)")
    assert [line for _, line in stamped if status.fullmatch(line)], text
    gaps = [b - a for (a, _), (b, _) in zip(stamped, stamped[1:], strict=False)]
    assert max(gaps) < 10, (max(gaps), text)  # a line each second; slack for a loaded machine
    summary = (tmp_path / "stdout.log").read_text()
    assert "short: " in summary and "coverage ended: library exhausted: every source is a closed library (local)" \
        in summary, summary
    con = duckdb.connect(str(db), read_only=True)
    try:
        rounds = con.execute("SELECT DISTINCT round FROM queries").fetchall()
    finally:
        con.close()
    assert rounds == [(1,)]


# -- a heavy step that crashes, then the same command after the fix -----------------------------------
_BROKEN_KEYFRAMES = """
import sys
import tools.keyframes

def _display_matrix(frame):  # PyAV 18.1.1 under the old tools/keyframes.py
    raise TypeError("'Type' object is not subscriptable")

tools.keyframes._display_matrix = _display_matrix
from textbook.cli import main
sys.argv = ["textbook", *sys.argv[1:]]
main()
"""


@pytest.mark.e2e
@pytest.mark.slow
def test_a_crash_is_a_failure_under_strict_and_the_same_command_after_the_fix_retries_it(llm, small_lessons,
                                                                                         tmp_path):
    """`make demo` with a PyAV that broke the keyframe detector: the build says failed (not judged out),
    exits 1 under --strict; the same command once PyAV is fixed retries both videos and writes them."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("TEXTBOOK_DEBUG", None)
    args = [*_build_args(llm, small_lessons, tmp_path, "--strict")]
    broken = subprocess.run([TEXTBOOK[0], "-c", _BROKEN_KEYFRAMES, *args], capture_output=True, text=True,
                            env=env, timeout=600)
    assert broken.returncode == 1, broken.stderr
    assert "Traceback" not in broken.stderr
    assert "failed: 2 videos (keyframes internal 2)" in broken.stdout, broken.stdout
    assert "judged out" not in broken.stdout and "short: " in broken.stdout
    assert broken.stderr.count("failed: ") >= 2 and "at keyframes (internal): TypeError" in broken.stderr

    fixed = run_cli(*args)
    assert fixed.returncode == 0, fixed.stderr
    assert "(retrying 2 failed videos)" in fixed.stderr
    assert "retried 2 videos that failed in the last run of this command (keyframes internal 2)" in fixed.stdout
    assert "failed: " not in fixed.stdout and ": 2 videos accepted" in fixed.stdout
    assert _samples(tmp_path / "out")
    # the summary's LLM line counts the run's calls, and says how many this command paid (the retry asked
    # only what was never answered; a replay of the finished run pays none)
    paid = re.search(r"LLM calls: (\d+) paid .*; (\d+) of them paid by this command", fixed.stdout)
    assert paid and 0 < int(paid[2]) < int(paid[1]), fixed.stdout
    again = run_cli(*args)
    assert again.returncode == 0, again.stderr
    assert f"LLM calls: {paid[1]} paid" in again.stdout and "; 0 of them paid by this command" in again.stdout


def test_out_of_range_numbers_are_one_line_before_anything_starts(tmp_path):
    """A budget below its floor and a port past 65535 are refused as bad input: no store made, no model
    started, no 'internal' error."""
    line = _one_line_error(run_cli("build", GOAL, "--max-videos", "-3", "--db", str(tmp_path / "db.duckdb")))
    assert "agent.budgets.max_videos" in line and "greater than or equal to 1" in line
    assert not (tmp_path / "db.duckdb").exists()
    duckdb.connect(str(tmp_path / "v.duckdb")).close()  # an existing (empty) database file
    line = _one_line_error(run_cli("view", "--db", str(tmp_path / "v.duckdb"), "--port", "99999"))
    assert "--port" in line and "internal" not in line
