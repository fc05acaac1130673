"""Tools: one module per capability (media, asr, keyframes, ocr).

Each tool loads once, has one main verb, and returns plain dataclasses that say
which model and options produced them. Tools never touch DuckDB or LangGraph.
"""
