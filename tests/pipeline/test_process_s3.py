"""`textbook process s3://bucket/in/ --media s3://bucket/media --out s3://bucket/out` against moto's S3 server on
127.0.0.1 (tests/conftest.py ``s3_bucket``): real ffmpeg, whisper, tesseract and DuckDB; the videos, the frames,
the clip images and the export all in the bucket, nothing written beside the store; the same samples as a local
run of the same videos; `textbook train`'s reader reads the export back; a media root that cannot be written
stops the run before its first task in one line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import duckdb
import pytest

from tests.conftest import LESSONS, run_cli
from tools import storage

VIDEOS = ("chemistry_atoms", "earth_no_audio")  # one kept (4 slides), one rejected (no_audio)


def _samples_of(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


@pytest.fixture(scope="module")
def local_run(tmp_path_factory) -> dict:
    """The same videos processed from a local folder into a local store and export: what S3 must give."""
    root = tmp_path_factory.mktemp("local")
    (root / "in").mkdir()
    for name in VIDEOS:
        for ext in (".mp4", ".json"):
            shutil.copy(LESSONS / f"{name}{ext}", root / "in" / f"{name}{ext}")
    proc = run_cli("process", str(root / "in"), "--db", str(root / "runs.duckdb"), "--out", str(root / "out"),
                   "--json", "-q")
    assert proc.returncode == 0, proc.stderr
    return {"summary": json.loads(proc.stdout), "samples": _samples_of((root / "out" / "samples.jsonl").read_text())}


def _upload(bucket: str) -> str:
    """The videos and their sidecars under s3://BUCKET/in/: the input prefix."""
    for name in VIDEOS:
        for ext in (".mp4", ".json"):
            storage.put_file(LESSONS / f"{name}{ext}", storage.join(bucket, "in", f"{name}{ext}"))
    return f"{bucket}/in/"


def test_discover_finds_the_videos_of_a_prefix_or_an_object(s3_bucket):
    from pipeline.runner import InputError, discover, sidecar

    prefix = _upload(s3_bucket)
    storage.write_bytes(f"{s3_bucket}/in/notes.txt", b"x")
    storage.write_bytes(f"{s3_bucket}/in/sub/more.MKV", b"x")
    want = [f"{s3_bucket}/in/{n}.mp4" for n in VIDEOS] + [f"{s3_bucket}/in/sub/more.MKV"]
    assert discover([prefix]) == sorted(want) and all(isinstance(f, str) for f in discover([prefix]))
    assert discover([want[0], prefix.rstrip("/")]) == [want[0], *sorted(want[1:])]  # each once, in order
    assert sidecar(want[0])["subject"] == json.loads((LESSONS / f"{VIDEOS[0]}.json").read_text())["subject"]
    assert sidecar(want[2]) == {}
    for bad, says in [(f"{s3_bucket}/nothing/", "no such file or folder"), (f"{s3_bucket}/in/notes.txt", "not a video"),
                      ("s3://tb-no-such-bucket-here/in/", "no such file or folder")]:
        with pytest.raises(InputError, match=says):
            discover([bad])
    storage.write_bytes(f"{s3_bucket}/empty/a.txt", b"x")
    with pytest.raises(InputError, match="holds no video files"):
        discover([f"{s3_bucket}/empty/"])


def _process(bucket: str, db: Path, *extra: str, media: str | None = None):
    return run_cli("process", _upload(bucket), "--media", media or f"{bucket}/media", "--out", f"{bucket}/out",
                   "--db", str(db), "--json", "-q", *extra)


def _check_s3_run(proc, bucket: str, db: Path, local_run: dict) -> None:
    """The run in the bucket gives the local run's statuses and samples, its images are objects there, the
    store names the objects (never a local path), nothing was written beside the store, and the reader of
    `textbook train` reads every image back from the bucket."""
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    status = {Path(v["source"]).name: (v["status"], v["reason"], v["keyframes"]) for v in summary["videos"]}
    want = {Path(v["source"]).name: (v["status"], v["reason"], v["keyframes"]) for v in local_run["summary"]["videos"]}
    assert status == want and status["chemistry_atoms.mp4"] == ("kept", None, 4)
    assert summary["export"] == f"{bucket}/out/samples.jsonl"

    samples = _samples_of(storage.read_bytes(f"{bucket}/out/samples.jsonl").decode())
    assert [s["texts"] for s in samples] == [s["texts"] for s in local_run["samples"]]
    assert [s["text_ocr_list"] for s in samples] == [s["text_ocr_list"] for s in local_run["samples"]]
    assert [s["images"] for s in samples] == [s["images"] for s in local_run["samples"]]
    # the same metadata (the sidecar read beside the object; the source: the key under the input prefix)
    assert [s["metadata"] for s in samples] == [s["metadata"] for s in local_run["samples"]]
    images = [i for s in samples for i in s["images"] if i]
    assert len(images) == 4
    for img in images:  # the export's images are objects in the bucket, each a JPEG
        assert storage.read_bytes(storage.join(bucket, "out", img))[:3] == b"\xff\xd8\xff"

    con = duckdb.connect(str(db), read_only=True)
    try:
        frames = [r[0] for r in con.execute("SELECT path FROM keyframes").fetchall()]
        sources = sorted(r[0] for r in con.execute("SELECT source FROM videos").fetchall())
    finally:
        con.close()
    assert len(frames) == 4 and all(p.startswith(f"{bucket}/media/frames/") for p in frames)
    assert all(storage.is_file(p) for p in frames)  # written by the worker into the bucket
    assert sources == [f"{bucket}/in/{name}.mp4" for name in VIDEOS]
    clip_images = storage.listdir(f"{bucket}/media/images")
    assert len(clip_images) == 4 and {Path(i).name for i in clip_images} == {Path(i).name for i in images}
    assert not (db.parent / f"{db.stem}_media").exists()  # nothing beside the store: the media root is the bucket

    from train.data import InterleavedDataset, ReaderConfig
    from train.model import tiny_processor

    ds = InterleavedDataset(f"{bucket}/out", tiny_processor(), ReaderConfig(max_missing_images=0.0))
    examples = list(ds)
    assert len(examples) == len(samples)
    assert ds.stats.images_loaded == len(images) and ds.stats.images_missing == 0


def test_process_in_a_bucket_gives_the_local_samples(s3_bucket, tmp_path, local_run):
    db = tmp_path / "runs.duckdb"
    _check_s3_run(_process(s3_bucket, db), s3_bucket, db, local_run)
    again = _process(s3_bucket, db)  # every output is found in the bucket: nothing is computed again
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["stages_run"] == {}
    # `textbook export` of that run into a local folder, its images read from the bucket's media root, which
    # the run recorded: no --media needed again
    proc = run_cli("export", "--db", str(db), "--out", str(tmp_path / "local"))
    assert proc.returncode == 0, proc.stderr
    assert "without an image" not in proc.stdout
    samples = _samples_of((tmp_path / "local" / "samples.jsonl").read_text())
    assert [s["texts"] for s in samples] == [s["texts"] for s in local_run["samples"]]
    images = [i for s in samples for i in s["images"] if i]
    assert len(images) == 4 and all((tmp_path / "local" / i).is_file() for i in images)


def test_a_media_root_that_cannot_be_written_stops_the_run_in_one_line(s3_bucket, tmp_path):
    db = tmp_path / "runs.duckdb"
    proc = _process(s3_bucket, db, media="s3://tb-no-such-bucket-here/media")
    assert proc.returncode == 1, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert lines[0].startswith("error: preflight: this machine (")
    assert "s3://tb-no-such-bucket-here/media" in lines[0] and "no such bucket" in lines[0]
    assert not storage.exists(f"{s3_bucket}/out/samples.jsonl")


@pytest.mark.slow
def test_process_in_a_bucket_on_ray(s3_bucket, tmp_path, local_run, monkeypatch):
    """The same with `--executor ray` (a local Ray): the tasks read the videos and write the frames through
    the URIs; each node's preflight writes and reads the media root first, and one that cannot stops the
    run in one line naming the node (and nothing else: not Ray 2.60's "Token authentication is enabled"
    notice, which an unset RAY_AUTH_MODE gives: pipeline.pools.local_auth_mode)."""
    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)  # as a user's shell has it (an earlier test's Ray sets it)
    db = tmp_path / "runs.duckdb"
    bad = _process(s3_bucket, tmp_path / "bad.duckdb", "--executor", "ray", "--workers", "2",
                   media="s3://tb-no-such-bucket-here/media")
    lines = [line for line in bad.stderr.splitlines() if line.strip()]
    assert bad.returncode == 1 and len(lines) == 1 and "Traceback" not in bad.stderr, bad.stderr
    assert lines[0].startswith("error: preflight: node ") and "s3://tb-no-such-bucket-here/media" in lines[0]
    _check_s3_run(_process(s3_bucket, db, "--executor", "ray", "--workers", "2"), s3_bucket, db, local_run)
