-- The agent: goals, taxonomy, searches, candidates, judgments, LLM calls and node events.

CREATE TABLE taxonomy (
    run_id VARCHAR NOT NULL,
    node_id VARCHAR NOT NULL,           -- s1, s1.c2, s1.c2.u1, s1.c2.u1.p3
    parent_id VARCHAR,
    level VARCHAR NOT NULL,             -- subject | course | subcourse | point
    name VARCHAR NOT NULL,
    position INTEGER NOT NULL,
    PRIMARY KEY (run_id, node_id)
);

CREATE TABLE queries (
    run_id VARCHAR NOT NULL,
    point_id VARCHAR NOT NULL,
    round INTEGER NOT NULL,
    query VARCHAR NOT NULL,
    source VARCHAR NOT NULL,
    results INTEGER,
    units INTEGER NOT NULL DEFAULT 0,   -- API quota units paid (0 when served from the cache)
    cached BOOLEAN NOT NULL DEFAULT FALSE,
    error VARCHAR,
    created_at TIMESTAMP NOT NULL,
    PRIMARY KEY (run_id, point_id, round, query, source)   -- a quota error on one source, then the next
);

-- Whole search results by cache key (method + parameters, never a key): no query is paid twice.
CREATE TABLE search_cache (
    cache_key VARCHAR PRIMARY KEY,
    value VARCHAR NOT NULL,             -- JSON
    units INTEGER NOT NULL,
    created_at TIMESTAMP NOT NULL
);

-- A video found for a run; dedup by video id (the first knowledge point that found it owns it).
CREATE TABLE candidates (
    run_id VARCHAR NOT NULL,
    video_id VARCHAR NOT NULL,
    point_id VARCHAR NOT NULL,
    source VARCHAR NOT NULL,
    url VARCHAR NOT NULL,
    query VARCHAR,
    round INTEGER NOT NULL,
    metadata VARCHAR NOT NULL,          -- JSON: the search result (untrusted text)
    status VARCHAR NOT NULL,            -- found | judged_out | accepted_meta | downloaded | download_failed
                                        -- | rejected | transcript_rejected | accepted
    reason VARCHAR,
    path VARCHAR,                       -- local file once downloaded
    updated_at TIMESTAMP NOT NULL,
    PRIMARY KEY (run_id, video_id)
);

CREATE TABLE judgments (
    run_id VARCHAR NOT NULL,
    video_id VARCHAR NOT NULL,
    kind VARCHAR NOT NULL,              -- metadata | transcript_a | transcript_b | clip:N
    verdict VARCHAR NOT NULL,
    score DOUBLE,
    reasons VARCHAR NOT NULL,           -- JSON list
    detail VARCHAR,                     -- JSON: scores per criterion, signals
    call_id VARCHAR,                    -- the llm_calls row that produced it (null for a rule)
    created_at TIMESTAMP NOT NULL,
    PRIMARY KEY (run_id, video_id, kind)
);

CREATE TABLE llm_calls (
    call_id VARCHAR PRIMARY KEY,
    run_id VARCHAR,
    node VARCHAR NOT NULL,
    role VARCHAR NOT NULL,
    video_id VARCHAR,
    prompt_name VARCHAR NOT NULL,
    prompt_sha256 VARCHAR NOT NULL,
    model VARCHAR NOT NULL,
    cache_key VARCHAR NOT NULL,
    cached BOOLEAN NOT NULL,            -- served from llm_cache: nothing paid
    messages VARCHAR NOT NULL,          -- JSON
    response VARCHAR,                   -- JSON: the validated output, or the raw text
    input_tokens INTEGER NOT NULL,
    output_tokens INTEGER NOT NULL,
    tokens_estimated BOOLEAN NOT NULL,
    cost_usd DOUBLE NOT NULL,
    latency_s DOUBLE NOT NULL,
    attempts INTEGER NOT NULL,
    error VARCHAR,
    created_at TIMESTAMP NOT NULL
);

CREATE TABLE llm_cache (
    cache_key VARCHAR PRIMARY KEY,
    model VARCHAR NOT NULL,
    response VARCHAR NOT NULL,          -- JSON
    input_tokens INTEGER NOT NULL,
    output_tokens INTEGER NOT NULL,
    created_at TIMESTAMP NOT NULL
);

CREATE SEQUENCE events_seq;
CREATE TABLE events (
    event_id BIGINT PRIMARY KEY DEFAULT nextval('events_seq'),
    run_id VARCHAR NOT NULL,
    node VARCHAR NOT NULL,
    video_id VARCHAR,
    started_at TIMESTAMP NOT NULL,
    ended_at TIMESTAMP,
    seconds DOUBLE,
    input VARCHAR,                      -- JSON summary
    output VARCHAR,                     -- JSON summary
    decision VARCHAR,
    reasons VARCHAR,                    -- JSON list
    error VARCHAR
);

ALTER TABLE clips ADD COLUMN polished VARCHAR;   -- the rewritten paragraph (raw stays in text)
ALTER TABLE clips ADD COLUMN signals VARCHAR;    -- JSON: asr_ocr_similarity, keyframes, ocr_chars
