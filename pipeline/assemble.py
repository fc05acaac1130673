"""From stored transcripts and keyframes to interleaved samples (pure functions).

sentences -> paragraph clips -> keyframes per clip -> OCR filter -> interleave
-> pack. Nothing here reads files or the store; the runner passes plain dicts.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field

from pipeline.config import ClipConfig, OcrFilterConfig, PackConfig
from pipeline.tokens import count_tokens

_SENTENCE_END = re.compile(r"[.!?。！？]['\")\]]*$")


@dataclass
class Span:
    start: float
    end: float
    text: str


def sentences(segments: list[dict]) -> list[Span]:
    """Split ASR segments into sentences using word timestamps where present."""
    out: list[Span] = []
    for seg in segments:
        words = seg.get("words") or []
        if not words:
            if seg["text"].strip():
                out.append(Span(seg["start_s"], seg["end_s"], seg["text"].strip()))
            continue
        cur: list = []
        for w in words:
            cur.append(w)
            if _SENTENCE_END.search(w[2].strip()):
                out.append(Span(cur[0][0], cur[-1][1], "".join(x[2] for x in cur).strip()))
                cur = []
        if cur:
            out.append(Span(cur[0][0], cur[-1][1], "".join(x[2] for x in cur).strip()))
    return [s for s in out if s.text]


def paragraphs(spans: list[Span], cfg: ClipConfig) -> list[Span]:
    """Merge sentences into paragraphs of about cfg.min_seconds..cfg.max_seconds."""
    paras: list[list[Span]] = []
    cur: list[Span] = []
    for s in spans:
        if cur and s.end - cur[0].start > cfg.max_seconds:
            paras.append(cur)
            cur = []
        cur.append(s)
        if cur[-1].end - cur[0].start >= cfg.min_seconds:
            paras.append(cur)
            cur = []
    if cur:
        # a short tail joins the previous paragraph when that stays within 1.5x the maximum
        if paras and cur[-1].end - paras[-1][0].start <= 1.5 * cfg.max_seconds \
                and cur[-1].end - cur[0].start < cfg.min_seconds / 2:
            paras[-1].extend(cur)
        else:
            paras.append(cur)
    return [Span(p[0].start, p[-1].end, " ".join(s.text for s in p)) for p in paras]


def clips(paras: list[Span], duration: float) -> list[Span]:
    """Contiguous clip bounds: each paragraph's clip runs until the next paragraph starts.

    The first clip starts at 0 and the last ends at the video's end, so a slide shown
    during a pause still falls inside a clip.
    """
    out = []
    for i, p in enumerate(paras):
        start = 0.0 if i == 0 else paras[i].start
        end = paras[i + 1].start if i + 1 < len(paras) else max(duration, p.end)
        out.append(Span(round(start, 3), round(end, 3), p.text))
    return out


def _lines(text: str) -> list[str]:
    lines = []
    for line in (text or "").splitlines():
        norm = re.sub(r"[^0-9a-z=+\-*/^()]+", " ", line.lower()).strip()
        if len(re.sub(r"[^0-9a-z]", "", norm)) >= 2:
            lines.append(norm)
    return lines


def filter_ocr(texts: list[str], cfg: OcrFilterConfig) -> list[tuple[bool, str | None]]:
    """Per keyframe in time order: (kept, drop reason). Drops empty OCR and OCR that adds
    no line beyond the previous frame's."""
    out = []
    prev: list[str] = []
    for text in texts:
        lines = _lines(text)
        if sum(ch.isalnum() for ch in (text or "")) < cfg.min_chars:
            out.append((False, "ocr_empty"))
        elif prev and all(any(difflib.SequenceMatcher(None, line, p).ratio() >= cfg.repeat_similarity
                              for p in prev) for line in lines):
            out.append((False, "ocr_repeat"))
        else:
            out.append((True, None))
        prev = lines
    return out


def image_name(video_id: str, start: float, end: float, k: int) -> str:
    """The released naming rule: VIDEOID@START_END#K.jpg, stored under VIDEOID/."""
    return f"{video_id}/{video_id}@{start:.1f}_{end:.1f}#{k}.jpg"


@dataclass
class Position:
    image: str | None  # path relative to the export folder, e.g. images/VID/VID@0.0_12.5#0.jpg
    text: str | None  # ASR paragraph
    text_ocr: str | None  # OCR of the clip's kept frames, then the ASR paragraph
    meta: dict = field(default_factory=dict)
    source_path: str | None = None  # where the keyframe file is now (copied at export)


def assign_keyframes(clip_spans: list[Span], keyframes: list[dict]) -> list[list[dict]]:
    """Keyframes of each clip by time: start <= t < end (the last clip includes its end)."""
    per = [[] for _ in clip_spans]
    for kf in keyframes:
        for i, c in enumerate(clip_spans):
            last = i == len(clip_spans) - 1
            if c.start <= kf["time_s"] < c.end or (last and c.start <= kf["time_s"] <= c.end):
                per[i].append(kf)
                break
    return per


def interleave(video: dict, clip_rows: list[dict], keyframes_by_idx: dict[int, dict]) -> list[Position]:
    """Chronological interleave (PAPER.md section 5): per clip its keyframes, then OCR+ASR text.

    A clip whose frames were dropped keeps its text. A polished paragraph (the agent's
    rewrite) replaces the raw ASR text when present; the raw text stays in the store.
    """
    vid = video["video_id"]
    out: list[Position] = []
    base = {"video_id": vid, "source": video["source"], "subject": video.get("subject")}
    for clip in clip_rows:
        if clip["decision"] == "drop":
            continue
        meta = {**base, "clip_index": clip["idx"], "clip_start": clip["start_s"], "clip_end": clip["end_s"]}
        frames = [keyframes_by_idx[i] for i in clip["keyframes"]] if clip["decision"] == "keep" else []
        for k, kf in enumerate(frames):
            name = image_name(vid, clip["start_s"], clip["end_s"], k)
            out.append(Position(image=f"images/{name}", text=None, text_ocr=None,
                                meta={**meta, "type": "image", "keyframe_time": kf["time_s"], "keyframe_index": k},
                                source_path=kf["path"]))
        ocr = "\n".join(kf["ocr_text"] for kf in frames if kf.get("ocr_kept") and kf.get("ocr_text"))
        text = clip.get("polished") or clip["text"]
        out.append(Position(image=None, text=text, text_ocr=f"{ocr}\n{text}" if ocr else text,
                            meta={**meta, "type": "text", "has_ocr": bool(ocr)}))
    return out


def _sample(positions: list[Position], tokenizer: str) -> dict:
    texts = [p.text for p in positions]
    ocr = [p.text_ocr for p in positions]
    return {
        "images": [p.image for p in positions],
        "texts": texts,
        "text_ocr_list": ocr,
        "metadata": [p.meta for p in positions],
        "image_num": sum(p.image is not None for p in positions),
        "text_num": sum(t is not None for t in texts),
        "token_num": sum(count_tokens(t, tokenizer) for t in ocr if t),
    }


def _clip_groups(positions: list[Position]) -> list[list[Position]]:
    groups: list[list[Position]] = []
    for p in positions:
        if not groups or p.image is not None and groups[-1][-1].text is not None:
            groups.append([])
        groups[-1].append(p)
    return groups


def pack(videos: list[list[Position]], cfg: PackConfig, tokenizer: str = "whisper") -> list[dict]:
    """Positions of each video -> samples.

    video:  one sample per video.
    split:  each video split at clip boundaries to fit max_tokens / max_images.
    concat: clips of consecutive videos fill samples up to max_tokens, with the
            end-of-video marker between videos (as the paper packed its corpus).
    A clip is never cut; a single clip larger than the budget makes its own sample.
    """
    if cfg.mode == "video":
        return [_sample(v, tokenizer) for v in videos if v]

    def cost(group: list[Position]) -> tuple[int, int]:
        images = sum(p.image is not None for p in group)
        text = sum(count_tokens(p.text_ocr or "", tokenizer) for p in group if p.text_ocr)
        return text + images * cfg.image_tokens, images

    samples: list[list[Position]] = []
    cur: list[Position] = []
    cur_tokens = cur_images = 0
    marker_tokens = count_tokens(cfg.eov_marker, tokenizer)

    def flush() -> None:
        nonlocal cur, cur_tokens, cur_images
        while cur and cur[-1].meta.get("type") == "eov":
            cur.pop()
        if cur:
            samples.append(cur)
        cur, cur_tokens, cur_images = [], 0, 0

    for v in videos:
        if not v:
            continue
        if cfg.mode == "split":
            flush()
        elif cur:
            cur.append(Position(None, cfg.eov_marker, cfg.eov_marker, {"type": "eov"}))
            cur_tokens += marker_tokens
        for group in _clip_groups(v):
            tokens, images = cost(group)
            over_tokens = cur_tokens + tokens > cfg.max_tokens
            over_images = cfg.max_images and cur_images + images > cfg.max_images
            if cur and any(p.meta.get("type") != "eov" for p in cur) and (over_tokens or over_images):
                flush()
            cur.extend(group)
            cur_tokens += tokens
            cur_images += images
    flush()
    return [_sample(s, tokenizer) for s in samples]
