"""`textbook process` end to end on the sample lessons: the real ffmpeg, whisper, tesseract and DuckDB."""

import json
import re
import signal
import subprocess
import sys
import time

import duckdb
import pytest

from pipeline.tokens import count_tokens
from tests.conftest import LESSONS, ROOT, run_cli, truth

# every test reads the session's real `textbook process` run of the lessons (tests/conftest.py: processed)
pytestmark = [pytest.mark.e2e, pytest.mark.slow]

NAME = re.compile(r"^images/([A-Za-z0-9_-]+)/\1_(\d+)-(\d+)_([1-9]\d*)\.jpg$")  # pipeline.assemble.image_name


def _by_source(summary: dict) -> dict:
    return {v["source"].rsplit("/", 1)[-1].removesuffix(".mp4"): v for v in summary["videos"]}


def test_statuses_and_reasons(processed):
    videos = _by_source(processed["summary"])
    assert videos["physics_newton"]["status"] == "kept"
    assert videos["chemistry_atoms"]["status"] == "kept"
    assert (videos["math_quiet_tone"]["status"], videos["math_quiet_tone"]["reason"]) == ("rejected", "silent")
    assert (videos["math_primos_es"]["status"], videos["math_primos_es"]["reason"]) == ("rejected", "language:es")
    assert (videos["earth_no_audio"]["status"], videos["earth_no_audio"]["reason"]) == ("rejected", "no_audio")
    assert (videos["physics_truncated"]["status"], videos["physics_truncated"]["reason"]) == ("error", "corrupt")
    assert videos["physics_newton"]["keyframes"] == len(truth("physics_newton")["slides"])
    assert videos["chemistry_atoms"]["keyframes"] == len(truth("chemistry_atoms")["slides"])
    assert processed["summary"]["samples"] == 2
    [(where, n)] = processed["summary"]["failed"].items()  # counted by stage and kind
    assert where.endswith(" corrupt") and n == 1
    assert f"failed: 1 of 6 videos failed ({where} 1)" in processed["stderr"]
    assert "the files themselves are at fault" in processed["stderr"]  # a corrupt file: a rerun cannot help


def _samples(out) -> list[dict]:
    return [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]


def test_samples_follow_the_released_format(processed):
    out = processed["out"]
    samples = _samples(out)
    assert len(samples) == 2
    for s in samples:
        assert set(s) == {"images", "texts", "text_ocr_list", "metadata", "image_num", "text_num", "token_num"}
        n = len(s["images"])
        assert len(s["texts"]) == len(s["text_ocr_list"]) == len(s["metadata"]) == n
        for img, text, ocr, meta in zip(s["images"], s["texts"], s["text_ocr_list"], s["metadata"], strict=True):
            assert (img is None) != (text is None)
            if img is not None:
                m = NAME.match(img)
                assert m, img
                assert (out / img).is_file()
                vid, start, end, _ = m.groups()
                assert meta["video_id"] == vid
                assert int(start) == round(meta["clip_start"] * 1000) and int(end) == round(meta["clip_end"] * 1000)
                # a slide that appears just before its clip starts is still on screen when it starts
                assert meta["keyframe_time"] <= meta["clip_end"]
                assert ocr is None
            else:
                assert ocr.endswith(text)
            assert meta["source"].endswith(".mp4")
        assert s["image_num"] == sum(i is not None for i in s["images"])
        assert s["text_num"] == sum(count_tokens(t) for t in s["texts"] if t)  # ASR tokens, as released
        assert s["token_num"] > 0


def test_every_slide_appears_once_with_its_title_in_the_ocr(processed):
    samples = _samples(processed["out"])
    for name in ("physics_newton", "chemistry_atoms"):
        slides = truth(name)["slides"]
        s = next(x for x in samples if x["metadata"][0]["source"].endswith(f"{name}.mp4"))
        times = [m["keyframe_time"] for m in s["metadata"] if m["type"] == "image"]
        hit = [next(i for i, sl in enumerate(slides) if sl["start"] <= t < sl["end"]) for t in times]
        assert hit == list(range(len(slides)))
        ocr = " ".join(t for t in s["text_ocr_list"] if t).lower()
        for sl in slides:
            assert sl["title"].lower() in ocr


def _content_words(text: str) -> set[str]:
    return {w for w in re.findall(r"[a-z]+", text.lower()) if len(w) > 3}


def test_each_keyframe_sits_with_the_narration_about_its_slide(processed):
    samples = _samples(processed["out"])
    for name in ("physics_newton", "chemistry_atoms"):
        slides = truth(name)["slides"]
        s = next(x for x in samples if x["metadata"][0]["source"].endswith(f"{name}.mp4"))
        pending = []
        for img, text, meta in zip(s["images"], s["texts"], s["metadata"], strict=True):
            if img is not None:
                pending.append(next(sl for sl in slides if sl["start"] <= meta["keyframe_time"] < sl["end"]))
                continue
            for slide in pending:  # the clip's narration talks about each slide shown with it
                said = _content_words(slide["narration"])
                assert len(said & _content_words(text)) >= len(said) / 2, (slide["title"], text)
            pending = []


def test_store_records_everything(processed):
    con = duckdb.connect(str(processed["db"]), read_only=True)
    try:
        assert con.execute("SELECT count(*) FROM runs").fetchone()[0] == 1
        cfg = json.loads(con.execute("SELECT config FROM runs").fetchone()[0])
        assert cfg["asr"]["model"] == "whisper-base-offline" and cfg["keyframes"]["threshold"] == 0.9
        errors = con.execute("SELECT kind, stage FROM errors").fetchall()
        assert errors == [("corrupt", "probe")]
        assert con.execute("SELECT count(*) FROM keyframes k LEFT JOIN ocr o USING (video_id, idx) "
                           "WHERE o.raw IS NULL").fetchone()[0] == 0
        assert con.execute("SELECT count(*) FROM segments").fetchone()[0] > 0
        # the silent and the Spanish lesson were dropped by the transcript rules: no keyframes, no OCR for them
        visual = {src.rsplit("/", 1)[-1].removesuffix(".mp4"): n for src, n in con.execute(
            "SELECT v.source, count(s.stage) FROM videos v LEFT JOIN stage_status s "
            "ON s.video_id = v.video_id AND s.stage IN ('keyframes', 'ocr') GROUP BY v.source").fetchall()}
        assert visual["math_quiet_tone"] == visual["math_primos_es"] == 0
        assert visual["physics_newton"] == visual["chemistry_atoms"] == 2
        versions = [r[0] for r in con.execute("SELECT version FROM schema_migrations ORDER BY 1").fetchall()]
        assert versions == sorted(int(p.name.split("_")[0]) for p in (ROOT / "store" / "migrations").glob("*.sql"))
    finally:
        con.close()


def _counts(db) -> dict:
    con = duckdb.connect(str(db), read_only=True)
    try:
        tables = [r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()]
        return {t: con.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0] for t in tables}
    finally:
        con.close()


def test_rerun_adds_no_rows_and_runs_no_stage(processed):
    before = _counts(processed["db"])
    jsonl = (processed["out"] / "samples.jsonl").read_text()
    proc = run_cli("process", str(LESSONS), "--db", str(processed["db"]), "--out", str(processed["out"]), "--json")
    assert proc.returncode == 1
    again = json.loads(proc.stdout)
    assert again["stages_run"] == {}
    assert again["run_id"] == processed["summary"]["run_id"]
    assert _counts(processed["db"]) == before
    assert (processed["out"] / "samples.jsonl").read_text() == jsonl


def test_stats_reports_tables_and_funnel(processed):
    proc = run_cli("stats", "--db", str(processed["db"]), "--json")
    assert proc.returncode == 0, proc.stderr
    stats = json.loads(proc.stdout)
    subjects = {r["subject"]: r for r in stats["table7"]}
    assert set(subjects) == {"physics", "chemistry", "total"}
    assert subjects["physics"]["keyframes"] == 6 and subjects["physics"]["videos"] == 1
    assert subjects["total"]["samples"] == 2
    assert subjects["physics"]["asr_tokens"] > 50 and subjects["physics"]["ocr_tokens"] > 20
    assert stats["table1"]["images_per_sample"] == {"min": 4, "max": 6, "avg": 5.0}
    funnel = stats["funnel"]
    assert funnel["dropped"] == {"language:es": 1, "no_audio": 1, "silent": 1}
    assert funnel["errors"] == {"corrupt": 1}
    assert [s["videos"] for s in funnel["steps"]] == [6, 5, 4, 2, 2, 2]
    # the default packing fits the trainer's defaults: it would drop nothing
    drops = stats["trainer_drops"]
    assert (drops["max_images"], drops["max_length"], drops["images"]) == (12, 2048, 10)
    assert (drops["samples_cut"], drops["images_over_cap"], drops["images_cut"], drops["text_tokens_cut"]) == \
        (0, 0, 0, 0) and drops["text_tokens"] > 50
    human = run_cli("stats", "--db", str(processed["db"]))
    assert human.returncode == 0 and "physics" in human.stdout and "funnel" in human.stdout
    assert "trainer at --max-images 12 --max-length 2048 (64 tokens/image): 0 of 2 samples not read whole; " \
           "drops 0 of 10 images" in " ".join(human.stdout.split())


def test_export_formats(processed, tmp_path):
    import pyarrow.parquet as pq

    jsonl = _samples(processed["out"])
    for fmt, name in (("json", "samples.json"), ("parquet", "samples.parquet"), ("jsonl", "samples.jsonl")):
        proc = run_cli("export", "--db", str(processed["db"]), "--format", fmt, "--out", str(tmp_path / fmt))
        assert proc.returncode == 0, proc.stderr
        target = tmp_path / fmt / name
        if fmt == "json":
            assert json.loads(target.read_text()) == jsonl
        elif fmt == "parquet":
            table = pq.read_table(target).to_pylist()
            assert [r["images"] for r in table] == [s["images"] for s in jsonl]
            assert [json.loads(r["metadata"]) for r in table] == [s["metadata"] for s in jsonl]
        else:
            assert _samples(tmp_path / fmt) == jsonl
        for s in jsonl:
            for img in s["images"]:
                assert img is None or (tmp_path / fmt / img).is_file()


def test_sigkill_mid_run_then_rerun_gives_the_same_samples(processed, tmp_path):
    """Kill -9 at several points of a run; rerunning finishes with the uninterrupted run's samples."""
    db, out = tmp_path / "runs.duckdb", tmp_path / "out"
    args = [sys.executable, "-m", "textbook.cli", "process", str(LESSONS), "--db", str(db), "--out", str(out), "-q"]
    for delay in (4.0, 9.0):
        proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(delay)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        proc.wait()
    final = run_cli("process", str(LESSONS), "--db", str(db), "--out", str(out), "--json")
    assert final.returncode == 1, final.stderr
    assert _samples(out) == _samples(processed["out"])
    assert _counts(db) == _counts(processed["db"])


def test_process_pool_executor_gives_the_same_samples(processed, tmp_path):
    proc = run_cli("process", str(LESSONS), "--db", str(tmp_path / "runs.duckdb"), "--out", str(tmp_path / "out"),
                   "--executor", "process", "--workers", "2", "--json")
    assert proc.returncode == 1, proc.stderr
    assert json.loads(proc.stdout)["stages_run"]["asr"] == 4
    assert _samples(tmp_path / "out") == _samples(processed["out"])
    assert _counts(tmp_path / "runs.duckdb") == _counts(processed["db"])
