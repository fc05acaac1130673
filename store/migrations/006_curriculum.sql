-- Where each video sits in the curriculum, and what an export may say about where it came from.
ALTER TABLE videos ADD COLUMN subcourse VARCHAR;
ALTER TABLE videos ADD COLUMN difficulty DOUBLE;        -- grade level or rank of its knowledge point; lower is easier
ALTER TABLE videos ADD COLUMN public_source VARCHAR;    -- the video's URL, or its path relative to the input root
                                                        -- (`source` keeps the full path: lineage stays in the store)
