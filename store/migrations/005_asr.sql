-- Audio and probing on real media (issue 8): how a video is shown, its audio streams, which
-- track and level normalization ASR used, the language of every window, dropped segments.
ALTER TABLE videos ADD COLUMN start_time DOUBLE;            -- the container's start offset (seconds)
ALTER TABLE videos ADD COLUMN duration_source VARCHAR;      -- format | stream | measured | none
ALTER TABLE videos ADD COLUMN rotation INTEGER;             -- clockwise degrees to display (display matrix)
ALTER TABLE videos ADD COLUMN sample_aspect_ratio DOUBLE;   -- pixel width / pixel height
ALTER TABLE videos ADD COLUMN display_width INTEGER;        -- the picture a player shows (width/height: as stored)
ALTER TABLE videos ADD COLUMN display_height INTEGER;
ALTER TABLE videos ADD COLUMN audio_streams VARCHAR;        -- JSON [{index, position, codec, channels, language, ...}]
ALTER TABLE transcripts ADD COLUMN audio_track VARCHAR;     -- JSON {stream: {...}, reason}: the track transcribed
ALTER TABLE transcripts ADD COLUMN normalization VARCHAR;   -- JSON {method, peak_dbfs, noise_floor_dbfs, gain_db, filter}
ALTER TABLE transcripts ADD COLUMN language_windows VARCHAR; -- JSON [{start, end, speech, language, probability, decoded, level}]
ALTER TABLE segments ADD COLUMN language VARCHAR;
ALTER TABLE segments ADD COLUMN drop_reason VARCHAR;        -- NULL: kept; "repetition": a loop, left out of the text
