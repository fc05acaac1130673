"""Reads of a store while a build or process writes it (issue 10: "readable while running").

DuckDB lets one process open a database file: while `textbook build` or `textbook process` holds
the store, another process cannot open it, not even read-only. So the writer serves reads:

- ``serve_reads(store, command)`` (used by `process`, `build` and `batch` around their work) starts a
  small Starlette app under uvicorn in a daemon thread, on 127.0.0.1 and a free port, and writes an
  endpoint file beside the database, ``<db>.reads.json`` (host, port, pid, command, token; mode 0600;
  removed on exit). Queries run on a few cursors of the writer's own connection, made once at start:
  DuckDB's MVCC lets a cursor read the last committed state while the writer's thread writes, so
  neither side takes the Store's lock per query, and readers never see half of a stage's transaction.
- ``open_store(path, read_only=True)`` (store/db.py) tries the file first; when another process
  holds its lock and a live endpoint answers, it returns a ``RemoteStore``: a ``Store`` whose
  ``rows()`` and ``scalar()`` go over HTTP, so every read method built on them works unchanged and
  every write raises ``StoreError`` with one line. When the writer ends mid-command, the remote store
  opens the file itself and goes on reading it directly.

Chosen over the alternatives: a snapshot copy of the file is stale by construction and costs a full
copy of a growing database; a second DuckDB process cannot attach a locked file at all.

Wire format: a request body is one Arrow IPC stream whose schema metadata holds the SQL and whose
one row holds the parameters; the answer is the result as an Arrow IPC stream
(``application/vnd.apache.arrow.stream``), exported with DuckDB's ``arrow_lossless_conversion`` on
(UUID, HUGEINT, BIT keep their types) and turned back into Python values by an in-memory DuckDB on
the reading side, so rows come back exactly as DuckDB's Python client returns them (datetimes,
dates, decimals, bytes, lists, structs as dicts, maps, intervals, None).

Security: bound to 127.0.0.1 only; every request carries the token (``Authorization: Bearer``),
compared in constant time; the token lives only in the 0600 endpoint file and in memory, never in a
log or an error. Only one statement per request, of type SELECT (``WITH`` included), whose parsed
tree (DuckDB's ``json_serialize_sql``) reads only tables and views of the database or the query's
own CTEs, and no table function other than ``unnest``/``range``/``generate_series``/``json_each``/
``json_tree``: no ``read_csv('/etc/passwd')``, no ``FROM 'file.parquet'``, no ``glob``, no sequence
functions, no settings. Nothing but query results leaves the server: no path, no file.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import queue
import secrets
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import duckdb

from store.db import Store, StoreError, StoreLocked, open_file

log = logging.getLogger(__name__)

ENDPOINT_SUFFIX = ".reads.json"
ARROW_STREAM = "application/vnd.apache.arrow.stream"
ALLOWED_TABLE_FUNCTIONS = frozenset({"unnest", "range", "generate_series", "json_each", "json_tree"})
DENIED_FUNCTIONS = frozenset({"nextval", "setval", "currval", "current_setting", "getenv"})


class ReadRefused(Exception):
    """A query the read server does not run (not one SELECT, or it reaches outside the database).
    ``write``: it is a statement of another type (the writer alone writes)."""

    def __init__(self, message: str, write: bool = False):
        super().__init__(message)
        self.write = write


@dataclass(frozen=True)
class Endpoint:
    """Where a running writer serves reads: ``host``:``port`` (127.0.0.1), its ``pid``, the
    ``command`` that writes (process, build, batch) and the request ``token``."""

    host: str
    port: int
    pid: int
    command: str
    token: str

    @property
    def url(self) -> str:
        """The server's base URL, ``http://127.0.0.1:<port>``."""
        return f"http://{self.host}:{self.port}"


def endpoint_path(db: str | Path) -> Path:
    """The endpoint file of a database: ``<db>.reads.json`` beside it (symlinks resolved)."""
    db = Path(db).resolve()
    return db.with_name(db.name + ENDPOINT_SUFFIX)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def read_endpoint(db: str | Path) -> Endpoint | None:
    """The endpoint of the process writing ``db``, or None: no file, an unreadable one, or a stale
    one (its pid is gone; then the file is removed)."""
    path = endpoint_path(db)
    try:
        data = json.loads(path.read_text())
        ep = Endpoint(host=str(data["host"]), port=int(data["port"]), pid=int(data["pid"]),
                      command=str(data.get("command") or "build"), token=str(data["token"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not _pid_alive(ep.pid):
        with contextlib.suppress(OSError):
            path.unlink()
        return None
    return ep


def _write_endpoint(path: Path, ep: Endpoint) -> None:
    """Write the endpoint file atomically, readable by its owner only (0600 from creation on)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(asdict(ep), f)
    os.replace(tmp, path)


# -- what may run ------------------------------------------------------------------------------------
def _walk(node: Any) -> Iterator[dict]:
    if isinstance(node, dict):
        yield node
        for v in node.values():
            yield from _walk(v)
    elif isinstance(node, list):
        for v in node:
            yield from _walk(v)


@lru_cache(maxsize=512)
def _checked_tree(sql: str) -> tuple[frozenset[str], bool]:
    """(base tables the query names that are not its own CTEs, lowercased; True) or raises ReadRefused.
    Cached by SQL text: the readers send the same few statements again and again."""
    parser = duckdb.connect()  # parsing needs no database; a private connection is thread-safe here
    try:
        try:
            statements = parser.extract_statements(sql)
        except duckdb.Error as exc:
            raise ReadRefused(f"cannot parse the query: {str(exc).splitlines()[0]}") from exc
        if len(statements) != 1:
            raise ReadRefused(f"one statement per request ({len(statements)} given)")
        if statements[0].type != duckdb.StatementType.SELECT:
            raise ReadRefused(f"only SELECT queries are served ({statements[0].type.name} refused)", write=True)
        tree = json.loads(parser.execute("SELECT json_serialize_sql(?)", [sql]).fetchone()[0])
    finally:
        parser.close()
    if tree.get("error"):
        raise ReadRefused(f"only SELECT queries are served ({tree.get('error_message', 'not a query')})", write=True)
    ctes: set[str] = set()
    tables: set[str] = set()
    for node in _walk(tree):
        cte_map = node.get("cte_map")
        if isinstance(cte_map, dict):
            ctes.update(str(e.get("key", "")).lower() for e in cte_map.get("map", []))
        kind = node.get("type")
        if kind == "BASE_TABLE":
            if node.get("catalog_name"):
                raise ReadRefused("queries read this database only (no other catalog)")
            tables.add(str(node.get("table_name", "")).lower())
        elif kind == "TABLE_FUNCTION":
            name = str((node.get("function") or {}).get("function_name", "")).lower()
            if name not in ALLOWED_TABLE_FUNCTIONS:
                raise ReadRefused(f"table function {name}() is not served (reads stay inside the database)")
        if node.get("class") == "FUNCTION" and str(node.get("function_name", "")).lower() in DENIED_FUNCTIONS:
            raise ReadRefused(f"function {node['function_name']}() is not served")
    return frozenset(tables - ctes), True


def check_read(cur: duckdb.DuckDBPyConnection, sql: str, known: set[str] | None = None) -> set[str] | None:
    """Raise ReadRefused unless ``sql`` is one SELECT over this database's tables and views.

    ``known``: table and view names (lowercased) from an earlier call; the catalog is read again only
    when the query names one outside it. Returns the names it used (to pass next time)."""
    tables, _ = _checked_tree(sql)
    if not tables or (known is not None and tables <= known):
        return known
    known = {r[0].lower() for r in cur.execute(
        "SELECT table_name FROM duckdb_tables() UNION ALL SELECT view_name FROM duckdb_views()").fetchall()}
    unknown = sorted(tables - known)
    if unknown:
        raise ReadRefused(f"no table or view {unknown[0]!r} in the store (files are not served)")
    return known


# -- the wire format ---------------------------------------------------------------------------------
def encode_request(sql: str, params: list | None) -> bytes:
    """The SQL (schema metadata) and its positional parameters (one row, a column each) as Arrow IPC."""
    import pyarrow as pa

    params = list(params or [])
    try:
        columns = {f"p{i}": pa.array([v]) for i, v in enumerate(params)}
    except (pa.ArrowException, TypeError, ValueError) as exc:
        raise StoreError(f"a query parameter cannot be sent to the build serving reads: {exc}") from exc
    table = pa.table(columns) if columns else pa.table({"_": pa.array([None])})
    table = table.replace_schema_metadata({"sql": sql, "n": str(len(params))})
    return _ipc(table)


def decode_request(body: bytes) -> tuple[str, list]:
    """The SQL and its positional parameters from a request body (the inverse of ``encode_request``).

    Raises ``pyarrow.ArrowInvalid`` for a body that is not an Arrow IPC stream, KeyError when it carries no SQL."""
    import pyarrow as pa

    table = pa.ipc.open_stream(body).read_all()
    meta = table.schema.metadata or {}
    n = int(meta.get(b"n", b"0"))
    return meta[b"sql"].decode(), [table.column(i)[0].as_py() for i in range(n)]


def _ipc(table_or_reader) -> bytes:
    import pyarrow as pa

    sink = io.BytesIO()
    with pa.ipc.new_stream(sink, table_or_reader.schema) as writer:
        if isinstance(table_or_reader, pa.Table):
            writer.write_table(table_or_reader)
        else:
            for batch in table_or_reader:
                writer.write_batch(batch)
    return sink.getvalue()


def _plain(t) -> bool:
    """Arrow types whose pyarrow values are the very values DuckDB's client gives (no maps, intervals,
    zoned timestamps or extension types: those go through DuckDB itself)."""
    import pyarrow.types as pt

    if pt.is_list(t) or pt.is_large_list(t):
        return _plain(t.value_type)
    if pt.is_struct(t):
        return all(_plain(t.field(i).type) for i in range(t.num_fields))
    if pt.is_timestamp(t):
        return t.tz is None
    return (pt.is_null(t) or pt.is_boolean(t) or pt.is_integer(t) or pt.is_floating(t) or pt.is_string(t)
            or pt.is_large_string(t) or pt.is_binary(t) or pt.is_large_binary(t) or pt.is_date32(t)
            or pt.is_time64(t) or pt.is_decimal(t))


def decode_rows(body: bytes, decoder) -> tuple[list[str], list[tuple]]:
    """Column names and rows of an Arrow IPC answer, as DuckDB's Python client gives them: plain
    columns by pyarrow (fast), any other through ``decoder()`` (an in-memory DuckDB connection)."""
    import pyarrow as pa

    table = pa.ipc.open_stream(body).read_all()
    if all(_plain(f.type) for f in table.schema):
        columns = [c.to_pylist() for c in table.columns]
        return table.schema.names, list(zip(*columns, strict=True)) if columns else []
    return table.schema.names, decoder().from_arrow(table).fetchall()


# -- the server -------------------------------------------------------------------------------------
class ReadServer:
    """Serves SELECTs on ``store`` over HTTP on 127.0.0.1 from a daemon thread.

    ``cursors``: how many queries run at once (each on its own cursor of the store's connection).
    ``start()`` binds, serves and writes the endpoint file; ``stop()`` removes the file first, then
    stops serving and closes the cursors (call it before the store is closed)."""

    def __init__(self, store: Store, command: str = "build", cursors: int = 4, timeout_s: float = 60.0):
        self.store = store
        self.command = command
        self.timeout_s = timeout_s
        self.token = secrets.token_urlsafe(32)
        self._auth = f"Bearer {self.token}".encode()
        self._n_cursors = cursors
        self._cursors: queue.Queue[duckdb.DuckDBPyConnection] = queue.Queue()
        self._all: list[duckdb.DuckDBPyConnection] = []
        self._lossless_was: str | None = None
        self._known: set[str] | None = None
        self.endpoint: Endpoint | None = None
        self.path = endpoint_path(store.path)
        self._thread: threading.Thread | None = None
        self.server = None
        self.sock: socket.socket | None = None

    def _app(self):
        from starlette.applications import Starlette
        from starlette.concurrency import run_in_threadpool
        from starlette.requests import Request
        from starlette.responses import JSONResponse, Response
        from starlette.routing import Route

        def authorized(request: Request) -> bool:
            given = request.headers.get("authorization", "").encode()
            return secrets.compare_digest(given, self._auth)

        async def ping(request: Request) -> Response:
            if not authorized(request):
                return JSONResponse({"error": "unauthorized", "message": "a valid token is required"}, 401)
            return JSONResponse({"ok": True, "pid": os.getpid(), "command": self.command})

        async def query(request: Request) -> Response:
            if not authorized(request):
                return JSONResponse({"error": "unauthorized", "message": "a valid token is required"}, 401)
            body = await request.body()
            try:
                sql, params = decode_request(body)
            except Exception as exc:  # noqa: BLE001 - any malformed body is the client's fault
                return JSONResponse({"error": "bad_request", "message": f"not an Arrow request: {exc}"[:300]}, 400)
            try:
                payload = await run_in_threadpool(self._run, sql, params)
            except ReadRefused as exc:
                return JSONResponse({"error": "refused", "write": exc.write, "message": str(exc)}, 403)
            except duckdb.Error as exc:
                return JSONResponse({"error": "sql", "type": type(exc).__name__, "message": str(exc)}, 400)
            except queue.Empty:
                return JSONResponse({"error": "busy", "message": "every reader is busy; try again"}, 503)
            return Response(payload, media_type=ARROW_STREAM)

        return Starlette(routes=[Route("/v1/ping", ping, methods=["GET"]),
                                 Route("/v1/query", query, methods=["POST"])])

    def _run(self, sql: str, params: list) -> bytes:
        cur = self._cursors.get(timeout=self.timeout_s)
        try:
            self._known = check_read(cur, sql, self._known)
            rel = cur.sql(sql, params=params) if params else cur.sql(sql)
            return _ipc(rel.to_arrow_reader())
        finally:
            self._cursors.put(cur)

    def start(self, timeout: float = 10.0) -> ReadServer:
        """Make the cursors, start uvicorn in a daemon thread on a free port of 127.0.0.1 and write the endpoint
        file.

        Returns self. Raises StoreError when the server does not start within ``timeout`` seconds."""
        import uvicorn

        with self.store.lock:  # cursors are made once, from the writer's connection, between its statements
            for _ in range(self._n_cursors):
                cur = self.store.con.cursor()
                self._all.append(cur)
                self._cursors.put(cur)
            first = self._all[0]
            self._lossless_was = first.execute("SELECT current_setting('arrow_lossless_conversion')").fetchone()[0]
            first.execute("SET arrow_lossless_conversion = true")
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        # accepted connections inherit it: uvicorn writes headers and body apart, and Nagle plus the
        # reader's delayed ACK would add ~40 ms to every keep-alive request
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(128)
        self.server = uvicorn.Server(uvicorn.Config(self._app(), log_level="warning", lifespan="off",
                                                    access_log=False))
        self._thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]},
                                        name="textbook-reads", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started and self._thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.01)
        if not self.server.started:
            self.stop()
            raise StoreError("the read server did not start")
        self.endpoint = Endpoint("127.0.0.1", self.sock.getsockname()[1], os.getpid(), self.command, self.token)
        _write_endpoint(self.path, self.endpoint)
        return self

    def stop(self) -> None:
        """Remove the endpoint file (if still ours), stop the server and close the cursors; safe to call twice."""
        if self.endpoint is not None:
            with contextlib.suppress(OSError):
                ours = read_endpoint(self.store.path)
                if ours is not None and ours.token == self.token:
                    self.path.unlink()
            self.endpoint = None
        if self.server is not None:
            self.server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self.sock is not None:
            self.sock.close()
        if self._all and self._lossless_was is not None:
            with contextlib.suppress(duckdb.Error):
                self._all[0].execute(f"SET arrow_lossless_conversion = {self._lossless_was == 'true'}")
        for cur in self._all:
            with contextlib.suppress(duckdb.Error):
                cur.close()
        self._all.clear()


@contextlib.contextmanager
def serve_reads(store: Store, command: str = "build") -> Iterator[ReadServer | None]:
    """Serve reads of ``store`` to other commands while the block runs (see the module docstring).
    A server that cannot start is a warning, never the end of the build: yields None then."""
    try:
        server = ReadServer(store, command).start()
    except (OSError, StoreError, duckdb.Error) as exc:
        log.warning("other commands cannot read %s while this runs: %s", store.path, exc)
        yield None
        return
    try:
        yield server
    finally:
        server.stop()


# -- the client -------------------------------------------------------------------------------------
class RemoteStore(Store):
    """A read-only Store whose queries go to the process that writes the file (``serve_reads``).

    Every read method of ``Store`` is built on ``rows()``/``scalar()`` and works as on the file; a
    write raises StoreError (one line). When the writer has finished, reads go to the file itself.
    Errors: StoreError (refused, unreachable), ``duckdb.Error`` subclasses for bad SQL (as locally)."""

    def __init__(self, endpoint: Endpoint, path: str | Path, timeout_s: float = 60.0):
        import httpx

        self.path = Path(path)
        self.lock = threading.RLock()
        self.endpoint = endpoint
        self._timeout_s = timeout_s
        # TCP_NODELAY: httpx writes a POST's headers and body apart (Nagle would hold the body ~40 ms)
        transport = httpx.HTTPTransport(socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)])
        self._http = httpx.Client(base_url=endpoint.url, timeout=timeout_s, trust_env=False, transport=transport,
                                  headers={"Authorization": f"Bearer {endpoint.token}"})
        self._decoder_con: duckdb.DuckDBPyConnection | None = None
        self._local: Store | None = None

    def _decoder(self) -> duckdb.DuckDBPyConnection:
        if self._decoder_con is None:
            self._decoder_con = duckdb.connect()
        return self._decoder_con

    @property
    def con(self):  # every write of Store goes through self.con
        """There is no connection here: any write of ``Store`` through it raises StoreError (one line)."""
        raise StoreError(self.write_refused())

    def write_refused(self) -> str:
        """The one line a write gets: which running command (and pid) writes the file."""
        return (f"{self.path} is being written by a running `textbook {self.endpoint.command}` "
                f"(pid {self.endpoint.pid}); this command only reads while it runs")

    def ping(self) -> bool:
        """True when the endpoint answers with this token."""
        import httpx

        try:
            return self._http.get("/v1/ping", timeout=min(5.0, self._timeout_s)).status_code == 200
        except httpx.HTTPError:
            return False

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """Refused: a transaction is a write. Raises StoreError."""
        raise StoreError(self.write_refused())
        yield  # pragma: no cover

    def migrate(self) -> list[int]:
        """Refused: the writer migrated the file when it opened it. Raises StoreError."""
        raise StoreError(self.write_refused())

    def close(self) -> None:
        """Close the HTTP client, the decoding connection and the file, when reads went local."""
        self._http.close()
        if self._decoder_con is not None:
            self._decoder_con.close()
        if self._local is not None:
            self._local.close()

    def _query(self, sql: str, params: list | None) -> tuple[list[str], list[tuple]]:
        import httpx

        if self._local is not None:
            cur = self._local.con.execute(sql, params or [])
            return [d[0] for d in cur.description], cur.fetchall()
        body = encode_request(sql, params)
        try:
            resp = self._http.post("/v1/query", content=body, headers={"Content-Type": ARROW_STREAM})
        except httpx.TimeoutException as exc:
            raise StoreError(f"no answer within {self._timeout_s:.0f} s from the `textbook {self.endpoint.command}` "
                             f"serving reads of {self.path}") from exc
        except httpx.TransportError:
            self._go_local()
            return self._query(sql, params)
        if resp.status_code == 200:
            return decode_rows(resp.content, self._decoder)
        try:
            err = resp.json()
        except ValueError:
            err = {"error": "http", "message": f"HTTP {resp.status_code}"}
        if err.get("error") == "sql":
            cls = getattr(duckdb, str(err.get("type")), None)
            if not (isinstance(cls, type) and issubclass(cls, duckdb.Error)):
                cls = duckdb.Error
            raise cls(err.get("message", ""))
        if err.get("error") == "refused":
            raise StoreError(self.write_refused() if err.get("write") else
                             f"the read server of {self.path} refused the query: {err.get('message')}")
        raise StoreError(f"the `textbook {self.endpoint.command}` serving reads of {self.path} refused the query: "
                         f"{err.get('message', resp.status_code)}")

    def _go_local(self, wait_s: float = 10.0) -> None:
        """The writer stopped serving: read the file itself once the writer has let it go (or follow the
        endpoint of a new writer)."""
        deadline = time.monotonic() + wait_s
        while True:
            try:
                store = self._reopen()
            except StoreError as exc:
                if time.monotonic() > deadline:
                    raise StoreError(f"the `textbook {self.endpoint.command}` serving reads of {self.path} stopped "
                                     f"answering and the file is still locked ({exc})") from exc
                time.sleep(0.1)
                continue
            if isinstance(store, RemoteStore):  # another writer took the file and serves it
                self._http.close()
                self.endpoint, self._http = store.endpoint, store._http
            else:
                self._local = store
            return

    def _reopen(self) -> Store:
        """The file itself, or a RemoteStore of the process that now holds it (StoreError when neither)."""
        try:
            return open_file(self.path, read_only=True)
        except StoreLocked:
            remote = remote_store(self.path)
            if remote is None:
                raise
            return remote

    def rows(self, sql: str, params: list | None = None) -> list[dict[str, Any]]:
        """The rows of ``sql`` as dicts, as ``Store.rows``, read through the writer (or the file once it has let go).

        Raises StoreError (refused, no answer within ``timeout_s``), the ``duckdb.Error`` subclass of a bad query."""
        with self.lock:
            cols, rows = self._query(sql, params)
        return [dict(zip(cols, row, strict=True)) for row in rows]

    def scalar(self, sql: str, params: list | None = None) -> Any:
        """The first column of the first row of ``sql``, or None when there is no row (as ``Store.scalar``)."""
        with self.lock:
            _, rows = self._query(sql, params)
        return rows[0][0] if rows else None


def remote_store(path: str | Path) -> RemoteStore | None:
    """A RemoteStore on the live endpoint beside ``path``, or None (no endpoint, or it does not answer)."""
    ep = read_endpoint(path)
    if ep is None:
        return None
    remote = RemoteStore(ep, path)
    if not remote.ping():
        remote.close()
        return None
    return remote
