"""Prompt templates, one file per task (issue 3): none yet."""
