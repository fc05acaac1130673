"""Reads of a store while another process writes it (store/serve.py; issue 10)."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import threading
import time

import httpx
import pytest

from store import Store, StoreError, open_store
from store.serve import ARROW_STREAM, RemoteStore, encode_request, endpoint_path, read_endpoint, serve_reads
from tests.conftest import LESSONS, ROOT, TEXTBOOK

TYPED = ("SELECT TIMESTAMP '2024-01-02 03:04:05.123456' AS ts, TIMESTAMPTZ '2024-01-02 03:04:05+02' AS tz, "
         "DATE '2024-01-02' AS d, TIME '01:02:03.5' AS t, 1.250::DECIMAL(10,3) AS dec, '\\xAA\\x00'::BLOB AS b, "
         "[1, 2, NULL] AS l, ['a', NULL]::VARCHAR[] AS sl, {'a': 1, 'b': [DATE '2024-01-01']} AS st, "
         "MAP {'k': 1.5} AS m, NULL::INTEGER AS n, 170141183460469231731687303715884105727::HUGEINT AS h, "
         "sum(x) AS s, INTERVAL 3 DAY AS i, '6f1c4c5e-6b4e-4a53-9d6b-1b2f3c4d5e6f'::UUID AS u, "
         "'{\"x\": 1}'::JSON AS j, 'nan'::DOUBLE AS nan, true AS bo, ? AS p_ts, ? AS p_text, ? AS p_null, "
         "?::VARCHAR[] AS p_list FROM range(3) r(x)")


def _same(a, b) -> bool:
    """Equal values of the very same Python types, all the way down (NaN equals NaN)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) and a != a:
        return b != b
    return a == b


@pytest.fixture
def served(tmp_path):
    """A store with a run, served in this process; yields (store, server, remote)."""
    store = open_store(tmp_path / "t.duckdb")
    store.start_run("run-1", "process", ["a.mp4"], {"k": 1}, "h")
    store.upsert_video({"video_id": "v1", "source": "a.mp4", "title": "Atoms"})
    store.set_run_videos("run-1", ["v1"])
    store.mark_stage("v1", "probe", "h", seconds=0.5)
    store.save_samples("run-1", "h", [{"images": [None], "texts": ["hi"], "image_num": 0, "text_num": 1,
                                       "token_num": 1}])
    with serve_reads(store, "process") as server:
        remote = RemoteStore(read_endpoint(store.path), store.path)
        yield store, server, remote
        remote.close()
    store.close()


def test_remote_rows_round_trip_typed_values(served):
    store, _, remote = served
    import datetime as dt

    params = [dt.datetime(2024, 5, 6, 7, 8, 9, 123), "täxt [b]", None, ["x", "y"]]
    direct, through = store.rows(TYPED, params), remote.rows(TYPED, params)
    assert len(through) == 1 and list(through[0]) == list(direct[0])
    for col in direct[0]:
        assert _same(through[0][col], direct[0][col]), (col, through[0][col], direct[0][col])
    assert remote.rows("SELECT * FROM runs WHERE run_id = 'none'") == []
    assert remote.scalar("SELECT count(*) FROM runs") == 1 and remote.scalar("SELECT 1 WHERE false") is None


def test_store_read_methods_answer_the_same_through_the_server(served):
    store, _, remote = served
    for name, args in (("runs", ()), ("run", ("run-1",)), ("counts", ()), ("samples", ("run-1",)),
                       ("video", ("v1",)), ("stage", ("v1", "probe")), ("latest_run", ()),
                       ("llm_totals", ("run-1",)), ("search_units", ("run-1",)), ("events", ("run-1",))):
        assert _same(getattr(remote, name)(*args), getattr(store, name)(*args)), name


def test_non_select_and_reads_outside_the_database_are_refused(served, tmp_path):
    store, _, remote = served
    (tmp_path / "secret.csv").write_text("a\n1\n")
    for sql in ("DELETE FROM runs", "UPDATE runs SET status = 'x'", "INSERT INTO runs SELECT * FROM runs",
                "CREATE TABLE x AS SELECT 1", "COPY runs TO 'x.csv'", "ATTACH 'x.duckdb'", "PRAGMA version"):
        with pytest.raises(StoreError, match=r"being written by a running `textbook process` \(pid \d+\); this "
                                             "command only reads while it runs"):
            remote.rows(sql)
    for sql in (f"SELECT * FROM read_csv('{tmp_path / 'secret.csv'}')", f"SELECT * FROM '{tmp_path / 'secret.csv'}'",
                "SELECT * FROM glob('/*')", "SELECT 1; SELECT 2", "SELECT current_setting('home_directory')",
                "WITH q AS (SELECT * FROM read_text('/etc/hostname')) SELECT * FROM q",
                "SELECT (SELECT count(*) FROM read_blob('/etc/hostname'))"):
        with pytest.raises(StoreError, match="refused"):
            remote.rows(sql)
    assert store.scalar("SELECT count(*) FROM runs") == 1 and store.run("run-1")["status"] == "running"
    with pytest.raises(StoreError, match="only reads while it runs") as err:
        remote.start_run("run-2", "process", [], {}, "h")
    assert "\n" not in str(err.value)
    with pytest.raises(StoreError, match="only reads"):
        remote.mark_stage("v1", "asr", "h")
    # a query that is wrong stays the DuckDB error it is on the file
    import duckdb

    with pytest.raises(duckdb.BinderException):
        remote.rows("SELECT no_such_column FROM runs")


def test_token_is_required_and_kept_private(served):
    store, server, _ = served
    ep = read_endpoint(store.path)
    path = endpoint_path(store.path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert ep.host == "127.0.0.1" and server.sock.getsockname()[0] == "127.0.0.1"
    assert set(json.loads(path.read_text())) == {"host", "port", "pid", "command", "token"}
    body = encode_request("SELECT * FROM runs", [])
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": ep.token},
                    {"Authorization": f"Bearer {ep.token[:-1]}"}):
        r = httpx.post(f"{ep.url}/v1/query", content=body, headers={**headers, "Content-Type": ARROW_STREAM})
        assert r.status_code == 401 and ep.token not in r.text
        assert httpx.get(f"{ep.url}/v1/ping", headers=headers).status_code == 401
    r = httpx.post(f"{ep.url}/v1/query", content=body, headers={"Authorization": f"Bearer {ep.token}"})
    assert r.status_code == 200 and r.headers["content-type"] == ARROW_STREAM
    assert httpx.post(f"{ep.url}/v1/query", content=b"junk", headers={"Authorization": f"Bearer {ep.token}"}
                      ).status_code == 400


def test_the_endpoint_file_goes_with_the_server(tmp_path):
    store = open_store(tmp_path / "t.duckdb")
    with serve_reads(store, "build"):
        assert endpoint_path(store.path).is_file()
    assert not endpoint_path(store.path).exists()
    store.close()


def test_a_stale_endpoint_is_ignored_and_removed(tmp_path):
    db = tmp_path / "t.duckdb"
    open_store(db).close()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    endpoint_path(db).write_text(json.dumps({"host": "127.0.0.1", "port": 9, "pid": dead.pid, "command": "build",
                                             "token": "t"}))
    assert read_endpoint(db) is None and not endpoint_path(db).exists()
    endpoint_path(db).write_text("{not json")
    assert read_endpoint(db) is None
    store = open_store(db, read_only=True)  # nobody holds the file: it is read directly
    assert type(store) is Store
    store.close()


def test_reads_during_writes_see_whole_transactions(served):
    """Cursor reads need no Store lock: a writer thread commits stages while reads run, and a read sees
    every stage either whole (keyframes and its stage row together) or not at all."""
    store, _, remote = served
    done = threading.Event()
    errors: list[BaseException] = []

    def write():
        try:
            for i in range(40):
                frames = [{"index": k, "time": float(k), "path": f"{k}.jpg", "ssim": 1.0, "min_tile_ssim": 1.0,
                           "sharpness": 1.0} for k in range(i % 7 + 1)]
                store.upsert_video({"video_id": f"w{i}", "source": f"{i}.mp4"})
                store.save_keyframes(f"w{i}", "h", frames, 0.1)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)
        finally:
            done.set()

    writer = threading.Thread(target=write)
    writer.start()
    seen = []
    while not done.is_set():
        row = remote.rows("SELECT (SELECT count(DISTINCT video_id) FROM keyframes) AS k, "
                          "(SELECT count(*) FROM stage_status WHERE stage = 'keyframes') AS s")[0]
        assert row["k"] == row["s"]
        seen.append(row["k"])
    writer.join()
    assert not errors and seen == sorted(seen)
    assert remote.scalar("SELECT count(*) FROM stage_status WHERE stage = 'keyframes'") == 40


HOLDER = """
import sys, time
from store import open_store
from store.serve import serve_reads
store = open_store(sys.argv[1])
store.start_run("run-1", "process", ["a.mp4"], {}, "h")
with serve_reads(store, "process"):
    print("serving", flush=True)
    sys.stdin.readline()
    store.finish_run("run-1", "finished", {})
store.close()
"""


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT)}


def test_open_store_reads_through_the_process_that_holds_the_file(tmp_path):
    db = tmp_path / "t.duckdb"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(db)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, env=_env())
    try:
        assert holder.stdout.readline().strip() == "serving"
        remote = open_store(db, read_only=True)
        assert isinstance(remote, RemoteStore) and remote.run("run-1")["status"] == "running"
        with pytest.raises(StoreError, match=r"being written by a running `textbook process` \(pid \d+\)"):
            open_store(db)  # a second writer still gets one clear line
        holder.stdin.write("\n")
        holder.stdin.flush()
        assert holder.wait(timeout=30) == 0
        # the writer is gone: the same store goes on reading the file itself
        assert remote.run("run-1")["status"] == "finished"
        assert not endpoint_path(db).exists()
        remote.close()
    finally:
        holder.kill()


def test_a_holder_that_serves_nothing_still_gives_the_one_line_error(tmp_path):
    db = tmp_path / "t.duckdb"
    open_store(db).close()
    holder = subprocess.Popen([sys.executable, "-c", f"import duckdb,time; c=duckdb.connect({str(db)!r}); "
                               "print('ok', flush=True); time.sleep(30)"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "ok"
        # an endpoint file whose server is not there (a live pid that is not the writer) is not trusted
        endpoint_path(db).write_text(json.dumps({"host": "127.0.0.1", "port": 9, "pid": os.getpid(),
                                                 "command": "build", "token": "t"}))
        with pytest.raises(StoreError, match="in use by another process"):
            open_store(db, read_only=True)
    finally:
        holder.kill()


def _cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([*TEXTBOOK, *args], capture_output=True, text=True, env=_env(), timeout=timeout)


@pytest.mark.slow
@pytest.mark.e2e
def test_runs_trace_stats_and_view_while_process_runs(tmp_path):
    """A real `textbook process` on the lessons (the two kept lessons twice, as distinct files, so it
    runs long enough); meanwhile `runs`, `stats`, `trace` and the viewer's reads show it running."""
    videos = tmp_path / "videos"
    videos.mkdir()
    for p in sorted(LESSONS.glob("*.mp4")):
        shutil.copy(p, videos / p.name)
        if p.stem in ("chemistry_atoms", "physics_newton"):
            subprocess.run(["ffmpeg", "-v", "error", "-i", str(p), "-c", "copy", "-metadata", "comment=copy",
                            str(videos / f"{p.stem}_again.mp4")], check=True)
    db = tmp_path / "runs.duckdb"
    writer = subprocess.Popen([*TEXTBOOK, "process", str(videos), "--db", str(db), "--out", str(tmp_path / "out"),
                               "--quiet"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
    try:
        deadline = time.monotonic() + 120
        while not (endpoint_path(db).is_file() and read_endpoint(db)) and writer.poll() is None:
            assert time.monotonic() < deadline, "the process never served reads"
            time.sleep(0.2)
        while True:  # until the run has its videos (set after ingest)
            store = open_store(db, read_only=True)
            assert isinstance(store, RemoteStore), "process ended before the reads ran: make it longer"
            run_id = store.latest_run()
            if run_id and store.scalar("SELECT count(*) FROM run_videos WHERE run_id = ?", [run_id]) == 8:
                break
            store.close()
            time.sleep(0.2)
        # the viewer's reads (textbook view opens the file per request, read-only)
        from textbook.web import queries as q
        from textbook.web.backend import FileBackend

        with FileBackend(db).reader() as reader:
            page = q.runs(reader)
            assert [r["run_id"] for r in page.items] == [run_id] and page.items[0]["status"] == "running"
        store.close()

        runs = _cli("runs", "--db", str(db), "--json")
        assert runs.returncode == 0, runs.stderr
        assert [(r["run_id"], r["status"]) for r in json.loads(runs.stdout)] == [(run_id, "running")]
        stats = _cli("stats", "--db", str(db), "--json")
        assert stats.returncode == 0, stats.stderr
        steps = {s["step"]: s["videos"] for s in json.loads(stats.stdout)["funnel"]["steps"]}
        assert steps["found"] == 8 and steps["kept"] < 4  # not done yet
        trace = _cli("trace", run_id, "--db", str(db), "--json")
        assert trace.returncode == 0, trace.stderr
        assert json.loads(trace.stdout)["status"] == "running"
        table = _cli("runs", "--db", str(db))
        assert table.returncode == 0 and "running" in table.stdout
        assert writer.poll() is None, "process ended while the reads ran: make it longer"
        out, err = writer.communicate(timeout=600)
    finally:
        writer.kill()
    assert writer.returncode == 1, err  # the truncated lesson fails; the others finish
    assert not endpoint_path(db).exists()
    after = _cli("runs", "--db", str(db), "--json")
    assert after.returncode == 0, after.stderr
    assert [r["status"] for r in json.loads(after.stdout)] == ["finished"]
    stats = json.loads(_cli("stats", "--db", str(db), "--json").stdout)
    assert {s["step"]: s["videos"] for s in stats["funnel"]["steps"]}["kept"] == 4
    assert "token" not in err.lower()
