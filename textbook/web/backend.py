"""Where the viewer's reads come from, and where a review answer goes.

- ``FileBackend``: `textbook view` on a store file. Each request opens the file read-only and closes
  it, so the viewer never holds DuckDB's lock between requests (a build can start meanwhile); while a
  build or process holds the file, ``open_store`` reads through the reads it serves (store/serve.py),
  so the pages stay live; a review answer then cannot be written here (the page says so: answer it in
  `textbook build --view` or once the build has stopped).
- ``BuildBackend``: `textbook build --view`. Reads go through a fresh cursor of the build's own
  connection (DuckDB reads committed data concurrently in one process); a review answer is handed to
  the build's thread (``agents.review.ReviewInbox``), which alone writes the store.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol

from pipeline.runner import media_dir_for
from textbook.web.queries import Rows


class ReviewRejected(Exception):
    """A review answer that cannot be taken (invalid edit, nothing waiting): one line for the form."""


class Backend(Protocol):
    """Where the viewer reads and where a review answer goes: ``FileBackend`` or ``BuildBackend``."""

    db_path: Path  # the store file: recorded paths resolve against its folder (store.paths.resolve_path)
    media_dir: Path
    live: bool

    def reader(self) -> Iterator[Rows]:
        """A context manager giving a ``Rows`` reader for one request; closed when the request is done."""

    def answer(self, run_id: str, key: str, answer: dict) -> str:
        """Hand a review answer to the run waiting on ``key``; returns the line the form shows.

        Raises ReviewRejected (one line) when it cannot be taken."""


class FileBackend:
    """Reads a store file, opened read-only per request."""

    live = False

    def __init__(self, db: Path):
        self.db = Path(db)
        self.db_path = Path(os.path.abspath(self.db))
        self.media_dir = media_dir_for(self.db)

    @contextmanager
    def reader(self) -> Iterator[Rows]:
        """The store file opened read-only for one request (through the serving writer while one holds it)."""
        from store import open_store

        store = open_store(self.db, read_only=True)
        try:
            yield store
        finally:
            store.close()

    def answer(self, run_id: str, key: str, answer: dict) -> str:
        """Record the answer in the store; the build continues with `textbook build --resume RUN_ID`."""
        from agents import review
        from store import StoreError, open_store

        try:
            store = open_store(self.db)
        except StoreError as exc:
            raise ReviewRejected(str(exc)) from exc
        try:
            payload = review.pending(store, run_id, key)
            if payload is None:
                raise ReviewRejected(f"{run_id} is not waiting for the review {key!r} (answered already?)")
            problems = review.check_answer(payload, answer)
            if problems:
                raise ReviewRejected("; ".join(problems))
            review.record_answer(store, run_id, key, answer, via="viewer")
        finally:
            store.close()
        return f"recorded; continue the build with: textbook build --resume {run_id} --db {self.db}"


class BuildBackend:
    """Reads through cursors of a running build's connection; answers go to the build's inbox."""

    live = True

    def __init__(self, store, inbox):
        self.store = store
        self.inbox = inbox
        self.db_path = Path(os.path.abspath(store.path))
        self.media_dir = media_dir_for(Path(store.path))

    @contextmanager
    def reader(self) -> Iterator[Rows]:
        """A ``Store`` over a fresh cursor of the build's connection for one request (it reads committed data)."""
        from store import Store

        cur = self.store.con.cursor()
        try:
            yield Store(cur, self.store.path)
        finally:
            cur.close()

    def answer(self, run_id: str, key: str, answer: dict) -> str:
        """Check the answer against the review the build waits on and put it in the build's inbox; returns the line the
        form shows. Raises ReviewRejected when nothing waits on ``key`` or the answer is invalid."""
        from agents import review

        payload = self.inbox.waiting(run_id, key)
        if payload is None:
            raise ReviewRejected(f"{run_id} is not waiting for the review {key!r} (answered already?)")
        problems = review.check_answer(payload, answer)
        if problems:
            raise ReviewRejected("; ".join(problems))
        self.inbox.put(run_id, key, answer)
        return "sent to the running build: it continues now"
