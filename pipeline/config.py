"""Configuration of the pipeline: one pydantic model, defaults are the paper's choices.

Tool options are the tools' own dataclasses, so a value set here is exactly the
value the tool records with its result. Every stage hashes the part of the config
it depends on (plus its inputs' hashes) so reruns skip finished work.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, fields, is_dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_serializer, field_validator

from pipeline.pools import PoolConfig, pool_preset
from tools.asr import AsrOptions
from tools.keyframes import KeyframeOptions
from tools.ocr import OcrOptions


class FilterConfig(BaseModel):
    """Video-level rule filters (PAPER.md section 2)."""

    model_config = ConfigDict(extra="forbid")
    min_duration: float = Field(10.0, description="drop videos shorter than this many seconds")
    truncated: Literal["keep", "drop"] = Field("keep", description=(
        "a file that ends before its header's duration (a download cut short): keep what decodes, flagged with "
        "a 'truncated' warning (its duration, clips and stats are the decodable part), or drop it (reason "
        "'truncated')"))
    languages: tuple[str, ...] = Field(("en",), description=(
        "the wanted languages (ISO 639-1; empty: any). Speech in others is dropped, never translated "
        "(asr.foreign='keep' keeps it in its own language); the audio track tagged with one is preferred"))
    min_language_share: float = Field(0.25, description=(
        "drop a video (reason language:XX) when less than this share of its speech is in a wanted language"))
    min_language_probability: float = Field(0.5, description=(
        "below this speech-weighted probability of its language, the video is 'language_uncertain'"))
    max_repetition_share: float = Field(0.5, description=(
        "drop a video (reason 'repetition') when this share of its transcribed seconds or more loops"))
    min_speech_seconds: float = Field(1.0, description="less voice activity than this: silent")
    min_asr_tokens: int = Field(20, description="fewer ASR tokens than this: too little speech")


class ClipConfig(BaseModel):
    """Merging ASR sentences into paragraph clips (PAPER.md section 3)."""

    model_config = ConfigDict(extra="forbid")
    min_seconds: float = Field(10.0, description="a paragraph closes at a sentence end once this long")
    max_seconds: float = Field(20.0, description="a paragraph never grows past this (unless one sentence is longer)")
    max_keyframes: int = Field(4, ge=0, description="at most this many keyframes per clip (0: no cap); the last and "
                                                    "the most changed are kept")


class OcrFilterConfig(BaseModel):
    """Which OCR lines become training text (PAPER.md section 4: OCR that repeats or carries nothing is removed).

    A line is kept when it reads like text: tesseract's mean word confidence reaches
    ``min_line_confidence`` and at least ``min_word_share`` of its letters are in words of
    the ``languages`` (word frequencies from the wordfreq package); a formula line (an
    operator among short symbols) needs only ``min_formula_confidence``. A line shown on
    the previous keyframe too is a repeat and kept once. A line near the bottom of the frame
    that repeats the words spoken at that time (``spoken_overlap``) is a burned-in caption: the
    narration is already the clip's ASR text, so it is dropped (``ocr_spoken``).
    """

    model_config = ConfigDict(extra="forbid")
    min_chars: int = Field(8, description="a keyframe whose kept OCR has fewer letters/digits carries nothing useful")
    repeat_similarity: float = Field(0.8, description="a line this similar to a previous frame's line is a repeat")
    min_line_confidence: float = Field(65, description="tesseract mean word confidence (0-100) a line needs")
    min_formula_confidence: float = Field(55.0, description=(
        "confidence a formula line (e.g. 'V = I x R': an operand first and last, no two operators in a row) needs"))
    min_word_share: float = Field(0.6, description="share of a line's letters that must be in dictionary words")
    min_zipf: float = Field(1.5, description="a token of 3+ letters is a word at this wordfreq Zipf frequency")
    languages: tuple[str, ...] = Field(("en",), description="languages of the dictionary test (wordfreq codes)")
    spoken_overlap: float = Field(0.7, ge=0.0, le=1.0, description=(
        "a line in the bottom caption_band of the frame is a burned-in caption, not slide text, when this share of "
        "its words (in order, each fuzzily) is among the ASR words spoken around the keyframe (0: off)"))
    spoken_min_words: int = Field(3, ge=1, description="a line needs this many words to be taken for a caption")
    caption_band: float = Field(0.35, ge=0.0, le=1.0, description="fraction of the frame's height, from the "
                                                                   "bottom, where captions are looked for")
    spoken_before: float = Field(3.0, ge=0.0, description="seconds before a keyframe's time its ASR words start")
    spoken_after: float = Field(10.0, ge=0.0, description="seconds after a keyframe's time its ASR words end (its "
                                                          "picture is taken in the state's first seconds)")


# What the training reader (train/data.py ReaderConfig, `textbook train`) keeps of one sample, so that a
# default sample is read whole: its images (12: ReaderConfig's default, the released training's
# mmc4_max_num_images) and its sequence length (2048 tokens, `--max-length 2048`: LLaVA-1.5's model_max_length;
# the reader's own default is the model's limit), counting each image as the processor expands it (64: one
# 512 px crop of SmolVLM-256M/500M, image_seq_len 64; the offline tiny model takes 7). pipeline.stats reports
# what a trainer at these settings would drop.
TRAIN_MAX_IMAGES = 12
TRAIN_MAX_LENGTH = 2048
TRAIN_IMAGE_TOKENS = 64


class PackConfig(BaseModel):
    """How interleaved videos become samples (PAPER.md section 5).

    The default splits each video at clip boundaries into samples that the training reader reads whole at
    its defaults (TRAIN_MAX_IMAGES images, TRAIN_MAX_LENGTH tokens with TRAIN_IMAGE_TOKENS per image):
    a 16-minute lecture is several samples, not one of 45 images of which the reader keeps 12.
    """

    model_config = ConfigDict(extra="forbid")
    mode: Literal["video", "split", "concat"] = Field(
        "split", description="one sample per video; split videos to max_tokens; or concatenate up to max_tokens")
    max_tokens: int = Field(TRAIN_MAX_LENGTH, description=(
        "a sample's sequence length as the training reader counts it: BOS and EOS, text tokens (ASR + OCR, "
        "one separator per text) and image_tokens per image; set it to the trainer's --max-length"))
    image_tokens: int = Field(TRAIN_IMAGE_TOKENS, ge=0, description=(
        "tokens one image takes in the trainer's sequence (its processor's expansion; 0: count text only), "
        "for the budget only: token_num always prices an image at 576 (LLaVA-1.5), as the released corpus does"))
    max_images: int = Field(TRAIN_MAX_IMAGES, ge=0, description=(
        "at most this many images per sample (0: no limit); set it to the trainer's --max-images"))
    eov_marker: str = Field("<|endofvideo|>", description="text placed between videos in concat mode")


class PipelineConfig(BaseModel):
    """Every setting of the deterministic pipeline (the paper's defaults), one section per stage; ``config_hash`` keys
    each stage's outputs by the sections it reads. Unknown keys are an error."""

    model_config = ConfigDict(extra="forbid")
    filters: FilterConfig = FilterConfig()
    asr: AsrOptions = Field(AsrOptions(), description=(
        "faster-whisper ASR: model, decoding, per-window language policy (foreign, language_*), the "
        "repetition filter (loop_*), and the audio track and level normalization (audio.*)"))
    keyframes: KeyframeOptions = KeyframeOptions()
    ocr: OcrOptions = OcrOptions()
    ocr_filter: OcrFilterConfig = OcrFilterConfig()
    clips: ClipConfig = ClipConfig()
    pack: PackConfig = PackConfig()
    tokenizer: str = Field("whisper", description="'whisper' (offline, shipped) or a tokenizer.json path")
    executor: Literal["local", "process", "ray"] = "local"
    overlap: bool = Field(True, description=(
        "local executor: transcribe one video while keyframes and OCR run on another (the flow's asr and "
        "visual lanes, pipeline/flow.py); false: one video at a time through every stage"))
    workers: int = Field(2, description="workers of the process executor")
    ray_address: str | None = Field(None, description="Ray cluster address (none: a local Ray)")
    # placement only: it never changes a result, so it is left out of the config a run id hashes
    pools: PoolConfig = Field(PoolConfig(), exclude=True, description=(
        "ray executor: an actor pool per heavy stage (size, num_cpus, num_gpus, resources, restarts; "
        "pipeline/pools.py), or a preset name: cpu (default), gpu1 (one GPU node), gpu8 (an 8-GPU node)"))

    @field_validator("pools", mode="before")
    @classmethod
    def _preset(cls, value):
        return pool_preset(value) if isinstance(value, str) else value

    @field_serializer("ocr")
    def _ocr_as_hashed(self, ocr: OcrOptions) -> dict:
        """The OCR section without its how-fast fields (``vlm_concurrency``): like ``pools``, out of the config
        a run id hashes and a run records, as ``config_hash`` leaves them out of the OCR stage's hash."""
        return _plain(ocr)


def _plain(value):
    """A config part as JSON-able data; a dataclass field marked ``metadata={"hash": False}`` (how a step runs,
    never what it gives: tools.ocr.OcrOptions.vlm_concurrency) is left out, so setting it redoes nothing."""
    if is_dataclass(value):
        return {k: v for k, v in asdict(value).items()
                if next(f for f in fields(value) if f.name == k).metadata.get("hash", True)}
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    return value


def config_hash(*parts) -> str:
    """A short stable hash of config parts (models, dataclasses, dicts, strings)."""
    blob = json.dumps([_plain(p) for p in parts], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]
