"""Deterministic stages from video files to interleaved samples (see pipeline.runner)."""
