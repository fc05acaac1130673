"""From stored transcripts and keyframes to interleaved samples (pure functions).

sentences -> paragraph clips -> keyframes per clip -> OCR filter -> interleave
-> pack. Nothing here reads files or the store; the runner passes plain dicts.
Formats beyond our own sample layout are written by pipeline.export.
"""

from __future__ import annotations

import difflib
import logging
import re
from dataclasses import dataclass, field
from functools import lru_cache

from pipeline.config import ClipConfig, OcrFilterConfig, PackConfig
from pipeline.tokens import count_tokens

log = logging.getLogger(__name__)

_SENTENCE_END = re.compile(r"[.!?。！？]['\")\]]*$")


@dataclass
class Span:
    """A stretch of a video in seconds: a sentence, a paragraph, or a clip.

    For a clip, ``start``/``end`` are its contiguous bounds and ``speech_start``/``speech_end``
    the paragraph's narration inside them (None for a sentence or paragraph, whose bounds
    are the narration's).
    """

    start: float
    end: float
    text: str
    speech_start: float | None = None
    speech_end: float | None = None

    @property
    def speech(self) -> tuple[float, float]:
        """(start, end) of the narration in seconds."""
        return (self.start if self.speech_start is None else self.speech_start,
                self.end if self.speech_end is None else self.speech_end)


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
        out.append(Span(round(start, 3), round(end, 3), p.text, round(p.start, 3), round(p.end, 3)))
    return out


# a bullet glyph that tesseract read as a symbol (maybe glued to the line) or as a lone letter
_BULLET = re.compile(r"^(?:[•·●○◦▪■□►▸‣⁃©¢®°«»@]\s*|[*–—oe-]\s+)(?=\S)")
_TOKEN = re.compile(r"\\[A-Za-z]+|[A-Za-z]+(?:['’-][A-Za-z]+)*|\d+(?:[.,:/]\d+)*%?|\S")  # \\frac: LaTeX
_OPERATOR = frozenset("=+×÷*/^<>≤≥±−")


def _norm_line(line: str) -> str:
    return re.sub(r"[^0-9a-z=+\-*/^()]+", " ", line.lower()).strip()


def clean_ocr_line(text: str) -> str:
    """An OCR line without the bullet glyph tesseract reads as a symbol ("© Force = 6 N" -> "Force = 6 N")."""
    return _BULLET.sub("", " ".join(text.split()))


@lru_cache(maxsize=200_000)
def _zipf(word: str, languages: tuple[str, ...]) -> float:
    from wordfreq import zipf_frequency

    return max(zipf_frequency(word, lang) for lang in languages)


def ocr_line_verdict(line, cfg: OcrFilterConfig) -> tuple[bool, str | None]:
    """(keep, reason) for one OCR line (a tools.ocr.OcrLine): does it read like text?

    Text: the engine's mean word confidence (0-100; None for a VLM, which skips the test)
    reaches ``cfg.min_line_confidence`` and at least ``cfg.min_word_share`` of the line's
    letters are in dictionary words (3+ letters at wordfreq Zipf >= ``cfg.min_zipf``, or a
    very common short word) or numbers. A formula (an operator among short tokens, an operand
    first and last, no two operators in a row: "V = I x R") needs only
    ``cfg.min_formula_confidence``. Noise read from photos, faces, chalk or
    blended frames fails one test or the other: short non-words at low confidence, or long
    letter runs that are no word ("thoobththe@bunsapitjeboub").
    """
    text = clean_ocr_line(line.text)
    tokens = _TOKEN.findall(text)
    alnum = sum(ch.isalnum() for ch in text)
    if alnum < 2:
        return False, "ocr_noise"
    conf = line.confidence
    raw = " ".join(line.text.split())
    if text != raw and len(line.word_confidences) > 1:  # the bullet glyph was a word of its own
        rest = line.word_confidences[1:]
        conf = sum(rest) / len(rest)
    letters = ok_letters = 0
    words = numbers = 0
    for tok in tokens:
        if tok.isalpha() or "'" in tok or "’" in tok or "-" in tok and tok[0].isalpha():
            n = sum(ch.isalpha() for ch in tok)
            letters += n
            low = re.sub(r"'s$", "", tok.lower().replace("’", "'"))
            known = len(set(low)) > 1 and _zipf(low, cfg.languages) >= (cfg.min_zipf if n >= 3 else 5.3)
            if not known and n >= 4 and low[0] in "ai":  # "Acurrent": an article glued to its word
                known = _zipf(low[1:], cfg.languages) >= cfg.min_zipf
            if known:
                ok_letters += n
                words += n >= 3
        elif tok[0].isdigit():
            numbers += 1
            ok_letters += sum(ch.isdigit() for ch in tok)
            letters += sum(ch.isdigit() for ch in tok)
    is_formula = any(t in _OPERATOR or t[0] == "\\" for t in tokens) and len(tokens) >= 3 \
        and all(len(t) <= 4 or t[0].isdigit() or t[0] == "\\" for t in tokens) and _well_formed(tokens)
    if is_formula:
        if conf is not None and conf < cfg.min_formula_confidence:
            return False, "ocr_noise"
        return True, None
    if conf is not None and conf < cfg.min_line_confidence:
        return False, "ocr_noise"
    if not letters or ok_letters / letters < cfg.min_word_share or words == 0:
        return False, "ocr_noise"
    return True, None


def _well_formed(tokens: list[str]) -> bool:
    """Tokens that read as a formula: an operand first and last, never two binary operators in a
    row ("V = I x R", "a^2 + b^2 = c^2", "x = -b / 2a"; not "= E = a", "zx + —", "= = soy", which
    photos and chalk boards give)."""
    def operand(t: str) -> bool:
        return t[0].isalnum() or t[0] == "\\"

    if not (operand(tokens[0]) and (operand(tokens[-1]) or tokens[-1] in ")]}")):
        return False
    return not any(a in _OPERATOR and b in _OPERATOR for a, b in zip(tokens, tokens[1:], strict=False))


@dataclass
class OcrVerdict:
    """What one keyframe's OCR gives to the corpus.

    ``lines``: every line read, cleaned, with its drop reason (None: kept); ``kept_lines`` the
    lines that become text; ``reason`` why the keyframe gives no text (``ocr_empty``,
    ``ocr_noise``, ``ocr_repeat``), None when it gives some.
    """

    lines: list[tuple[str, str | None]]
    kept_lines: list[str]
    reason: str | None

    @property
    def kept(self) -> bool:
        """Whether the keyframe gives some OCR text to the corpus."""
        return self.reason is None

    @property
    def text(self) -> str:
        """The kept lines joined by newlines (empty when the keyframe gives none)."""
        return "\n".join(self.kept_lines)


_WORD = re.compile(r"[0-9a-z]+(?:'[a-z]+)?")


def speech_words(segments: list[dict], start: float, end: float) -> list[str]:
    """The ASR words (lowercase, in time order) spoken from ``start`` to ``end`` (seconds).

    ``segments``: ASR segments as the store gives them (``start_s``, ``end_s``, ``text``, ``words``
    as [start, end, word, probability]) or as tools.asr writes them (``start``, ``end``, ``words``
    as dicts). A word counts when it starts in the span; a segment without word times counts whole
    when it overlaps the span.
    """
    out: list[str] = []
    for seg in segments:
        s0, s1 = seg.get("start_s", seg.get("start", 0.0)), seg.get("end_s", seg.get("end", 0.0))
        if s1 < start or s0 > end:
            continue
        words = seg.get("words") or []
        if not words:
            out += _WORD.findall(seg.get("text", "").lower())
            continue
        for w in words:
            w0, text = (w[0], w[2]) if isinstance(w, list | tuple) else (w["start"], w["word"])
            if start <= w0 <= end:
                out += _WORD.findall(text.lower())
    return out


def spoken_share(line: str, spoken: list[str]) -> tuple[int, float]:
    """(words of ``line``, the share of them found in ``spoken`` in the same order).

    Each word of the line is first replaced by its closest spoken word at difflib ratio 0.8 or more
    (OCR misreads a letter, ASR spells a number out differently), then the two word sequences are
    matched (difflib's matching blocks): a caption is the narration's words in the narration's order.
    """
    words = _WORD.findall(line.lower())
    if not words or not spoken:
        return len(words), 0.0
    vocab = set(spoken)
    mapped = [w if w in vocab else next(iter(difflib.get_close_matches(w, vocab, 1, 0.8)), w) for w in words]
    blocks = difflib.SequenceMatcher(None, mapped, spoken, autojunk=False).get_matching_blocks()
    return len(words), sum(b.size for b in blocks) / len(words)


def is_caption(line, height: int, spoken: list[str], cfg: OcrFilterConfig) -> bool:
    """True when an OCR line (tools.ocr.OcrLine) is a burned-in caption: it lies in the bottom
    ``cfg.caption_band`` of an image ``height`` px high as read (any position when 0: the engine gave
    none) and at least ``cfg.spoken_overlap`` of its ``cfg.spoken_min_words``+ words are ``spoken``
    (``spoken_share``) at that time. Slide text the narrator reads out sits higher on the slide."""
    if cfg.spoken_overlap <= 0 or not spoken:
        return False
    if height > 0 and line.top < (1.0 - cfg.caption_band) * height:
        return False
    n, share = spoken_share(clean_ocr_line(line.text), spoken)
    return n >= cfg.spoken_min_words and share >= cfg.spoken_overlap


def filter_ocr(frames: list[list], cfg: OcrFilterConfig, speech: list[list[str]] | None = None,
               heights: list[int] | None = None) -> list[OcrVerdict]:
    """Per keyframe in time order (each a list of tools.ocr.OcrLine): which lines become text.

    A line is kept when it reads like text (``ocr_line_verdict``) and was not already shown
    on the previous keyframe (bullets revealed one by one give each line once), nor is a
    burned-in caption (``is_caption`` against ``speech``: per keyframe, the ASR words spoken
    around it, see ``speech_words``; ``heights``: per keyframe, the image height as read;
    None: no caption test). A keyframe whose kept lines hold fewer than ``cfg.min_chars``
    letters or digits gives no text.
    """
    out: list[OcrVerdict] = []
    prev: list[str] = []
    for k, lines in enumerate(frames):
        verdicts: list[tuple[str, str | None]] = []
        shown: list[str] = []
        for line in lines:
            text = clean_ocr_line(line.text)
            if not text:
                continue
            ok, why = ocr_line_verdict(line, cfg)
            norm = _norm_line(text)
            if ok:
                shown.append(norm)
                if any(difflib.SequenceMatcher(None, norm, p).ratio() >= cfg.repeat_similarity for p in prev):
                    ok, why = False, "ocr_repeat"
                elif any(v is None and _norm_line(t) == norm for t, v in verdicts):
                    ok, why = False, "ocr_repeat"  # the same line read twice on one frame
                elif speech is not None and is_caption(line, heights[k] if heights else 0, speech[k], cfg):
                    ok, why = False, "ocr_spoken"  # the narration, burned into the picture: the ASR text has it
            verdicts.append((text, None if ok else why))
        kept = [t for t, why in verdicts if why is None]
        shown_chars = sum(ch.isalnum() for t, why in verdicts if why in (None, "ocr_repeat") for ch in t)
        if kept and shown_chars >= cfg.min_chars:  # a text frame; its new line may be short ("V = I x R")
            reason = None
        elif not verdicts or sum(ch.isalnum() for t, _ in verdicts for ch in t) < cfg.min_chars:
            reason = "ocr_empty"
        elif any(why == "ocr_spoken" for _, why in verdicts) and not kept:
            reason = "ocr_spoken"
        elif any(why == "ocr_repeat" for _, why in verdicts) or kept:
            reason = "ocr_repeat" if not kept else "ocr_empty"
        else:
            reason = "ocr_noise"
        out.append(OcrVerdict(verdicts, kept if reason is None else [], reason))
        prev = shown
    return out


LLAVA_IMAGE_TOKENS = 576  # tokens LLaVA-1.5 spends on one image (CLIP ViT-L/14-336: 24 x 24 patches)

_SPECIAL_TOKEN = re.compile(
    r"<(\|[^<>|\s]{1,64}\|)>"  # <|endoftext|>, <|im_start|>, <|endofvideo|>: ChatML / GPT style
    r"|<(/?(?:image|img|video|audio|fake_token_around_image|global-img|row_\d+_col_\d+|end_of_utterance"
    r"|im_start|im_end|im_patch|s|unk|pad|bos|eos|eot))>", re.IGNORECASE)


def escape_special_tokens(text: str) -> str:
    """Untrusted text (ASR, OCR, titles) with every special-token look-alike defused: angle brackets dropped.

    ``<image>`` becomes ``image``, as the released Idefics2 trainer does (training_idefics/training/training.py
    in DAMO-NLP-SG/multimodal_textbook: ``asr.replace(image_token, 'image')``); likewise ``</s>`` -> ``/s``,
    ``<|endoftext|>`` -> ``|endoftext|``, ``<row_1_col_2>`` -> ``row_1_col_2``. A loader that joins texts
    and tokenizes them whole (the released LLaVA loader) then never sees an image or control token that the
    speaker or a slide put there.
    """
    if not text or "<" not in text:
        return text
    return _SPECIAL_TOKEN.sub(lambda m: m.group(1) or m.group(2), text)


def _ms(seconds: float) -> int:
    return int(round(float(seconds) * 1000))


def image_name(video_id: str, start: float, end: float, k: int) -> str:
    """Our keyframe file name, under VIDEOID/: ``VIDEOID_STARTMS-ENDMS_K.jpg`` (URL-safe).

    ``k`` is the keyframe's 0-based position in its clip; names number from 1 (K = k + 1), as the released
    corpus does. Clip bounds are in integer milliseconds, so the name holds only ``[A-Za-z0-9_-]``, one dot
    (before ``jpg``) and no ``#``/``@`` (video ids are ``[A-Za-z0-9_-]``): it works unquoted in URLs, shells
    and tools that split names at the first dot. Example: ``abc-1a2b3c4d/abc-1a2b3c4d_10000-55000_2.jpg``.
    The released naming (``VID@10.0_55.0#2.jpg``) is written only by ``export --format released|idefics2``
    (``released_image_name``).
    """
    return f"{video_id}/{video_id}_{_ms(start)}-{_ms(end)}_{k + 1}.jpg"


def released_image_name(video_id: str, start: float, end: float, k: int) -> str:
    """The released corpus's keyframe name, under VIDEOID/: ``VIDEOID@START_END#K.jpg``.

    Their README ("Naming Rule of keyframe"): ``-1uixJ1V-As@10.0_55.0#2.jpg`` is "the second keyframe (#2)
    in the video clip from 10.0 to 55.0 seconds": K numbers from 1 (``k`` here is 0-based, K = k + 1) and
    START/END are the clip bounds in seconds as Python prints the float (full precision: 12.345, 10.0).
    """
    return f"{video_id}/{video_id}@{float(start)!r}_{float(end)!r}#{k + 1}.jpg"


@dataclass
class Position:
    """One position of an interleaved sample: an image (``image`` set) or a clip's text (``text`` and ``text_ocr``),
    with its metadata (video, clip, times in seconds)."""

    image: str | None  # path relative to the media / export folder: images/VID/VID_0-12500_1.jpg
    text: str | None  # ASR paragraph (escaped)
    text_ocr: str | None  # OCR of the clip's kept frames, then the ASR paragraph (escaped)
    meta: dict = field(default_factory=dict)
    source_path: str | None = None  # where the keyframe file is now (copied at export)


def on_screen(keyframes: list[dict], duration: float = 0.0) -> list[tuple[float, float]]:
    """When each keyframe (store rows in time order: ``time_s``, ``end_s``; seconds) is on screen: [start, end).

    ``end_s`` is when its picture left the screen (tools.keyframes.Keyframe.end: a wipe to a blank board or
    writing that never settles ends it, though neither gives a keyframe). A row without one (stored before
    migration 014) is taken to stay until the next keyframe, or ``duration`` for the last one. An end past
    the next keyframe's start is cut there (two pictures are never on screen at once).
    """
    out = []
    for n, kf in enumerate(keyframes):
        t0 = float(kf["time_s"])
        nxt = float(keyframes[n + 1]["time_s"]) if n + 1 < len(keyframes) else max(duration, t0)
        end = kf.get("end_s")
        if end is None or end <= t0:
            t1 = nxt
        else:
            t1 = min(float(end), nxt) if n + 1 < len(keyframes) else float(end)
        out.append((t0, t1))
    return out


def assign_keyframes(clip_spans: list[Span], keyframes: list[dict], duration: float | None = None) -> list[list[dict]]:
    """Keyframes of each clip: a keyframe goes with the narration it illustrates.

    A keyframe is on screen from ``time_s`` until ``end_s`` (when its picture left the screen; see
    ``on_screen``). It goes to the clip during whose narration it is on screen for the largest share of
    that narration (the earliest such clip on a tie); a keyframe shown only in silence goes to the clip
    whose bounds hold its start. So a finished board that is wiped before the next one is written goes
    with the narration while it was up, not with the next board's, and a slide that appears 0.2 s, or one
    closing sentence, before a paragraph ends goes with the next paragraph, which talks about it.
    """
    per: list[list[dict]] = [[] for _ in clip_spans]
    if not clip_spans:
        return per
    ordered = sorted(keyframes, key=lambda k: k["time_s"])
    end_of_video = max(duration or 0.0, clip_spans[-1].end)
    for kf, (t0, t1) in zip(ordered, on_screen(ordered, end_of_video), strict=True):
        shares = []
        for c in clip_spans:
            start, end = c.speech
            shares.append(max(0.0, min(t1, end) - max(t0, start)) / max(end - start, 1e-6))
        best = max(shares)
        if best > 0:
            chosen = shares.index(best)
        else:
            chosen = next((i for i, c in enumerate(clip_spans) if c.start <= t0 < c.end), len(clip_spans) - 1)
        per[chosen].append(kf)
    return per


@dataclass
class ClipPlan:
    """One clip of a video: its span (bounds and narration, seconds), the keyframes it shows
    (store rows, time order) and those the per-clip cap left out."""

    span: Span
    keyframes: list[dict]
    capped: list[dict]


def plan_clips(segments: list[dict], duration: float, keyframes: list[dict], cfg: ClipConfig) -> list[ClipPlan]:
    """Sentences -> paragraph clips -> keyframes per clip (by narration) -> the per-clip cap.

    ``segments`` are the stored ASR segments (with word timestamps), ``duration`` the video's
    length in seconds, ``keyframes`` the stored keyframe rows (``time_s``, ``ssim``).
    """
    spans = clips(paragraphs(sentences(segments), cfg), duration)
    out = []
    for span, frames in zip(spans, assign_keyframes(spans, keyframes, duration), strict=True):
        kept, capped = cap_keyframes(frames, cfg.max_keyframes)
        out.append(ClipPlan(span, kept, capped))
    return out


def cap_keyframes(frames: list[dict], cap: int) -> tuple[list[dict], list[dict]]:
    """(kept, dropped): at most ``cap`` keyframes of one clip (0: no cap), in time order.

    Keeps the clip's last keyframe (the most complete state of a slide built up step by
    step) and, of the rest, those that changed most from the frame before (lowest ``ssim``).
    """
    if cap <= 0 or len(frames) <= cap:
        return list(frames), []
    last = frames[-1]
    rest = sorted(frames[:-1], key=lambda k: (k.get("ssim") if k.get("ssim") is not None else 1.0, k["time_s"]))
    keep = {id(k) for k in rest[: cap - 1]} | {id(last)}
    return [k for k in frames if id(k) in keep], [k for k in frames if id(k) not in keep]


def clip_ocr(frames: list[dict]) -> str:
    """The OCR text of one clip: the kept lines of its keyframes (store rows, time order), each line once."""
    seen: set[str] = set()
    lines = []
    for kf in frames:
        if not (kf.get("ocr_kept") and kf.get("ocr_text")):
            continue
        for line in kf["ocr_text"].splitlines():
            key = _norm_line(line)
            if key and key not in seen:
                seen.add(key)
                lines.append(line)
    return "\n".join(lines)


VIDEO_META_KEYS = ("video_id", "source", "subject", "course", "subcourse", "knowledge_point", "difficulty")


def video_meta(video: dict) -> dict:
    """Per-video metadata every position carries: id, public source, and the curriculum position.

    ``video`` is a ``videos`` row. ``source`` is ``public_source`` (a URL or a path relative to the input
    root, pipeline.provenance); a row from before migration 006 falls back to the file name. ``difficulty``
    is a number (an int when whole) or None.
    """
    from pipeline.provenance import public_url

    src = video.get("public_source") or public_url(video.get("source")) or \
        re.split(r"[\\/]", str(video.get("source") or ""))[-1] or None
    diff = video.get("difficulty")
    if isinstance(diff, float) and diff.is_integer():
        diff = int(diff)
    return {"video_id": video["video_id"], "source": src, "subject": video.get("subject"),
            "course": video.get("course"), "subcourse": video.get("subcourse"),
            "knowledge_point": video.get("knowledge_point"), "difficulty": diff}


def interleave(video: dict, clip_rows: list[dict], keyframes_by_idx: dict[int, dict],
               image_dir: str | None = None) -> list[Position]:
    """Chronological interleave (PAPER.md section 5): per clip its keyframes, then OCR+ASR text.

    A clip whose frames were dropped keeps its text. A polished paragraph (the agent's checked rewrite, or the raw
    paragraph with its slide fixes: agents.rewrite.Rewrite.kept) replaces the raw ASR text when present; the raw
    text stays in the store. Every position's metadata holds the video's (``video_meta``) and the clip's bounds
    (seconds); an image's also its keyframe time (seconds) and ``keyframe_index`` K (from 1, as in its file
    name); a text that is not the raw ASR also ``raw_asr``. Text is escaped
    (``escape_special_tokens``). Image paths are ``images/VID/NAME`` (``image_name``), or ``IMAGE_DIR/NAME``
    when ``image_dir`` is given (the store's per-config folder images/VID/HASH; exports name them again).
    """
    vid = video["video_id"]
    out: list[Position] = []
    base = video_meta(video)
    for clip in clip_rows:
        if clip["decision"] == "drop":
            continue
        meta = {**base, "clip_index": clip["idx"], "clip_start": clip["start_s"], "clip_end": clip["end_s"]}
        frames = [keyframes_by_idx[i] for i in clip["keyframes"]] if clip["decision"] == "keep" else []
        for k, kf in enumerate(frames):
            name = image_name(vid, clip["start_s"], clip["end_s"], k)
            path = f"{image_dir}/{name.rsplit('/', 1)[1]}" if image_dir else f"images/{name}"
            out.append(Position(image=path, text=None, text_ocr=None,
                                meta={**meta, "type": "image", "keyframe_time": kf["time_s"],
                                      "keyframe_index": k + 1},
                                source_path=kf["path"]))
        ocr = escape_special_tokens(clip_ocr(frames))
        text = escape_special_tokens(clip.get("polished") or clip["text"])
        text_meta = {**meta, "type": "text", "has_ocr": bool(ocr)}
        if clip.get("polished") and clip["polished"] != clip["text"]:
            text_meta["raw_asr"] = escape_special_tokens(clip["text"])  # the ASR the rewrite replaced
        out.append(Position(image=None, text=text, text_ocr=f"{ocr}\n{text}" if ocr else text, meta=text_meta))
    return out


def is_eov(meta: object) -> bool:
    """Whether a position's metadata marks the end-of-video marker that concat packing puts between videos."""
    return isinstance(meta, dict) and meta.get("type") == "eov"


def _sample(positions: list[Position], tokenizer: str, image_tokens: int = LLAVA_IMAGE_TOKENS) -> dict:
    """One sample in our layout, with the released corpus's count semantics.

    ``image_num``: images; ``text_num``: tokens of the ASR texts (``texts``; the end-of-video marker not
    counted); ``token_num``: ``text_num + image_num * image_tokens``, the estimated sequence length. Their
    README defines the fields so ("the number of images, the number of asr text tokens, and the estimated
    total number of tokens"), and its example obeys the formula with 576 tokens per image (LLaVA-1.5):
    image_num 15, text_num 425, token_num 9065 = 425 + 15 * 576. A text position's metadata gets ``tokens``,
    its share of ``text_num``.
    """
    texts = [p.text for p in positions]
    image_num = sum(p.image is not None for p in positions)
    metadata = []
    text_num = 0
    for p in positions:
        if p.text and not is_eov(p.meta):
            n = count_tokens(p.text, tokenizer)
            text_num += n
            metadata.append({**p.meta, "tokens": n})
        else:
            metadata.append(p.meta)
    return {
        "images": [p.image for p in positions],
        "texts": texts,
        "text_ocr_list": [p.text_ocr for p in positions],
        "metadata": metadata,
        "image_num": image_num,
        "text_num": text_num,
        "token_num": text_num + image_num * image_tokens,
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
    split:  each video split at clip boundaries to fit max_tokens / max_images (the default).
    concat: clips of consecutive videos fill samples up to max_tokens, with the
            end-of-video marker between videos (as the paper packed its corpus).
    A clip is never cut; a single clip larger than the budget makes its own sample. A sample without an
    image is not written (the released LLaVA loader asserts at least one; a warning counts them).

    The budget is counted as the training reader (train/data.py) counts a sequence, so that a sample within
    it is read whole: its BOS and EOS, ``cfg.image_tokens`` per image, and per clip text its tokens in
    ``text_ocr_list`` (ASR + OCR: whichever field the trainer reads fits) plus one for the separator the
    reader joins adjacent texts with. Counts use ``tokenizer``; pass the trainer's tokenizer.json where its
    model tokenizes differently. ``token_num`` keeps the released corpus's meaning whatever the budget:
    576 tokens per image (LLaVA-1.5), so a sample's figures compare with the paper's.
    """
    per_image = LLAVA_IMAGE_TOKENS
    if cfg.mode == "video":
        return _with_images([_sample(v, tokenizer, per_image) for v in videos if v])

    def cost(group: list[Position]) -> tuple[int, int]:
        images = sum(p.image is not None for p in group)
        texts = [p.text_ocr for p in group if p.text_ocr]
        text = sum(count_tokens(t, tokenizer) for t in texts) + len(texts)
        return text + images * cfg.image_tokens, images

    budget = cfg.max_tokens - 2  # the reader's BOS and EOS

    samples: list[list[Position]] = []
    cur: list[Position] = []
    cur_tokens = cur_images = 0
    marker_tokens = count_tokens(cfg.eov_marker, tokenizer)

    def flush() -> None:
        nonlocal cur, cur_tokens, cur_images
        while cur and is_eov(cur[-1].meta):
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
            over_tokens = cur_tokens + tokens > budget
            over_images = cfg.max_images and cur_images + images > cfg.max_images
            if cur and any(not is_eov(p.meta) for p in cur) and (over_tokens or over_images):
                flush()
            cur.extend(group)
            cur_tokens += tokens
            cur_images += images
    flush()
    return _with_images([_sample(s, tokenizer, per_image) for s in samples])


def _with_images(samples: list[dict]) -> list[dict]:
    kept = [s for s in samples if s["image_num"] > 0]
    if len(kept) < len(samples):
        log.warning("%d of %d samples have no image and are not written (all their clips' frames were dropped)",
                    len(samples) - len(kept), len(samples))
    return kept
