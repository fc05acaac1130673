-- Issue 21: the faithfulness check of each clip's rewrite (pipeline.faithfulness): JSON with status
-- (accepted | refused), reasons and their kinds (adds, numbers, negation, length, drops), the slide-term
-- corrections kept, the swaps reverted, the model's rewrite and its call id. NULL: no rewrite asked.
ALTER TABLE clips ADD COLUMN rewrite VARCHAR;
