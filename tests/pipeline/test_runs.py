"""Runs with other policies on one store keep their own outputs; exports never lose another run's samples;
a store from before migration 008 stays readable (issue 10)."""

from __future__ import annotations

import json
import shutil

import duckdb
import pytest
from PIL import Image

from pipeline.export import ExportError, ExportOptions, export
from pipeline.records import Status
from pipeline.stats import corpus_stats
from store import open_store
from tests.conftest import LESSONS, ROOT, run_cli
from tests.pipeline._corpus import make_corpus


def _lines(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


# -- two clip policies on one store (real process runs) --------------------------------------------------------
@pytest.fixture(scope="module")
def two_policies(tmp_path_factory):
    """physics_newton processed twice into one store: the default clip policy (run A, at most 4 keyframes
    per clip), then at most 1 keyframe per clip and shorter clips (run B); both into their own folder and
    into one shared folder."""
    work = tmp_path_factory.mktemp("policies")
    lesson = work / "lesson"
    lesson.mkdir()
    for suffix in (".mp4", ".json"):
        shutil.copy(LESSONS / f"physics_newton{suffix}", lesson / f"physics_newton{suffix}")
    narrow = work / "narrow.toml"
    narrow.write_text("[pipeline.clips]\nmax_keyframes = 1\nmin_seconds = 6.0\nmax_seconds = 12.0\n")
    db = work / "runs.duckdb"

    def process(out, *extra):
        proc = run_cli("process", str(lesson), "--db", str(db), "--out", str(out), "--json", *extra)
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout)

    a = process(work / "a")
    b = process(work / "b", "--config", str(narrow))
    shared_a = process(work / "shared")
    shared_b = process(work / "shared", "--config", str(narrow))
    return {"work": work, "db": db, "lesson": lesson, "narrow": narrow, "a": a, "b": b, "shared_a": shared_a,
            "shared_b": shared_b, "process": process}


def _export(db, run_id, out):
    proc = run_cli("export", "--db", str(db), "--run", run_id, "--out", str(out), "--json")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


@pytest.mark.slow
def test_two_clip_policies_keep_their_own_clips_and_both_export_right(two_policies, tmp_path):
    p = two_policies
    a, b = _lines(p["work"] / "a" / "samples.jsonl"), _lines(p["work"] / "b" / "samples.jsonl")
    assert p["a"]["run_id"] != p["b"]["run_id"]
    per_clip = {}
    for name, samples in (("a", a), ("b", b)):
        counts: dict = {}
        for m in samples[0]["metadata"]:
            if m["type"] == "image":
                counts[m["clip_index"]] = counts.get(m["clip_index"], 0) + 1
        per_clip[name] = counts
    assert max(per_clip["a"].values()) > 1 and max(per_clip["b"].values()) == 1
    assert len(per_clip["b"]) > len(per_clip["a"])  # shorter clips: more of them
    # B reused A's transcript and keyframes (the same ASR and keyframes config), and made its own OCR and clips
    assert p["b"]["stages_run"] == {"ocr": 1, "clips": 1, "pack": 1}
    # both export their own samples, in either order, any time later
    for order in (("a", "b"), ("b", "a")):
        for name in order:
            got = _export(p["db"], p[name]["run_id"], tmp_path / f"{order[0]}{name}")
            assert _lines(tmp_path / f"{order[0]}{name}" / "samples.jsonl") == (a if name == "a" else b), got
            for s in _lines(tmp_path / f"{order[0]}{name}" / "samples.jsonl"):
                assert all((tmp_path / f"{order[0]}{name}" / img).is_file() for img in s["images"] if img)
    # and after a rerun of A (all cached) B's export is still B's
    again = p["process"](p["work"] / "a2")
    assert again["stages_run"] == {} and again["run_id"] == p["a"]["run_id"]
    _export(p["db"], p["b"]["run_id"], tmp_path / "b-after")
    assert _lines(tmp_path / "b-after" / "samples.jsonl") == b
    # each run's clips, and its stats, are its own
    con = duckdb.connect(str(p["db"]), read_only=True)
    try:
        rows = con.execute("SELECT run_id, clips_hash, status FROM run_videos ORDER BY run_id").fetchall()
        hashes = {r[0]: r[1] for r in rows}
        assert hashes[p["a"]["run_id"]] != hashes[p["b"]["run_id"]] and {r[2] for r in rows} == {"kept"}
        assert con.execute("SELECT count(DISTINCT config_hash) FROM clips").fetchone()[0] == 2
    finally:
        con.close()
    stats_a = json.loads(run_cli("stats", "--db", str(p["db"]), "--run", p["a"]["run_id"], "--json").stdout)
    stats_b = json.loads(run_cli("stats", "--db", str(p["db"]), "--run", p["b"]["run_id"], "--json").stdout)
    assert stats_a["table7"][0]["clips"] == len(per_clip["a"]) and stats_b["table7"][0]["clips"] == len(per_clip["b"])
    assert stats_b["table7"][0]["keyframes"] == sum(per_clip["b"].values())


@pytest.mark.slow
def test_process_into_a_folder_with_another_runs_export_loses_nothing(two_policies):
    p = two_policies
    shared = p["work"] / "shared"
    a, b = _lines(p["work"] / "a" / "samples.jsonl"), _lines(p["work"] / "b" / "samples.jsonl")
    assert _lines(shared / "samples.jsonl") == a  # the first run's, untouched by the second
    b_file = shared / f"samples.{p['b']['run_id']}.jsonl"
    assert p["shared_b"]["export"] == str(b_file) and _lines(b_file) == b
    for s in [*a, *b]:
        assert all((shared / img).is_file() for img in s["images"] if img)
    # each run again into the shared folder: each rewrites its own file only
    p["process"](shared, "--config", str(p["narrow"]))
    p["process"](shared)
    assert _lines(shared / "samples.jsonl") == a and _lines(b_file) == b
    assert sorted(f.name for f in shared.glob("samples*")) == sorted(["samples.jsonl", b_file.name])


@pytest.mark.slow
def test_a_cached_rerun_into_a_new_folder_writes_the_samples(two_policies):
    p = two_policies
    fresh = p["work"] / "fresh"
    again = p["process"](fresh)
    assert again["stages_run"] == {} and again["samples"] == 1
    assert _lines(fresh / "samples.jsonl") == _lines(p["work"] / "a" / "samples.jsonl")
    assert all((fresh / img).is_file() for s in _lines(fresh / "samples.jsonl") for img in s["images"] if img)


# -- export naming (fast, synthetic corpus) ---------------------------------------------------------------------
def test_export_of_another_run_into_a_folder_takes_a_name_of_its_own(tmp_path):
    corpus = make_corpus(tmp_path / "c", videos=2)
    out = tmp_path / "out"
    first = export(corpus.samples, out, "jsonl", corpus.media, ExportOptions(run_id="run-a"))
    assert first.target == out / "samples.jsonl"
    before = (out / "samples.jsonl").read_bytes()
    second = export(corpus.samples[:1], out, "jsonl", corpus.media, ExportOptions(run_id="run-b"))
    assert second.target == out / "samples.run-b.jsonl" and (out / "samples.jsonl").read_bytes() == before
    assert len(_lines(second.target)) == 1
    again = export(corpus.samples[:1], out, "jsonl", corpus.media, ExportOptions(run_id="run-a"))
    assert again.target == out / "samples.jsonl" and len(_lines(out / "samples.jsonl")) == 1  # its own, replaced
    assert len(_lines(out / "samples.run-b.jsonl")) == 1
    # a samples.jsonl no export wrote is someone else's too
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "samples.jsonl").write_text("my own\n")
    got = export(corpus.samples, tmp_path / "mine", "jsonl", corpus.media, ExportOptions(run_id="run-a"))
    assert got.target.name == "samples.run-a.jsonl" and (tmp_path / "mine" / "samples.jsonl").read_text() == "my own\n"
    # the formats with fixed folders refuse rather than mix two runs
    export(corpus.samples, out, "webdataset", corpus.media, ExportOptions(run_id="run-a"))
    with pytest.raises(ExportError, match="holds another run's webdataset export"):
        export(corpus.samples, out, "webdataset", corpus.media, ExportOptions(run_id="run-b"))


def test_status_values_are_the_stored_strings_in_funnel_order():
    assert [s.value for s in Status][:4] == ["pending", "found", "review_meta", "judged_out"]
    assert Status("judged") is Status.TRANSCRIPT_ACCEPTED and Status.ACCEPTED.final and not Status.VISUALS.final
    assert Status.DOWNLOADED.rank < Status.TRANSCRIBED.rank < Status.VISUALS.rank < Status.ACCEPTED.rank
    assert f"{Status.KEPT}" == "kept"


# -- a store made by the previous schema ------------------------------------------------------------------------
def _old_store(tmp_path):
    """A store as migrations 001-007 left it: one processed video with transcript, keyframes with OCR, clips,
    its run and samples; media in the old layout (images/VID/NAME)."""
    db = tmp_path / "old.duckdb"
    media = tmp_path / "old_media"
    con = duckdb.connect(str(db))
    con.execute("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name VARCHAR NOT NULL, "
                "applied_at TIMESTAMP NOT NULL)")
    for path in sorted((ROOT / "store" / "migrations").glob("*.sql")):
        version = int(path.name.split("_")[0])
        if version <= 7:
            con.execute(path.read_text())
            con.execute("INSERT INTO schema_migrations VALUES (?, ?, now())", [version, path.stem])
    con.execute("INSERT INTO runs VALUES ('run-old', 'process', 'finished', '[]', '{}', 'c', now(), now(), 1, '{}')")
    con.execute("INSERT INTO videos (video_id, source, title, subject, status, updated_at, duration, width, height, "
                "has_audio, public_source) VALUES ('v1', '/x/v1.mp4', 'V', 'physics', 'kept', now(), 20.0, 64, 36, "
                "true, 'v1.mp4')")
    con.execute("INSERT INTO run_videos VALUES ('run-old', 'v1', 0)")
    for stage, h in (("probe", "hp"), ("asr", "ha"), ("keyframes", "hk"), ("ocr", "ho"), ("clips", "hc")):
        con.execute("INSERT INTO stage_status VALUES ('v1', ?, ?, 'done', NULL, 1.0, now())", [stage, h])
    con.execute("INSERT INTO transcripts (video_id, language, language_probability, duration, speech_duration, "
                "model, options, text, n_tokens, seconds, stopped) VALUES ('v1', 'en', 0.9, 20.0, 18.0, 'm', '{}', "
                "'Force is mass times acceleration.', 30, 1.0, NULL)")
    con.execute("INSERT INTO segments (video_id, idx, start_s, end_s, text, words) VALUES "
                "('v1', 0, 0.5, 9.0, 'Force is mass times acceleration.', '[]')")
    frames = []
    for i, t in enumerate((1.0, 6.0)):
        path = media / "frames" / "v1" / f"{i:05d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (64, 36), (50 * i, 90, 200)).save(path)
        frames.append(path)
        con.execute("INSERT INTO keyframes (video_id, idx, time_s, path, ssim, ocr_text, ocr_engine, ocr_kept, "
                    "ocr_drop_reason, ocr_raw) VALUES ('v1', ?, ?, ?, 0.5, ?, 'tesseract', ?, ?, ?)",
                    [i, t, str(path), "Newton's second law" if i == 0 else None, i == 0,
                     None if i == 0 else "ocr_empty", "Newton's second law" if i == 0 else ""])
    con.execute("INSERT INTO clips (video_id, idx, start_s, end_s, text, n_tokens, keyframes, decision, capped) "
                "VALUES ('v1', 0, 0.0, 20.0, 'Force is mass times acceleration.', 7, '[0, 1]', 'keep', '[]')")
    images = []
    for k in range(2):
        rel = f"images/v1/v1_0-20000_{k + 1}.jpg"
        (media / rel).parent.mkdir(parents=True, exist_ok=True)
        (media / rel).hardlink_to(frames[k])
        images.append(rel)
    meta = {"video_id": "v1", "subject": "physics", "clip_index": 0, "clip_start": 0.0, "clip_end": 20.0}
    sample = {"images": [*images, None], "texts": [None, None, "Force is mass times acceleration."],
              "text_ocr_list": [None, None, "Newton's second law\nForce is mass times acceleration."],
              "metadata": [{**meta, "type": kind} for kind in ("image", "image", "text")],
              "image_num": 2, "text_num": 7, "token_num": 1159}
    con.execute("INSERT INTO samples VALUES ('run-old', 0, ?, 2, 7, 1159)", [json.dumps(sample)])
    con.close()
    return db, media, sample


def test_a_store_from_the_previous_schema_migrates_and_stays_readable(tmp_path):
    db, media, sample = _old_store(tmp_path)
    store = open_store(db)
    try:
        assert store.scalar("SELECT max(version) FROM schema_migrations") >= 8
        assert store.transcript("v1")["text"] == "Force is mass times acceleration."
        assert store.transcript("v1", "ha")["segments"][0]["text"] == "Force is mass times acceleration."
        frames = store.keyframes("v1")
        assert [(f["idx"], f["ocr_text"], f["ocr_kept"]) for f in frames] == [
            (0, "Newton's second law", True), (1, None, False)]
        assert store.keyframes("v1", "hk", "ho")[1]["ocr_drop_reason"] == "ocr_empty"
        assert [c["keyframes"] for c in store.clips("v1", "hc")] == [[0, 1]]
        rv = store.run_video("run-old", "v1")
        assert (rv["status"], rv["asr_hash"], rv["keyframes_hash"], rv["ocr_hash"], rv["clips_hash"]) == \
            ("kept", "ha", "hk", "ho", "hc")
        assert store.stage("v1", "clips")["config_hash"] == "hc"
        stats = corpus_stats(store, "run-old")
        physics = stats["table7"][0]
        assert (physics["clips"], physics["keyframes"], physics["samples"]) == (1, 2, 1)
        assert physics["ocr_tokens"] > 0 and stats["funnel"]["ocr_dropped"] == {"ocr_empty": 1}
        # a new output under another hash sits beside the migrated one
        store.save_clips("v1", "hc2", [{"idx": 0, "start_s": 0.0, "end_s": 20.0, "text": "x", "n_tokens": 1,
                                        "keyframes": [0], "decision": "keep"}])
        assert [c["keyframes"] for c in store.clips("v1", "hc")] == [[0, 1]]
        assert [c["keyframes"] for c in store.clips("v1")] == [[0]]  # the latest
        assert corpus_stats(store, "run-old")["table7"][0]["keyframes"] == 2  # the run's own, still
        assert store.samples("run-old") == [sample]
    finally:
        store.close()
    shutil.move(str(media), str(db.parent / f"{db.stem}_media"))
    proc = run_cli("export", "--db", str(db), "--run", "run-old", "--out", str(tmp_path / "out"), "--json")
    assert proc.returncode == 0, proc.stderr
    (got,) = _lines(tmp_path / "out" / "samples.jsonl")
    assert got["images"][:2] == ["images/v1/v1_0-20000_1.jpg", "images/v1/v1_0-20000_2.jpg"]
    assert all((tmp_path / "out" / img).is_file() for img in got["images"] if img)
