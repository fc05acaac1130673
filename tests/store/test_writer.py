"""The store's one writer (store/db.py): many threads' writes share a commit, each caller still reads its
own write right after it returns, a failing write fails alone, close() lands what was queued, and reads
never wait behind the writer. A DuckDB file in a temporary folder; the writer is held with a
``transaction()`` block so that writes queue up deterministically."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import duckdb
import pytest

from store import StoreError, open_store


@pytest.fixture
def store(tmp_path):
    s = open_store(tmp_path / "writer.duckdb")
    yield s
    s.close()


def _frame(i: int) -> dict:
    return {"index": i, "time": float(i), "path": f"f{i}.jpg", "ssim": 1.0, "min_tile_ssim": 1.0, "sharpness": 5.0}


def _wait_queued(store, n: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while store._queue.qsize() < n:
        assert time.monotonic() < deadline, f"only {store._queue.qsize()} of {n} writes queued"
        time.sleep(0.01)


def test_many_threads_writes_all_land_in_a_few_commits(store):
    n = 120
    with ThreadPoolExecutor(n) as pool:  # a thread per write: each waits for its commit
        with store.transaction():  # the writer waits: every write queues
            futures = [pool.submit(store.llm_cache_put, f"key {i}", "m", {"i": i}, i, 1) for i in range(n)]
            _wait_queued(store, n - 1)  # the writer may hold the first one, waiting for this block
            commits = store.commits
        assert [f.result() for f in futures] == [None] * n
    assert store.scalar("SELECT count(*) FROM llm_cache") == n
    assert store.scalar("SELECT sum(input_tokens) FROM llm_cache") == sum(range(n))
    assert store.llm_cache_get("key 117")["response"] == {"i": 117}
    assert store.commits - commits <= 3  # 120 writes, one commit for all those queued together
    assert store.writes - store.commits >= n - 3


def test_a_write_is_read_back_right_after_it_returns_from_any_thread(store):
    def write_then_read(i: int) -> bool:
        store.upsert_video({"video_id": f"v{i}", "source": f"v{i}.mp4", "title": f"lesson {i}"})
        seen = store.video(f"v{i}") is not None
        store.add_candidate("run", f"v{i}", "p1", "local", f"file:///v{i}", "q", 1, {"n": i})
        return seen and any(c["video_id"] == f"v{i}" for c in store.candidates("run"))

    with ThreadPoolExecutor(24) as pool:
        assert all(pool.map(write_then_read, range(120)))
    assert store.scalar("SELECT count(*) FROM videos") == store.scalar("SELECT count(*) FROM candidates") == 120


def test_a_failing_write_fails_alone_with_its_error_and_the_batch_lands(store):
    store.upsert_video({"video_id": "v1", "source": "v1.mp4"})
    good = [_frame(0), _frame(1)]
    bad = [_frame(0), _frame(0)]  # the same index twice: the primary key refuses it
    with ThreadPoolExecutor(61) as pool:
        with store.transaction():
            futures = [pool.submit(store.save_judgment, "run", f"v{i}", "metadata", "accept", 1.0, ["ok"])
                       for i in range(30)]
            failing = pool.submit(store.save_keyframes, "v1", "bad-hash", bad, 0.1)
            futures += [pool.submit(store.save_keyframes, "v1", "good-hash", good, 0.1)]
            futures += [pool.submit(store.record_query, "run", "p1", 1, f"query {i}", "local", 3, 0, False)
                        for i in range(30)]
            _wait_queued(store, 60)
        with pytest.raises(duckdb.ConstraintException, match="keyframes|[Dd]uplicate"):
            failing.result()
        assert all(f.result() is None for f in futures)
    assert store.scalar("SELECT count(*) FROM judgments") == 30
    assert store.scalar("SELECT count(*) FROM queries") == 30
    assert [k["idx"] for k in store.keyframes("v1", "good-hash")] == [0, 1]
    assert store.scalar("SELECT count(*) FROM keyframes WHERE config_hash = 'bad-hash'") == 0  # none of it
    assert store.stage("v1", "keyframes", "bad-hash") is None and store.stage("v1", "keyframes", "good-hash")


def test_close_lands_every_queued_write_then_refuses_more(tmp_path):
    path = tmp_path / "closing.duckdb"
    store = open_store(path)
    with ThreadPoolExecutor(60) as pool:
        with store.transaction():
            futures = [pool.submit(store.record_query, "run", "p1", 1, f"query {i}", "local", 1, 1, False)
                       for i in range(60)]
            _wait_queued(store, 59)
            closer = threading.Thread(target=store.close)
            closer.start()  # waits for the writer, which waits for this block
            time.sleep(0.2)
            assert closer.is_alive()
        closer.join(30)
        assert not closer.is_alive()
        assert all(f.result() is None for f in futures)
    with pytest.raises(StoreError, match="closed"):
        store.record_query("run", "p1", 1, "late", "local", 1, 1, False)
    again = open_store(path)
    try:
        assert again.search_units("run") == 60
    finally:
        again.close()


def test_a_transaction_block_is_one_commit_or_none(store):
    with pytest.raises(RuntimeError):
        with store.transaction():
            store.upsert_video({"video_id": "gone", "source": "x.mp4"})
            assert store.video("gone") is not None  # the block reads its own write
            raise RuntimeError("stop")
    assert store.video("gone") is None
    with store.transaction():
        store.upsert_video({"video_id": "kept", "source": "x.mp4"})
        store.update_video("kept", status="done")
    assert store.video("kept")["status"] == "done"


def test_reads_do_not_wait_for_the_writer(store):
    store.llm_cache_put("k", "m", {"answer": 1}, 3, 4)
    found = {}
    with store.transaction():  # the writer is busy (held) for as long as this block runs
        store.upsert_video({"video_id": "pending", "source": "x.mp4"})
        reader = threading.Thread(target=lambda: found.update(hit=store.llm_cache_get("k"),
                                                              pending=store.video("pending")))
        reader.start()
        reader.join(10)
        assert not reader.is_alive(), "a read waited behind the writer"
    assert found["hit"]["response"] == {"answer": 1}
    assert found["pending"] is None  # not committed yet when it was read
    assert store.video("pending") is not None


def test_a_store_dropped_without_close_lets_its_file_go(tmp_path):
    import gc
    import subprocess
    import sys

    path = tmp_path / "dropped.duckdb"
    store = open_store(path)
    store.upsert_video({"video_id": "v1", "source": "v1.mp4"})
    writer = store._writer
    del store
    gc.collect()
    writer.join(10)
    assert not writer.is_alive()  # the writer thread ended with its store
    out = subprocess.run([sys.executable, "-c", "import duckdb, sys; c = duckdb.connect(sys.argv[1]); "
                          "print(c.execute('SELECT count(*) FROM videos').fetchone()[0])", str(path)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "1", out.stderr  # another process opens it


def test_a_decision_is_one_write_and_reads_as_an_opened_then_closed_event(store):
    """``event_decided`` (agents/deps.py's decision) records what event_start + event_end do, in one write:
    many threads' decisions share commits and keep their own rows."""
    ev = store.event_start("r1", "judge_metadata", "v0", None)
    store.event_end(ev, {"score": 1}, decision="reject", reasons=["off topic"])
    writes = store.writes
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: store.event_decided("r1", "judge_metadata", f"v{i}", "reject", [f"reason {i}"],
                                                    {"score": i}), range(1, 41)))
    assert store.writes - writes == 40
    rows = {r["video_id"]: r for r in store.events("r1", "judge_metadata")}
    assert len(rows) == 41
    old, new = rows["v0"], rows["v7"]
    for r, i in ((old, 1), (new, 7)):
        assert r["decision"] == "reject" and r["ended_at"] is not None and r["seconds"] >= 0.0 and r["error"] is None
        assert r["input"] is None and r["output"] == f'{{"score": {i}}}'
    assert new["reasons"] == '["reason 7"]' and new["started_at"] == new["ended_at"] and new["seconds"] == 0.0
    assert sorted(r["event_id"] for r in rows.values()) == sorted({r["event_id"] for r in rows.values()})
