import subprocess
import sys

import duckdb
import pytest

from store import StoreError, open_store
from tests.conftest import ROOT


def test_migrations_apply_once(tmp_path):
    db = tmp_path / "t.duckdb"
    store = open_store(db)
    files = sorted(p.name for p in (ROOT / "store" / "migrations").glob("*.sql"))
    assert [r[0] for r in store.con.execute("SELECT version FROM schema_migrations ORDER BY 1").fetchall()] == \
        [int(name.split("_")[0]) for name in files]
    assert store.migrate() == []
    store.close()
    store = open_store(db)
    assert store.scalar("SELECT max(version) FROM schema_migrations") == int(files[-1].split("_")[0])
    assert {"runs", "videos", "stage_status", "errors", "transcripts", "segments", "keyframes", "clips",
            "samples", "taxonomy", "candidates", "judgments", "llm_calls", "llm_cache", "events", "search_cache",
            "queries", "checkpoints", "checkpoint_blobs", "checkpoint_writes"} <= set(store.counts())
    store.close()


def test_stage_write_is_atomic(tmp_path):
    store = open_store(tmp_path / "t.duckdb")
    store.upsert_video({"video_id": "v1", "source": "x.mp4"})
    with pytest.raises(duckdb.ConstraintException):
        store.save_keyframes("v1", "h", [{"index": 0, "time": 0.0, "path": "a.jpg", "ssim": 1.0,
                                          "min_tile_ssim": 1.0, "sharpness": 5.0},
                                         {"index": 0, "time": 1.0, "path": "b.jpg", "ssim": 1.0,
                                          "min_tile_ssim": 1.0, "sharpness": 5.0}], 0.1)  # duplicate key
    assert store.scalar("SELECT count(*) FROM keyframes") == 0
    assert store.stage("v1", "keyframes") is None
    store.close()


def test_second_writer_gets_a_clear_error(tmp_path):
    db = tmp_path / "t.duckdb"
    open_store(db).close()
    holder = subprocess.Popen([sys.executable, "-c", f"import duckdb,time; c=duckdb.connect({str(db)!r}); "
                               "print('ok', flush=True); time.sleep(30)"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "ok"
        with pytest.raises(StoreError, match="in use by another process"):
            open_store(db)
    finally:
        holder.kill()
