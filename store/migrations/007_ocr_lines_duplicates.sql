-- Real footage (issue 8): OCR kept line by line, content duplicates, the per-clip keyframe cap.
ALTER TABLE keyframes ADD COLUMN ocr_raw VARCHAR;      -- every line read (ocr_text holds the kept lines)
ALTER TABLE keyframes ADD COLUMN ocr_lines VARCHAR;    -- JSON [[line, drop reason or null], ...]
ALTER TABLE videos ADD COLUMN duplicate_of VARCHAR;    -- the kept video with the same file content
ALTER TABLE clips ADD COLUMN capped VARCHAR;           -- JSON keyframe idx left out by the per-clip cap
