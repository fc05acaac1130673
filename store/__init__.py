"""DuckDB store: numbered migrations and the repository functions the driver uses."""

from store.db import Store, StoreError, open_store

__all__ = ["Store", "StoreError", "open_store"]
