"""Reruns after a code change, and model calls made inside the pipeline (the VLM OCR backend)."""

import json
import os
import shutil
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import duckdb
import pytest

from tests.conftest import LESSONS, ROOT, run_cli


@pytest.fixture(scope="module")
def one_lesson(tmp_path_factory):
    folder = tmp_path_factory.mktemp("one")
    for suffix in (".mp4", ".json"):
        shutil.copy(LESSONS / f"chemistry_atoms{suffix}", folder / f"chemistry_atoms{suffix}")
    return folder


def _stages(db) -> dict:
    con = duckdb.connect(str(db))
    try:
        return {r[0]: r[1] for r in con.execute("SELECT stage, config_hash FROM stage_status "
                                                "WHERE config_hash NOT LIKE 'old-%'").fetchall()}
    finally:
        con.close()


@pytest.mark.slow
def test_a_changed_stage_reruns_with_the_stages_after_it_and_nothing_else(one_lesson, tmp_path):
    db, out = tmp_path / "db.duckdb", tmp_path / "out"
    first = run_cli("process", str(one_lesson), "--db", str(db), "--out", str(out), "--json")
    assert first.returncode == 0, first.stderr
    before = _stages(db)
    # what a store written by the previous OCR stage version looks like: the hashes of OCR and of the
    # stages whose hashes include OCR's differ from this code's
    con = duckdb.connect(str(db))
    con.execute("UPDATE stage_status SET config_hash = 'old-' || stage WHERE stage IN ('ocr', 'clips', 'pack')")
    transcript = con.execute("SELECT text FROM transcripts").fetchone()[0]
    con.close()
    again = run_cli("process", str(one_lesson), "--db", str(db), "--out", str(out), "--json")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["stages_run"] == {"ocr": 1, "clips": 1, "pack": 1}
    assert _stages(db) == before
    con = duckdb.connect(str(db), read_only=True)
    assert con.execute("SELECT text FROM transcripts").fetchone()[0] == transcript  # kept, not redone
    con.close()
    assert (out / "samples.jsonl").read_text().strip()


class _VLM(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_POST(self):  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        assert body["messages"][0]["content"][1]["image_url"]["url"].startswith("data:image/jpeg;base64,")
        reply = {"id": "x", "object": "chat.completion", "created": 0, "model": body["model"],
                 "choices": [{"index": 0, "finish_reason": "stop", "message": {
                     "role": "assistant", "content": "Chemical Formulas\n2 H_2 + O_2 \\rightarrow 2 H_2O"}}],
                 "usage": {"prompt_tokens": 812, "completion_tokens": 17, "total_tokens": 829}}
        data = json.dumps(reply).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.mark.slow
def test_vlm_ocr_calls_are_logged_like_every_model_call(one_lesson, tmp_path, monkeypatch):
    server = ThreadingHTTPServer(("127.0.0.1", 0), _VLM)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    cfg = tmp_path / "vlm.toml"
    cfg.write_text(f'[pipeline.ocr]\nbackend = "vlm"\nvlm_base_url = "http://127.0.0.1:{server.server_port}/v1"\n'
                   'vlm_model = "internvl2-40b"\nvlm_api_key_env = "TEST_VLM_KEY"\n')
    monkeypatch.setenv("TEST_VLM_KEY", "sk-vlm-secret-never-stored")
    try:
        proc = run_cli("process", str(one_lesson), "--db", str(tmp_path / "db.duckdb"), "--out", str(tmp_path / "out"),
                       "--config", str(cfg), "--json")
    finally:
        server.shutdown()
    assert proc.returncode == 0, proc.stderr
    con = duckdb.connect(str(tmp_path / "db.duckdb"), read_only=True)
    try:
        frames = con.execute("SELECT count(*) FROM keyframes").fetchone()[0]
        calls = con.execute("SELECT node, prompt_name, model, input_tokens, output_tokens, response, error, "
                            "video_id FROM llm_calls").fetchall()
    finally:
        con.close()
    assert len(calls) == frames == 4
    assert {c[:5] for c in calls} == {("ocr", "ocr_vlm", "internvl2-40b", 812, 17)}
    assert all(c[5].startswith("Chemical Formulas") and c[6] is None and c[7] for c in calls)
    assert b"sk-vlm-secret" not in (tmp_path / "db.duckdb").read_bytes()
    text = json.loads((tmp_path / "out" / "samples.jsonl").read_text())["text_ocr_list"]
    assert sum("H_2O" in t for t in text if t) == 1  # the same line from four frames, given once


# the keyframe detector broken as PyAV 18.1.1 broke it (tools/keyframes.py read the display matrix by
# iterating the side data, which now yields types), then the real `textbook process` CLI
_BROKEN_PROCESS = """
import sys
import tools.keyframes

def _display_matrix(frame):
    raise TypeError("'Type' object is not subscriptable")

tools.keyframes._display_matrix = _display_matrix
from textbook.cli import main
sys.argv = ["textbook", *sys.argv[1:]]
main()
"""


def _process(*args: str, broken: bool) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("TEXTBOOK_DEBUG", None)
    cmd = [sys.executable, "-c", _BROKEN_PROCESS] if broken else [sys.executable, "-m", "textbook.cli"]
    return subprocess.run([*cmd, "process", *args], capture_output=True, text=True, env=env, timeout=600)


@pytest.mark.slow
def test_a_crashing_stage_is_a_failure_and_the_same_command_after_the_fix_redoes_it(tmp_path):
    """A heavy stage that raises (not a ToolError) fails its video with kind ``internal``: an error, a
    ``failed:`` line counted by stage and kind, exit 1; never a rejection. The same command once the fault
    is gone says it retries that video, redoes it from the stage that failed, and leaves the rejection."""
    lessons = tmp_path / "in"
    lessons.mkdir()
    for name in ("chemistry_atoms", "math_quiet_tone"):
        for suffix in (".mp4", ".json"):
            shutil.copy(LESSONS / f"{name}{suffix}", lessons / f"{name}{suffix}")
    db, out = tmp_path / "db.duckdb", tmp_path / "out"
    args = (str(lessons), "--db", str(db), "--out", str(out), "--json")

    first = _process(*args, broken=True)
    assert first.returncode == 1, first.stderr
    result = json.loads(first.stdout)
    videos = {v["source"].rsplit("/", 1)[-1]: v for v in result["videos"]}
    chem, quiet = videos["chemistry_atoms.mp4"], videos["math_quiet_tone.mp4"]
    assert (chem["status"], chem["reason"], chem["failed_at"]) == ("error", "internal", "keyframes")
    assert (quiet["status"], quiet["reason"]) == ("rejected", "silent")  # a judgment stays a judgment
    assert result["failed"] == {"keyframes internal": 1} and result["retried"] == {}
    assert "keyframes" not in result["dropped"]  # a failure is counted once, as a failure, never as a drop
    assert sum(n for reasons in result["dropped"].values() for n in reasons.values()) == 1  # the silent one
    assert result["samples"] == 0
    assert "failed: 1 of 2 videos failed (keyframes internal 1); the others finished; the same command " \
        "retries them" in first.stderr
    assert "Traceback" not in first.stderr
    con = duckdb.connect(str(db), read_only=True)
    [(kind, message)] = con.execute("SELECT kind, message FROM errors WHERE stage = 'keyframes'").fetchall()
    con.close()
    assert kind == "internal" and message == "TypeError: 'Type' object is not subscriptable"

    asr_done = _finished(db, "asr")
    assert asr_done

    second = _process(*args[:-1], broken=False)  # the table, as a user sees it
    assert second.returncode == 0, second.stderr
    assert "retried 1 video that failed in the last run of this command (keyframes internal 1)" in second.stdout
    assert _finished(db, "asr") == asr_done  # redone from the stage that failed: the transcripts are kept

    third = _process(*args, broken=False)  # nothing failed last time: nothing retried, nothing redone
    assert third.returncode == 0, third.stderr
    result = json.loads(third.stdout)
    videos = {v["source"].rsplit("/", 1)[-1]: v for v in result["videos"]}
    assert result["retried"] == {} and result["failed"] == {}
    assert videos["chemistry_atoms.mp4"]["status"] == "kept" and videos["chemistry_atoms.mp4"]["keyframes"] > 0
    assert videos["math_quiet_tone.mp4"]["status"] == "rejected"
    assert result["samples"] == 1 and (out / "samples.jsonl").read_text().strip()


def _finished(db, stage: str) -> list:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute("SELECT video_id, finished_at FROM stage_status WHERE stage = ? ORDER BY video_id",
                           [stage]).fetchall()
    finally:
        con.close()
