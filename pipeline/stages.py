"""The heavy stages as pure functions over files (run by an executor), and the rule filters.

Each task returns plain dicts (picklable) or raises ToolError with a kind.
Models are loaded once per process and reused across tasks.
"""

from __future__ import annotations

from dataclasses import asdict
from functools import lru_cache
from pathlib import Path

from pipeline.config import FilterConfig
from tools import media
from tools.asr import AsrOptions, Transcriber
from tools.keyframes import KeyframeOptions, detect
from tools.ocr import OcrOptions, make_reader


@lru_cache(maxsize=2)
def _transcriber(options: AsrOptions) -> Transcriber:
    return Transcriber(options)


def asr_task(path: str, options: AsrOptions, languages: tuple[str, ...], min_speech: float) -> dict:
    audio = media.extract_audio(path)
    tr = _transcriber(options).transcribe(audio, languages=languages, min_speech_seconds=min_speech)
    return asdict(tr)


def keyframes_task(path: str, out_dir: str, options: KeyframeOptions) -> dict:
    return asdict(detect(path, out_dir, options))


def ocr_task(paths: list[str], options: OcrOptions) -> list[dict]:
    return [asdict(r) for r in make_reader(options).read_many(paths)]


class Drop(str):
    """A drop reason (a filter returns one, or None to keep)."""


def probe_rules(info: dict, cfg: FilterConfig) -> Drop | None:
    if not info["has_video"]:
        return Drop("no_video")
    if info["duration"] < cfg.min_duration:
        return Drop("too_short")
    if not info["has_audio"]:
        return Drop("no_audio")
    return None


def transcript_rules(tr: dict, n_tokens: int, cfg: FilterConfig) -> Drop | None:
    if tr["stopped"] == "silent":
        return Drop("silent")
    if tr["stopped"] == "language" or (cfg.languages and tr["language"] not in cfg.languages):
        return Drop(f"language:{tr['language']}")
    if tr["language_probability"] < cfg.min_language_probability:
        return Drop("language_uncertain")
    if n_tokens < cfg.min_asr_tokens:
        return Drop("too_few_asr_tokens")
    return None


def probe_task(path: str) -> dict:
    return asdict(media.probe(Path(path)))
