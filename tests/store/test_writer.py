"""The store's one writer (store/db.py): many threads' writes share a commit, each caller still reads its
own write right after it returns, a failing write fails alone, close() lands what was queued, and reads
never wait behind the writer. A DuckDB file in a temporary folder; the writer is held with a
``transaction()`` block so that writes queue up deterministically."""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import duckdb
import pytest

from store import StoreError, open_store
from store import db as store_db
from store.db import StoreWriteFailed


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
    store.flush()  # queued writes: the counters move once they land
    writes = store.writes
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: store.event_decided("r1", "judge_metadata", f"v{i}", "reject", [f"reason {i}"],
                                                    {"score": i}), range(1, 41)))
    store.flush()
    assert store.writes - writes == 40
    rows = {r["video_id"]: r for r in store.events("r1", "judge_metadata")}
    assert len(rows) == 41
    old, new = rows["v0"], rows["v7"]
    for r, i in ((old, 1), (new, 7)):
        assert r["decision"] == "reject" and r["ended_at"] is not None and r["seconds"] >= 0.0 and r["error"] is None
        assert r["input"] is None and r["output"] == f'{{"score": {i}}}'
    assert new["reasons"] == '["reason 7"]' and new["started_at"] == new["ended_at"] and new["seconds"] == 0.0
    assert sorted(r["event_id"] for r in rows.values()) == sorted({r["event_id"] for r in rows.values()})


# -- queued writes (the caller does not wait for the commit) and the read barrier ------------------------

def _call_row(i: int, **over) -> dict:
    row = {"call_id": f"c{i}", "run_id": "run", "node": "judge_metadata", "role": "metadata_judge",
           "video_id": f"v{i}", "prompt_name": "metadata_judge", "prompt_sha256": "0" * 64, "model": "m",
           "cache_key": hashlib.sha256(f"call {i}".encode()).hexdigest(),
           "messages": [{"role": "user", "content": "q"}],
           "cached": False, "response": {"verdict": "reject", "score": i}, "input_tokens": 10 + i,
           "output_tokens": 2, "tokens_estimated": False, "cost_usd": 0.0, "latency_s": 0.01, "attempts": 1,
           "error": None, "error_kind": None}
    return {**row, **over}


def test_a_queued_write_returns_at_once_and_every_read_after_it_sees_it(store):
    store.add_candidate("run", "v1", "p1", "local", "file:///v1", "q", 1, {})
    seen: dict = {}
    with store.transaction():  # the writer is held: nothing queued can land meanwhile
        writer = threading.Thread(target=lambda: (
            store.save_judgment("run", "v1", "metadata", "reject", 2.0, ["off"]),
            store.update_candidate("run", "v1", status="judged_out", reason="off"), seen.update(returned=True)))
        writer.start()
        writer.join(10)
        assert seen.get("returned"), "a queued write waited for its commit"
        _wait_queued(store, 1)  # the writer may hold the first, waiting for this block
        reader = threading.Thread(target=lambda: seen.update(judgments=store.judgments("run"),
                                                             status=store.candidate_status("run", "v1")))
        reader.start()
        reader.join(0.5)
        assert reader.is_alive(), "a read ran before the writes queued ahead of it had landed"
    reader.join(30)
    assert [j["verdict"] for j in seen["judgments"]] == ["reject"] and seen["status"] == "judged_out"
    store.flush()


def test_a_failing_queued_write_is_logged_then_raised_by_flush_and_the_rest_lands(store, caplog):
    store.add_candidate("run", "v1", "p1", "local", "file:///v1", "q", 1, {})
    with caplog.at_level(logging.ERROR, logger="store.db"):
        with store.transaction():  # hold the writer: the three share one batch
            t = threading.Thread(target=lambda: (store.save_judgment("run", "v1", "metadata", "reject", 2.0, ["a"]),
                                                 store.update_candidate("run", "v1", no_such_column=1),
                                                 store.record_query("run", "p1", 1, "q", "local", 1, 0, False)))
            t.start()
            t.join(10)
            _wait_queued(store, 2)
        with pytest.raises(StoreWriteFailed, match=r"1 queued store write failed: update_candidate: "
                                                   r"BinderException.*no_such_column"):
            store.flush()
    assert any("update_candidate" in r.getMessage() and "BinderException" in r.getMessage() for r in caplog.records)
    assert len(store.judgments("run")) == 1 and len(store.queries("run")) == 1  # the rest of the batch landed
    store.flush()  # reported once


def test_a_run_with_a_failed_queued_write_ends_failed(store):
    store.start_run("run", "build", ["goal"], {}, "h")
    store.update_candidate("run", "v1", no_such_column=1)  # queued: returns
    with pytest.raises(StoreWriteFailed, match="update_candidate"):
        store.finish_run("run", "finished", {"videos": 3})
    run = store.run("run")
    summary = json.loads(run["summary"])
    assert run["status"] == "failed" and "update_candidate" in summary["error"] and summary["videos"] == 3
    assert summary["store_write_failures"][0].startswith("update_candidate: BinderException")
    store.update_candidate("run", "v1", no_such_column=2)
    store.finish_run("run", "interrupted", {})  # a run that ends on its own fault keeps its status
    assert store.run("run")["status"] == "interrupted"
    assert "store_write_failures" in json.loads(store.run("run")["summary"])


def _queries(store, point: str, n: int) -> None:
    for i in range(n):
        store.record_query("run", point, 1, f"q{i}", "local", 1, 1, False)


def test_close_and_a_dropped_store_land_what_is_queued(tmp_path):
    import gc

    path = tmp_path / "queued.duckdb"
    store = open_store(path)
    with store.transaction():
        t = threading.Thread(target=_queries, args=(store, "p1", 300))
        t.start()
        t.join(10)
        _wait_queued(store, 299)
        closer = threading.Thread(target=store.close)
        closer.start()
    closer.join(30)
    writer = store._writer
    assert not closer.is_alive() and not writer.is_alive()
    store = open_store(path)
    assert store.search_units("run") == 300
    with store.transaction():
        t = threading.Thread(target=_queries, args=(store, "p2", 50))
        t.start()
        t.join(10)
        _wait_queued(store, 49)
    writer = store._writer
    del store, t
    gc.collect()
    writer.join(30)
    assert not writer.is_alive()
    again = open_store(path)
    try:
        assert again.search_units("run") == 350
    finally:
        again.close()


def test_a_reader_never_sees_part_of_a_batch(store):
    """An answer's cache row and its llm_calls row commit together; a multi-row update lands whole."""
    stop = threading.Event()
    seen: list[tuple] = []

    def read() -> None:
        while not stop.is_set():
            seen.append(tuple(store.rows("SELECT (SELECT count(*) FROM llm_cache) AS a, "
                                         "(SELECT count(*) FROM llm_calls) AS b")[0].values()))

    reader = threading.Thread(target=read)
    reader.start()
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: store.record_llm_call(_call_row(i), cache=True), range(400)))
    store.flush()
    stop.set()
    reader.join(30)
    assert len(seen) > 1 and all(a == b for a, b in seen), [s for s in seen if s[0] != s[1]][:5]
    assert store.llm_totals("run")["calls"] == 400


def test_a_batch_keeps_each_tables_writes_in_the_order_they_came(store):
    """Updates of one table are grouped into one statement only while no other kind of write to that table
    came between: the last write of a row wins, as written one at a time."""
    for v in ("v1", "v2"):
        store.add_candidate("run", v, "p1", "local", f"file:///{v}", "q", 1, {})
    with store.transaction():
        t = threading.Thread(target=lambda: (
            store.update_candidate("run", "v1", status="a", reason=None),
            store.update_candidate("run", "v1", reason="r"),
            store.update_candidate("run", "v1", status="b", reason=None),
            [store.update_candidate("run", "v2", status=f"s{i}", reason=f"why {i}") for i in range(40)],
            [store.set_hit_verdict("run", "v1", "p1", "reject", float(i)) for i in range(3)]))
        t.start()
        t.join(10)
        _wait_queued(store, 45)
    got = {c["video_id"]: (c["status"], c["reason"]) for c in store.candidates("run")}
    assert got == {"v1": ("b", None), "v2": ("s39", "why 39")}
    buf = store_db._Buffer()
    for cols, keys in ((("a",), None), (("b",), ("k",)), (("a",), None), (("b",), ("k",))):
        buf.add("t", cols, [1], keys=keys, key=(1,) if keys else None)
    buf.add("u", ("a",), [1])
    buf.add("u", ("a",), [2])
    assert [(g.table, g.update, len(g.rows)) for g in buf.groups] == [("t", False, 1), ("t", True, 1),
                                                                      ("t", False, 1), ("t", True, 1), ("u", False, 2)]


# -- the response cache without the writer --------------------------------------------------------------

def test_a_queued_answer_is_served_at_once_and_then_from_the_file_the_same(tmp_path):
    path = tmp_path / "cache.duckdb"
    store = open_store(path)
    row = _call_row(1, response={"verdict": "accept", "score": 9, "reasons": ["ünïcode"]})
    key = row["cache_key"]
    assert store.llm_cache_get(key) is None
    with store.transaction():  # the writer is held: the answer is only queued
        t = threading.Thread(target=lambda: store.record_llm_call(row, cache=True))
        t.start()
        t.join(10)
        _wait_queued(store, 0)
        held = store.llm_cache_get(key)  # waits for no write
    store.flush()
    landed = store.llm_cache_get(key)
    fields = ("cache_key", "model", "response", "input_tokens", "output_tokens")
    assert {k: held[k] for k in fields} == {k: landed[k] for k in fields} == {
        "cache_key": key, "model": "m", "response": {"verdict": "accept", "score": 9, "reasons": ["ünïcode"]},
        "input_tokens": 11, "output_tokens": 2}
    store.llm_cache_put("key 117", "m", {"i": 117}, 1, 1)  # not a sha256 key
    store.close()
    again = open_store(path)  # a new process's index: loaded from the file
    try:
        assert again.llm_cache_get(key)["response"]["score"] == 9
        assert again.llm_cache_get("key 117")["response"] == {"i": 117}
        assert again.llm_cache_get(hashlib.sha256(b"never").hexdigest()) is None
        again.llm_cache_put(key, "m2", {"verdict": "reject"}, 5, 5)  # replaced: the new answer, not the old
        assert again.llm_cache_get(key)["response"] == {"verdict": "reject"}
        again.flush()
        assert again.llm_cache_get(key)["model"] == "m2"
    finally:
        again.close()


def test_a_failed_queued_answer_is_not_served_once_it_failed(store):
    bad = _call_row(2, model=None)  # llm_cache.model is NOT NULL
    store.record_llm_call(bad, cache=True)
    with pytest.raises(StoreWriteFailed, match="_record_llm_call"):
        store.flush()
    assert store.llm_cache_get(bad["cache_key"]) is None
    assert store.llm_totals("run")["calls"] == 0


def test_the_key_index_finds_every_key_written_and_no_other(store):
    keys = [hashlib.sha256(f"k{i}".encode()).hexdigest() for i in range(300)]
    for k in keys[:100]:
        store.llm_cache_put(k, "m", {"k": k}, 1, 1)
    store.flush()
    assert store.llm_cache_get(keys[0])["response"] == {"k": keys[0]}  # loads the index: 100 keys
    store._keys.MERGE = 16  # merge what is written after the load into the array often
    for k in keys[100:200]:
        store.llm_cache_put(k, "m", {"k": k}, 1, 1)
    store.flush()
    assert all(store.llm_cache_get(k)["response"] == {"k": k} for k in keys[:200])
    assert all(store.llm_cache_get(k) is None for k in keys[200:])
    assert not any(store._keys.maybe(k, store.rows) for k in keys[200:])
