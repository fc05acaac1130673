-- Warnings (issue 20): a fault a video survives, recorded with its kind and shown in the run's summary,
-- `textbook stats` and the trace. Kinds: truncated (the file ends before the duration its header claims;
-- the video's duration is what decodes, the header's is kept in videos.header_duration).
ALTER TABLE videos ADD COLUMN header_duration DOUBLE;

CREATE TABLE warnings (
    video_id VARCHAR NOT NULL,
    stage VARCHAR NOT NULL,
    kind VARCHAR NOT NULL,
    message VARCHAR NOT NULL,
    config_hash VARCHAR,
    occurred_at TIMESTAMP NOT NULL,
    PRIMARY KEY (video_id, stage, kind)
);
