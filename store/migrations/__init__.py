"""The store's schema as numbered SQL files (NNN_name.sql), applied in order by ``store.db.Store.migrate``."""
