"""Opening a store: the DuckDB file itself, or, while another process writes it, reads through that process.

``open_store`` sits above store/db.py (the file) and store/serve.py (reads served by the writer), so
neither imports the other's opener (no import cycle).
"""

from __future__ import annotations

from pathlib import Path

from store.db import Store, StoreError, StoreLocked, open_file
from store.serve import remote_store

__all__ = ["open_store"]


def open_store(path: str | Path, read_only: bool = False) -> Store:
    """The store in the DuckDB file ``path`` (migrated when opened for writing).

    ``read_only``: while another process writes the file (a running `textbook build` or `process`,
    which serve reads: store/serve.py), a ``RemoteStore`` that reads through that process; its writes
    raise StoreError. Raises StoreError (one line): no file (read-only), locked by a process that
    serves no reads, not a DuckDB file."""
    path = Path(path)
    try:
        return open_file(path, read_only)
    except StoreLocked as exc:
        remote = remote_store(path)
        if remote is None:
            raise
        if read_only:
            return remote
        remote.close()
        raise StoreError(f"{path} is being written by a running `textbook {remote.endpoint.command}` "
                         f"(pid {remote.endpoint.pid}); DuckDB allows one writer") from exc
