"""Object stores other than S3 (tools.storage through fsspec).

- ``gs://`` without gcsfs (not in the lock): `textbook process --media gs://...`, a ``gs://`` input and
  `textbook export --out gs://...` each stop with one line naming the package, and a non-zero exit.
- The path a ``gs://`` URI takes once gcsfs is there is fsspec's generic one (S3 alone gets an endpoint and a
  listing-cache setting): ``process`` with its input, media root and ``--out`` all in fsspec's in-memory file
  system (``memory://``, a real fsspec file system in this process) gives the local run's samples, frames and
  images as objects there. What gcsfs itself does (auth, retries) is not tested: it is not installed.
"""

from __future__ import annotations

import importlib.util
import json
import shutil

import pytest

from pipeline.config import PipelineConfig
from pipeline.runner import Runner
from store import open_store
from tests.conftest import LESSONS, run_cli
from tools import storage

LESSON = "chemistry_atoms"


@pytest.fixture(scope="module")
def local(tmp_path_factory) -> dict:
    """The lesson (and its sidecar) processed from a local folder into a local store and export."""
    root = tmp_path_factory.mktemp("local")
    (root / "in").mkdir()
    for ext in (".mp4", ".json"):
        shutil.copy(LESSONS / f"{LESSON}{ext}", root / "in" / f"{LESSON}{ext}")
    store = open_store(root / "runs.duckdb")
    try:
        result = Runner(store, PipelineConfig(), root / "out").run([root / "in"])
    finally:
        store.close()
    assert result.samples > 0
    return {"db": root / "runs.duckdb", "samples": (root / "out" / "samples.jsonl").read_text().splitlines()}


def _one_line(proc) -> str:
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode != 0 and len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    return lines[0]


def test_gs_without_gcsfs_stops_in_one_line(local, tmp_path):
    assert importlib.util.find_spec("gcsfs") is None, "gcsfs is installed: this test is about its absence"
    want = "gs:// needs the gcsfs package, which is not installed (pip install gcsfs)"
    media = run_cli("process", str(LESSONS / f"{LESSON}.mp4"), "--media", "gs://tb-bucket/media",
                    "--db", str(tmp_path / "a.duckdb"), "--out", str(tmp_path / "out"))
    assert _one_line(media) == f"error: {want}" and media.returncode == 2  # bad input, before anything starts
    assert not (tmp_path / "a.duckdb").exists() and not (tmp_path / "out").exists()
    found = run_cli("process", "gs://tb-bucket/in/", "--db", str(tmp_path / "b.duckdb"), "--out", str(tmp_path / "o"))
    assert _one_line(found) == f"error: cannot list gs://tb-bucket/in/: {want}"
    assert not (tmp_path / "b.duckdb").exists()  # refused before any store was made
    out = run_cli("export", "--db", str(local["db"]), "--out", "gs://tb-bucket/out")
    assert want in _one_line(out)


def test_process_through_fsspecs_generic_path(local, tmp_path):
    """Input, media root and --out in memory://: fsspec's in-memory file system, which lives in this process
    (so the local executor, in this process, is what can use it)."""
    root = f"memory://tb-{tmp_path.name}"
    for ext in (".mp4", ".json"):
        storage.put_file(LESSONS / f"{LESSON}{ext}", storage.join(root, "in", f"{LESSON}{ext}"))
    store = open_store(tmp_path / "mem.duckdb")
    try:
        result = Runner(store, PipelineConfig(), f"{root}/out", media=f"{root}/media").run([f"{root}/in/"])
        frames = [r["path"] for r in store.rows("SELECT path FROM keyframes")]
        sources = [r["source"] for r in store.rows("SELECT source FROM videos")]
    finally:
        store.close()
    assert result.export == f"{root}/out/samples.jsonl" and result.media == f"{root}/media"
    samples = storage.read_bytes(result.export).decode().splitlines()
    assert samples == local["samples"]  # texts, OCR, image names, metadata (the source: its key under in/)
    assert sources == [f"{root}/in/{LESSON}.mp4"]
    assert frames and all(p.startswith(f"{root}/media/frames/") and storage.is_file(p) for p in frames)
    images = [i for s in samples for i in json.loads(s)["images"] if i]
    assert images and all(storage.read_bytes(storage.join(root, "out", i))[:3] == b"\xff\xd8\xff" for i in images)
    assert not (tmp_path / "mem_media").exists()  # nothing beside the store
    fs, path = storage.filesystem(root)
    fs.rm(path, recursive=True)  # the in-memory objects of this test
