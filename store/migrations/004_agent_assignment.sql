-- Issue 9: difficulty of knowledge points, and every (video, knowledge point) pair a search found.

-- points only: 1 = easiest (asked of the planner, validated; points are ordered easy to difficult
-- within each sub-course); NULL for subjects, courses and sub-courses
ALTER TABLE taxonomy ADD COLUMN difficulty INTEGER;

-- A video may be found by several knowledge points' queries; the candidates row holds the point it
-- is assigned to (agents/assign.py), this table every point that found it, how well it fits each,
-- and the metadata verdict it got for each point it was judged for.
CREATE TABLE candidate_hits (
    run_id VARCHAR NOT NULL,
    video_id VARCHAR NOT NULL,
    point_id VARCHAR NOT NULL,
    source VARCHAR NOT NULL,
    query VARCHAR,                      -- the first query of this point that found it
    round INTEGER NOT NULL,
    relevance DOUBLE,                   -- the source's relevance of the query to the video (0..1; null: ranked by the source)
    fit DOUBLE NOT NULL,                -- how well the video fits the point (agents.assign.fit, 0..1)
    verdict VARCHAR,                    -- metadata judge for this point: accept | reject | null (not judged for it)
    score DOUBLE,
    created_at TIMESTAMP NOT NULL,
    PRIMARY KEY (run_id, video_id, point_id)
);
