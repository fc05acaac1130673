"""Paths in the store (store/paths.py): recorded relative to the store's folder, resolved from any working
directory; paths older versions recorded (relative to their run's working directory, or absolute in a
folder the store has left) still resolve."""

from __future__ import annotations

import shutil
from pathlib import Path

from PIL import Image

from store import open_store
from store.paths import media_dir, record_path, resolve_path


def _frame(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (32, 18), (40, 90, 200)).save(path)
    return path


def _keyframe(path: str) -> dict:
    return {"index": 0, "time": 1.5, "path": path, "ssim": 0.4, "min_tile_ssim": 0.3, "sharpness": 9.0}


def test_a_store_made_with_a_relative_path_is_read_from_another_folder(tmp_path, monkeypatch):
    made, elsewhere = tmp_path / "made", tmp_path / "elsewhere"
    made.mkdir()
    elsewhere.mkdir()
    monkeypatch.chdir(made)
    db = Path("rel/x.duckdb")
    assert media_dir(db) == made / "rel" / "x_media"  # absolute, whatever the working directory later
    frame = _frame(media_dir(db) / "frames" / "v1" / "h" / "t000001500.jpg")
    store = open_store(db)
    try:
        store.upsert_video({"video_id": "v1", "source": "v1.mp4"})
        store.save_keyframes("v1", "h", [_keyframe("rel/x_media/frames/v1/h/t000001500.jpg")], 0.1)  # as cwd-relative
        assert store.scalar("SELECT path FROM keyframes") == "x_media/frames/v1/h/t000001500.jpg"
    finally:
        store.close()
    monkeypatch.chdir(elsewhere)
    store = open_store(Path("../made/rel/x.duckdb"), read_only=True)
    try:
        assert store.keyframes("v1")[0]["path"] == str(frame)
    finally:
        store.close()


def test_a_file_outside_the_store_folder_is_recorded_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    db = tmp_path / "store" / "x.duckdb"
    assert record_path(db, "video.mp4") == str(tmp_path / "video.mp4")
    assert record_path(db, tmp_path / "store" / "x_media" / "downloads" / "a.mp4") == "x_media/downloads/a.mp4"
    assert resolve_path(db, str(tmp_path / "video.mp4")) == tmp_path / "video.mp4"
    assert resolve_path(db, None) is None and resolve_path(db, "") is None


def test_paths_older_versions_recorded_still_resolve(tmp_path, monkeypatch):
    # relative to the working directory of the run that made them (demo/runs_media/...), read from elsewhere
    db = tmp_path / "demo" / "runs.duckdb"
    frame = _frame(tmp_path / "demo" / "runs_media" / "frames" / "v1" / "h" / "t0.jpg")
    other = tmp_path / "other"
    other.mkdir()
    monkeypatch.chdir(other)
    assert resolve_path(db, "demo/runs_media/frames/v1/h/t0.jpg") == frame
    # absolute, in a folder the store and its media folder were since moved from
    moved = tmp_path / "moved"
    shutil.copytree(tmp_path / "demo", moved)
    assert resolve_path(moved / "runs.duckdb", str(frame)) == moved / "runs_media" / "frames" / "v1" / "h" / "t0.jpg"
    # relative to the old working directory, with no media folder part: found there, from that folder
    _frame(other / "loose" / "k.jpg")
    assert resolve_path(db, "loose/k.jpg") == other / "loose" / "k.jpg"
    # found nowhere: where it would be now (a check such as is_file() then fails and the stage reruns)
    assert resolve_path(db, "runs_media/frames/v1/h/gone.jpg") == tmp_path / "demo" / "runs_media" / "frames" / \
        "v1" / "h" / "gone.jpg"


def test_a_download_path_is_recorded_relative_and_read_back_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    store = open_store("s/x.duckdb")
    try:
        store.add_candidate("r1", "v1", "p1", "youtube", "https://example.invalid/v1", "q", 1, {})
        got = _frame(media_dir("s/x.duckdb") / "downloads" / "v1.jpg")
        store.update_candidate("r1", "v1", status="downloaded", path="s/x_media/downloads/v1.jpg")
        assert store.scalar("SELECT path FROM candidates") == "x_media/downloads/v1.jpg"
        assert store.candidates("r1")[0]["path"] == str(got)
    finally:
        store.close()
