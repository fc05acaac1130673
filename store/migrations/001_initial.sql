-- Runs, videos and every stage's output. JSON columns hold JSON text.
CREATE TABLE runs (
    run_id VARCHAR PRIMARY KEY,
    command VARCHAR NOT NULL,
    status VARCHAR NOT NULL,            -- running | finished | failed
    inputs VARCHAR NOT NULL,            -- JSON list of input paths
    config VARCHAR NOT NULL,            -- JSON: the full resolved settings of the run
    config_hash VARCHAR NOT NULL,
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 1,
    summary VARCHAR                     -- JSON summary printed at the end
);

CREATE TABLE run_videos (
    run_id VARCHAR NOT NULL,
    video_id VARCHAR NOT NULL,
    position INTEGER NOT NULL,
    PRIMARY KEY (run_id, video_id)
);

CREATE TABLE videos (
    video_id VARCHAR PRIMARY KEY,
    source VARCHAR NOT NULL,            -- path or URL it came from
    sha256 VARCHAR,
    title VARCHAR,
    subject VARCHAR,
    course VARCHAR,
    knowledge_point VARCHAR,
    metadata VARCHAR,                   -- JSON sidecar metadata
    duration DOUBLE,
    width INTEGER,
    height INTEGER,
    fps DOUBLE,
    has_audio BOOLEAN,
    status VARCHAR NOT NULL,            -- pending | kept | rejected | error
    reason VARCHAR,                     -- drop reason or error kind
    updated_at TIMESTAMP NOT NULL
);

-- One row per (video, stage): which config produced the stored output, and how it ended.
CREATE TABLE stage_status (
    video_id VARCHAR NOT NULL,
    stage VARCHAR NOT NULL,
    config_hash VARCHAR NOT NULL,
    status VARCHAR NOT NULL,            -- done | dropped | error
    detail VARCHAR,                     -- drop reason or error kind
    seconds DOUBLE,
    finished_at TIMESTAMP NOT NULL,
    PRIMARY KEY (video_id, stage)
);

CREATE TABLE errors (
    video_id VARCHAR NOT NULL,
    stage VARCHAR NOT NULL,
    kind VARCHAR NOT NULL,
    message VARCHAR NOT NULL,
    run_id VARCHAR,
    occurred_at TIMESTAMP NOT NULL,
    PRIMARY KEY (video_id, stage)
);

CREATE TABLE transcripts (
    video_id VARCHAR PRIMARY KEY,
    language VARCHAR,
    language_probability DOUBLE,
    duration DOUBLE,
    speech_duration DOUBLE,
    model VARCHAR,
    options VARCHAR,                    -- JSON
    text VARCHAR,
    n_tokens INTEGER,
    seconds DOUBLE,
    stopped VARCHAR
);

CREATE TABLE segments (
    video_id VARCHAR NOT NULL,
    idx INTEGER NOT NULL,
    start_s DOUBLE NOT NULL,
    end_s DOUBLE NOT NULL,
    text VARCHAR NOT NULL,
    avg_logprob DOUBLE,
    no_speech_prob DOUBLE,
    words VARCHAR,                      -- JSON [[start, end, word, probability], ...]
    PRIMARY KEY (video_id, idx)
);

CREATE TABLE keyframes (
    video_id VARCHAR NOT NULL,
    idx INTEGER NOT NULL,
    time_s DOUBLE NOT NULL,
    path VARCHAR NOT NULL,
    ssim DOUBLE,
    min_tile_ssim DOUBLE,
    sharpness DOUBLE,
    ocr_text VARCHAR,
    ocr_confidence DOUBLE,
    ocr_engine VARCHAR,
    ocr_kept BOOLEAN,
    ocr_drop_reason VARCHAR,
    PRIMARY KEY (video_id, idx)
);

CREATE TABLE clips (
    video_id VARCHAR NOT NULL,
    idx INTEGER NOT NULL,
    start_s DOUBLE NOT NULL,
    end_s DOUBLE NOT NULL,
    text VARCHAR NOT NULL,              -- the ASR paragraph
    n_tokens INTEGER,
    keyframes VARCHAR,                  -- JSON list of keyframe idx inside the clip
    decision VARCHAR NOT NULL,          -- keep | drop_frames | drop
    reason VARCHAR,
    PRIMARY KEY (video_id, idx)
);

CREATE TABLE samples (
    run_id VARCHAR NOT NULL,
    idx INTEGER NOT NULL,
    sample VARCHAR NOT NULL,            -- JSON, the exported record
    image_num INTEGER NOT NULL,
    text_num INTEGER NOT NULL,
    token_num INTEGER NOT NULL,
    PRIMARY KEY (run_id, idx)
);
