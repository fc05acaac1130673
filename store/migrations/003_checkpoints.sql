-- LangGraph checkpoints of agent runs (store/checkpoint.py; the saver also creates these when used alone).
CREATE TABLE checkpoints (
    thread_id VARCHAR NOT NULL,
    checkpoint_ns VARCHAR NOT NULL DEFAULT '',
    checkpoint_id VARCHAR NOT NULL,         -- uuid6: sorts oldest to newest
    parent_checkpoint_id VARCHAR,
    type VARCHAR NOT NULL,                  -- serde type tag of checkpoint
    checkpoint BLOB NOT NULL,               -- the checkpoint without channel_values
    metadata VARCHAR NOT NULL,              -- JSON
    created_at TIMESTAMP NOT NULL,
    PRIMARY KEY (thread_id, checkpoint_ns, checkpoint_id)
);
CREATE TABLE checkpoint_blobs (
    thread_id VARCHAR NOT NULL,
    checkpoint_ns VARCHAR NOT NULL DEFAULT '',
    channel VARCHAR NOT NULL,
    version VARCHAR NOT NULL,
    type VARCHAR NOT NULL,                  -- 'empty' when the channel had no value at that version
    blob BLOB,
    PRIMARY KEY (thread_id, checkpoint_ns, channel, version)
);
CREATE TABLE checkpoint_writes (
    thread_id VARCHAR NOT NULL,
    checkpoint_ns VARCHAR NOT NULL DEFAULT '',
    checkpoint_id VARCHAR NOT NULL,
    task_id VARCHAR NOT NULL,
    idx INTEGER NOT NULL,                   -- negative for special channels (WRITES_IDX_MAP)
    channel VARCHAR NOT NULL,
    type VARCHAR NOT NULL,
    value BLOB,
    task_path VARCHAR NOT NULL DEFAULT '',
    PRIMARY KEY (thread_id, checkpoint_ns, checkpoint_id, task_id, idx)
);
