"""The media root is recorded with the run: `textbook process --media DIR` then `textbook export` (and `view`)
without --media find the run's images there; an explicit --media still wins; the export names no path of
this machine. (The same with an object store: tests/pipeline/test_process_s3.py.)"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from pipeline.runner import recorded_media
from store import open_store
from tests.conftest import LESSONS, run_cli
from textbook.cli_view import _recorded_media


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> dict:
    """One lesson processed with its media root in a folder of its own, away from the store."""
    root = tmp_path_factory.mktemp("recorded")
    (root / "in").mkdir()
    for ext in (".mp4", ".json"):
        shutil.copy(LESSONS / f"chemistry_atoms{ext}", root / "in" / f"chemistry_atoms{ext}")
    media = root / "shared" / "media"
    proc = run_cli("process", str(root / "in"), "--db", str(root / "db" / "runs.duckdb"), "--media", str(media),
                   "--out", str(root / "out"), "--json", "-q")
    assert proc.returncode == 0, proc.stderr
    return {"root": root, "db": root / "db" / "runs.duckdb", "media": media, "summary": json.loads(proc.stdout)}


def _files_text(folder: Path) -> str:
    return "\n".join(p.read_bytes().decode("utf-8", "replace") for p in sorted(folder.rglob("*")) if p.is_file())


def test_export_finds_the_recorded_media_root(run, tmp_path):
    assert run["summary"]["media"] == str(run["media"])
    assert not (run["db"].parent / "runs_media").exists()  # the frames are only in the --media root
    for fmt in ("jsonl", "hf"):
        out = tmp_path / fmt
        proc = run_cli("export", "--db", str(run["db"]), "--format", fmt, "--out", str(out))
        assert proc.returncode == 0, proc.stderr
        images = [p for p in out.rglob("*.jpg")] if fmt == "jsonl" else list(out.rglob("*.parquet"))
        assert images, f"{fmt}: nothing exported"
        text = _files_text(out)
        assert str(run["root"]) not in text and str(run["media"]) not in text  # no path of this machine
    samples = [json.loads(line) for line in (tmp_path / "jsonl" / "samples.jsonl").read_text().splitlines()]
    shown = [i for s in samples for i in s["images"] if i]
    assert len(shown) == 4 and all((tmp_path / "jsonl" / i).is_file() for i in shown)


def test_an_explicit_media_wins(run, tmp_path):
    empty = tmp_path / "empty_media"
    empty.mkdir()
    proc = run_cli("export", "--db", str(run["db"]), "--media", str(empty), "--out", str(tmp_path / "out"))
    assert proc.returncode != 0
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "keyframe file missing" in lines[0] and "Traceback" not in proc.stderr


def test_view_uses_it_and_a_moved_root_falls_back(run, tmp_path):
    assert _recorded_media(run["db"]) == str(run["media"])
    copy = tmp_path / "copy"
    shutil.copytree(run["db"].parent, copy)
    store = open_store(copy / "runs.duckdb", read_only=True)
    try:
        run_id = store.latest_run()
        assert recorded_media(store, run_id) == str(run["media"])
        moved = run["media"].with_name("moved")
        run["media"].rename(moved)
        try:  # gone from where it was: the caller's default (NAME_media/ beside the store) applies
            assert recorded_media(store, run_id) is None
        finally:
            moved.rename(run["media"])
    finally:
        store.close()


def test_a_media_uri_with_credentials_is_refused_and_never_recorded(tmp_path):
    db = tmp_path / "runs.duckdb"
    proc = run_cli("process", str(LESSONS / "chemistry_atoms.mp4"), "--db", str(db), "--out", str(tmp_path / "out"),
                   "--media", "s3://AKIATESTKEY:very-secret-value@tb-bucket/media")
    line = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 2 and len(line) == 1, proc.stderr  # bad input: refused before anything starts
    assert line[0] == ("error: s3://***@tb-bucket/media: credentials in a URI are refused; set them in the "
                       "environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, ...)")
    assert "very-secret-value" not in proc.stderr + proc.stdout and "AKIATESTKEY" not in proc.stderr
    assert not db.exists() and not (tmp_path / "out").exists()  # no store made, no run recorded, no folder left
    # the viewer refuses it as well, in the same line, before serving
    open_store(tmp_path / "view.duckdb").close()
    view = run_cli("view", "--db", str(tmp_path / "view.duckdb"), "--media",
                   "s3://AKIATESTKEY:very-secret-value@tb-bucket/media", "--port", "0", timeout=60)
    assert view.returncode == 2 and view.stderr.strip() == line[0], view.stderr
    assert "very-secret-value" not in view.stderr + view.stdout
