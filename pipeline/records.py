"""The typed records that cross stage boundaries, and the one status of a video in the funnel.

Stages take and yield these (``pipeline.stage``); the store keeps them as rows. Times are seconds from
the start of the video, sizes pixels, token counts are of ``PipelineConfig.tokenizer``. The ASR records
are the tool's own (``tools.asr.Transcript`` / ``Segment`` / ``Word``), so a transcript is one type
from the model to the store.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from tools.asr import Segment as AsrSegment
from tools.asr import Transcript, Word

__all__ = ["AsrSegment", "Clip", "Keyframe", "Sample", "Status", "Transcript", "Video", "Word"]


class Status(StrEnum):
    """Where a video (``videos`` / ``run_videos``) or a build's candidate (``candidates``) stands, in funnel
    order. The values are the strings the store has always held, so stored rows stay valid.

    A ``process`` run moves a video PENDING -> KEPT (or REJECTED / ERROR / DUPLICATE); a build moves a
    candidate FOUND -> METADATA_ACCEPTED -> DOWNLOADED -> PROBED -> TRANSCRIBED -> TRANSCRIPT_ACCEPTED ->
    KEYFRAMES -> VISUALS -> ACCEPTED (each the status a stage's ``passed`` names: where a video stands is the
    last stage it passed), leaving at the first drop with a reason.
    """

    PENDING = "pending"  # registered, nothing decided yet
    FOUND = "found"  # a search found it (build)
    REVIEW_METADATA = "review_meta"  # waits for a human's metadata verdict
    METADATA_REJECTED = "judged_out"  # the metadata judge (or a human) rejected it
    METADATA_ACCEPTED = "accepted_meta"  # the metadata judge accepted it; waits for download
    DOWNLOAD_FAILED = "download_failed"
    DOWNLOADED = "downloaded"
    PROBED = "probed"  # probe and the probe rules passed
    TRANSCRIBED = "transcribed"  # ASR and the transcript rules passed
    REVIEW_TRANSCRIPT = "review_transcript"  # waits for a human's transcript verdict
    TRANSCRIPT_REJECTED = "transcript_rejected"  # both transcript judges rejected it
    TRANSCRIPT_ACCEPTED = "judged"  # the transcript judges kept it
    KEYFRAMES = "keyframes"  # keyframes stored
    VISUALS = "visuals"  # OCR done
    CLIPS = "clips"  # clips made and decided
    KEPT = "kept"  # process: it gives clips to the corpus
    ACCEPTED = "accepted"  # build: it gives clips to the corpus
    REJECTED = "rejected"  # a rule dropped it (reason: the rule's, e.g. silent, language:es, no_clips)
    ERROR = "error"  # failed (reason: the error kind: corrupt, unavailable, timeout, ...)
    DUPLICATE = "duplicate"  # the same file content as a kept video (duplicate_of)

    @property
    def rank(self) -> int:
        """Position in the funnel (0: first)."""
        return list(Status).index(self)

    @property
    def final(self) -> bool:
        """Whether the video leaves the funnel here."""
        return self in _FINAL


_FINAL = {Status.METADATA_REJECTED, Status.DOWNLOAD_FAILED, Status.TRANSCRIPT_REJECTED, Status.KEPT,
          Status.ACCEPTED, Status.REJECTED, Status.ERROR, Status.DUPLICATE}


@dataclass
class Video:
    """One video as the pipeline sees it (a ``videos`` row).

    ``source``: the path (or URL) it came from; ``public_source``: what exports may show (a URL or a path
    relative to the input root); ``duration`` seconds; ``width``/``height`` pixels as stored;
    ``difficulty``: grade level or rank of its knowledge point (lower is easier).
    """

    video_id: str
    source: str
    sha256: str | None = None
    title: str | None = None
    subject: str | None = None
    course: str | None = None
    subcourse: str | None = None
    knowledge_point: str | None = None
    difficulty: float | None = None
    public_source: str | None = None
    point_id: str | None = None  # build: the knowledge point it is gathered for in this run
    url: str | None = None  # build: where it was found (``source`` is the downloaded file once fetched)
    metadata: dict = field(default_factory=dict)
    duplicate_of: str | None = None
    duration: float | None = None
    width: int | None = None
    height: int | None = None
    has_audio: bool | None = None

    @classmethod
    def from_row(cls, row: dict) -> Video:
        """A Video from a ``videos`` row (or any dict with its keys; others are ignored)."""
        meta = row.get("metadata")
        if isinstance(meta, str):
            meta = json.loads(meta or "{}")
        return cls(**{k: row.get(k) for k in cls.__dataclass_fields__ if k != "metadata"}, metadata=meta or {})

    def as_dict(self) -> dict[str, Any]:
        """The fields as a dict (a ``videos`` row's keys)."""
        return dict(self.__dict__)


@dataclass
class Keyframe:
    """A stored keyframe with its OCR (``keyframes`` joined with ``ocr``).

    ``idx``: 0-based, in time order; ``time_s``: seconds; ``end_s``: when its picture left the screen (seconds;
    None for a keyframe stored before migration 014); ``path``: the frame file; ``ssim``: mean SSIM to
    the previous state (1.0 for the first); ``ocr_text``: the kept OCR lines ("\\n"-joined), ``ocr_kept``
    False with ``ocr_drop_reason`` (ocr_empty, ocr_noise, ocr_repeat, ocr_spoken, clip_cap) when it gives no text.
    """

    idx: int
    time_s: float
    path: str
    ssim: float | None = None
    min_tile_ssim: float | None = None
    sharpness: float | None = None
    end_s: float | None = None
    ocr_text: str | None = None
    ocr_kept: bool | None = None
    ocr_drop_reason: str | None = None

    @classmethod
    def from_row(cls, row: dict) -> Keyframe:
        """A Keyframe from a ``keyframes`` row joined with ``ocr`` (other keys ignored)."""
        return cls(**{k: row.get(k) for k in cls.__dataclass_fields__})


@dataclass
class Clip:
    """A paragraph clip of a video and its decision (a ``clips`` row).

    ``idx``: 0-based, in time order; ``start_s``/``end_s``: contiguous bounds in seconds (the names of the
    ``clips`` columns); ``text``: the ASR paragraph; ``n_tokens``: its tokens;
    ``keyframes``: idx of the keyframes it shows, ``capped``: those the per-clip cap left out; ``decision``:
    keep | drop_frames | drop, with ``reason``; ``polished``: the text the corpus keeps
    in place of the raw paragraph: the agent's checked rewrite, or the raw paragraph with its slide fixes
    (agents.rewrite.Rewrite.kept; None: the raw text);
    ``signals``: what the clip judge measured (asr_ocr_similarity, keyframes, ocr_chars_per_keyframe);
    ``rewrite``: the record of the agent's rewrite (agents.rewrite.Rewrite.record: the faithfulness check,
    its call id, ``kept``; status no_answer when the model gave none valid; None: no rewrite asked), refused
    ones included.
    """

    idx: int
    start_s: float
    end_s: float
    text: str
    n_tokens: int
    keyframes: list[int]
    capped: list[int] = field(default_factory=list)
    decision: str = "keep"
    reason: str | None = None
    polished: str | None = None
    signals: dict | None = None
    rewrite: dict | None = None

    def as_dict(self) -> dict[str, Any]:
        """The fields as a dict (what Store.save_clips takes)."""
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, d: dict) -> Clip:
        """A Clip from a ``clips`` row or a dict with its field names (other keys ignored; missing optional
        fields take their defaults)."""
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


@dataclass
class Sample:
    """One interleaved sample in the released layout (see docs/formats.md). ``images[i]`` (a path relative
    to the store's media folder or the export folder) or ``texts[i]`` is set at each position;
    ``image_num`` images, ``text_num`` ASR tokens, ``token_num`` = text_num + image_num * tokens per image."""

    images: list[str | None]
    texts: list[str | None]
    text_ocr_list: list[str | None]
    metadata: list[dict]
    image_num: int
    text_num: int
    token_num: int

    @classmethod
    def from_dict(cls, d: dict) -> Sample:
        """A Sample from a samples.jsonl line's dict; KeyError when a field is missing."""
        return cls(**{k: d[k] for k in cls.__dataclass_fields__})

    def as_dict(self) -> dict[str, Any]:
        """The fields as a dict (one samples.jsonl line)."""
        return dict(self.__dict__)
