"""`textbook process` on the audio conditions (tests/data/conditions_audio): the track taken,
the level normalized, English text only for English speech, loops dropped, durations measured,
an empty file reported; and the transcript rules and the store behind them."""

import json
import re

import duckdb
import pytest

from pipeline import stages
from pipeline.config import FilterConfig
from store import open_store
from tests.conftest import ROOT, run_cli

CONDITIONS = ROOT / "tests" / "data" / "conditions_audio"


def _parts(name: str) -> list[dict]:
    return json.loads((CONDITIONS / f"{name}.truth.json").read_text())["parts"]


def _truth_duration(name: str) -> float:
    return json.loads((CONDITIONS / f"{name}.truth.json").read_text())["duration"]


@pytest.fixture(scope="module")
def conditions(tmp_path_factory) -> dict:
    work = tmp_path_factory.mktemp("conditions")
    db, out = work / "c.duckdb", work / "out"
    proc = run_cli("process", str(CONDITIONS), "--db", str(db), "--out", str(out), "--json")
    assert proc.returncode == 1, proc.stderr  # the empty file fails; the others finish
    summary = json.loads(proc.stdout)
    videos = {v["source"].rsplit("/", 1)[-1]: v for v in summary["videos"]}
    return {"db": db, "out": out, "summary": summary, "videos": videos, "stderr": proc.stderr}


def _rows(db, sql: str, params: list | None = None) -> list[dict]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        cur = con.execute(sql, params or [])
        cols = [d[0] for d in cur.description]
        return [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]
    finally:
        con.close()


def _transcript(db, name: str) -> dict:
    row = _rows(db, "SELECT t.* FROM transcripts t JOIN videos v USING (video_id) WHERE v.source LIKE ?",
                [f"%/{name}"])[0]
    row["segments"] = _rows(db, "SELECT * FROM segments WHERE video_id = ? ORDER BY idx", [row["video_id"]])
    return row


@pytest.mark.slow
@pytest.mark.e2e
def test_each_condition_gets_its_result(conditions):
    got = {name: (v["status"], v["reason"]) for name, v in conditions["videos"].items()}
    assert got == {"two_tracks.mkv": ("kept", None), "quiet.mp4": ("kept", None), "en_de.mp4": ("kept", None),
                   "nodur.webm": ("kept", None), "loop.mp4": ("rejected", "repetition"),
                   "empty.mp4": ("error", "empty")}
    empty_lines = [line for line in conditions["stderr"].splitlines() if "empty.mp4" in line]
    assert len(empty_lines) == 1 and "empty (0 bytes)" in empty_lines[0]
    assert "Traceback" not in conditions["stderr"]


@pytest.mark.slow
@pytest.mark.e2e
def test_the_store_says_which_track_and_normalization(conditions):
    db = conditions["db"]
    track = json.loads(_transcript(db, "two_tracks.mkv")["audio_track"])
    assert track["reason"] == "language" and track["stream"]["position"] == 1 and track["stream"]["language"] == "en"
    two = _transcript(db, "two_tracks.mkv")
    assert two["language"] == "en" and "ohm" in two["text"].lower()
    quiet = _transcript(db, "quiet.mp4")
    norm = json.loads(quiet["normalization"])
    assert norm["method"] == "denoise+gain" and norm["gain_db"] > 25 and norm["peak_dbfs"] < -30
    assert quiet["language"] == "en" and quiet["language_probability"] >= 0.5
    assert json.loads(two["normalization"])["method"] == "none"
    videos = {r["source"].rsplit("/", 1)[-1]: r for r in _rows(db, "SELECT * FROM videos")}
    nodur = videos["nodur.webm"]
    assert nodur["duration_source"] == "measured" and abs(nodur["duration"] - _truth_duration("nodur.webm")) < 0.3
    streams = json.loads(videos["two_tracks.mkv"]["audio_streams"])
    assert [(s["language"], s["dispositions"]) for s in streams] == [("es", []), ("en", ["default"])]
    assert (videos["quiet.mp4"]["display_width"], videos["quiet.mp4"]["display_height"]) == (854, 480)


@pytest.mark.slow
@pytest.mark.e2e
def test_english_then_german_keeps_english_text_only(conditions):
    en, de = _parts("en_de.mp4")
    tr = _transcript(conditions["db"], "en_de.mp4")
    kept = [s for s in tr["segments"] if s["drop_reason"] is None]
    assert kept and all(s["language"] == "en" and s["end_s"] <= en["end"] + 1.0 for s in kept)
    windows = json.loads(tr["language_windows"])
    assert [w for w in windows if w["start"] >= de["start"] - 1.0 and not w["decoded"] and w["language"] != "en"]
    sample = next(json.loads(line) for line in (conditions["out"] / "samples.jsonl").read_text().splitlines()
                  if "en_de" in line)
    text = " ".join(t for t in sample["texts"] if t).lower()
    assert text.count("welcome") == 1 and text.count("voltage") == 1, text
    assert not set(re.findall(r"\w+", text)) & {"willkommen", "gesetz", "spannung", "widerstand", "strom"}


@pytest.mark.slow
@pytest.mark.e2e
def test_a_loop_is_dropped_and_counted_in_the_funnel(conditions):
    tr = _transcript(conditions["db"], "loop.mp4")
    looped = [s for s in tr["segments"] if s["drop_reason"] == "repetition"]
    assert looped and "and so on" in looped[0]["text"].lower()
    assert "and so on and so on" not in tr["text"].lower().replace(",", "")
    stats = run_cli("stats", "--db", str(conditions["db"]), "--json")
    assert stats.returncode == 0, stats.stderr
    funnel = json.loads(stats.stdout)["funnel"]
    assert funnel["dropped"] == {"repetition": 1} and funnel["errors"] == {"empty": 1}
    human = run_cli("stats", "--db", str(conditions["db"]))
    assert "repetition 1" in human.stdout and "empty 1" in human.stdout


@pytest.mark.slow
@pytest.mark.e2e
def test_a_stale_asr_stage_reruns_and_nothing_is_lost(conditions):
    """What a rerun after a stage version bump does: the stale stage reruns, the others do not."""
    db, out = conditions["db"], conditions["out"]
    vid = _rows(db, "SELECT video_id FROM videos WHERE source LIKE '%/nodur.webm'")[0]["video_id"]
    counts_before = {t: _rows(db, f'SELECT count(*) AS n FROM "{t}"')[0]["n"]
                     for t in ("videos", "transcripts", "segments", "keyframes", "errors")}
    con = duckdb.connect(str(db))
    con.execute("UPDATE stage_status SET config_hash = 'asr-v1' WHERE video_id = ? AND stage = 'asr'", [vid])
    con.close()
    proc = run_cli("process", str(CONDITIONS), "--db", str(db), "--out", str(out), "--json")
    assert proc.returncode == 1, proc.stderr
    again = json.loads(proc.stdout)
    assert again["stages_run"].get("asr") == 1 and "keyframes" not in again["stages_run"]
    assert "probe" not in again["stages_run"] and "ocr" not in again["stages_run"]
    assert {v["source"].rsplit("/", 1)[-1]: v["status"] for v in again["videos"]} == \
        {n: v["status"] for n, v in conditions["videos"].items()}
    assert {t: _rows(db, f'SELECT count(*) AS n FROM "{t}"')[0]["n"] for t in counts_before} == counts_before


# -- the rules and the store, without models -----------------------------------------------------------
def _tr(windows: list[tuple[str, float]], segments: list[tuple[float, float]] = ((0.0, 10.0),),
        loops: list[tuple[float, float]] = (), language: str = "en", probability: float = 0.9,
        stopped: str | None = None) -> dict:
    return {"language": language, "language_probability": probability, "stopped": stopped,
            "speech_duration": sum(s for _, s in windows),
            "windows": [{"language": lang, "speech": s} for lang, s in windows],
            "segments": [{"start_s": a, "end_s": b, "drop_reason": None} for a, b in segments],
            "dropped": [{"start_s": a, "end_s": b, "drop_reason": "repetition"} for a, b in loops]}


def test_rules_on_language_share_and_loops():
    cfg = FilterConfig()
    assert stages.transcript_rules(_tr([("en", 30), ("de", 30)]), 100, cfg) is None
    assert stages.transcript_rules(_tr([("en", 10), ("de", 50)]), 100, cfg) == "language:de"
    assert stages.transcript_rules(_tr([("en", 10), ("de", 50)]), 100, FilterConfig(min_language_share=0.1)) is None
    assert stages.transcript_rules(_tr([("es", 60)], [], language="es", stopped="language"), 0, cfg) == "language:es"
    assert stages.transcript_rules(_tr([("en", 20)], probability=0.45), 100, cfg) == "language_uncertain"
    assert stages.transcript_rules(_tr([("en", 20)], [(0, 4)], [(4, 18)]), 30, cfg) == "repetition"
    assert stages.transcript_rules(_tr([("en", 20)], [(0, 14)], [(14, 18)]), 30, cfg) is None
    assert stages.transcript_rules(_tr([("en", 20)], [(0, 14)], [(14, 18)]), 5, cfg) == "too_few_asr_tokens"
    assert stages.transcript_rules(_tr([("en", 20)], stopped="silent"), 0, cfg) == "silent"
    kept_as_german = _tr([("de", 36), ("en", 24)], [(0, 24), (24, 60)], language="de")  # asr.foreign = "keep"
    assert stages.transcript_rules(kept_as_german, 100, cfg) is None
    anything = FilterConfig(languages=())
    assert stages.transcript_rules(_tr([("de", 60)], language="de"), 100, anything) is None


def test_a_transcript_from_before_migration_005_still_reads(tmp_path):
    """Rows written by the old code stay readable and pass the new rules (nothing recorded is lost)."""
    db = tmp_path / "old.duckdb"
    con = duckdb.connect(str(db))
    con.execute("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name VARCHAR NOT NULL, "
                "applied_at TIMESTAMP NOT NULL)")
    for path in sorted((ROOT / "store" / "migrations").glob("*.sql")):
        version = int(path.name[:3])
        if version < 5:
            con.execute(path.read_text())
            con.execute("INSERT INTO schema_migrations VALUES (?, ?, now())", [version, path.stem])
    con.execute("INSERT INTO videos (video_id, source, status, updated_at) VALUES ('v', 'v.mp4', 'kept', now())")
    con.execute("INSERT INTO transcripts VALUES ('v', 'en', 0.93, 20.0, 18.0, 'whisper-base-offline', '{}', "
                "'Hello there.', 30, 1.5, NULL)")
    con.execute("INSERT INTO segments VALUES ('v', 0, 0.5, 2.0, 'Hello there.', -0.2, 0.01, '[]')")
    con.close()
    store = open_store(db)
    try:
        tr = store.transcript("v")
        assert [s["text"] for s in tr["segments"]] == ["Hello there."] and tr["dropped"] == []
        assert tr["windows"] == [] and tr["audio_track"] is None and tr["normalization"] is None
        assert stages.language_seconds(tr) == {"en": 18.0}
        assert stages.transcript_rules(tr, tr["n_tokens"], FilterConfig()) is None
        assert store.video("v")["status"] == "kept" and store.video("v")["rotation"] is None
    finally:
        store.close()


def test_a_transcript_round_trips_with_dropped_segments(tmp_path):
    store = open_store(tmp_path / "t.duckdb")
    try:
        store.upsert_video({"video_id": "v", "source": "v.mp4"})
        seg = {"start": 0.0, "end": 2.0, "text": "Hi.", "avg_logprob": -0.1, "no_speech_prob": 0.0,
               "words": [{"start": 0.0, "end": 2.0, "word": " Hi.", "probability": 0.9}], "language": "en",
               "drop_reason": None}
        loop = {**seg, "start": 2.0, "end": 9.0, "text": "1.1.1.1.1.1.1.1.1", "words": [], "drop_reason": "repetition"}
        tr = {"language": "en", "language_probability": 0.9, "duration": 10.0, "speech_duration": 9.0,
              "model": "m", "options": {}, "seconds": 1.0, "stopped": None, "segments": [seg], "dropped": [loop],
              "windows": [{"start": 0.0, "end": 9.0, "speech": 9.0, "language": "en", "probability": 0.9,
                           "decoded": True, "level": 0}],
              "track": {"stream": {"index": 2, "position": 1}, "reason": "default"},
              "normalization": {"method": "none", "peak_dbfs": -3.0, "noise_floor_dbfs": -90.0, "gain_db": 0.0,
                                "filter": ""}}
        store.save_transcript("v", "h", tr, 2)
        got = store.transcript("v")
        assert [s["text"] for s in got["segments"]] == ["Hi."] and got["text"] == "Hi."
        assert [(s["text"], s["drop_reason"]) for s in got["dropped"]] == [("1.1.1.1.1.1.1.1.1", "repetition")]
        assert got["windows"] == tr["windows"] and got["audio_track"]["stream"]["position"] == 1
        assert got["normalization"]["method"] == "none"
        assert stages.repetition_share(got) == pytest.approx(7 / 9)
    finally:
        store.close()
