"""The clip rewrite: the polisher model, grounded in the slide, its answer checked for faithfulness.

The polisher (prompts/polish.md) gets the clip's ASR paragraph and, as a fenced list of terms it may use
to fix misheard words, the slide terms of the clip's kept OCR lines (``pipeline.grounding.slide_terms``).
Grounded, the paragraph it gets is already corrected from the slide (``grounding.correct_from_slide``: words
that sound like a slide term, a slide line's inflections): measured by ``bench/bench_grounding.py llm``,
the embedded Qwen2.5-Coder-1.5B given the terms alone used none of them ("First comes in operation" under
"Evaporation" stayed), while the correction fixes them with no model. Its answer goes through
``pipeline.faithfulness.check`` against the raw paragraph: a slide word replacing words that do not sound
like it is put back, and a rewrite that adds content, changes a number or a negation, or strays in length
is refused, the raw paragraph kept. One call per clip; the gateway records the prompt's name and sha256.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from agents import schemas
from pipeline import faithfulness, grounding
from pipeline.assemble import clip_ocr
from pipeline.faithfulness import Limits, RewriteCheck

VERSION = 2  # what polish does around the model (2: the paragraph corrected from the slide first); policy hash
NO_TERMS = "(none)"
_FENCE = re.compile(r"</?\s*untrusted[^>]*>", re.IGNORECASE)  # a small model may echo the prompt's fence
SLIDE_MARGIN_S = 3.0  # keyframes this close to a clip ground its rewrite too (bench/bench_grounding.py --pipeline:
# 0, 3 and 6 s fix the same; 15 s adds a false "comes" -> "cools")


@dataclass(frozen=True)
class RewriteRequest:
    """One clip to rewrite: its knowledge ``point``, the ASR ``paragraph``, the slide text ``ocr`` (kept OCR
    lines joined by newlines, "" when none) and the ``video_id`` the LLM call is recorded under."""

    point: str
    paragraph: str
    ocr: str
    video_id: str | None = None


@dataclass(frozen=True)
class Rewrite:
    """The outcome: the ``check`` of the model's rewrite, the gateway's ``call_id``, ``advisory``: why an
    accepted rewrite is not used (None: used; ``agents.build.rewrite_use``), and the slide corrections made
    before the model (``slide_fixes``, as (heard, term); ``corrected``: the paragraph the model got)."""

    check: RewriteCheck
    call_id: str | None
    advisory: str | None = None
    corrected: str | None = None
    slide_fixes: tuple[tuple[str, str], ...] = ()

    @property
    def polished(self) -> str | None:
        """The text to store as the clip's rewrite; None when refused or advisory (the raw paragraph stays,
        without the slide corrections: they reach the corpus only through an accepted rewrite)."""
        return None if self.check.refused or self.advisory else self.check.text

    def record(self) -> dict:
        """JSON-safe, for ``clips.rewrite``: the check's verdict plus the call id (and ``advisory``, and the
        ``slide_fixes`` made before the model)."""
        extra: dict = {"advisory": self.advisory} if self.advisory else {}
        if self.slide_fixes:
            extra["slide_fixes"] = [list(f) for f in self.slide_fixes]
        return {**self.check.as_dict(), "call_id": self.call_id, **extra}


def policy(cfg, use: str = "used") -> list:
    """What decides a clip's rewrite, for the build's clip policy hash: the polish settings of an
    ``agents.config.AgentConfig``, the check's version and thresholds, ``use``, the prompt's sha256, and this
    module's ``VERSION`` with the slide-line length it corrects from (``grounding.MIN_LINE``)."""
    import prompts

    return [cfg.polish, cfg.polish_min_overlap, cfg.polish_terms, cfg.polish_min_ratio, cfg.polish_max_ratio,
            faithfulness.VERSION, grounding.THRESHOLD, grounding.CHAR_THRESHOLD, grounding.PADDED_CHAR_THRESHOLD,
            SLIDE_MARGIN_S, use, prompts.load("polish").sha256, VERSION, grounding.MIN_LINE]


def slide_text_near(frames: dict[int, dict], keyframes: list[int], start: float, end: float,
                    margin_s: float = SLIDE_MARGIN_S) -> str:
    """The slide text that grounds a clip from ``start`` to ``end`` (seconds): the kept OCR lines
    (``pipeline.assemble.clip_ocr``) of the clip's own ``keyframes`` (idx) and of the video's keyframes
    shown from ``margin_s`` before it to ``margin_s`` after it, in time order. A paragraph often ends with
    the first words about the next slide ("First comes in operation." said before the slide "Evaporation"
    is up), so the clip's own keyframes are not enough; bench/bench_grounding.py --pipeline measures the
    margin. ``frames``: the video's keyframe rows by idx (``time_s``, ``ocr_text``, ``ocr_kept``)."""
    near = [f for i, f in frames.items() if i in keyframes or start - margin_s <= f["time_s"] <= end + margin_s]
    return clip_ocr(sorted(near, key=lambda f: f["time_s"]))


def limits(cfg) -> Limits:
    """The check's bounds from an ``agents.config.AgentConfig`` (polish_min_ratio, polish_max_ratio,
    polish_min_overlap)."""
    return Limits(min_ratio=cfg.polish_min_ratio, max_ratio=cfg.polish_max_ratio, min_overlap=cfg.polish_min_overlap)


def terms_text(ocr: str, limit: int = 40) -> str:
    """The slide terms shown to the polisher: one per line, at most ``limit``, or NO_TERMS."""
    terms = grounding.slide_terms(ocr)[:limit]
    return "\n".join(terms) if terms else NO_TERMS


def polish(gateway, req: RewriteRequest, limits: Limits = Limits(), grounded: bool = True,
           use: str = "used") -> Rewrite:
    """Ask the ``polisher`` role for the rewrite of ``req.paragraph`` and check it.

    ``grounded``: correct the paragraph from the slide first (``grounding.correct_from_slide``) and give
    the model the corrected paragraph and the slide terms (False: the plain rewrite of the raw paragraph,
    terms shown as NO_TERMS; the check still uses the slide). The check compares the answer (any echoed
    ``<untrusted>`` fence removed) with the raw paragraph. ``use``: "used", or "advisory: WHY" (the rewrite
    is checked and recorded, the raw paragraph kept). Raises what ``agents.llm.Gateway.call`` raises
    (``LLMOutputInvalid``: no valid answer; the caller keeps the raw text).
    """
    corrected, fixes = grounding.correct_from_slide(req.paragraph, req.ocr) if grounded else (req.paragraph, [])
    values = {"point": req.point, "paragraph": corrected,
              "terms": terms_text(req.ocr) if grounded else NO_TERMS}
    ans = gateway.call("polisher", "polish", "polish", values, schemas.Polished, video_id=req.video_id)
    text = re.sub(r"\s+", " ", _FENCE.sub(" ", ans.value.text)).strip()
    return Rewrite(faithfulness.check(req.paragraph, text, req.ocr, limits), ans.call_id,
                   None if use == "used" else use, corrected, tuple((f.heard, f.term) for f in fixes))
