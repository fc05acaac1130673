-- Issue 10: stage outputs keyed by (video, stage, config hash), so runs with other policies coexist,
-- and a run's own view of each video (status, reason, the config hashes it used) in run_videos.
-- Rows from before keep their data under the hash stage_status recorded for them ('' when none).

-- stage_status: one row per (video, stage, config hash); a rerun with another config adds a row
CREATE TABLE stage_status_008 (
    video_id VARCHAR NOT NULL,
    stage VARCHAR NOT NULL,
    config_hash VARCHAR NOT NULL,
    status VARCHAR NOT NULL,            -- done | dropped | error
    detail VARCHAR,                     -- drop reason or error kind
    seconds DOUBLE,
    finished_at TIMESTAMP NOT NULL,
    PRIMARY KEY (video_id, stage, config_hash)
);
INSERT INTO stage_status_008 SELECT video_id, stage, config_hash, status, detail, seconds, finished_at FROM stage_status;

-- transcripts and segments: per ASR config hash
CREATE TABLE transcripts_008 (
    video_id VARCHAR NOT NULL,
    config_hash VARCHAR NOT NULL,       -- the asr stage's hash
    language VARCHAR,
    language_probability DOUBLE,
    duration DOUBLE,
    speech_duration DOUBLE,
    model VARCHAR,
    options VARCHAR,
    text VARCHAR,
    n_tokens INTEGER,
    seconds DOUBLE,
    stopped VARCHAR,
    audio_track VARCHAR,
    normalization VARCHAR,
    language_windows VARCHAR,
    PRIMARY KEY (video_id, config_hash)
);
INSERT INTO transcripts_008
SELECT t.video_id, coalesce(s.config_hash, ''), t.language, t.language_probability, t.duration, t.speech_duration,
       t.model, t.options, t.text, t.n_tokens, t.seconds, t.stopped, t.audio_track, t.normalization, t.language_windows
FROM transcripts t LEFT JOIN stage_status s ON s.video_id = t.video_id AND s.stage = 'asr';

CREATE TABLE segments_008 (
    video_id VARCHAR NOT NULL,
    config_hash VARCHAR NOT NULL,       -- the asr stage's hash
    idx INTEGER NOT NULL,
    start_s DOUBLE NOT NULL,
    end_s DOUBLE NOT NULL,
    text VARCHAR NOT NULL,
    avg_logprob DOUBLE,
    no_speech_prob DOUBLE,
    words VARCHAR,                      -- JSON [[start, end, word, probability], ...]
    language VARCHAR,
    drop_reason VARCHAR,
    PRIMARY KEY (video_id, config_hash, idx)
);
INSERT INTO segments_008
SELECT g.video_id, coalesce(s.config_hash, ''), g.idx, g.start_s, g.end_s, g.text, g.avg_logprob, g.no_speech_prob,
       g.words, g.language, g.drop_reason
FROM segments g LEFT JOIN stage_status s ON s.video_id = g.video_id AND s.stage = 'asr';

-- keyframes: per keyframes config hash; their OCR moves to its own table (it depends on more config)
CREATE TABLE keyframes_008 (
    video_id VARCHAR NOT NULL,
    config_hash VARCHAR NOT NULL,       -- the keyframes stage's hash
    idx INTEGER NOT NULL,
    time_s DOUBLE NOT NULL,             -- seconds from the video's start
    path VARCHAR NOT NULL,              -- the frame file (media/frames/VID/HASH/...)
    ssim DOUBLE,
    min_tile_ssim DOUBLE,
    sharpness DOUBLE,
    PRIMARY KEY (video_id, config_hash, idx)
);
INSERT INTO keyframes_008
SELECT k.video_id, coalesce(s.config_hash, ''), k.idx, k.time_s, k.path, k.ssim, k.min_tile_ssim, k.sharpness
FROM keyframes k LEFT JOIN stage_status s ON s.video_id = k.video_id AND s.stage = 'keyframes';

-- OCR of each keyframe, per OCR config hash (OCR options, the line filter, the per-clip cap and the
-- keyframes and ASR hashes it read)
CREATE TABLE ocr (
    video_id VARCHAR NOT NULL,
    config_hash VARCHAR NOT NULL,       -- the ocr stage's hash
    idx INTEGER NOT NULL,               -- the keyframe's idx
    text VARCHAR,                       -- the kept lines
    raw VARCHAR,                        -- every line read
    lines VARCHAR,                      -- JSON [[line, drop reason or null], ...]
    confidence DOUBLE,
    engine VARCHAR,
    kept BOOLEAN,
    drop_reason VARCHAR,                -- ocr_empty | ocr_noise | ocr_repeat | clip_cap
    PRIMARY KEY (video_id, config_hash, idx)
);
INSERT INTO ocr
SELECT k.video_id, coalesce(s.config_hash, ''), k.idx, k.ocr_text, k.ocr_raw, k.ocr_lines, k.ocr_confidence,
       k.ocr_engine, k.ocr_kept, k.ocr_drop_reason
FROM keyframes k LEFT JOIN stage_status s ON s.video_id = k.video_id AND s.stage = 'ocr'
WHERE k.ocr_engine IS NOT NULL OR k.ocr_kept IS NOT NULL OR k.ocr_drop_reason IS NOT NULL;

-- clips and their decisions: per clips config hash (clip policy, the judge's policy, the ASR and OCR hashes)
CREATE TABLE clips_008 (
    video_id VARCHAR NOT NULL,
    config_hash VARCHAR NOT NULL,       -- the clips stage's hash
    idx INTEGER NOT NULL,
    start_s DOUBLE NOT NULL,
    end_s DOUBLE NOT NULL,
    text VARCHAR NOT NULL,              -- the ASR paragraph
    n_tokens INTEGER,
    keyframes VARCHAR,                  -- JSON list of keyframe idx inside the clip
    decision VARCHAR NOT NULL,          -- keep | drop_frames | drop
    reason VARCHAR,
    polished VARCHAR,
    signals VARCHAR,
    capped VARCHAR,
    PRIMARY KEY (video_id, config_hash, idx)
);
INSERT INTO clips_008
SELECT c.video_id, coalesce(s.config_hash, ''), c.idx, c.start_s, c.end_s, c.text, c.n_tokens, c.keyframes,
       c.decision, c.reason, c.polished, c.signals, c.capped
FROM clips c LEFT JOIN stage_status s ON s.video_id = c.video_id AND s.stage = 'clips';

-- a run's view of each of its videos
ALTER TABLE run_videos ADD COLUMN status VARCHAR;          -- pipeline.records.Status value
ALTER TABLE run_videos ADD COLUMN reason VARCHAR;          -- drop reason or error kind
ALTER TABLE run_videos ADD COLUMN asr_hash VARCHAR;        -- the config hashes of the outputs this run used
ALTER TABLE run_videos ADD COLUMN keyframes_hash VARCHAR;
ALTER TABLE run_videos ADD COLUMN ocr_hash VARCHAR;
ALTER TABLE run_videos ADD COLUMN clips_hash VARCHAR;
ALTER TABLE run_videos ADD COLUMN updated_at TIMESTAMP;
UPDATE run_videos SET status = v.status, reason = v.reason FROM videos v WHERE v.video_id = run_videos.video_id;
UPDATE run_videos SET asr_hash = s.config_hash FROM stage_status s
    WHERE s.video_id = run_videos.video_id AND s.stage = 'asr' AND s.status = 'done';
UPDATE run_videos SET keyframes_hash = s.config_hash FROM stage_status s
    WHERE s.video_id = run_videos.video_id AND s.stage = 'keyframes' AND s.status = 'done';
UPDATE run_videos SET ocr_hash = s.config_hash FROM stage_status s
    WHERE s.video_id = run_videos.video_id AND s.stage = 'ocr' AND s.status = 'done';
UPDATE run_videos SET clips_hash = s.config_hash FROM stage_status s
    WHERE s.video_id = run_videos.video_id AND s.stage = 'clips' AND s.status = 'done';

ALTER TABLE errors ADD COLUMN config_hash VARCHAR;

DROP TABLE transcripts;
ALTER TABLE transcripts_008 RENAME TO transcripts;
DROP TABLE segments;
ALTER TABLE segments_008 RENAME TO segments;
DROP TABLE keyframes;
ALTER TABLE keyframes_008 RENAME TO keyframes;
DROP TABLE clips;
ALTER TABLE clips_008 RENAME TO clips;
DROP TABLE stage_status;
ALTER TABLE stage_status_008 RENAME TO stage_status;
