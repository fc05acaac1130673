"""The rule filters between stages: a video's probe and transcript against ``FilterConfig``.

Each returns a drop reason (``Drop``) or None to keep (PAPER.md section 2's video-level filters).
"""

from __future__ import annotations

from pipeline.config import FilterConfig


class Drop(str):
    """A drop reason (a filter returns one, or None to keep)."""


def probe_rules(info: dict, cfg: FilterConfig) -> Drop | None:
    """``info``: has_video, duration (seconds, what decodes), has_audio, truncated (optional: the file
    ends before its header's duration). no_video | truncated (with ``cfg.truncated`` "drop") |
    too_short | no_audio, or None."""
    if not info["has_video"]:
        return Drop("no_video")
    if info.get("truncated") and cfg.truncated == "drop":
        return Drop("truncated")
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
