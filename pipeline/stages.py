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
    """The audio track to transcribe (``options.audio.track``: a track in a wanted language, else
    the default-flagged one), its level normalized when low, then ASR with per-window languages.
    The transcript records the track and the normalization."""
    info = media.probe(path)
    choice = media.choose_audio_track(info.audio_streams, options.audio.track, options.audio.languages or languages)
    audio = media.extract_audio(path, stream=choice.stream.index)
    audio, normalization = media.normalize_audio(audio, options.audio)
    tr = _transcriber(options).transcribe(audio, languages=languages, min_speech_seconds=min_speech)
    tr.track, tr.normalization = choice, normalization
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


def language_seconds(tr: dict) -> dict[str, float]:
    """Seconds of speech per detected language over a stored transcript's windows (a transcript
    from before per-window languages counts all its speech in its one language)."""
    out: dict[str, float] = {}
    for w in tr.get("windows") or []:
        out[w["language"]] = out.get(w["language"], 0.0) + w["speech"]
    return out or {tr["language"]: float(tr.get("speech_duration") or 0.0)}


def repetition_share(tr: dict) -> float:
    """The share of transcribed seconds dropped as repetition loops."""
    loops = sum(s["end_s"] - s["start_s"] for s in tr.get("dropped") or [] if s["drop_reason"] == "repetition")
    total = loops + sum(s["end_s"] - s["start_s"] for s in tr["segments"])
    return loops / total if total > 0 else 0.0


def transcript_rules(tr: dict, n_tokens: int, cfg: FilterConfig) -> Drop | None:
    """The video-level rules on a transcript: silent, language:XX (XX: the language of most speech),
    language_uncertain, repetition, too_few_asr_tokens; None to keep."""
    if tr["stopped"] == "silent":
        return Drop("silent")
    seconds = language_seconds(tr)
    main = max(seconds, key=seconds.get) if seconds else tr["language"]
    if tr["stopped"] == "language":
        return Drop(f"language:{main}")
    if cfg.languages:
        wanted = sum(v for k, v in seconds.items() if k in cfg.languages)
        if wanted <= 0 or wanted < cfg.min_language_share * sum(seconds.values()):
            return Drop(f"language:{main}")
    if tr["language_probability"] < cfg.min_language_probability:
        return Drop("language_uncertain")
    if repetition_share(tr) >= cfg.max_repetition_share:
        return Drop("repetition")
    if n_tokens < cfg.min_asr_tokens:
        return Drop("too_few_asr_tokens")
    return None


def probe_task(path: str) -> dict:
    return asdict(media.probe(Path(path)))
