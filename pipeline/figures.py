"""The corpus's figures, each defined once: text tokens of a sample, topics of a subject, video hours.

`textbook stats` (pipeline.stats), the viewer (textbook/web), the ``hf`` export's dataset card and the
samples themselves (pipeline.assemble) all take these numbers from here, so they agree:

- **ASR tokens** of a sample: the tokens (pipeline.tokens, the run's tokenizer) of its ASR texts
  (``texts``), end-of-video markers left out: exactly the sample's ``text_num`` (pipeline.assemble
  counts it so, as the released corpus defines it: "the number of asr text tokens").
- **OCR tokens** of a sample: the tokens of the OCR text each ASR text carries in ``text_ocr_list``
  (``OCR + "\\n" + ASR``, pipeline.assemble.interleave; a foreign layout: tokens of the entry less
  those of the ASR text).
- **Text tokens** of a sample: ASR + OCR tokens, the paper's Table 1 "tokens per sample" (its 0.75B
  text tokens = 258M ASR + 500M OCR over 610K samples: avg 1,297). ``token_num`` is another figure:
  ``text_num + image_num * tokens per image``, the estimated sequence length.
- **Topics** of a subject: the knowledge points it has in the run's corpus: those under which a video
  of the run was kept, or was a duplicate of a kept video (its content is in the corpus). A build's
  point is the taxonomy node its candidate was assigned to; a `process` run's is the video's
  ``knowledge_point``. A video without one adds no topic.
- **Hours**: the kept videos' probed durations, summed (seconds; ``hours`` = seconds / 3600), shown as
  ``Xh Ym`` (``Ym Zs`` under an hour, ``Zs`` under a minute) by ``fmt_hours``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from pipeline.tokens import count_tokens_many


@dataclass(frozen=True)
class PositionTokens:
    """The tokens of one text position of a sample: its ASR text and the OCR text before it."""

    index: int  # the position in the sample
    asr: int
    ocr: int
    meta: dict | None  # the position's metadata (subject, video_id, ...)


@dataclass(frozen=True)
class SampleTokens:
    """A sample's ASR tokens (== ``text_num``), OCR tokens, and their sum (text tokens)."""

    asr: int
    ocr: int
    positions: tuple[PositionTokens, ...] = ()

    @property
    def text(self) -> int:
        """Text tokens of the sample: ASR plus OCR."""
        return self.asr + self.ocr


def _is_eov(meta: object) -> bool:
    return isinstance(meta, dict) and meta.get("type") == "eov"


def _ocr_part(text: str, text_ocr: str | None) -> tuple[str | None, bool]:
    """The OCR text an entry of ``text_ocr_list`` holds before the ASR ``text``: (text, exact). ``exact``
    False: a foreign layout, whose OCR tokens are the entry's less the ASR text's."""
    if not text_ocr or text_ocr == text:
        return None, True
    if text_ocr.endswith("\n" + text):
        return text_ocr[: -len(text) - 1], True
    return text_ocr, False


def samples_tokens(samples: Iterable[dict], tokenizer: str = "whisper") -> list[SampleTokens]:
    """``SampleTokens`` of each sample (one batched tokenizer call for all texts).

    ``samples``: our layout (``texts``, ``text_ocr_list``, ``metadata``) or the released one; a sample
    without ``text_ocr_list`` has no OCR tokens."""
    samples = list(samples)
    texts: list[str] = []
    jobs: list[tuple[int, int, int, int | None, bool]] = []  # sample, position, ASR text, OCR text, exact
    for si, s in enumerate(samples):
        ocr_list = s.get("text_ocr_list") or []
        metas = s.get("metadata") or []
        for i, text in enumerate(s.get("texts") or []):
            meta = metas[i] if i < len(metas) else None
            if not text or _is_eov(meta):
                continue
            ocr, exact = _ocr_part(text, ocr_list[i] if i < len(ocr_list) else None)
            texts.append(text)
            if ocr:
                texts.append(ocr)
            jobs.append((si, i, len(texts) - 1 - bool(ocr), len(texts) - 1 if ocr else None, exact))
    counts = count_tokens_many(texts, tokenizer)
    per: list[list[PositionTokens]] = [[] for _ in samples]
    for si, i, asr_at, ocr_at, exact in jobs:
        asr = counts[asr_at]
        ocr = 0 if ocr_at is None else (counts[ocr_at] if exact else max(0, counts[ocr_at] - asr))
        metas = samples[si].get("metadata") or []
        per[si].append(PositionTokens(i, asr, ocr, metas[i] if i < len(metas) else None))
    return [SampleTokens(sum(p.asr for p in ps), sum(p.ocr for p in ps), tuple(ps)) for ps in per]


def sample_tokens(sample: dict, tokenizer: str = "whisper") -> SampleTokens:
    """``SampleTokens`` of one sample."""
    return samples_tokens([sample], tokenizer)[0]


def topics_by_subject(videos: list[dict], points: dict[str, str] | None = None) -> dict[str, int]:
    """Topics (knowledge points) per subject of a run's videos.

    ``videos``: the run's ``videos`` rows (``video_id``, ``subject``, ``knowledge_point``, the run's
    ``status``, ``duplicate_of``); ``points``: video id -> the taxonomy node a build assigned it (None
    or missing: the video's own ``knowledge_point``). Subject None counts as "unknown"."""
    kept = {v["video_id"] for v in videos if v["status"] == "kept"}
    found: dict[str, set[str]] = {}
    for v in videos:
        if v["video_id"] not in kept and not (v["status"] == "duplicate" and v.get("duplicate_of") in kept):
            continue
        subject = v.get("subject") or "unknown"
        point = (points or {}).get(v["video_id"]) or v.get("knowledge_point")
        found.setdefault(subject, set())
        if point:
            found[subject].add(point)
    return {s: len(p) for s, p in found.items()}


def hours(seconds: float) -> float:
    """Seconds as hours (4 decimals: 0.36 s resolution), the number the JSON figures carry."""
    return round(seconds / 3600, 4)


def fmt_hours(seconds: float | None) -> str:
    """A duration as people read it: ``3h 05m`` from an hour, ``4m 07s`` from a minute, ``37.0s`` below
    (``''`` for None)."""
    if seconds is None:
        return ""
    s = float(seconds)
    if s < 60:
        return f"{s:.1f}s"
    whole = int(round(s))
    if whole < 3600:
        return f"{whole // 60}m {whole % 60:02d}s"
    m = int(round(s / 60))
    return f"{m // 60}h {m % 60:02d}m"


# the columns of Table 7 as `textbook stats`, the viewer and the dataset card show them, with the figure
# each shows (hours as Xh Ym)
TABLE7_COLUMNS = ["subject", "videos", "hours", "topics", "clips", "keyframes", "asr_tokens", "ocr_tokens",
                  "samples"]


def table7_cell(row: dict, column: str) -> str:
    """One cell of Table 7 as shown: hours as ``Xh Ym`` (``fmt_hours``), counts with
    thousands separators."""
    if column == "hours":
        return fmt_hours(row.get("seconds", (row.get("hours") or 0) * 3600))
    value = row.get(column)
    return f"{value:,}" if isinstance(value, int) else str(value)
