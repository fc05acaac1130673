"""A LangGraph checkpointer on DuckDB, written for langgraph 1.x (langgraph-checkpoint 4.x).

``DuckDBSaver`` keeps a thread's checkpoints in the project's DuckDB file, so a
crashed run resumes from its last super-step. The layout follows the in-memory
and Postgres savers of langgraph-checkpoint:

- ``checkpoints``: one row per checkpoint, the checkpoint *without* its channel
  values (serialized with ``self.serde``) and its metadata as JSON text;
- ``checkpoint_blobs``: channel values keyed by (channel, version), written only
  when a channel's version moves, so an unchanged channel is stored once;
- ``checkpoint_writes``: the pending writes of tasks of a super-step (a task that
  finished before a sibling failed is not re-run on resume).

The saver creates its tables if missing and works through its own cursor (a
second connection to the same database), so its transactions never mix with the
store's. One lock serializes its use: LangGraph saves from a thread pool.
"""

from __future__ import annotations

import datetime as dt
import json
import random
import threading
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import duckdb
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    WRITES_IDX_MAP,
    BaseCheckpointSaver,
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
    SerializerProtocol,
    get_checkpoint_id,
    get_serializable_checkpoint_metadata,
    writes_sort_key,
)


def _schema() -> str:
    """The tables of migration 003, created here too when the saver is used on a bare connection."""
    from importlib import resources

    sql = resources.files("store.migrations").joinpath("003_checkpoints.sql").read_text()
    return sql.replace("CREATE TABLE ", "CREATE TABLE IF NOT EXISTS ")


SCHEMA = _schema()

TABLES = ("checkpoint_writes", "checkpoint_blobs", "checkpoints")


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def _config(thread_id: str, checkpoint_ns: str, checkpoint_id: str) -> RunnableConfig:
    return {"configurable": {"thread_id": thread_id, "checkpoint_ns": checkpoint_ns, "checkpoint_id": checkpoint_id}}


class DuckDBSaver(BaseCheckpointSaver[str]):
    """LangGraph checkpointer storing threads in a DuckDB database.

    ``con`` is an open, writable connection (the store's); the saver uses its own
    cursor on it. For standalone use, ``with DuckDBSaver.from_path(path) as saver:``.

    Example::

        graph = builder.compile(checkpointer=DuckDBSaver(store.con))
        graph.invoke(inputs, {"configurable": {"thread_id": run_id}})
        graph.invoke(None, {"configurable": {"thread_id": run_id}})  # resume after a crash
    """

    def __init__(self, con: duckdb.DuckDBPyConnection, *, serde: SerializerProtocol | None = None) -> None:
        super().__init__(serde=serde)
        self._cur = con.cursor()
        self._lock = threading.Lock()
        with self._transaction() as cur:
            cur.execute(SCHEMA)

    @classmethod
    @contextmanager
    def from_path(cls, path: str | Path, *, serde: SerializerProtocol | None = None) -> Iterator[DuckDBSaver]:
        """Open ``path`` (created if missing), yield a saver on it, close it on exit."""
        con = duckdb.connect(str(path))
        saver = cls(con, serde=serde)
        try:
            yield saver
        finally:
            saver.close()
            con.close()

    def close(self) -> None:
        """Close the saver's cursor (the connection it came from stays open)."""
        with self._lock:
            self._cur.close()

    @contextmanager
    def _transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        with self._lock:
            self._cur.begin()
            try:
                yield self._cur
            except BaseException:
                self._cur.rollback()
                raise
            self._cur.commit()

    # -- reading ---------------------------------------------------------------

    def get_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        """The checkpoint ``config`` names by ``checkpoint_id``, else the thread's latest."""
        conf = config["configurable"]
        thread_id = conf["thread_id"]
        checkpoint_ns = conf.get("checkpoint_ns", "")
        checkpoint_id = get_checkpoint_id(config)
        with self._lock:
            if checkpoint_id:
                row = self._cur.execute(
                    "SELECT checkpoint_id FROM checkpoints WHERE thread_id = ? AND checkpoint_ns = ? "
                    "AND checkpoint_id = ?", [thread_id, checkpoint_ns, checkpoint_id]).fetchone()
            else:
                row = self._cur.execute(
                    "SELECT checkpoint_id FROM checkpoints WHERE thread_id = ? AND checkpoint_ns = ? "
                    "ORDER BY checkpoint_id DESC LIMIT 1", [thread_id, checkpoint_ns]).fetchone()
            if row is None:
                return None
            return self._load_tuple(thread_id, checkpoint_ns, row[0])

    def list(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> Iterator[CheckpointTuple]:
        """Checkpoints newest first: of ``config``'s thread (and namespace, checkpoint id
        when given) or of all threads; ``filter`` matches metadata keys by equality;
        ``before`` keeps checkpoints older than its checkpoint id."""
        where, params = [], []
        if config is not None:
            conf = config["configurable"]
            where.append("thread_id = ?")
            params.append(conf["thread_id"])
            if conf.get("checkpoint_ns") is not None:
                where.append("checkpoint_ns = ?")
                params.append(conf["checkpoint_ns"])
            if checkpoint_id := get_checkpoint_id(config):
                where.append("checkpoint_id = ?")
                params.append(checkpoint_id)
        if before is not None and (before_id := get_checkpoint_id(before)):
            where.append("checkpoint_id < ?")
            params.append(before_id)
        sql = "SELECT thread_id, checkpoint_ns, checkpoint_id, metadata FROM checkpoints"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY checkpoint_id DESC, thread_id, checkpoint_ns"
        if limit is not None and not filter:
            sql += f" LIMIT {max(0, int(limit))}"
        # Select ids first (metadata is small), filter in Python with the in-memory
        # saver's exact equality, then load each tuple as it is asked for.
        with self._lock:
            rows = self._cur.execute(sql, params).fetchall()
        if filter:
            rows = [r for r in rows if _matches(json.loads(r[3]), filter)]
        if limit is not None:
            rows = rows[: max(0, limit)]
        for thread_id, checkpoint_ns, checkpoint_id, _ in rows:
            with self._lock:
                found = self._load_tuple(thread_id, checkpoint_ns, checkpoint_id)
            if found is not None:  # deleted meanwhile
                yield found

    def _load_tuple(self, thread_id: str, checkpoint_ns: str, checkpoint_id: str) -> CheckpointTuple | None:
        # caller holds the lock
        row = self._cur.execute(
            "SELECT parent_checkpoint_id, type, checkpoint, metadata FROM checkpoints "
            "WHERE thread_id = ? AND checkpoint_ns = ? AND checkpoint_id = ?",
            [thread_id, checkpoint_ns, checkpoint_id]).fetchone()
        if row is None:
            return None
        parent_id, type_, blob, metadata = row
        checkpoint: Checkpoint = self.serde.loads_typed((type_, blob))
        checkpoint = {**checkpoint, "channel_values": self._load_blobs(
            thread_id, checkpoint_ns, checkpoint["channel_versions"])}
        writes = self._cur.execute(
            "SELECT task_id, idx, channel, type, value, task_path FROM checkpoint_writes "
            "WHERE thread_id = ? AND checkpoint_ns = ? AND checkpoint_id = ?",
            [thread_id, checkpoint_ns, checkpoint_id]).fetchall()
        # the base contract: pending writes in writes_sort_key order (task_path, task_id, idx)
        writes.sort(key=lambda w: writes_sort_key(w[5], w[0], w[1]))
        return CheckpointTuple(
            config=_config(thread_id, checkpoint_ns, checkpoint_id),
            checkpoint=checkpoint,
            metadata=json.loads(metadata),
            parent_config=_config(thread_id, checkpoint_ns, parent_id) if parent_id else None,
            pending_writes=[(task_id, channel, self.serde.loads_typed((t, v)))
                            for task_id, _, channel, t, v, _ in writes],
        )

    def _load_blobs(self, thread_id: str, checkpoint_ns: str, versions: ChannelVersions) -> dict[str, Any]:
        # caller holds the lock
        if not versions:
            return {}
        channels = list(versions)
        rows = self._cur.execute(
            "SELECT b.channel, b.type, b.blob FROM checkpoint_blobs b "
            "JOIN (SELECT unnest(?::VARCHAR[]) AS channel, unnest(?::VARCHAR[]) AS version) v "
            "ON b.channel = v.channel AND b.version = v.version "
            "WHERE b.thread_id = ? AND b.checkpoint_ns = ?",
            [channels, [str(versions[c]) for c in channels], thread_id, checkpoint_ns]).fetchall()
        return {channel: self.serde.loads_typed((t, blob)) for channel, t, blob in rows if t != "empty"}

    # -- writing ---------------------------------------------------------------

    def put(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        """Store ``checkpoint`` (child of ``config``'s checkpoint id) and the values of
        the channels in ``new_versions``; return the config naming the new checkpoint."""
        conf = config["configurable"]
        thread_id = conf["thread_id"]
        checkpoint_ns = conf.get("checkpoint_ns", "")
        stored = checkpoint.copy()
        values: dict[str, Any] = stored.pop("channel_values")  # type: ignore[misc]
        blobs = []
        for channel, version in new_versions.items():
            type_, blob = self.serde.dumps_typed(values[channel]) if channel in values else ("empty", None)
            blobs.append([thread_id, checkpoint_ns, channel, str(version), type_, blob])
        type_, blob = self.serde.dumps_typed(stored)
        meta = json.dumps(get_serializable_checkpoint_metadata(config, metadata), default=str)
        with self._transaction() as cur:
            if blobs:
                cur.executemany("INSERT OR IGNORE INTO checkpoint_blobs VALUES (?, ?, ?, ?, ?, ?)", blobs)
            # the same id is put again when a run exits (durability "exit"): replace it
            cur.execute("INSERT OR REPLACE INTO checkpoints VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                        [thread_id, checkpoint_ns, checkpoint["id"], conf.get("checkpoint_id"), type_, blob, meta,
                         _now()])
        return _config(thread_id, checkpoint_ns, checkpoint["id"])

    def put_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        """Store a task's writes against ``config``'s checkpoint. Regular writes are kept
        once per (task, index); special channels (error, interrupt, resume, scheduled)
        take fixed negative indexes and replace what was there."""
        conf = config["configurable"]
        key = [conf["thread_id"], conf.get("checkpoint_ns", ""), conf["checkpoint_id"]]
        keep, replace = [], []
        for i, (channel, value) in enumerate(writes):
            idx = WRITES_IDX_MAP.get(channel, i)
            type_, blob = self.serde.dumps_typed(value)
            (replace if idx < 0 else keep).append([*key, task_id, idx, channel, type_, blob, task_path])
        with self._transaction() as cur:
            if keep:
                cur.executemany("INSERT OR IGNORE INTO checkpoint_writes VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", keep)
            if replace:
                cur.executemany("INSERT OR REPLACE INTO checkpoint_writes VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                                replace)

    def delete_thread(self, thread_id: str) -> None:
        """Delete every checkpoint, blob and write of ``thread_id`` (all namespaces)."""
        with self._transaction() as cur:
            for table in TABLES:
                cur.execute(f"DELETE FROM {table} WHERE thread_id = ?", [thread_id])

    def get_next_version(self, current: str | None, channel: None = None) -> str:
        """Zero-padded counter plus a random fraction, as the in-memory and Postgres savers:
        two branches forked from one checkpoint never share a (channel, version) blob key."""
        if current is None:
            current_v = 0
        elif isinstance(current, int):
            current_v = current
        else:
            current_v = int(current.split(".")[0])
        return f"{current_v + 1:032}.{random.random():016}"

    # -- async: the same calls (short local-file operations) ----------------------

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        """``get_tuple`` for LangGraph's async API (runs synchronously: the store serialises every statement)."""
        return self.get_tuple(config)

    async def alist(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[CheckpointTuple]:
        """``list`` for LangGraph's async API (runs synchronously)."""
        for item in self.list(config, filter=filter, before=before, limit=limit):
            yield item

    async def aput(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        """``put`` for LangGraph's async API (runs synchronously)."""
        return self.put(config, checkpoint, metadata, new_versions)

    async def aput_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        """``put_writes`` for LangGraph's async API (runs synchronously)."""
        self.put_writes(config, writes, task_id, task_path)

    async def adelete_thread(self, thread_id: str) -> None:
        """``delete_thread`` for LangGraph's async API (runs synchronously)."""
        self.delete_thread(thread_id)


def _matches(metadata: dict[str, Any], filter: dict[str, Any]) -> bool:
    return all(metadata.get(key) == value for key, value in filter.items())
