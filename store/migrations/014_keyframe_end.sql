-- when a keyframe's picture left the screen (tools.keyframes.Keyframe.end, seconds from the video's start):
-- pipeline.assemble.assign_keyframes gives a keyframe to the clips by the time it is really on screen,
-- [time_s, end_s); NULL for rows from before this migration (then: until the next keyframe)
ALTER TABLE keyframes ADD COLUMN end_s DOUBLE;
