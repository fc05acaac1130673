"""The DuckDB store: one file per project, the record of every run, stage output, judgment and LLM call.

``open_store(path, read_only=False) -> Store`` opens (and migrates) the file; ``Store`` holds one connection
and the repository methods (runs, videos and stage status, transcripts, keyframes, clips, samples, taxonomy,
candidates, judgments, search and LLM caches, LLM calls, trace events); ``StoreError`` is its one-line error.
The schema is the numbered SQL files in ``store/migrations``. ``store.checkpoint.DuckDBSaver`` is the
LangGraph checkpointer of `textbook build` in the same file. DuckDB lets one process open a file at a time.
"""

from store.db import Store, StoreError
from store.open import open_store

__all__ = ["Store", "StoreError", "open_store"]
