"""The DuckDB store: one file, schema by numbered migrations, one writer (the driver).

Repository functions take and return plain dicts; every multi-row write of a
stage happens in one transaction, so a killed process leaves either the whole
stage output or none of it.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import json
import logging
import queue
import re
import threading
import time
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from typing import Any

import duckdb

from store.paths import record_path, resolve_path

log = logging.getLogger(__name__)


class StoreError(Exception):
    """The store cannot be opened or used (one clear line for the user)."""


def _json_or_null(value: Any) -> str | None:
    return None if value is None else json.dumps(value, sort_keys=True)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def _migrations() -> list[tuple[int, str, str]]:
    found = []
    for entry in resources.files("store.migrations").iterdir():
        m = re.match(r"(\d+)_(\w+)\.sql$", entry.name)
        if m:
            found.append((int(m.group(1)), m.group(2), entry.read_text()))
    return sorted(found)


class StoreWriteFailed(StoreError):
    """Queued writes (``Store`` methods the caller does not wait for: see ``Store``) failed after their
    callers had moved on. Raised by the next barrier that reports them (``Store.flush()``, or
    ``finish_run`` at a run's end); ``failures``: (method name, exception) pairs, oldest first."""

    def __init__(self, failures: list[tuple[str, BaseException]]):
        first_name, first = failures[0]
        more = f" (and {len(failures) - 1} more)" if len(failures) > 1 else ""
        super().__init__(f"{len(failures)} queued store write{'s' if len(failures) > 1 else ''} failed: "
                         f"{first_name}: {type(first).__name__}: {' '.join(str(first).split())[:300]}{more}")
        self.failures = failures


class StoreLocked(StoreError):
    """The DuckDB file is held by another process (DuckDB allows one writer): store/open.py asks that
    process to serve reads (store/serve.py)."""


def open_file(path: str | Path, read_only: bool = False) -> Store:
    """The store in the DuckDB file ``path`` itself (migrated when opened for writing), never through another
    process. Raises StoreLocked when another process holds the file, StoreError (one line) for no file
    (read-only), a folder that cannot be made, or a file that is not a DuckDB database."""
    path = Path(path)
    if read_only and not path.is_file():
        raise StoreError(f"no database at {path}")
    if not read_only:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create {path.parent}: {exc.strerror}") from exc
    try:
        con = duckdb.connect(str(path), read_only=read_only)
    except duckdb.IOException as exc:
        msg = str(exc)
        if "lock" in msg.lower():
            raise StoreLocked(f"{path} is in use by another process (DuckDB allows one writer)") from exc
        raise StoreError(f"cannot open {path}: {msg.splitlines()[0]}") from exc
    except duckdb.Error as exc:
        raise StoreError(f"{path} is not a DuckDB database: {str(exc).splitlines()[0]}") from exc
    store = Store(con, path)
    if not read_only:
        store.migrate()
    return store


class _Write:
    """One write for the writer thread: the method, its arguments, its place in the queue (``seq``), and
    (once its batch has committed or failed) its result or its exception. A waited-for write has a
    ``done`` event its caller waits on; a queued one (``queued``) has none, holds its store (so a store
    dropped with writes still queued lands them first) and may have ``on_done(error)``, called on the
    writer thread once it landed (error None) or failed."""

    __slots__ = ("fn", "args", "kwargs", "result", "error", "done", "seq", "queued", "store", "on_done")

    def __init__(self, fn, args: tuple, kwargs: dict, queued: bool = False, store: Store | None = None,
                 on_done=None):
        self.fn, self.args, self.kwargs = fn, args, kwargs
        self.result: Any = None
        self.error: BaseException | None = None
        self.queued, self.store, self.on_done = queued, store, on_done
        self.done = None if queued else threading.Event()
        self.seq = 0


def _writes(fn):
    """Mark a Store method as a write its caller waits for: it runs on the writer thread, in a batch
    (see ``Store``), and returns its result or raises its own exception."""
    @functools.wraps(fn)
    def call(self, *args, **kwargs):
        """Queue the write and wait for its batch's commit (``Store._submit``)."""
        return self._submit(fn, args, kwargs)
    return call


def _queues(fn):
    """Mark a Store method (one that returns None) as a queued write: it runs on the writer thread in a
    batch as a ``_writes`` method does, but its caller does not wait for the commit (``Store._enqueue``).
    Every read waits for the writes queued before it, so nothing is seen stale; a failure is logged and
    raised by the next ``flush()`` or ``finish_run`` (``StoreWriteFailed``)."""
    @functools.wraps(fn)
    def call(self, *args, **kwargs):
        """Queue the write and return at once (``Store._enqueue``)."""
        self._enqueue(fn, args, kwargs)
    return call


def _writer_thread(ref: weakref.ref, q: queue.SimpleQueue) -> None:
    """The store's writer thread: wait for a write, run it with those queued behind it
    (``Store._write_batch``); a None in the queue (``close()``, or the store collected) ends it."""
    while True:
        first = q.get()
        if first is None:
            return
        store = ref()
        if store is None:  # cannot happen while a write is queued (a caller waits, or the write holds it)
            first.error = StoreError("the store was closed")
            if first.done is not None:
                first.done.set()
            return
        stop = store._write_batch(first)
        del store, first
        if stop:
            return


def _stop_writer(q: queue.SimpleQueue, writer: threading.Thread) -> None:
    """The finalizer of a store dropped without close() (or alive at interpreter exit): the writer lands
    what is queued, then ends."""
    q.put(None)
    if writer is not threading.current_thread():
        writer.join(60)


_HEX64 = re.compile(r"[0-9a-f]{64}")


class _CacheKeys:
    """Which response-cache keys (``llm_cache``) a DuckDB file may hold, kept in memory so that a lookup of
    a key never written (every paid call's first lookup) needs no query; and the answers queued but not
    yet committed (``pending``), which a lookup serves as the store will. A negative filter only: a key
    it may hold is read from the file, which stays the truth.

    Keys are held as 64-bit prefixes (of a sha256 hex key, its first 16 digits; of any other key, a
    blake2b digest): the keys in the file when first asked (``load``, one query, a sorted numpy array:
    8 bytes a key, ~68 MB for the paper's 8.5M calls), plus those written since (``recent``, merged into
    the array every ``MERGE`` keys). One per file per process (``_cache_keys``), shared by its stores.
    Thread-safe."""

    MERGE = 65536

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.loaded = None  # numpy uint64, sorted; None until the first lookup
        self.recent: set[int] = set()
        self.pending: dict[str, dict] = {}

    @staticmethod
    def prefix(key: str) -> int:
        """The key's 64-bit prefix (as ``load`` computes it in SQL for hex keys)."""
        if len(key) == 64 and _HEX64.fullmatch(key):
            return int(key[:16], 16)
        return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big")

    def add(self, key: str) -> None:
        """The key is (or is about to be) in the file."""
        p = self.prefix(key)
        with self.lock:
            self.recent.add(p)

    def load(self, rows) -> None:
        """Read every key of the file once (``rows(sql) -> list of dicts``); the keys added since are kept."""
        import numpy as np

        hexes = rows("SELECT ('0x' || left(cache_key, 16))::UBIGINT AS p FROM llm_cache "
                     "WHERE regexp_full_match(cache_key, '[0-9a-f]{64}')")
        others = rows("SELECT cache_key FROM llm_cache WHERE NOT regexp_full_match(cache_key, '[0-9a-f]{64}')")
        found = np.fromiter((r["p"] for r in hexes), dtype=np.uint64, count=len(hexes))
        extra = np.array([self.prefix(r["cache_key"]) for r in others], dtype=np.uint64)
        with self.lock:
            if self.loaded is None:
                self.loaded = np.unique(np.concatenate([found, extra]))

    def maybe(self, key: str, rows) -> bool:
        """False when the file certainly lacks the key; True when it may hold it (read it to know).
        The first call loads the file's keys (``load``)."""
        import numpy as np

        if self.loaded is None:
            self.load(rows)
        p = self.prefix(key)
        with self.lock:
            if p in self.recent:
                return True
            if len(self.recent) >= self.MERGE:
                self.loaded = np.union1d(self.loaded, np.fromiter(self.recent, dtype=np.uint64,
                                                                  count=len(self.recent)))
                self.recent.clear()
            at = int(np.searchsorted(self.loaded, np.uint64(p)))
            return at < len(self.loaded) and int(self.loaded[at]) == p

    def hold(self, key: str, row: dict) -> None:
        """An answer queued for the file: served from memory until it lands (``release``)."""
        with self.lock:
            self.pending[key] = row

    def release(self, key: str, row: dict) -> None:
        """The queued answer ``row`` landed (or failed): the file answers for it from now on."""
        with self.lock:
            if self.pending.get(key) is row:
                del self.pending[key]

    def held(self, key: str) -> dict | None:
        """The queued answer under ``key`` (a copy), or None."""
        with self.lock:
            row = self.pending.get(key)
        return dict(row) if row is not None else None


class _Group:
    """Rows of one kind for one statement: inserts (``verb`` INSERT or INSERT OR REPLACE) of ``cols``,
    or updates (``update``) of ``cols`` by the key columns ``keys`` (one row per key: a later update of
    the same row replaces the earlier one's values)."""

    __slots__ = ("table", "cols", "verb", "keys", "update", "rows")

    def __init__(self, table: str, cols: tuple, verb: str, keys: tuple | None):
        self.table, self.cols, self.verb, self.keys, self.update = table, cols, verb, keys, keys is not None
        self.rows: list[list] | dict = {} if self.update else []


class _Buffer:
    """A writer batch's row inserts and updates, grouped for few statements: a row joins its kind's group
    (table, columns, verb or key columns) only while no other kind of write to the same table came after
    that group, so each table's writes run in the order they came (across tables order does not matter:
    no statement of ours reads another table, and the schema has no foreign keys)."""

    def __init__(self) -> None:
        self.groups: list[_Group] = []
        self._by_kind: dict[tuple, _Group] = {}
        self._last: dict[str, _Group] = {}

    def __len__(self) -> int:
        return len(self.groups)

    def add(self, table: str, cols: tuple, values: list, verb: str = "INSERT", keys: tuple | None = None,
            key: tuple | None = None) -> None:
        """One row: an insert of ``values`` into ``cols``, or (``keys`` given) an update setting ``cols`` to
        ``values`` on the row whose key columns ``keys`` hold ``key``."""
        kind = (table, cols, verb, keys)
        g = self._by_kind.get(kind)
        if g is None or self._last.get(table) is not g:
            g = self._by_kind[kind] = self._last[table] = _Group(table, cols, verb, keys)
            self.groups.append(g)
        if keys is None:
            g.rows.append(values)
        else:
            g.rows[key] = [*values, *key]


_CACHE_KEYS: weakref.WeakValueDictionary[str, _CacheKeys] = weakref.WeakValueDictionary()
_CACHE_KEYS_LOCK = threading.Lock()


def _cache_keys(path: Path) -> _CacheKeys:
    """The response-cache key index of the file at ``path``, shared by the stores of this process on it."""
    name = str(Path(path).resolve())
    with _CACHE_KEYS_LOCK:
        keys = _CACHE_KEYS.get(name)
        if keys is None:
            keys = _CACHE_KEYS[name] = _CacheKeys()
        return keys


class Store:
    """Repository over one DuckDB database, with one writer thread.

    **Writes** (every method that changes the file; ``transaction()`` blocks) go through a queue to
    one writer thread, which takes every write queued (up to ``batch_max``) and runs them in order
    in one transaction, then commits once: many threads' writes share one commit (a commit costs
    ~10-20 ms of fsync; a write ~0.1-1 ms). A write that raises fails alone: the batch is rolled
    back, the write at fault gets its exception (its own type and message, e.g.
    ``duckdb.ConstraintException``), and the rest of the batch runs again and lands. A write made
    inside another write or inside a ``transaction()`` block runs at once, as part of it.

    Two kinds of write method:

    - **waited for** (``_writes``: those that return something, stage outputs, runs, taxonomy): the
      method returns once its batch has committed, with its own result or its exception.
    - **queued** (``_queues``: logs and bookkeeping nothing reads back at once: ``record_llm_call``,
      ``llm_cache_put``, ``save_judgment``, ``set_hit_verdict``, ``event_decided``, ``event_end``,
      ``update_candidate``, ``record_query``, ``search_cache_put``): the method returns as soon as the
      write is queued (at most ``queued_max`` wait at once; past that a caller waits for room). A
      failure is logged at once with the method's name and the error, and raised as
      ``StoreWriteFailed`` by the next ``flush()``, or by ``finish_run`` (the run is recorded failed).

    **Reads are barriers**: every read (``rows``, ``scalar``, every read method, ``con`` and the
    start of a ``transaction()`` block) first waits until every write queued before it, by any
    thread, has landed, so a caller reads its own writes and what other threads wrote before they
    signalled it; it then runs on the caller's thread on a cursor of its own (``conn.cursor()``:
    DuckDB allows one per thread in one process), never behind the writer, and sees every committed
    write. A batch commits as one transaction: a reader never sees part of one. Inside a write or a
    ``transaction()`` block, reads see that block's own writes and wait for nothing. The response
    cache (``llm_cache_get``) waits for nothing: an answer queued is served from memory until it
    lands, and a key the file never held is known without a query (``_CacheKeys``).

    ``flush()`` is the explicit barrier (waits, then raises queued failures). ``close()`` lands every
    write queued before it (a Ctrl-C that reaches the command's ``finally`` loses nothing), then closes
    the file; a store dropped without ``close()``, or alive at interpreter exit, lands its queue too.

    ``lock``: a re-entrant lock the store's own methods do not take; callers hold it around a
    read-then-write step that must not interleave with another such step (``with store.lock:``).
    ``con``: a DuckDB connection for raw SQL: inside a write or ``transaction()`` block the writer's
    cursor; elsewhere a cursor of the calling thread's own (reads, or autocommitted writes).
    """

    batch_max = 512
    """Most writes one commit takes."""
    queued_max = 8192
    """Most queued writes waiting at once (memory stays bounded when callers outpace the writer)."""
    linger_s = 0.002
    """While several threads write (the last batch had more than one write), the writer waits up to
    this long for more writes before it commits (fewer, larger commits: a commit costs ~1-1.5 ms of
    CPU and an fsync); a lone writer's write commits at once."""

    _queue = None  # a subclass without a writer (store.serve.RemoteStore) runs writes at once
    _queued = _landed = 0
    _owner: int | None = None
    taxonomy_changes: int | None = None
    """Taxonomy writes by this store so far (``save_taxonomy``): a reader that caches a taxonomy re-reads
    when it moved. None: not tracked (a store that reads another process's writes: read each time)."""

    def __init__(self, con: duckdb.DuckDBPyConnection, path: Path):
        self._root = con  # runs no statement: cursors are made from it
        self.path = path
        self.lock = threading.RLock()
        self._cursor_lock = threading.Lock()  # guards _root.cursor(), _free and _cursors
        self._cursors: list[duckdb.DuckDBPyConnection] = []
        self._free: list[duckdb.DuckDBPyConnection] = []
        self._local = threading.local()
        self._wcur = self._cursor()
        self._wlock = threading.RLock()  # held by the thread that runs statements on _wcur
        self._owner = None  # that thread's ident
        self._queue: queue.SimpleQueue[_Write | None] = queue.SimpleQueue()
        self._qlock = threading.Lock()  # numbers the writes in queue order
        self._landed_cond = threading.Condition(threading.Lock())
        self._queued = 0  # writes queued so far (the last one's seq)
        self._landed = 0  # the seq of the last write that landed or failed
        self._failures: list[tuple[str, BaseException]] = []  # queued writes failed, not raised yet
        self._closed = False
        self._last_batch = 0  # writes in the last batch
        self._buffer: _Buffer | None = None  # a batch's row inserts and updates (``_flush``)
        self._keys = _cache_keys(path)
        self.taxonomy_changes = 0
        self.commits = 0
        """Batches committed so far (with ``writes``: writes per commit, for benchmarks)."""
        self.writes = 0
        # the thread holds the store weakly: a store dropped without close() is collected (its file let
        # go), and the finalizer's None stops the thread once the queue has landed
        self._writer = threading.Thread(target=_writer_thread, args=(weakref.ref(self), self._queue),
                                        name=f"store-writer:{path.name}", daemon=True)
        self._writer.start()
        weakref.finalize(self, _stop_writer, self._queue, self._writer)

    # -- the writer ---------------------------------------------------------------
    def _cursor(self) -> duckdb.DuckDBPyConnection:
        with self._cursor_lock:
            cur = self._root.cursor()
            self._cursors.append(cur)
            return cur

    @property
    def con(self) -> duckdb.DuckDBPyConnection:
        """The DuckDB connection for raw SQL from this thread (see the class docstring)."""
        if self._owner == threading.get_ident():
            if self._buffer:
                self._flush()
            return self._wcur
        self._barrier()
        cur = getattr(self._local, "cur", None)
        if cur is None:
            cur = self._local.cur = self._cursor()
        return cur

    def _submit(self, fn, args: tuple, kwargs: dict) -> Any:
        """Run the write ``fn(self, *args, **kwargs)`` on the writer thread and wait for its batch to
        commit; its result, or its exception re-raised here. Inside a write or ``transaction()``
        block (this thread holds the writer's cursor), it runs at once as part of that block."""
        if self._queue is None or self._owner == threading.get_ident():
            return fn(self, *args, **kwargs)  # nested (or a subclass without a writer: RemoteStore)
        if self._closed:
            raise StoreError(f"{self.path}: the store is closed; {fn.__name__} was not written")
        op = _Write(fn, args, kwargs)
        self._put(op)
        op.done.wait()
        if op.error is not None:
            raise op.error
        return op.result

    def _enqueue(self, fn, args: tuple, kwargs: dict, on_done=None) -> None:
        """Queue the write ``fn(self, *args, **kwargs)`` for the writer thread and return (it lands with
        the next batch; see the class docstring); waits only while ``queued_max`` writes are queued.
        Inside a write or ``transaction()`` block it runs at once, as part of it (its exception
        raised here). ``on_done(error)``: called once it landed (error None) or failed. Raises
        StoreError when the store is closed."""
        if self._queue is None or self._owner == threading.get_ident():
            fn(self, *args, **kwargs)
            if on_done is not None:
                on_done(None)
            return
        if self._closed:
            raise StoreError(f"{self.path}: the store is closed; {fn.__name__} was not written")
        if self._queued - self._landed >= self.queued_max:
            self._wait_room()
        self._put(_Write(fn, args, kwargs, queued=True, store=self, on_done=on_done))

    def _wait_room(self) -> None:
        """Wait while ``queued_max`` writes are queued and not landed (callers outpace the writer)."""
        with self._landed_cond:
            while self._queued - self._landed >= self.queued_max and self._writer.is_alive():
                self._landed_cond.wait(1.0)

    def _put(self, op: _Write) -> None:
        """Number the write and queue it, in one step: the queue's order is the numbers' order."""
        with self._qlock:
            self._queued += 1
            op.seq = self._queued
            self._queue.put(op)

    def _barrier(self) -> None:
        """Wait until every write queued before now (by any thread) has landed or failed; at once inside
        a write or ``transaction()`` block. Raises StoreError when the writer thread has stopped with
        writes still queued (it cannot happen while the store is open)."""
        target = self._queued
        if self._landed >= target or self._queue is None or self._owner == threading.get_ident():
            return
        with self._landed_cond:
            while self._landed < target:
                if not self._writer.is_alive():
                    raise StoreError(f"{self.path}: the store's writer stopped with "
                                     f"{target - self._landed} writes not landed")
                self._landed_cond.wait(1.0)

    def flush(self) -> None:
        """The barrier: wait until every write queued before this call has landed, then raise
        StoreWriteFailed for the queued writes that failed since the last report (each was logged
        when it failed). Inside a write or ``transaction()`` block it waits for nothing."""
        self._barrier()
        failures = self._take_failures()
        if failures:
            raise StoreWriteFailed(failures)

    def _take_failures(self) -> list[tuple[str, BaseException]]:
        with self._landed_cond:
            failures, self._failures = self._failures, []
        return failures

    def _write_batch(self, first: _Write) -> bool:
        """On the writer thread: holding the writer's cursor, take every write queued behind ``first``
        (up to ``batch_max``) and run them as one batch; True when a None (``close()``) came after them.
        Then the batch's writes are done: the barrier moves past them, queued ones that failed are
        logged and kept for the next report, waiting callers are woken."""
        batch, stop = [first], False
        with self._wlock:
            # writers at once (the last batch had several): wait up to linger_s for more to share the commit
            until = time.monotonic() + (self.linger_s if self._last_batch > 1 else 0.0)
            while len(batch) < self.batch_max:
                try:
                    op = self._queue.get(timeout=max(0.0, until - time.monotonic()))
                except queue.Empty:
                    break
                if op is None:
                    stop = True
                    break
                batch.append(op)
            self._last_batch = len(batch)
            self._owner = threading.get_ident()
            try:
                self._run_batch(batch)
            finally:
                self._owner = None
                self._done(batch)
        return stop

    def _done(self, batch: list[_Write]) -> None:
        """The writes of a batch that ran: report queued failures, move the barrier, wake the callers."""
        failed = [op for op in batch if op.queued and op.error is not None]
        for op in failed:
            log.error("%s: a queued store write failed: %s: %s: %s", self.path.name, op.fn.__name__,
                      type(op.error).__name__, " ".join(str(op.error).split())[:300])
        with self._landed_cond:
            self._failures += [(op.fn.__name__, op.error) for op in failed]
            self._landed = batch[-1].seq
            self._landed_cond.notify_all()
        for op in batch:
            if op.queued:
                op.store = None
                if op.on_done is not None:
                    try:
                        op.on_done(op.error)
                    except Exception:  # noqa: BLE001 - a callback's fault must not stop the writer
                        log.exception("%s: on_done of %s failed", self.path.name, op.fn.__name__)
            else:
                op.done.set()

    def _run_batch(self, batch: list[_Write]) -> None:
        """Run the writes in one transaction and commit once, their row inserts gathered into one
        multi-row INSERT per table (``_insert``: DuckDB pays ~1-4 ms a statement, ~0.2-0.6 ms a row of
        a multi-row one). When anything fails, the batch is rolled back and each write runs again
        alone, unbuffered: the write at fault gets its exception, the others land."""
        if self._try(batch, buffered=True):
            return
        for op in batch:
            op.error = op.result = None
            self._try([op], buffered=False)

    def _try(self, ops: list[_Write], buffered: bool) -> bool:
        """One transaction for ``ops``; False (rolled back, nothing recorded) when it fails with more
        than one write, else each write's result, or the one write's exception, is recorded."""
        cur = self._wcur
        self._buffer = _Buffer() if buffered else None
        try:
            cur.execute("BEGIN TRANSACTION")
            results = [op.fn(self, *op.args, **op.kwargs) for op in ops]
            self._flush()
            cur.execute("COMMIT")
        except BaseException as exc:  # noqa: BLE001 - handed to the caller that made the write
            self._buffer = None
            try:
                cur.execute("ROLLBACK")
            except duckdb.Error:
                pass
            if len(ops) > 1 or buffered:
                return False
            ops[0].error = exc
            return True
        finally:
            self._buffer = None
        for op, result in zip(ops, results, strict=True):
            op.result = result
        self.commits += 1
        self.writes += len(ops)
        return True

    arrow_min = 8
    """A group's rows from which they go in as one Arrow table (``_flush``)."""

    def _flush(self) -> None:
        """Run the row inserts and updates gathered so far in this batch (``_Buffer``: each table's in
        the order they came), a group at a time: from ``arrow_min`` rows on, one statement over an
        Arrow table built column by column (an insert ~0.02-0.1 ms a row against ~0.2 ms a row bound as
        parameters, measured with llm_calls rows, DuckDB 2.0; an update of many rows in one statement
        against ~2-5 ms an UPDATE); fewer, or values Arrow cannot type, as multi-row INSERTs of at most
        256 rows and an UPDATE ... FROM (VALUES ...)."""
        buffer, self._buffer = self._buffer, None
        try:
            for g in (buffer.groups if buffer is not None else []):
                if g.update:
                    self._update_rows(g)
                    continue
                if len(g.rows) >= self.arrow_min and self._insert_arrow(g):
                    continue
                one = "(" + ", ".join("?" * len(g.cols)) + ")"
                for at in range(0, len(g.rows), 256):
                    chunk = g.rows[at:at + 256]
                    self._wcur.execute(f'{g.verb} INTO {g.table} ({", ".join(g.cols)}) VALUES '
                                       + ", ".join([one] * len(chunk)), [v for row in chunk for v in row])
        finally:
            self._buffer = _Buffer() if buffer is not None else None

    @staticmethod
    def _arrow(rows: list[list], width: int):
        """The rows as an Arrow table of columns c0.. (None when Arrow cannot type a column)."""
        import pyarrow as pa

        try:
            return pa.table({f"c{i}": pa.array([r[i] for r in rows]) for i in range(width)})
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
            return None

    def _insert_arrow(self, g: _Group) -> bool:
        """Insert the group's rows through one Arrow table, in their order; False (nothing inserted)
        when Arrow cannot type a column (mixed kinds of value)."""
        batch = self._arrow(g.rows, len(g.cols))
        if batch is None:
            return False
        names = ", ".join(f"c{i}" for i in range(len(g.cols)))
        self._wcur.register("_rows", batch)
        try:
            self._wcur.execute(f'{g.verb} INTO {g.table} ({", ".join(g.cols)}) SELECT {names} FROM _rows')
        finally:
            self._wcur.unregister("_rows")
        return True

    def _update_rows(self, g: _Group) -> None:
        """One UPDATE for the group's rows (each: the new values of ``g.cols``, then the values of the key
        columns ``g.keys``; one row per key, the last one given)."""
        n, rows = len(g.cols), list(g.rows.values())
        sets = ", ".join(f"{c} = v.c{i}" for i, c in enumerate(g.cols))
        where = " AND ".join(f"{g.table}.{k} = v.c{n + j}" for j, k in enumerate(g.keys))
        if len(rows) == 1:
            self._wcur.execute(f"UPDATE {g.table} SET {', '.join(f'{c} = ?' for c in g.cols)} WHERE "
                               + " AND ".join(f"{k} = ?" for k in g.keys), rows[0])
            return
        names = ", ".join(f"c{i}" for i in range(n + len(g.keys)))
        batch = self._arrow(rows, n + len(g.keys)) if len(rows) >= self.arrow_min else None
        if batch is not None:
            self._wcur.register("_rows", batch)
            try:
                self._wcur.execute(f"UPDATE {g.table} SET {sets} FROM _rows AS v WHERE {where}")
            finally:
                self._wcur.unregister("_rows")
            return
        one = "(" + ", ".join("?" * (n + len(g.keys))) + ")"
        for at in range(0, len(rows), 256):
            chunk = rows[at:at + 256]
            self._wcur.execute(f"UPDATE {g.table} SET {sets} FROM (VALUES {', '.join([one] * len(chunk))}) "
                               f"AS v({names}) WHERE {where}", [x for row in chunk for x in row])

    # -- schema -------------------------------------------------------------
    @_writes
    def migrate(self) -> list[int]:
        """Apply the numbered migrations (store/migrations/NNN_name.sql) not applied yet, in order;
        returns their numbers. Raises duckdb.Error when one fails (nothing of it is applied)."""
        self.con.execute("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, "
                         "name VARCHAR NOT NULL, applied_at TIMESTAMP NOT NULL)")
        done = {r[0] for r in self.con.execute("SELECT version FROM schema_migrations").fetchall()}
        applied = []
        for version, name, sql in _migrations():
            if version in done:
                continue
            self.con.execute(sql)
            self.con.execute("INSERT INTO schema_migrations VALUES (?, ?, ?)", [version, name, _now()])
            applied.append(version)
        return applied

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """A block of writes that commit together or not at all (an exception rolls them back and
        passes through). The calling thread runs on the writer's cursor meanwhile (queued writes wait;
        reads elsewhere go on); inside a write or another block, it is part of that one."""
        me = threading.get_ident()
        if self._owner == me:
            yield
            return
        self._barrier()  # this thread's queued writes land first: the block reads them
        with self._wlock:
            self._owner = me
            try:
                self._wcur.execute("BEGIN TRANSACTION")
                try:
                    yield
                except BaseException:
                    self._wcur.execute("ROLLBACK")
                    raise
                self._wcur.execute("COMMIT")
            finally:
                self._owner = None

    def close(self) -> None:
        """Land every write queued so far, stop the writer thread and close the file (idempotent).
        Writes after it raise StoreError. Queued writes that failed and were never raised
        (``flush``) are logged once more, in one line; ``flush()`` after close still raises them."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(None)
        if self._writer is not threading.current_thread():
            self._writer.join()
            while True:  # a write that raced close() in behind its None: refused, never left waiting
                try:
                    op = self._queue.get_nowait()
                except queue.Empty:
                    break
                if op is not None:
                    op.error = StoreError(f"{self.path}: the store is closed; {op.fn.__name__} was not written")
                    self._done([op])
        with self._landed_cond:
            unreported = len(self._failures)
        if unreported:
            log.error("%s: closed with %d queued write%s failed and not reported (see the errors above)",
                      self.path.name, unreported, "s" if unreported > 1 else "")
        with self._cursor_lock:
            for cur in self._cursors:
                try:
                    cur.close()
                except duckdb.Error:
                    pass
        self._root.close()

    @contextmanager
    def _reading(self, wait: bool = True) -> Iterator[duckdb.DuckDBPyConnection]:
        """A cursor for one read: the writer's inside a write block, else a free one of the pool, once
        every write queued before it has landed (``wait``; False: what is committed now)."""
        if self._owner == threading.get_ident():
            if self._buffer:
                self._flush()
            yield self._wcur
            return
        if wait:
            self._barrier()
        with self._cursor_lock:
            cur = self._free.pop() if self._free else None
        if cur is None:
            cur = self._cursor()
        try:
            yield cur
        finally:
            with self._cursor_lock:
                self._free.append(cur)

    def rows(self, sql: str, params: list | None = None) -> list[dict[str, Any]]:
        """The rows of a query as dicts (column name -> value), in the query's order, once every write
        queued before it has landed."""
        return self._rows(sql, params)

    def _rows(self, sql: str, params: list | None = None, wait: bool = True) -> list[dict[str, Any]]:
        if not wait and self._queue is None:
            return self.rows(sql, params)  # a subclass's own reads (RemoteStore)
        with self._reading(wait) as con:
            cur = con.execute(sql, params or [])
            cols = [d[0] for d in cur.description]
            return [dict(zip(cols, row, strict=True)) for row in cur.fetchall()]

    def scalar(self, sql: str, params: list | None = None) -> Any:
        """The first column of the query's first row; None when it has no row (once every write queued
        before it has landed)."""
        with self._reading() as con:
            found = con.execute(sql, params or []).fetchall()
        return found[0][0] if found else None

    def counts(self) -> dict[str, int]:
        """Rows per table of the main schema: {table name: row count}."""
        tables = [r["table_name"] for r in self.rows(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'main' ORDER BY 1")]
        return {t: self.scalar(f'SELECT count(*) FROM "{t}"') for t in tables}

    # -- runs ---------------------------------------------------------------
    @_writes
    def start_run(self, run_id: str, command: str, inputs: list[str], config: dict, config_hash: str) -> bool:
        """Create the run, or mark an existing one running again. True if it existed."""
        existed = self.scalar("SELECT count(*) FROM runs WHERE run_id = ?", [run_id]) > 0
        now = _now()
        if existed:
            self.con.execute("UPDATE runs SET status = 'running', updated_at = ?, attempts = attempts + 1 "
                             "WHERE run_id = ?", [now, run_id])
        else:
            self.con.execute("INSERT INTO runs VALUES (?, ?, 'running', ?, ?, ?, ?, ?, 1, NULL)",
                             [run_id, command, json.dumps(inputs), json.dumps(config, sort_keys=True),
                              config_hash, now, now])
        return existed

    def finish_run(self, run_id: str, status: str, summary: dict) -> None:
        """Set the run's final ``status`` (done, failed, stopped, ...) and its ``summary`` (a JSON-able dict).

        The run's end is a barrier (``flush``): every write queued before it lands first. Queued writes
        that failed and were not reported yet go into the summary (``store_write_failures``: one line
        each, the first 20); a run that would be ``finished`` is recorded ``failed`` (``error``: one
        line) and StoreWriteFailed is raised once it is recorded. Another status is kept (the run
        already ends on its own fault), and nothing is raised."""
        self._barrier()
        failures = self._take_failures()
        if failures:
            error = StoreWriteFailed(failures)
            summary = {**summary, "store_write_failures": [
                f"{name}: {type(exc).__name__}: {' '.join(str(exc).split())[:200]}" for name, exc in failures[:20]]}
            if status == "finished":
                self._finish_run(run_id, "failed", {**summary, "error": str(error)[:500]})
                raise error
        self._finish_run(run_id, status, summary)

    @_writes
    def _finish_run(self, run_id: str, status: str, summary: dict) -> None:
        self.con.execute("UPDATE runs SET status = ?, updated_at = ?, summary = ? WHERE run_id = ?",
                         [status, _now(), json.dumps(summary), run_id])

    def latest_run(self) -> str | None:
        """The id of the run updated last; None when the store has no run."""
        return self.scalar("SELECT run_id FROM runs ORDER BY updated_at DESC LIMIT 1")

    @_writes
    def set_run_videos(self, run_id: str, video_ids: list[str]) -> None:
        """The run's videos, in this order: rows of other videos are removed; a listed video keeps its
        status, reason and config hashes (``update_run_video``)."""
        with self.transaction():
            keep = list(dict.fromkeys(video_ids))
            if keep:
                self.con.execute(f"DELETE FROM run_videos WHERE run_id = ? AND video_id NOT IN "
                                 f"({', '.join('?' * len(keep))})", [run_id, *keep])
            else:
                self.con.execute("DELETE FROM run_videos WHERE run_id = ?", [run_id])
            for pos, vid in enumerate(keep):
                self.con.execute("INSERT INTO run_videos (run_id, video_id, position, updated_at) VALUES (?, ?, ?, ?) "
                                 "ON CONFLICT (run_id, video_id) DO UPDATE SET position = excluded.position",
                                 [run_id, vid, pos, _now()])

    RUN_VIDEO_FIELDS = ("status", "reason", "asr_hash", "keyframes_hash", "ocr_hash", "clips_hash")

    @_writes
    def update_run_video(self, run_id: str, video_id: str, **fields: Any) -> None:
        """Set a run's view of one video (``RUN_VIDEO_FIELDS``: status, reason, the config hashes of the
        outputs it used); the row is added (last position) when the run has none for the video yet."""
        bad = set(fields) - set(self.RUN_VIDEO_FIELDS)
        if bad:
            raise ValueError(f"unknown run_videos fields: {sorted(bad)}")
        with self.transaction():
            if not self.scalar("SELECT count(*) FROM run_videos WHERE run_id = ? AND video_id = ?",
                               [run_id, video_id]):
                pos = self.scalar("SELECT coalesce(max(position) + 1, 0) FROM run_videos WHERE run_id = ?", [run_id])
                self.con.execute("INSERT INTO run_videos (run_id, video_id, position, updated_at) VALUES (?, ?, ?, ?)",
                                 [run_id, video_id, pos, _now()])
            if fields:
                sets = ", ".join(f"{k} = ?" for k in fields)
                self.con.execute(f"UPDATE run_videos SET {sets}, updated_at = ? WHERE run_id = ? AND video_id = ?",
                                 [*(str(v) if v is not None else None for v in fields.values()), _now(), run_id,
                                  video_id])

    def run_video(self, run_id: str, video_id: str) -> dict | None:
        """The run's row of a video: position, status, reason, asr/keyframes/ocr/clips hashes (None: none)."""
        found = self.rows("SELECT * FROM run_videos WHERE run_id = ? AND video_id = ?", [run_id, video_id])
        return found[0] if found else None

    # -- videos -------------------------------------------------------------
    @_writes
    def upsert_video(self, video: dict) -> None:
        """Insert or update a video row; status is kept unless given."""
        cols = ["video_id", "source", "sha256", "title", "subject", "course", "knowledge_point", "metadata",
                "subcourse", "difficulty", "public_source"]
        vals = [video.get(c) for c in cols]
        vals[7] = json.dumps(video.get("metadata") or {}, sort_keys=True)
        updates = ", ".join(f"{c} = excluded.{c}" for c in cols[1:])
        self.con.execute(
            f"INSERT INTO videos ({', '.join(cols)}, status, updated_at) VALUES ({', '.join('?' * len(cols))}, "
            f"'pending', ?) ON CONFLICT (video_id) DO UPDATE SET {updates}",
            [*vals, _now()])

    @_writes
    def update_video(self, video_id: str, **fields: Any) -> None:
        """Set columns of the video's row (``fields``: column name -> value; ``updated_at`` set too).
        Raises duckdb.BinderException for an unknown column."""
        sets = ", ".join(f"{k} = ?" for k in fields)
        self.con.execute(f"UPDATE videos SET {sets}, updated_at = ? WHERE video_id = ?",
                         [*fields.values(), _now(), video_id])

    def video(self, video_id: str) -> dict | None:
        """The video's row (every ``videos`` column, ``metadata`` as JSON text); None when unknown."""
        rows = self.rows("SELECT * FROM videos WHERE video_id = ?", [video_id])
        return rows[0] if rows else None

    def video_by_sha256(self, sha256: str, exclude: str) -> dict | None:
        """The first video stored with this file content, other than ``exclude`` and never a duplicate itself."""
        rows = self.rows("SELECT * FROM videos WHERE sha256 = ? AND video_id <> ? AND status <> 'duplicate' "
                         "ORDER BY video_id LIMIT 1", [sha256, exclude])
        return rows[0] if rows else None

    # -- stage bookkeeping ---------------------------------------------------
    def stage(self, video_id: str, stage: str, config_hash: str | None = None) -> dict | None:
        """The stage_status row of (video, stage, config hash); without a hash, the latest finished one."""
        if config_hash is not None:
            rows = self.rows("SELECT * FROM stage_status WHERE video_id = ? AND stage = ? AND config_hash = ?",
                             [video_id, stage, config_hash])
        else:
            rows = self.rows("SELECT * FROM stage_status WHERE video_id = ? AND stage = ? "
                             "ORDER BY finished_at DESC LIMIT 1", [video_id, stage])
        return rows[0] if rows else None

    _OUTPUTS = {"asr": "transcripts", "keyframes": "keyframes", "ocr": "ocr", "clips": "clips"}

    def latest_hash(self, video_id: str, stage: str) -> str | None:
        """The config hash of the stage's most recently finished output for the video (a row migrated
        from before per-config outputs: its hash, '' when none was recorded); None when there is none."""
        table = self._OUTPUTS[stage]
        return self.scalar(f"SELECT o.config_hash FROM (SELECT DISTINCT config_hash FROM {table} "
                           "WHERE video_id = ?) o LEFT JOIN stage_status s ON s.video_id = ? AND s.stage = ? "
                           "AND s.config_hash = o.config_hash ORDER BY s.finished_at DESC NULLS LAST LIMIT 1",
                           [video_id, video_id, stage])

    def _hash(self, video_id: str, stage: str, config_hash: str | None) -> str | None:
        return config_hash if config_hash is not None else self.latest_hash(video_id, stage)

    def _mark(self, video_id: str, stage: str, config_hash: str, status: str, detail: str | None,
              seconds: float | None) -> None:
        self.con.execute("INSERT OR REPLACE INTO stage_status VALUES (?, ?, ?, ?, ?, ?, ?)",
                         [video_id, stage, config_hash, status, detail, seconds, _now()])
        if status != "error":
            self.con.execute("DELETE FROM errors WHERE video_id = ? AND stage = ?", [video_id, stage])

    @_writes
    def mark_stage(self, video_id: str, stage: str, config_hash: str, status: str = "done",
                   detail: str | None = None, seconds: float | None = None) -> None:
        """Record the stage's status for (video, stage, config hash) (``seconds``: its run time); a
        status other than ``error`` clears the stage's stored errors."""
        with self.transaction():
            self._mark(video_id, stage, config_hash, status, detail, seconds)

    @_writes
    def record_error(self, video_id: str, stage: str, config_hash: str, kind: str, message: str,
                     run_id: str | None) -> None:
        """Record a failed stage: its status ``error`` (``kind`` as detail), the ``errors`` row (``message``
        cut to 2,000 characters) and the video's status ``error`` with ``kind`` as reason, at once."""
        with self.transaction():
            self._mark(video_id, stage, config_hash, "error", kind, None)
            self.con.execute("INSERT OR REPLACE INTO errors (video_id, stage, kind, message, run_id, occurred_at, "
                             "config_hash) VALUES (?, ?, ?, ?, ?, ?, ?)",
                             [video_id, stage, kind, message[:2000], run_id, _now(), config_hash])
            self.con.execute("UPDATE videos SET status = 'error', reason = ?, updated_at = ? WHERE video_id = ?",
                             [kind, _now(), video_id])

    def last_error(self, video_id: str, kind: str | None = None, stage: str | None = None) -> dict | None:
        """The video's latest ``errors`` row (of ``kind``, of ``stage`` when given): stage, kind, message,
        run_id; None if none."""
        sql = "SELECT stage, kind, message, run_id FROM errors WHERE video_id = ?"
        args: list = [video_id]
        for col, value in (("kind", kind), ("stage", stage)):
            if value is not None:
                sql += f" AND {col} = ?"
                args.append(value)
        rows = self.rows(sql + " ORDER BY occurred_at DESC LIMIT 1", args)
        return rows[0] if rows else None

    @_writes
    def update_samples(self, run_id: str, samples: list[dict]) -> None:
        """Rewrite the run's stored samples in place (same count and order; e.g. review marks added)."""
        with self.transaction():
            for i, s in enumerate(samples):
                self.con.execute("UPDATE samples SET sample = ? WHERE run_id = ? AND idx = ?",
                                 [json.dumps(s, ensure_ascii=False), run_id, i])

    def run_warnings(self, run_id: str) -> list[dict]:
        """The warnings a build's candidates carry (a truncated file, ...): video_id, stage, kind, message, and
        the candidate's status, ordered by video, stage and kind."""
        return self.rows("SELECT w.video_id, w.stage, w.kind, w.message, c.status FROM warnings w JOIN candidates c "
                         "USING (video_id) WHERE c.run_id = ? ORDER BY w.video_id, w.stage, w.kind", [run_id])

    @_writes
    def save_probe(self, video_id: str, config_hash: str, info: dict, seconds: float) -> None:
        """A probe (tools.media.MediaInfo as a dict) onto the video's row."""
        with self.transaction():
            self.con.execute("UPDATE videos SET duration = ?, width = ?, height = ?, fps = ?, has_audio = ?, "
                             "start_time = ?, duration_source = ?, rotation = ?, sample_aspect_ratio = ?, "
                             "display_width = ?, display_height = ?, audio_streams = ?, header_duration = ?, "
                             "updated_at = ? WHERE video_id = ?",
                             [info["duration"], info["width"], info["height"], info["fps"], info["has_audio"],
                              info.get("start_time"), info.get("duration_source"), info.get("rotation"),
                              info.get("sample_aspect_ratio"), info.get("display_width"), info.get("display_height"),
                              json.dumps(list(info.get("audio_streams") or [])),
                              info.get("header_duration") or info["duration"], _now(), video_id])
            self.con.execute("DELETE FROM warnings WHERE video_id = ? AND stage = 'probe'", [video_id])
            if info.get("truncated"):
                self._warn(video_id, "probe", config_hash, "truncated",
                           f"the file ends early: {info['duration']:.1f}s decode of the {info['header_duration']:.1f}s "
                           "its header claims")
            self._mark(video_id, "probe", config_hash, "done", None, seconds)

    def _warn(self, video_id: str, stage: str, config_hash: str, kind: str, message: str) -> None:
        self.con.execute("INSERT OR REPLACE INTO warnings (video_id, stage, kind, message, config_hash, occurred_at) "
                         "VALUES (?, ?, ?, ?, ?, ?)", [video_id, stage, kind, message[:2000], config_hash, _now()])

    def warnings(self, video_id: str | None = None, run_id: str | None = None) -> list[dict]:
        """Warnings (faults a video survives: ``kind`` truncated, ...) of one video, or of a run's videos
        (in the run's order), or all; rows: video_id, stage, kind, message, config_hash, occurred_at."""
        if run_id is not None:
            return self.rows("SELECT w.* FROM warnings w JOIN run_videos r USING (video_id) WHERE r.run_id = ? "
                             + ("AND w.video_id = ? " if video_id else "") + "ORDER BY r.position, w.stage, w.kind",
                             [run_id, video_id] if video_id else [run_id])
        if video_id is not None:
            return self.rows("SELECT * FROM warnings WHERE video_id = ? ORDER BY stage, kind", [video_id])
        return self.rows("SELECT * FROM warnings ORDER BY video_id, stage, kind")

    @_writes
    def save_transcript(self, video_id: str, config_hash: str, tr: dict, n_tokens: int) -> None:
        """A transcript (tools.asr.Transcript as a dict): its kept segments, the dropped ones with
        their reason, the language windows, the audio track and the normalization used."""
        with self.transaction():
            self.con.execute("DELETE FROM segments WHERE video_id = ? AND config_hash = ?", [video_id, config_hash])
            self.con.execute("INSERT OR REPLACE INTO transcripts (video_id, config_hash, language, "
                             "language_probability, duration, speech_duration, model, options, text, n_tokens, "
                             "seconds, stopped, audio_track, normalization, language_windows) "
                             "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                             [video_id, config_hash, tr["language"], tr["language_probability"], tr["duration"],
                              tr["speech_duration"], tr["model"], json.dumps(tr["options"], sort_keys=True),
                              " ".join(s["text"] for s in tr["segments"]), n_tokens, tr["seconds"], tr["stopped"],
                              _json_or_null(tr.get("track")), _json_or_null(tr.get("normalization")),
                              json.dumps(tr.get("windows") or [])])
            rows = sorted([*tr["segments"], *tr.get("dropped", [])], key=lambda s: (s["start"], s["end"]))
            for i, s in enumerate(rows):
                words = [[w["start"], w["end"], w["word"], w["probability"]] for w in s["words"]]
                self.con.execute("INSERT INTO segments (video_id, config_hash, idx, start_s, end_s, text, "
                                 "avg_logprob, no_speech_prob, words, language, drop_reason) "
                                 "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                                 [video_id, config_hash, i, s["start"], s["end"], s["text"], s["avg_logprob"],
                                  s["no_speech_prob"], json.dumps(words), s.get("language"), s.get("drop_reason")])
            self._mark(video_id, "asr", config_hash, "done", None, tr["seconds"])

    def transcript(self, video_id: str, config_hash: str | None = None) -> dict | None:
        """The stored transcript made with the asr ``config_hash`` (None: the latest): ``segments`` (kept,
        in time order), ``dropped`` (with their ``drop_reason``), ``windows`` (languages), ``audio_track``
        and ``normalization``."""
        h = self._hash(video_id, "asr", config_hash)
        rows = self.rows("SELECT * FROM transcripts WHERE video_id = ? AND config_hash = ?", [video_id, h])
        if not rows:
            return None
        tr = rows[0]
        every = self.rows("SELECT * FROM segments WHERE video_id = ? AND config_hash = ? ORDER BY idx", [video_id, h])
        for s in every:
            s["words"] = json.loads(s["words"] or "[]")
        tr["segments"] = [s for s in every if s["drop_reason"] is None]
        tr["dropped"] = [s for s in every if s["drop_reason"] is not None]
        tr["windows"] = json.loads(tr.pop("language_windows") or "[]")
        for key in ("audio_track", "normalization"):
            tr[key] = json.loads(tr[key]) if tr[key] else None
        return tr

    @_writes
    def save_keyframes(self, video_id: str, config_hash: str, frames: list[dict], seconds: float) -> None:
        """The keyframes (tools.keyframes.Keyframe dicts) of one config; each file's ``path`` is recorded
        relative to the store's folder (store.paths.record_path)."""
        with self.transaction():
            self.con.execute("DELETE FROM keyframes WHERE video_id = ? AND config_hash = ?", [video_id, config_hash])
            for f in frames:
                self.con.execute("INSERT INTO keyframes (video_id, config_hash, idx, time_s, end_s, path, ssim, "
                                 "min_tile_ssim, sharpness) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                                 [video_id, config_hash, f["index"], f["time"], f.get("end") or None,
                                  record_path(self.path, f["path"]),
                                  f["ssim"], f["min_tile_ssim"], f["sharpness"]])
            self._mark(video_id, "keyframes", config_hash, "done", None, seconds)

    def keyframes(self, video_id: str, config_hash: str | None = None, ocr_hash: str | None = None) -> list[dict]:
        """The keyframes made with the keyframes ``config_hash`` (None: the latest), each with the OCR made
        with ``ocr_hash`` (None: the latest) as ``ocr_text``, ``ocr_raw``, ``ocr_lines``, ``ocr_confidence``,
        ``ocr_engine``, ``ocr_kept``, ``ocr_drop_reason`` (None where not read). ``path``: the frame file,
        absolute (store.paths.resolve_path), whatever the working directory."""
        h = self._hash(video_id, "keyframes", config_hash)
        o = self._hash(video_id, "ocr", ocr_hash)
        rows = self.rows("SELECT k.*, o.text AS ocr_text, o.raw AS ocr_raw, o.lines AS ocr_lines, "
                         "o.confidence AS ocr_confidence, o.engine AS ocr_engine, o.kept AS ocr_kept, "
                         "o.drop_reason AS ocr_drop_reason FROM keyframes k LEFT JOIN ocr o "
                         "ON o.video_id = k.video_id AND o.idx = k.idx AND o.config_hash = ? "
                         "WHERE k.video_id = ? AND k.config_hash = ? ORDER BY k.idx", [o, video_id, h])
        for r in rows:
            r["path"] = str(resolve_path(self.path, r["path"]))
        return rows

    @_writes
    def save_ocr(self, video_id: str, config_hash: str, results: list[dict], seconds: float,
                 llm_calls: list[dict] | None = None) -> None:
        """Each keyframe's OCR (``text``: the kept lines; ``raw``: all lines read; ``lines``:
        [[line, drop reason or None]]), and the model calls that read them (VLM backend), at once."""
        with self.transaction():
            self.con.execute("DELETE FROM ocr WHERE video_id = ? AND config_hash = ?", [video_id, config_hash])
            for r in results:
                self.con.execute("INSERT INTO ocr (video_id, config_hash, idx, text, raw, lines, confidence, engine, "
                                 "kept, drop_reason) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                                 [video_id, config_hash, r["index"], r["text"], r.get("raw"),
                                  _jsonable(r.get("lines")), r["confidence"], r["engine"], r["kept"],
                                  r["drop_reason"]])
            for call in llm_calls or []:
                self.record_llm_call(call)
            self._mark(video_id, "ocr", config_hash, "done", None, seconds)

    @_writes
    def save_clips(self, video_id: str, config_hash: str, clips: list[dict]) -> None:
        """The clips of one clips config (dicts: index, start, end (s), text, n_tokens, keyframes (indices),
        decision, reason, polished, signals, capped, rewrite), replacing that config's; the stage marked done."""
        with self.transaction():
            self.con.execute("DELETE FROM clips WHERE video_id = ? AND config_hash = ?", [video_id, config_hash])
            for c in clips:
                signals = c.get("signals")
                self.con.execute("INSERT INTO clips (video_id, config_hash, idx, start_s, end_s, text, n_tokens, "
                                 "keyframes, decision, reason, polished, signals, capped, rewrite) "
                                 "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                                 [video_id, config_hash, c["idx"], c["start_s"], c["end_s"], c["text"], c["n_tokens"],
                                  json.dumps(c["keyframes"]), c["decision"], c.get("reason"), c.get("polished"),
                                  json.dumps(signals) if signals is not None else None,
                                  json.dumps(c.get("capped") or []),
                                  json.dumps(c["rewrite"]) if c.get("rewrite") is not None else None])
            self._mark(video_id, "clips", config_hash, "done", None, None)

    def clips(self, video_id: str, config_hash: str | None = None) -> list[dict]:
        """The clips (and their decisions) made with the clips ``config_hash`` (None: the latest)."""
        rows = self.rows("SELECT * FROM clips WHERE video_id = ? AND config_hash = ? ORDER BY idx",
                         [video_id, self._hash(video_id, "clips", config_hash)])
        for r in rows:
            r["keyframes"] = json.loads(r["keyframes"])
            r["signals"] = json.loads(r["signals"]) if r.get("signals") else None
            r["rewrite"] = json.loads(r["rewrite"]) if r.get("rewrite") else None
        return rows

    # -- samples ------------------------------------------------------------
    @_writes
    def save_samples(self, run_id: str, config_hash: str, samples: list[dict]) -> None:
        """The run's packed samples (dicts with image_num, text_num, token_num), replacing the run's; the
        run's ``pack`` stage marked done."""
        with self.transaction():
            self.con.execute("DELETE FROM samples WHERE run_id = ?", [run_id])
            for i, s in enumerate(samples):
                self.con.execute("INSERT INTO samples VALUES (?, ?, ?, ?, ?, ?)",
                                 [run_id, i, json.dumps(s, ensure_ascii=False), s["image_num"], s["text_num"],
                                  s["token_num"]])
            self._mark(f"run:{run_id}", "pack", config_hash, "done", None, None)

    def samples(self, run_id: str) -> list[dict]:
        """The run's samples (dicts, as ``save_samples`` got them), in order."""
        return [json.loads(r["sample"]) for r in self.rows(
            "SELECT sample FROM samples WHERE run_id = ? ORDER BY idx", [run_id])]

    # -- the agent (migration 002) ------------------------------------------------
    def _insert(self, table: str, row: dict, replace: bool = False) -> None:
        """Insert one row (dicts and lists as JSON text); ``replace``: INSERT OR REPLACE. In a writer
        batch the row waits for ``_flush`` (before the batch's next statement or its commit)."""
        cols = tuple(row)
        verb = "INSERT OR REPLACE" if replace else "INSERT"
        values = [_jsonable(row[c]) for c in cols]
        if getattr(self, "_buffer", None) is not None and self._owner == threading.get_ident():
            self._buffer.add(table, cols, values, verb=verb)
            return
        self.con.execute(f'{verb} INTO {table} ({", ".join(cols)}) VALUES ({", ".join("?" * len(cols))})', values)

    def _update(self, table: str, keys: dict, fields: dict) -> None:
        """Set ``fields`` (column -> value: dicts and lists as JSON text) of the row of ``table`` whose key
        columns have the values ``keys``. In a writer batch it waits for ``_flush``, with the batch's
        other updates of the same table and columns (one statement)."""
        cols, values = tuple(fields), [_jsonable(v) for v in fields.values()]
        if getattr(self, "_buffer", None) is not None and self._owner == threading.get_ident():
            self._buffer.add(table, cols, values, keys=tuple(keys), key=tuple(keys.values()))
            return
        self.con.execute(f"UPDATE {table} SET {', '.join(f'{c} = ?' for c in cols)} WHERE "
                         + " AND ".join(f"{k} = ?" for k in keys), [*values, *keys.values()])

    def runs(self) -> list[dict]:
        """Every run (run_id, command, status, inputs, created_at, updated_at, attempts, summary), oldest first."""
        return self.rows("SELECT run_id, command, status, inputs, created_at, updated_at, attempts, summary "
                         "FROM runs ORDER BY created_at")

    def run(self, run_id: str) -> dict | None:
        """The run's row (every ``runs`` column); None when unknown."""
        found = self.rows("SELECT * FROM runs WHERE run_id = ?", [run_id])
        return found[0] if found else None

    @_writes
    def save_taxonomy(self, run_id: str, nodes: list[dict]) -> None:
        """The run's taxonomy nodes (dicts: node_id, parent_id, level, name, position, difficulty), replacing
        the run's."""
        with self.transaction():
            self.con.execute("DELETE FROM taxonomy WHERE run_id = ?", [run_id])
            for n in nodes:
                self._insert("taxonomy", {"run_id": run_id, **n})
        self.taxonomy_changes += 1

    def taxonomy(self, run_id: str) -> list[dict]:
        """The run's taxonomy nodes (node_id, parent_id, level, name, position, difficulty) by position."""
        return self.rows("SELECT node_id, parent_id, level, name, position, difficulty FROM taxonomy "
                         "WHERE run_id = ? ORDER BY position", [run_id])

    @_writes
    def add_hit(self, run_id: str, video_id: str, point_id: str, source: str, query: str, round_: int,
                relevance: float | None, fit: float) -> bool:
        """Record that ``point_id``'s search found ``video_id``; False if that pair was known already."""
        if self.scalar("SELECT count(*) FROM candidate_hits WHERE run_id = ? AND video_id = ? AND point_id = ?",
                       [run_id, video_id, point_id]):
            return False
        self._insert("candidate_hits", {"run_id": run_id, "video_id": video_id, "point_id": point_id,
                                        "source": source, "query": query, "round": round_, "relevance": relevance,
                                        "fit": fit, "verdict": None, "score": None, "created_at": _now()})
        return True

    @_queues
    def set_hit_verdict(self, run_id: str, video_id: str, point_id: str, verdict: str, score: float | None) -> None:
        """Set the verdict (accept, reject, ...) and score of one (run, video, knowledge point) search hit."""
        self._update("candidate_hits", {"run_id": run_id, "video_id": video_id, "point_id": point_id},
                     {"verdict": verdict, "score": score})

    def hits(self, run_id: str) -> list[dict]:
        """The run's search hits (``candidate_hits`` rows), by knowledge point and video."""
        return self.rows("SELECT * FROM candidate_hits WHERE run_id = ? ORDER BY point_id, video_id", [run_id])

    @_queues
    def record_query(self, run_id: str, point_id: str, round_: int, query: str, source: str, results: int | None,
                     units: int, cached: bool, error: str | None = None) -> None:
        """Log one search query of the run (``units``: quota units it cost; ``cached``: served from the
        search cache; ``error``: why it failed), replacing the same (run, point, round, query, source)."""
        self._insert("queries", {"run_id": run_id, "point_id": point_id, "round": round_, "query": query,
                                 "source": source, "results": results, "units": units, "cached": cached,
                                 "error": error, "created_at": _now()}, replace=True)

    def queries(self, run_id: str, point_id: str | None = None) -> list[dict]:
        """The run's logged search queries (of one knowledge point when given), oldest first."""
        return self._run_rows("queries", run_id, "created_at", point_id=point_id)

    def search_units(self, run_id: str | None = None, since: dt.datetime | None = None) -> int:
        """Search quota units spent: of one run, and/or since a UTC time (naive datetime); 0 when none."""
        sql, params = "SELECT coalesce(sum(units), 0) FROM queries WHERE true", []
        if run_id:
            sql, params = sql + " AND run_id = ?", params + [run_id]
        if since:
            sql, params = sql + " AND created_at >= ?", params + [since]
        return int(self.scalar(sql, params))

    def search_cache_get(self, key: str) -> dict | None:
        """The cached search result under ``key`` (a dict); None when not cached."""
        value = self.scalar("SELECT value FROM search_cache WHERE cache_key = ?", [key])
        return json.loads(value) if value else None

    @_queues
    def search_cache_put(self, key: str, value: dict, units: int) -> None:
        """Cache a search result (a JSON-able dict) under ``key``; ``units``: what it cost."""
        self._insert("search_cache", {"cache_key": key, "value": value, "units": units, "created_at": _now()},
                     replace=True)

    @_writes
    def add_candidate(self, run_id: str, video_id: str, point_id: str, source: str, url: str, query: str,
                      round_: int, metadata: dict) -> bool:
        """Record a found video under ``point_id``; False when the run already has it (dedup by video id).
        Which point a video ends under is agents/assign.py's choice (``update_candidate(point_id=...)``)."""
        if self.scalar("SELECT count(*) FROM candidates WHERE run_id = ? AND video_id = ?", [run_id, video_id]):
            return False
        self._insert("candidates", {"run_id": run_id, "video_id": video_id, "point_id": point_id, "source": source,
                                    "url": url, "query": query, "round": round_, "metadata": metadata,
                                    "status": "found", "reason": None, "path": None, "updated_at": _now()})
        return True

    @_queues
    def update_candidate(self, run_id: str, video_id: str, **fields: Any) -> None:
        """Set fields of a candidate; a ``path`` (its download) is recorded relative to the store's folder
        when under it (store.paths.record_path)."""
        if fields.get("path"):
            fields["path"] = record_path(self.path, fields["path"])
        self._update("candidates", {"run_id": run_id, "video_id": video_id}, {**fields, "updated_at": _now()})

    def candidate_status(self, run_id: str, video_id: str) -> str | None:
        """The status of one candidate of the run (None: no such candidate)."""
        return self.scalar("SELECT status FROM candidates WHERE run_id = ? AND video_id = ?", [run_id, video_id])

    def candidates(self, run_id: str, status: str | list[str] | None = None) -> list[dict]:
        """The run's candidates (with one status or any of a list), by round, point and video; ``metadata``
        as a dict, ``path`` absolute (store.paths.resolve_path)."""
        sql, params = "SELECT * FROM candidates WHERE run_id = ?", [run_id]
        if status:
            statuses = [status] if isinstance(status, str) else status
            sql += f" AND status IN ({', '.join('?' * len(statuses))})"
            params += statuses
        rows = self.rows(sql + " ORDER BY round, point_id, video_id", params)
        for r in rows:
            r["metadata"] = json.loads(r["metadata"])
            if r["path"]:
                r["path"] = str(resolve_path(self.path, r["path"]))
        return rows

    @_queues
    def save_judgment(self, run_id: str, video_id: str, kind: str, verdict: str, score: float | None,
                      reasons: list[str], detail: dict | None = None, call_id: str | None = None) -> None:
        """Record a judge's verdict on a video (``kind``: metadata, transcript, ...; ``reasons``: short lines;
        ``detail``: scores; ``call_id``: the llm_calls row), replacing the same (run, video, kind)."""
        self._insert("judgments", {"run_id": run_id, "video_id": video_id, "kind": kind, "verdict": verdict,
                                   "score": score, "reasons": reasons, "detail": detail, "call_id": call_id,
                                   "created_at": _now()}, replace=True)

    def judgments(self, run_id: str, video_id: str | None = None) -> list[dict]:
        """The run's judgments (of one video when given), oldest first; ``reasons`` a list, ``detail`` a
        dict or None."""
        sql = "SELECT * FROM judgments WHERE run_id = ?" + (" AND video_id = ?" if video_id else "")
        rows = self.rows(sql + " ORDER BY created_at, kind", [run_id] + ([video_id] if video_id else []))
        for r in rows:
            r["reasons"] = json.loads(r["reasons"])
            r["detail"] = json.loads(r["detail"]) if r["detail"] else None
        return rows

    def llm_cache_get(self, key: str) -> dict | None:
        """The cached answer under ``key``: the ``llm_cache`` row with ``response`` decoded (a dict or the
        text); None when not cached. Waits for no write: an answer still queued is served from memory,
        a key the file never held is known without a query (``_CacheKeys``), and a key it may hold is
        read from what is committed (a queued answer lands in the file before it leaves memory)."""
        keys = getattr(self, "_keys", None)
        if keys is not None:
            held = keys.held(key)
            if held is not None:
                return held
            if not keys.maybe(key, lambda sql: self._rows(sql, wait=False)):
                return None
        found = self._rows("SELECT * FROM llm_cache WHERE cache_key = ?", [key], wait=False)
        if not found:
            return None
        return {**found[0], "response": _response(found[0]["response"])}

    def llm_cache_put(self, key: str, model: str, response: dict, input_tokens: int, output_tokens: int) -> None:
        """Store a validated answer under its cache key (replacing any); tokens are what it cost. Queued:
        ``llm_cache_get`` serves it from now on."""
        row = {"cache_key": key, "model": model, "response": response, "input_tokens": input_tokens,
               "output_tokens": output_tokens}
        self._enqueue(Store._llm_cache_put, (row,), {}, self._hold(row))

    def record_llm_call(self, row: dict, cache: bool = False) -> None:
        """Log one model call (an ``llm_calls`` row: the columns of migration 002 and later, without
        ``created_at``). ``cache``: also store its answer in the response cache (``cache_key``, ``model``,
        ``response``, ``input_tokens``, ``output_tokens`` of the row), in the same commit. Queued: it
        returns at once, and ``llm_cache_get`` serves the answer from then on."""
        on_done = None
        if cache:
            on_done = self._hold({k: row[k] for k in ("cache_key", "model", "response", "input_tokens",
                                                      "output_tokens")})
        self._enqueue(Store._record_llm_call, (row, cache), {}, on_done)

    def _hold(self, row: dict):
        """Serve a queued answer from memory until it lands; the callback that lets it go then."""
        keys = getattr(self, "_keys", None)
        if keys is None or self._owner == threading.get_ident():
            return None  # no index, or it runs at once (nested)
        held = {**row, "response": _response(_jsonable(row["response"])), "created_at": _now()}
        keys.hold(row["cache_key"], held)
        return lambda error: keys.release(row["cache_key"], held)

    def _llm_cache_put(self, row: dict) -> None:
        self._insert("llm_cache", {**row, "created_at": _now()}, replace=True)
        keys = getattr(self, "_keys", None)
        if keys is not None:
            keys.add(row["cache_key"])

    def _record_llm_call(self, row: dict, cache: bool) -> None:
        if cache:
            self._llm_cache_put({k: row[k] for k in ("cache_key", "model", "response", "input_tokens",
                                                     "output_tokens")})
        self._insert("llm_calls", {**row, "created_at": _now()})

    @_writes
    def record_llm_call_once(self, row: dict) -> str:
        """Log a cache hit once per run: the ``call_id`` of the run's first call with the row's
        ``cache_key`` when there is one (nothing written), else the row is logged and its id returned."""
        found = self.llm_call_for_key(row["run_id"], row["cache_key"])
        if found is not None:
            return found
        self._insert("llm_calls", {**row, "created_at": _now()})
        return row["call_id"]

    def _run_rows(self, table: str, run_id: str, order: str, **equal: str | None) -> list[dict]:
        """A run's rows of ``table``, narrowed by the given column values (None: any)."""
        wanted = {k: v for k, v in equal.items() if v}
        where = "".join(f" AND {k} = ?" for k in wanted)
        return self.rows(f"SELECT * FROM {table} WHERE run_id = ?{where} ORDER BY {order}", [run_id, *wanted.values()])

    def llm_call_for_key(self, run_id: str, cache_key: str) -> str | None:
        """The first logged call of this run with this cache key (a rerun logs no second row for it)."""
        return self.scalar("SELECT call_id FROM llm_calls WHERE run_id = ? AND cache_key = ? ORDER BY created_at "
                           "LIMIT 1", [run_id, cache_key])

    def llm_calls(self, run_id: str, node: str | None = None, video_id: str | None = None) -> list[dict]:
        """The run's logged model calls (of one graph node and/or video when given), oldest first."""
        return self._run_rows("llm_calls", run_id, "created_at", node=node, video_id=video_id)

    def llm_totals(self, run_id: str) -> dict:
        """The run's LLM totals: calls, paid_calls, cached_calls, failed_calls, paid_tokens, tokens (ints)
        and cost_usd (float)."""
        row = self.rows("SELECT count(*) AS calls, count(*) FILTER (WHERE NOT cached) AS paid_calls, "
                        "count(*) FILTER (WHERE cached) AS cached_calls, "
                        "count(*) FILTER (WHERE NOT cached AND error IS NOT NULL) AS failed_calls, "
                        "coalesce(sum(input_tokens + output_tokens) FILTER (WHERE NOT cached), 0) AS paid_tokens, "
                        "coalesce(sum(input_tokens + output_tokens), 0) AS tokens, "
                        "coalesce(sum(cost_usd), 0) AS cost_usd FROM llm_calls WHERE run_id = ?", [run_id])[0]
        return {k: (float(v) if k == "cost_usd" else int(v)) for k, v in row.items()}

    @_writes
    def event_start(self, run_id: str, node: str, video_id: str | None, summary: dict | None) -> int:
        """Open a trace event of the run (a graph node or stage working on a video; ``summary``: its input);
        returns its event_id."""
        return self.con.execute("INSERT INTO events (run_id, node, video_id, started_at, input) "
                                "VALUES (?, ?, ?, ?, ?) RETURNING event_id",
                                [run_id, node, video_id, _now(), _jsonable(summary)]).fetchone()[0]

    @_queues
    def event_end(self, event_id: int, output: dict | None = None, decision: str | None = None,
                  reasons: list[str] | None = None, error: str | None = None) -> None:
        """Close a trace event: its output, decision, reasons, error, and its duration in seconds."""
        now = _now()
        self.con.execute("UPDATE events SET ended_at = ?, seconds = date_diff('millisecond', started_at, ?) / 1000.0,"
                         " output = ?, decision = ?, reasons = ?, error = ? WHERE event_id = ?",
                         [now, now, _jsonable(output), decision, _jsonable(reasons), error, event_id])

    @_queues
    def event_decided(self, run_id: str, node: str, video_id: str | None, decision: str, reasons: list[str],
                      output: dict | None = None) -> None:
        """One decision of the run's trace in one write (an event opened and closed at once, 0 seconds):
        what ``event_start`` then ``event_end(output, decision, reasons)`` record, as one buffered row
        insert rather than an insert and an update, each waiting for its own commit."""
        now = _now()
        self._insert("events", {"run_id": run_id, "node": node, "video_id": video_id, "started_at": now,
                                "ended_at": now, "seconds": 0.0, "input": None, "output": output,
                                "decision": decision, "reasons": reasons, "error": None})

    def event_videos(self, run_id: str, node: str) -> set[str]:
        """The ids of the videos that have a trace event of ``node`` in the run (one query for all)."""
        return {r["video_id"] for r in self.rows("SELECT DISTINCT video_id FROM events WHERE run_id = ? AND node = ? "
                                                 "AND video_id IS NOT NULL", [run_id, node])}

    def events(self, run_id: str, node: str | None = None, video_id: str | None = None) -> list[dict]:
        """The run's trace events (of one node and/or video when given), in the order they started."""
        return self._run_rows("events", run_id, "event_id", node=node, video_id=video_id)


def _response(text: Any) -> Any:
    """A cached answer as stored (``llm_cache.response``) decoded: JSON (a structured answer), else the
    text itself (a text answer is stored as it came); anything but text as it is."""
    if not isinstance(text, str):
        return text
    try:
        return json.loads(text)
    except ValueError:
        return text


def _jsonable(value: Any) -> Any:
    """dicts and lists go to JSON text columns; everything else as is."""
    return json.dumps(value, ensure_ascii=False, default=str) if isinstance(value, dict | list) else value
