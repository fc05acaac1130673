"""The clip rewrite: the polisher model, grounded in the slide, its answer checked for faithfulness.

The polisher (prompts/polish.md) gets the clip's ASR paragraph and, as a fenced list of terms it may use
to fix misheard words, the slide terms of the clip's kept OCR lines (``pipeline.grounding.slide_terms``).
Grounded, the paragraph it gets is already corrected from the slide (``grounding.correct_from_slide``: words
that sound like a slide term, a slide line's inflections): measured by ``bench/bench_grounding.py llm``,
the embedded Qwen2.5-Coder-1.5B given the terms alone used none of them ("First comes in operation" under
"Evaporation" stayed), while the correction fixes them with no model. Its answer goes through
``pipeline.faithfulness.check`` against the raw paragraph: a slide word replacing words that do not sound
like it is put back, and a rewrite that adds content, changes a number or a negation, or strays in length
is refused. One call per clip; the gateway records the prompt's name and sha256.

What the corpus keeps (``Rewrite.kept``): the checked rewrite when it is accepted and used; otherwise (refused,
no valid answer, or advisory) the raw paragraph with its slide corrections when grounded (``KEPT_SLIDE``:
only the phonetically checked term fixes of ``correct_from_slide``, nothing of the model's), or the raw
paragraph itself (``KEPT_RAW``: not grounded, or nothing on the slide to fix). Measured by
``bench/bench_grounding.py llm`` (Qwen2.5-Coder-1.5B, 23 paragraphs): keeping a refused rewrite's bare raw
paragraph kept its misheard words too (slide-term errors 3.1%, raw ASR 4.3%); keeping its slide corrections
gives 1.9%.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from agents import schemas
from pipeline import faithfulness, grounding
from pipeline.assemble import clip_ocr
from pipeline.faithfulness import Limits, RewriteCheck

VERSION = 3  # what polish does around the model (2: the paragraph corrected from the slide first; 3: a refused,
# unanswered or advisory rewrite keeps the slide corrections); part of the clip policy hash
KEPT_REWRITE = "rewrite"  # the checked rewrite
KEPT_SLIDE = "slide_fixed"  # the raw paragraph with the slide corrections made before the model
KEPT_RAW = "raw"  # the raw paragraph as heard
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
    """The outcome: the ``check`` of the model's rewrite (None: the model gave no valid answer, ``failure``
    says why), the gateway's ``call_id``, ``advisory``: why an accepted rewrite is not used (None: used;
    ``agents.build.rewrite_use``), and the slide corrections made before the model (``slide_fixes``, as
    (heard, term); ``corrected``: the raw paragraph with them, what the model got when grounded)."""

    check: RewriteCheck | None
    call_id: str | None
    advisory: str | None = None
    corrected: str | None = None
    slide_fixes: tuple[tuple[str, str], ...] = ()
    failure: str | None = None

    @property
    def status(self) -> str:
        """accepted, refused (by the check) or no_answer (the model gave none that validated)."""
        return self.check.status if self.check is not None else "no_answer"

    @property
    def kept(self) -> str:
        """Which text the corpus keeps: KEPT_REWRITE (the check's text: accepted and used), else KEPT_SLIDE
        (the raw paragraph with its slide corrections, when there are any) or KEPT_RAW."""
        if self.check is not None and not self.check.refused and not self.advisory:
            return KEPT_REWRITE
        return KEPT_SLIDE if self.slide_fixes and self.corrected else KEPT_RAW

    @property
    def polished(self) -> str | None:
        """The text to store as the clip's rewrite (``clips.polished``, what the samples use): the checked
        rewrite, or the raw paragraph with its slide corrections; None when the raw paragraph stays."""
        kept = self.kept
        if kept == KEPT_REWRITE:
            return self.check.text
        return self.corrected if kept == KEPT_SLIDE else None

    def why_kept(self) -> str:
        """The kept text in words, for the trace: "the rewrite", "the raw text with its slide fixes (in
        operation -> Evaporation)" or "the raw text"."""
        kept = self.kept
        if kept == KEPT_SLIDE:
            return "the raw text with its slide fixes (" + "; ".join(f"{h} -> {t}" for h, t in self.slide_fixes) + ")"
        return "the rewrite" if kept == KEPT_REWRITE else "the raw text"

    def record(self) -> dict:
        """JSON-safe, for ``clips.rewrite``: the check's verdict (``pipeline.faithfulness.RewriteCheck.as_dict``;
        with no valid answer: status no_answer, the failure as its reason, rewrite None) plus the call id,
        ``kept`` (which text the corpus has), ``advisory`` and the ``slide_fixes`` made before the model."""
        if self.check is not None:
            base = self.check.as_dict()
        else:
            base = {"status": "no_answer", "version": faithfulness.VERSION, "reasons": [self.failure or "no answer"],
                    "kinds": [], "corrections": [], "reverted": [], "rewrite": None}
        extra: dict = {"advisory": self.advisory} if self.advisory else {}
        if self.slide_fixes:
            extra["slide_fixes"] = [list(f) for f in self.slide_fixes]
        return {**base, "call_id": self.call_id, "kept": self.kept, **extra}


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


def corrected(req: RewriteRequest, grounded: bool = True) -> tuple[str, tuple[tuple[str, str], ...]]:
    """``req.paragraph`` corrected from its slide (``grounding.correct_from_slide`` on ``req.ocr``) and the
    fixes made, as (heard, term); not ``grounded``: the paragraph as it is and no fixes."""
    if not grounded:
        return req.paragraph, ()
    text, fixes = grounding.correct_from_slide(req.paragraph, req.ocr)
    return text, tuple((f.heard, f.term) for f in fixes)


def polish(gateway, req: RewriteRequest, limits: Limits = Limits(), grounded: bool = True,
           use: str = "used") -> Rewrite:
    """Ask the ``polisher`` role for the rewrite of ``req.paragraph`` and check it.

    ``grounded``: correct the paragraph from the slide first (``corrected``) and give the model the
    corrected paragraph and the slide terms (False: the plain rewrite of the raw paragraph, terms shown as
    NO_TERMS; the check still uses the slide). The check compares the answer (any echoed ``<untrusted>``
    fence removed) with the raw paragraph. ``use``: "used", or "advisory: WHY" (the rewrite is checked and
    recorded, not kept). A refused or advisory rewrite keeps the corrected paragraph (``Rewrite.kept``).
    Raises what ``agents.llm.Gateway.call`` raises (``LLMOutputInvalid``: no valid answer; the caller
    keeps ``unanswered``'s text).
    """
    text_in, fixes = corrected(req, grounded)
    values = {"point": req.point, "paragraph": text_in,
              "terms": terms_text(req.ocr) if grounded else NO_TERMS}
    ans = gateway.call("polisher", "polish", "polish", values, schemas.Polished, video_id=req.video_id)
    text = re.sub(r"\s+", " ", _FENCE.sub(" ", ans.value.text)).strip()
    return Rewrite(faithfulness.check(req.paragraph, text, req.ocr, limits), ans.call_id,
                   None if use == "used" else use, text_in, fixes)


def unanswered(req: RewriteRequest, failure: str, call_id: str | None = None, grounded: bool = True) -> Rewrite:
    """The outcome of a rewrite the model gave no valid answer for (``failure``: why, e.g.
    ``agents.stages.failure_reason``): no check, the raw paragraph kept with its slide corrections when
    ``grounded`` (``corrected``)."""
    text, fixes = corrected(req, grounded)
    return Rewrite(None, call_id, None, text, fixes, failure)
