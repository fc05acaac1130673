"""`textbook estimate`: what a run will take, before anything is paid.

From a run's sizes (knowledge points, videos found, transcribed and kept, their hours, clips and
keyframes) and per-stage rates it projects:

- LLM calls per role and their input/output tokens: the planner (goal, taxonomy, one query call per
  knowledge point per round), the metadata judge (one per candidate found), the two transcript judges
  (one each per video transcribed), the polisher and the clip judge (one each per clip);
- search quota units (YouTube Data API: search.list 100 units, videos.list 1 per page, 1 per comment
  thread fetched; a default project gets 10,000 a day);
- device-hours of each heavy stage (probe, ASR, keyframes, OCR), GPU or CPU;
- wall time on a given cluster (GPUs, CPU cores, LLM calls/s at the endpoint): the stages of a build
  overlap (agents/flow.py), so the run takes at least as long as its busiest resource; the serial sum
  is the bound when nothing overlaps.

The order of work follows the build's flow: every candidate found is judged on its metadata; a video the
judge accepts is downloaded, probed and transcribed; the two transcript judges then decide whether it
goes on to keyframes, OCR and clips. So ASR runs over the hours of every video transcribed, keyframes
and OCR over the hours of the videos kept.

Every figure carries its source: ``measured here`` (a small calibration: `textbook process` on a
generated narrated video), ``run RUN_ID`` (the stage seconds in ``stage_status`` and the tokens and
latency in ``llm_calls`` of a previous run), ``paper`` (arXiv 2501.00958's corpus: 22,697 h, 4M clips,
6.58M keyframes, 75K of 159,565 videos kept), ``published`` (the field's rates, issue 19),
``prompt`` (our prompt templates and answer schemas with typical values, 4 characters a token as the
gateway estimates) or ``given`` (a flag).

Records: :class:`Figure`, :class:`StageRate`, :class:`RoleRate`, :class:`Rates`, :class:`Design`,
:class:`Sizes`, :class:`Cluster` in; :class:`Estimate` out (``project``). Errors: :class:`EstimateError`
(one line: bad sizes, a run with no timings).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from tools.search import UNIT_COST

# The paper's corpus (PAPER.md sections 1-6; arXiv 2501.00958). ``found`` is the count after its
# metadata filter (it does not report the raw search results, at most 3,915 points x 50 = 195,750).
PAPER = {"points": 3915, "found": 159_565, "kept": 75_000, "hours_kept": 22_697.0, "clips": 4_000_000,
         "keyframes": 6_580_000, "asr_tokens": 258_000_000, "ocr_tokens": 500_000_000, "results_per_query": 50}
PAPER_SOURCE = "paper (arXiv 2501.00958)"

# whisper large-v3 on one GPU: ~100 audio-hours per GPU-hour (issue 19; 66-120 reported for
# Whisper/Parakeet batch runs, WhisperX ~70x real time with large-v2)
ASR_GPU_AUDIO_HOURS_PER_GPU_HOUR = 100.0
ASR_GPU_SOURCE = "published: whisper large-v3 ~100 audio-hours per GPU-hour (field figures, issue 19)"
# the gateway's measured ceiling (issue 19, docs/benchmarks.md): 741.7 paid calls/s with the stand-in at zero
# latency, 16 threads (56.9% of a bare HTTP client to the same stand-in); it was 32 before the store's queued writes
GATEWAY_CALLS_PER_S = 741.7
GATEWAY_SOURCE = "measured: the gateway's ceiling, 742 paid calls/s at zero latency, 16 threads (issue 19)"
DAILY_SEARCH_UNITS = 10_000
CHARS_PER_TOKEN = 4  # agents.llm._estimate_tokens

STAGE_ORDER = ("probe", "asr", "keyframes", "ocr")
# a keyframe as a vision model's input: Qwen2-VL's rule, one token per 28x28 pixels, at 1280x720
IMAGE_TOKENS = 1280 * 720 // (28 * 28)
IMAGE_SOURCE = "Qwen2-VL's rule (a token per 28x28 px) at 1280x720"


class EstimateError(Exception):
    """Bad input to an estimate (sizes that contradict each other, a run without timings): one line."""


@dataclass(frozen=True)
class Figure:
    """A number and where it came from (``measured here``, ``run RUN_ID``, ``paper``, ``published``, ...)."""

    value: float
    source: str


@dataclass(frozen=True)
class StageRate:
    """Device time of one heavy stage: ``seconds`` of one worker per ``unit`` of work.

    ``unit``: ``media_hour`` (an hour of video), ``video`` (probe: its cost hardly grows with length) or
    ``keyframe`` (OCR); ``device``: ``gpu`` (a worker is one GPU)
    or ``cpu`` (a worker holds ``cores`` CPU cores: whisper on CPU uses several, ffmpeg and tesseract one)."""

    stage: str
    device: str
    unit: str
    seconds: float
    source: str
    cores: int = 1


@dataclass(frozen=True)
class RoleRate:
    """Mean tokens of one LLM call of ``role`` (input: prompt, schema and values; output: the answer)."""

    role: str
    input_tokens: float
    output_tokens: float
    source: str


@dataclass
class Rates:
    """Everything an estimate multiplies sizes by.

    ``stages``: per stage; ASR may have a ``gpu`` and a ``cpu`` rate (the cluster's GPUs pick).
    ``clips_per_hour``, ``keyframes_per_hour``: yields of a kept hour of video; ``minutes_per_video``:
    mean length; ``metadata_keep``: share of candidates the metadata judge accepts (downloaded);
    ``transcript_keep``: share of transcribed videos the transcript judges keep; ``llm_calls_per_s``: the
    endpoint's paid calls per second through the gateway."""

    stages: list[StageRate]
    roles: dict[str, RoleRate]
    clips_per_hour: Figure
    keyframes_per_hour: Figure
    minutes_per_video: Figure
    metadata_keep: Figure
    transcript_keep: Figure
    llm_calls_per_s: Figure

    def stage(self, name: str, device: str | None = None) -> StageRate | None:
        """The rate of stage ``name`` (on ``device`` when given), or None when none is known."""
        return next((s for s in self.stages if s.stage == name and (device is None or s.device == device)), None)


@dataclass(frozen=True)
class Design:
    """What the run asks per item (agents/config.py's AgentConfig): queries per point and round, results
    per query, rounds, top comments fetched per result (YouTube), two transcript judges, a rewrite and a
    clip judgment per clip; ``visual_filter``: a caption of each clip's keyframes (the paper's visual clip filter,
    agents/visual_filter.py; at most ``caption_images`` keyframes a request); ``planner``: whether a goal is
    planned (interpret + taxonomy + queries);
    ``search``: whether knowledge points are searched at all; ``youtube``: whether through the YouTube Data
    API (quota units; yt-dlp's search and local libraries cost none); ``llm``: whether any model is asked
    (`textbook process` asks none)."""

    queries_per_point: int = 1
    results_per_query: int = 10
    rounds: int = 1
    comments: int = 5
    transcript_judges: int = 2
    polish: bool = True
    clip_judge: bool = True
    visual_filter: bool = False
    caption_images: int = 4
    planner: bool = True
    search: bool = True
    llm: bool = True
    youtube: bool = True


@dataclass
class Sizes:
    """How much work: ``points`` knowledge points; ``found`` candidates (each judged on its metadata);
    ``transcribed`` videos (downloaded, ASR, judged on their transcript) and their ``hours_transcribed``;
    ``kept`` videos (keyframes, OCR, clips) and ``hours_kept``; ``clips`` and ``keyframes`` of the kept
    videos. ``sources``: field name -> where its figure came from."""

    points: int
    found: int
    transcribed: int
    kept: int
    hours_transcribed: float
    hours_kept: float
    clips: int
    keyframes: int
    sources: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Cluster:
    """The machines: ``gpus`` (0: ASR on CPU), ``cpu_cores`` for the CPU stages, the LLM endpoint's
    ``llm_calls_per_s`` (a Figure: given or derived), ``daily_search_units`` of the search API."""

    gpus: int
    cpu_cores: int
    llm_calls_per_s: Figure
    daily_search_units: int = DAILY_SEARCH_UNITS


@dataclass(frozen=True)
class RoleEstimate:
    role: str
    calls: int
    input_tokens: int
    output_tokens: int
    source: str


@dataclass(frozen=True)
class StageEstimate:
    """``work`` units (media hours or keyframes) of ``stage`` on ``device``: ``device_hours`` of one worker
    (GPU-hours, or CPU-hours counting the worker's cores)."""

    stage: str
    device: str
    work: float
    unit: str
    device_hours: float
    source: str


@dataclass
class Estimate:
    """The projection (``project``). Hours are device-hours (GPU or CPU core); ``bounds``: hours each
    resource needs on the cluster; ``wall_hours``: the largest (stages overlap); ``serial_hours``: their
    sum (nothing overlaps); ``bottleneck``: the resource that sets the wall time."""

    sizes: Sizes
    design: Design
    cluster: Cluster
    roles: list[RoleEstimate]
    stages: list[StageEstimate]
    queries: int
    search_units: int
    search_days: float
    gpu_hours: float
    cpu_hours: float
    bounds: dict[str, float]
    wall_hours: float
    serial_hours: float
    bottleneck: str
    notes: list[str] = field(default_factory=list)

    @property
    def llm_calls(self) -> int:
        return sum(r.calls for r in self.roles)

    @property
    def input_tokens(self) -> int:
        return sum(r.input_tokens for r in self.roles)

    @property
    def output_tokens(self) -> int:
        return sum(r.output_tokens for r in self.roles)

    def to_json(self) -> dict:
        out = asdict(self)
        out.update(llm_calls=self.llm_calls, input_tokens=self.input_tokens, output_tokens=self.output_tokens)
        return out


# -- the arithmetic ----------------------------------------------------------------------------------------
def search_units_per_query(design: Design) -> int:
    """Quota units of one YouTube search of ``design.results_per_query`` results: a search.list and a
    videos.list page per 50 results, and one commentThreads.list per result when comments are fetched
    (the same sum as agents.graph._search_units)."""
    pages = -(-design.results_per_query // 50)
    comments = design.results_per_query * UNIT_COST["commentThreads.list"] if design.comments > 0 else 0
    return pages * (UNIT_COST["search.list"] + UNIT_COST["videos.list"]) + comments


def role_calls(sizes: Sizes, design: Design) -> dict[str, int]:
    """LLM calls per role: planner 2 + one per point per round (with a goal), metadata judge one per
    candidate found, each transcript judge one per video transcribed, polisher and clip judge one per clip, the
    captioner one per clip with the visual filter (the paper captioned every clip; ours skips clips whose frames
    the rules already drop, so this is the most it asks)."""
    if not design.llm:
        return {}
    judges = ("transcript_judge_a", "transcript_judge_b")[:design.transcript_judges]
    return {"planner": (2 + sizes.points * design.rounds) if design.planner else 0,
            "metadata_judge": sizes.found,
            **{j: sizes.transcribed for j in judges},
            "polisher": sizes.clips if design.polish else 0,
            "clip_judge": sizes.clips if design.clip_judge else 0,
            **({"captioner": sizes.clips} if design.visual_filter else {})}


def caption_rate(rates: Rates, sizes: Sizes, design: Design) -> RoleRate:
    """The captioner's tokens per call: its prompt, and the clip's keyframes (``sizes.keyframes / sizes.clips``, at
    most ``design.caption_images``) at ``IMAGE_TOKENS`` each; the answer a caption of about 60 tokens."""
    base = rates.roles.get("captioner") or RoleRate("captioner", round(_prompt_tokens("caption", None), 1), 60.0,
                                                    "prompt: template")
    images = min(float(design.caption_images), sizes.keyframes / sizes.clips) if sizes.clips else 0.0
    return RoleRate("captioner", round(base.input_tokens + images * IMAGE_TOKENS, 1), base.output_tokens,
                    f"{base.source}; {images:.2f} keyframes a clip x {IMAGE_TOKENS} tokens ({IMAGE_SOURCE})")


def project(sizes: Sizes, rates: Rates, design: Design, cluster: Cluster) -> Estimate:
    """Multiply ``sizes`` by ``rates`` under ``design`` and spread the work over ``cluster``.

    Raises EstimateError when the cluster has no CPU core, or no LLM throughput or search quota while there is
    work for it."""
    if cluster.cpu_cores < 1:
        raise EstimateError(f"--cpus must be at least 1 (got {cluster.cpu_cores})")
    if cluster.gpus < 0:
        raise EstimateError(f"--gpus must be 0 or more (got {cluster.gpus})")
    notes: list[str] = []
    roles = []
    for role, calls in role_calls(sizes, design).items():
        rate = caption_rate(rates, sizes, design) if role == "captioner" else rates.roles.get(role)
        if rate is None:
            raise EstimateError(f"no token rate for role {role}")
        roles.append(RoleEstimate(role, calls, round(calls * rate.input_tokens), round(calls * rate.output_tokens),
                                  rate.source))
    queries = sizes.points * design.queries_per_point * design.rounds if design.search else 0
    units = queries * search_units_per_query(design) if design.youtube else 0
    # ASR runs before the transcript judges (on every video transcribed), keyframes and OCR after (kept only)
    hours = {"probe": sizes.hours_transcribed, "asr": sizes.hours_transcribed, "keyframes": sizes.hours_kept,
             "ocr": sizes.hours_kept}
    counts = {"probe": sizes.transcribed, "asr": sizes.transcribed, "keyframes": sizes.kept, "ocr": sizes.kept}
    stages = []
    for name in STAGE_ORDER:
        rate = (rates.stage(name, "gpu") if cluster.gpus > 0 else None) or rates.stage(name, "cpu")
        if rate is None:
            notes.append(f"{name}: no rate (not measured: pass --from-run, or leave out --no-calibrate)")
            continue
        amount = {"keyframe": sizes.keyframes, "video": counts[name]}.get(rate.unit, hours[name])
        unit = rate.unit
        device_hours = amount * rate.seconds * (rate.cores if rate.device == "cpu" else 1) / 3600
        stages.append(StageEstimate(name, rate.device, amount, unit, device_hours, rate.source))
    gpu_hours = sum(s.device_hours for s in stages if s.device == "gpu")
    cpu_hours = sum(s.device_hours for s in stages if s.device == "cpu")
    calls = sum(r.calls for r in roles)
    if units and cluster.daily_search_units <= 0:
        raise EstimateError(f"the daily search quota must be above 0 (got {cluster.daily_search_units})")
    if calls and cluster.llm_calls_per_s.value <= 0:
        raise EstimateError(f"--llm-rps must be above 0 (got {cluster.llm_calls_per_s.value})")
    bounds = {"gpu": gpu_hours / cluster.gpus if cluster.gpus else 0.0,
              "cpu": cpu_hours / cluster.cpu_cores,
              "llm": calls / cluster.llm_calls_per_s.value / 3600 if calls else 0.0,
              # a daily quota, not a rate: what the first day's quota does not cover waits for the next days
              "search": (math.ceil(units / cluster.daily_search_units) - 1) * 24.0 if units else 0.0}
    bottleneck = max(bounds, key=bounds.get)
    return Estimate(sizes=sizes, design=design, cluster=cluster, roles=roles, stages=stages, queries=queries,
                    search_units=units, search_days=units / cluster.daily_search_units, gpu_hours=gpu_hours,
                    cpu_hours=cpu_hours, bounds=bounds, wall_hours=bounds[bottleneck],
                    serial_hours=sum(bounds.values()), bottleneck=bottleneck, notes=notes)


# -- sizes -------------------------------------------------------------------------------------------------
def derive_sizes(rates: Rates, *, points: int | None = None, found: int | None = None,
                 transcribed: int | None = None, kept: int | None = None, hours: float | None = None,
                 hours_transcribed: float | None = None, clips: int | None = None, keyframes: int | None = None,
                 per_point: int | None = None, candidates_per_point: int | None = None,
                 max_videos: int | None = None, given: str = "given") -> Sizes:
    """Fill the sizes not given from the ones given and the rates' yields.

    ``kept``: given, else ``points * per_point`` (capped by ``max_videos``), else ``transcribed *
    transcript_keep``; ``transcribed``: given, else ``kept / transcript_keep`` (the build downloads
    videos in rank order until a point has its ``per_point``), else ``found * metadata_keep``; ``found``:
    given, else ``points * candidates_per_point``, else ``transcribed / metadata_keep``; ``hours`` (of the
    kept videos): given, else ``kept * minutes_per_video / 60``; the transcribed videos' hours at the same
    mean length unless given; ``clips``, ``keyframes``: given, else ``hours * per-hour yield``.
    Raises EstimateError when nothing sizes the run or the sizes contradict each other."""
    _check_size_inputs(rates, (("points", points), ("videos", found), ("transcribed", transcribed),
                               ("kept", kept), ("hours", hours), ("hours_transcribed", hours_transcribed),
                               ("clips", clips), ("keyframes", keyframes), ("per_point", per_point)))
    # src: field name -> where its figure came from, in the order the figures are settled
    src = {name: given for name, v in (("points", points), ("found", found), ("transcribed", transcribed))
           if v is not None}
    if kept is not None:
        src["kept"] = given
    else:
        kept, src["kept"] = _derived_kept(rates, points, per_point, max_videos, transcribed, found)
    if transcribed is None:
        transcribed, src["transcribed"] = _derived_transcribed(rates, kept, found)
    if found is None:
        found, src["found"] = _derived_found(rates, transcribed, points, candidates_per_point)
    if points is None:
        points, src["points"] = ((math.ceil(kept / per_point), f"kept / per_point ({per_point})") if per_point
                                 else (0, "none: no planning"))
    if not kept <= transcribed <= found:
        raise EstimateError(f"sizes contradict each other: kept {kept} <= transcribed {transcribed} <= found "
                            f"{found} must hold")
    minutes = rates.minutes_per_video
    if hours is None:
        hours, src["hours_kept"] = kept * minutes.value / 60, f"kept x {minutes.value:.1f} min ({minutes.source})"
    else:
        src["hours_kept"] = given
    if hours_transcribed is None:
        hours_transcribed, src["hours_transcribed"] = _derived_hours_transcribed(rates, kept, transcribed, hours)
    else:
        src["hours_transcribed"] = given
    if hours_transcribed < hours:
        raise EstimateError(f"hours transcribed ({hours_transcribed:.1f}) below hours kept ({hours:.1f})")
    clips, src["clips"] = (clips, given) if clips is not None else \
        _per_hour_yield(hours, rates.clips_per_hour, "clips/h")
    keyframes, src["keyframes"] = (keyframes, given) if keyframes is not None else \
        _per_hour_yield(hours, rates.keyframes_per_hour, "keyframes/h")
    return Sizes(points=points, found=found, transcribed=transcribed, kept=kept, hours_transcribed=hours_transcribed,
                 hours_kept=hours, clips=clips, keyframes=keyframes, sources=src)


def _check_size_inputs(rates: Rates, values: tuple[tuple[str, float | None], ...]) -> None:
    """Raise EstimateError for a negative size given (named as its flag) or a keep share outside (0, 1]."""
    for name, v in values:
        if v is not None and v < 0:
            raise EstimateError(f"--{name.replace('_', '-')} must be 0 or more (got {v})")
    mk, tk = rates.metadata_keep, rates.transcript_keep
    if not 0 < mk.value <= 1 or not 0 < tk.value <= 1:
        raise EstimateError(f"the keep shares must be in (0, 1] (metadata {mk.value}, transcript {tk.value})")


def _derived_kept(rates: Rates, points: int | None, per_point: int | None, max_videos: int | None,
                  transcribed: int | None, found: int | None) -> tuple[int, str]:
    """(kept videos, how) when not given: ``points * per_point`` capped by ``max_videos``, else the videos
    transcribed or found times the keep shares after them. Raises EstimateError when none of these is given."""
    mk, tk = rates.metadata_keep, rates.transcript_keep
    if points is not None and per_point:
        if max_videos is not None and points * per_point > max_videos:
            return max_videos, f"budgets.max_videos ({max_videos})"
        return points * per_point, f"points x per_point ({per_point})"
    if transcribed is not None:
        return round(transcribed * tk.value), f"transcribed x transcript keep {tk.value:.3f} ({tk.source})"
    if found is not None:
        return (round(found * mk.value * tk.value),
                f"found x metadata keep {mk.value:.3f} x transcript keep {tk.value:.3f}")
    raise EstimateError("nothing sizes the run: give a goal, video paths, or --videos/--kept/--points")


def _derived_transcribed(rates: Rates, kept: int, found: int | None) -> tuple[int, str]:
    """(videos transcribed, how) when not given: the build downloads metadata-accepted videos in rank order
    until each point has its per_point, so ``kept / transcript_keep``, at most ``found * metadata_keep``."""
    mk, tk = rates.metadata_keep, rates.transcript_keep
    if found is not None and found * mk.value < math.ceil(kept / tk.value):
        return math.floor(found * mk.value), f"found x metadata keep {mk.value:.3f} ({mk.source})"
    return math.ceil(kept / tk.value), f"kept / transcript keep {tk.value:.3f} ({tk.source})"


def _derived_found(rates: Rates, transcribed: int, points: int | None,
                   candidates_per_point: int | None) -> tuple[int, str]:
    """(candidates found, how) when not given: ``transcribed / metadata_keep``, at least ``points *
    candidates_per_point`` (what the searches return)."""
    mk = rates.metadata_keep
    found = math.ceil(transcribed / mk.value)
    if points is not None and candidates_per_point and points * candidates_per_point > found:
        return points * candidates_per_point, (f"points x {candidates_per_point} candidates a point "
                                               "(queries x results x rounds)")
    return found, f"transcribed / metadata keep {mk.value:.3f} ({mk.source})"


def _derived_hours_transcribed(rates: Rates, kept: int, transcribed: int, hours_kept: float) -> tuple[float, str]:
    """(hours of the videos transcribed, how) when not given: at the kept videos' mean length, or at the
    rates' minutes per video when none is kept."""
    minutes = rates.minutes_per_video
    if kept:
        return transcribed * (hours_kept / kept), "transcribed x the kept videos' mean length"
    return transcribed * (minutes.value / 60), f"transcribed x {minutes.value:.1f} min ({minutes.source})"


def _per_hour_yield(hours: float, per_hour: Figure, unit: str) -> tuple[int, str]:
    """(count, how) of a yield of the kept ``hours`` at ``per_hour`` (clips or keyframes an hour)."""
    return round(hours * per_hour.value), f"hours x {per_hour.value:.1f} {unit} ({per_hour.source})"


def video_hours(paths: list[Path]) -> tuple[int, float]:
    """(videos, hours) of the video files ``paths``, their durations summed from ffprobe (tools.media.probe).
    Raises ToolError (kind corrupt, missing_tool, ...) for a file ffprobe cannot read."""
    from tools.media import probe

    seconds = 0.0
    for p in paths:
        seconds += probe(p).duration or 0.0
    return len(paths), seconds / 3600


# -- rates -------------------------------------------------------------------------------------------------
# typical characters of each prompt variable (the rest: 20), from the paper's averages where it has them
_TYPICAL_CHARS = {
    "paragraph": PAPER["asr_tokens"] / PAPER["clips"] * CHARS_PER_TOKEN,   # 64.5 ASR tokens a clip
    "ocr": PAPER["ocr_tokens"] / PAPER["clips"] * CHARS_PER_TOKEN,         # 125 OCR tokens a clip
    "terms": 200, "transcript": 6000,                                      # agent.transcript_chars
    "description": 1000, "comments": 5 * 100, "title": 60, "tags": 80, "path": 90, "example": 400,
    "library": 0, "library_note": 0, "library_rule": 0, "previous": 0, "goal": 60,
}
# typical answer tokens (JSON): a verdict with two short reasons; a rewrite as long as the paragraph
_ANSWER_TOKENS = {"metadata_judge": 60, "transcript_judge_a": 70, "transcript_judge_b": 70, "clip_judge": 45,
                  "polisher": PAPER["asr_tokens"] / PAPER["clips"] + 10}
_PROMPT_OF = {"metadata_judge": ("metadata_judge", "MetadataVerdict"),
              "transcript_judge_a": ("transcript_judge", "TranscriptVerdict"),
              "transcript_judge_b": ("transcript_judge", "TranscriptVerdict"),
              "polisher": ("polish", "Polished"), "clip_judge": ("clip_judge", "ClipDecision")}


def _prompt_tokens(name: str, schema: str | None) -> float:
    import prompts
    from agents import schemas

    p = prompts.load(name)
    values = {v: "x" * int(_TYPICAL_CHARS.get(v, 20)) for v in p.variables()}
    chars = sum(len(m["content"]) for m in p.render(values))
    if schema:
        chars += len(json.dumps(getattr(schemas, schema).model_json_schema()))
    return chars / CHARS_PER_TOKEN


def prompt_roles(points: int, queries_per_point: int = 1) -> dict[str, RoleRate]:
    """Token rates of every role from our prompt templates and answer schemas filled with typical values
    (the paper's ASR and OCR tokens per clip; a 6,000-character transcript excerpt), at 4 characters a
    token; answers: a short JSON verdict, a rewrite as long as its paragraph, a taxonomy of ``points``
    points (about 12 tokens each). The planner's mean is over its 2 + ``points`` calls."""
    from agents import schemas

    out = {}
    for role, (name, schema) in _PROMPT_OF.items():
        out[role] = RoleRate(role, round(_prompt_tokens(name, schema), 1), _ANSWER_TOKENS[role],
                             "prompt: template + schema, typical values")
    goal_in = _prompt_tokens("goal", "GoalSpec")
    tax_in = _prompt_tokens("taxonomy", None) + len(json.dumps(schemas.Taxonomy.model_json_schema())) / 4
    q_in = _prompt_tokens("queries", None) + len(json.dumps(schemas.sized_queries(queries_per_point)
                                                             .model_json_schema())) / CHARS_PER_TOKEN
    calls = 2 + points
    mean_in = (goal_in + tax_in + points * q_in) / calls
    mean_out = (40 + 12 * points + points * 12 * queries_per_point) / calls
    out["planner"] = RoleRate("planner", round(mean_in, 1), round(mean_out, 1),
                              "prompt: goal + taxonomy + queries per point, typical values")
    return out


def default_rates(points: int = 0, queries_per_point: int = 1) -> Rates:
    """The rates where nothing is measured: the paper's yields, the published GPU ASR rate, our prompts'
    token sizes, the gateway's measured ceiling; no CPU stage rate (``calibrate`` or ``rates_from_run``)."""
    p = PAPER
    return Rates(
        stages=[StageRate("asr", "gpu", "media_hour", 3600 / ASR_GPU_AUDIO_HOURS_PER_GPU_HOUR, ASR_GPU_SOURCE)],
        roles=prompt_roles(points, queries_per_point),
        clips_per_hour=Figure(p["clips"] / p["hours_kept"], PAPER_SOURCE),
        keyframes_per_hour=Figure(p["keyframes"] / p["hours_kept"], PAPER_SOURCE),
        minutes_per_video=Figure(p["hours_kept"] * 60 / p["kept"], PAPER_SOURCE),
        metadata_keep=Figure(1.0, "paper: its 159,565 is the count after the metadata filter"),
        transcript_keep=Figure(p["kept"] / p["found"], PAPER_SOURCE),
        llm_calls_per_s=Figure(GATEWAY_CALLS_PER_S, GATEWAY_SOURCE))


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def rates_from_run(store, run_id: str, base: Rates, label: str | None = None) -> Rates:
    """``base`` with what run ``run_id`` of ``store`` (a store.Store) measured put in: each heavy stage's
    seconds (``stage_status.seconds`` of the run's videos at the config hashes the run used) per video
    (probe), per media hour (ASR, keyframes; over ``videos.duration``) and per keyframe (OCR); clips,
    keyframes and minutes per kept video; the metadata judge's accept share and the transcript judges'
    keep share (a build); each role's mean paid tokens (``llm_calls`` not served from the cache); the
    endpoint's calls/s (its concurrency over the mean latency, at most the gateway's ceiling).

    Raises EstimateError when the run does not exist or recorded no stage timings."""
    if not store.scalar("SELECT count(*) FROM runs WHERE run_id = ?", [run_id]):
        raise EstimateError(f"no run {run_id} in {store.path}")
    label = label or f"run {run_id}"
    config = json.loads(store.run(run_id)["config"] or "{}")
    stages = _stage_rates_from_run(store, run_id, config, base.stages, label)
    return replace(base, stages=stages, **_yields_from_run(store, run_id, label),
                   **_keep_shares_from_run(store, run_id, label),
                   **_llm_rates_from_run(store, run_id, config, base.roles, label))


def _with_rate(stages: list[StageRate], rate: StageRate) -> list[StageRate]:
    """``stages`` with ``rate`` in place of any rate of the same stage and device (put last)."""
    return [s for s in stages if not (s.stage == rate.stage and s.device == rate.device)] + [rate]


def _asr_options_of_run(store, run_id: str, config: dict) -> dict:
    """The options ASR really ran with in run ``run_id`` (device resolved from auto), else the run's config's."""
    used = store.rows("SELECT t.options FROM run_videos r JOIN transcripts t ON t.video_id = r.video_id "
                      "AND t.config_hash = r.asr_hash WHERE r.run_id = ? LIMIT 1", [run_id])
    return json.loads(used[0]["options"] or "{}") if used else (config.get("pipeline") or config).get("asr", {})


def _stage_timings(store, run_id: str) -> dict[str, dict]:
    """Stage name -> the seconds, media seconds and video count of run ``run_id``'s videos that went through
    it (at the config hashes the run used). Raises EstimateError when the run recorded no stage timings."""
    timed = store.rows(
        "SELECT s.stage, sum(s.seconds) AS seconds, sum(v.duration) AS media_s, count(*) AS videos "
        "FROM run_videos r JOIN videos v ON v.video_id = r.video_id "
        "JOIN stage_status s ON s.video_id = r.video_id AND s.status = 'done' AND s.seconds IS NOT NULL "
        " AND s.config_hash = CASE s.stage WHEN 'asr' THEN coalesce(r.asr_hash, s.config_hash) "
        "   WHEN 'keyframes' THEN coalesce(r.keyframes_hash, s.config_hash) "
        "   WHEN 'ocr' THEN coalesce(r.ocr_hash, s.config_hash) ELSE s.config_hash END "
        "WHERE r.run_id = ? AND v.duration > 0 GROUP BY s.stage", [run_id])
    if not timed:
        raise EstimateError(f"run {run_id} in {store.path} recorded no stage timings (no video went through a "
                            "stage)")
    return {r["stage"]: r for r in timed}


def _stage_rates_from_run(store, run_id: str, config: dict, base: list[StageRate], label: str) -> list[StageRate]:
    """``base`` with the stage rates run ``run_id`` measured: probe per video, ASR and keyframes per media
    hour (ASR on the device and threads it ran with), OCR per keyframe. Raises EstimateError (no timings)."""
    asr_opts = _asr_options_of_run(store, run_id, config)
    on_gpu = str(asr_opts.get("device", "cpu")) == "cuda"
    threads = int(asr_opts.get("cpu_threads") or 0) or (os.cpu_count() or 1)
    by_stage = _stage_timings(store, run_id)
    stages = list(base)
    if by_stage.get("probe"):
        r = by_stage["probe"]
        stages = _with_rate(stages, StageRate("probe", "cpu", "video", r["seconds"] / r["videos"],
                                              f"{label}: {_count(r['videos'], 'video')}"))
    for name in ("asr", "keyframes"):
        r = by_stage.get(name)
        if r:
            device = "gpu" if name == "asr" and on_gpu else "cpu"
            cores = threads if name == "asr" and not on_gpu else 1
            stages = _with_rate(stages, StageRate(
                name, device, "media_hour", r["seconds"] / (r["media_s"] / 3600),
                f"{label}: {_count(r['videos'], 'video')}, {r['media_s'] / 60:.1f} min"
                + ("" if name != "asr" else f", {asr_opts.get('model', 'whisper')} on "
                   + ("a GPU" if on_gpu else f"{cores} threads")), cores))
    frames = store.scalar("SELECT count(*) FROM run_videos r JOIN ocr o ON o.video_id = r.video_id "
                          "AND o.config_hash = r.ocr_hash WHERE r.run_id = ?", [run_id])
    if by_stage.get("ocr") and frames:
        stages = _with_rate(stages, StageRate("ocr", "cpu", "keyframe", by_stage["ocr"]["seconds"] / frames,
                                              f"{label}: {_count(frames, 'keyframe')}"))
    return stages


def _yields_from_run(store, run_id: str, label: str) -> dict[str, Figure]:
    """``clips_per_hour``, ``keyframes_per_hour`` and ``minutes_per_video`` of run ``run_id``'s kept videos;
    empty when it kept none (or none with a duration)."""
    kept = store.rows(
        "SELECT count(*) AS videos, sum(v.duration) AS media_s, "
        " (SELECT count(*) FROM run_videos r2 JOIN clips c ON c.video_id = r2.video_id "
        "  AND c.config_hash = r2.clips_hash WHERE r2.run_id = ? AND r2.status = 'kept') AS clips, "
        " (SELECT count(*) FROM run_videos r3 JOIN keyframes k ON k.video_id = r3.video_id "
        "  AND k.config_hash = r3.keyframes_hash WHERE r3.run_id = ? AND r3.status = 'kept') AS keyframes "
        "FROM run_videos r JOIN videos v ON v.video_id = r.video_id WHERE r.run_id = ? AND r.status = 'kept' "
        "AND v.duration > 0", [run_id, run_id, run_id])[0]
    if not (kept["videos"] and kept["media_s"]):
        return {}
    hours = kept["media_s"] / 3600
    where = f"{label}: {_count(kept['videos'], 'kept video')}, {kept['media_s'] / 60:.1f} min"
    return {"clips_per_hour": Figure(kept["clips"] / hours, where),
            "keyframes_per_hour": Figure(kept["keyframes"] / hours, where),
            "minutes_per_video": Figure(kept["media_s"] / 60 / kept["videos"], where)}


def _keep_shares_from_run(store, run_id: str, label: str) -> dict[str, Figure]:
    """``transcript_keep`` (candidates accepted of those judged on their transcript) and ``metadata_keep``
    (metadata verdicts that accept) of run ``run_id``; a share of 0 would size nothing, so it is left out."""
    out = {}
    judged = store.rows("SELECT count(*) FILTER (WHERE status = 'accepted') AS kept, "
                        "count(*) FILTER (WHERE status IN ('accepted', 'transcript_rejected')) AS judged "
                        "FROM candidates WHERE run_id = ?", [run_id])[0]
    if judged["kept"]:
        out["transcript_keep"] = Figure(judged["kept"] / judged["judged"],
                                        f"{label}: {judged['kept']} of {judged['judged']} transcripts kept")
    meta = store.rows("SELECT count(*) FILTER (WHERE verdict = 'accept') AS accepted, count(*) AS judged "
                      "FROM judgments WHERE run_id = ? AND kind = 'metadata'", [run_id])[0]
    if meta["accepted"]:
        out["metadata_keep"] = Figure(meta["accepted"] / meta["judged"],
                                      f"{label}: {meta['accepted']} of {meta['judged']} metadata verdicts accept")
    return out


def _llm_rates_from_run(store, run_id: str, config: dict, base: dict[str, RoleRate], label: str) -> dict:
    """``roles``: ``base`` with each known role's mean tokens over run ``run_id``'s paid calls (not cached,
    no error); ``llm_calls_per_s``, when it paid for calls with a latency: the run's concurrency over their
    mean latency, at most the gateway's ceiling."""
    roles = dict(base)
    calls = store.rows("SELECT role, count(*) AS n, avg(input_tokens) AS tin, avg(output_tokens) AS tout, "
                       "avg(latency_s) AS latency FROM llm_calls WHERE run_id = ? AND NOT cached AND error IS NULL "
                       "GROUP BY role", [run_id])
    for c in calls:
        if c["role"] in roles:
            roles[c["role"]] = RoleRate(c["role"], c["tin"], c["tout"], f"{label}: {c['n']} paid calls")
    out: dict = {"roles": roles}
    paid = sum(c["n"] for c in calls)
    if paid:
        latency = sum(c["latency"] * c["n"] for c in calls) / paid
        concurrency = int(config.get("agent", {}).get("llm", {}).get("concurrency") or 16)
        if latency > 0:
            rps = min(concurrency / latency, GATEWAY_CALLS_PER_S)
            out["llm_calls_per_s"] = Figure(rps, f"{label}: {concurrency} in flight / {latency:.2f} s mean latency"
                                            + (" (capped at the gateway's ceiling)" if rps == GATEWAY_CALLS_PER_S
                                               else ""))
    return out


# -- calibration ---------------------------------------------------------------------------------------------
_SLIDES = (("Newton's Second Law", "Newton's second law says that force equals mass times acceleration. A larger "
                                   "force gives the same mass a larger acceleration."),
           ("Acceleration", "Acceleration is the change of velocity over time. We measure it in metres per second "
                            "squared, and a heavier cart needs more force."),
           ("Friction", "Friction is a force that opposes motion. A rough surface gives more friction than a "
                        "smooth one, so the cart slows down sooner."),
           ("Net Force", "The net force is the sum of all forces on a body. When the forces balance, the net force "
                         "is zero and the velocity does not change."))


def calibration_video(folder: Path) -> Path:
    """Render a ~40 s narrated four-slide lesson (Pillow slides, espeak-ng speech, ffmpeg libx264 + AAC)
    into ``folder``; returns its path. Raises EstimateError when espeak-ng or ffmpeg is missing."""
    from PIL import Image, ImageDraw, ImageFont

    for tool in ("espeak-ng", "ffmpeg"):
        if not shutil.which(tool):
            raise EstimateError(f"calibration needs {tool} (install it, or pass --from-run RUN_ID --db PATH)")
    folder.mkdir(parents=True, exist_ok=True)
    parts = []
    for i, (title, text) in enumerate(_SLIDES):
        img = Image.new("RGB", (854, 480), (250, 250, 245))
        draw = ImageDraw.Draw(img)
        draw.rectangle((0, 0, 854, 90), fill=(30, 60, 120))
        draw.text((30, 22), title, fill="white",
                  font=ImageFont.load_default(size=44))
        for j, line in enumerate(text.split(". ")[:3]):
            draw.text((40, 130 + 60 * j), line[:48], fill="black", font=ImageFont.load_default(size=30))
        img.save(folder / f"slide{i}.png")
        subprocess.run(["espeak-ng", "-v", "en", "-s", "150", "-w", str(folder / f"speech{i}.wav"), text],
                       check=True, capture_output=True)
        part = folder / f"part{i}.mp4"
        subprocess.run(["ffmpeg", "-v", "error", "-y", "-loop", "1", "-framerate", "25", "-i",
                        str(folder / f"slide{i}.png"), "-i", str(folder / f"speech{i}.wav"), "-af", "apad=pad_dur=1",
                        "-shortest", "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac", "-ar", "44100",
                        str(part)], check=True, capture_output=True)
        parts.append(part)
    (folder / "list.txt").write_text("".join(f"file '{p.name}'\n" for p in parts))
    video = folder / "calibration.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "concat", "-safe", "0", "-i", str(folder / "list.txt"),
                    "-c", "copy", str(video)], check=True, capture_output=True)
    (folder / "calibration.json").write_text(json.dumps({"subject": "physics", "knowledge_point":
                                                         "Newton's second law", "title": "Newton's second law"}))
    return video


def calibrate(base: Rates, config: Path | None = None, timeout_s: float = 600) -> Rates:
    """``base`` with this machine's stage rates: `textbook process` (the pipeline as a user runs it, with
    the settings file ``config`` and the TEXTBOOK_* environment, in a subprocess, into a temporary store)
    on ``calibration_video``, read back by ``rates_from_run``. ASR runs on the device the settings pick
    (auto: a GPU when there is one), with the configured model. The tiny video's yields (clips, keyframes
    per hour) are not taken: only its stage seconds. Raises EstimateError when the calibration run fails."""
    with tempfile.TemporaryDirectory(prefix="textbook-calibrate-") as tmp:
        work = Path(tmp)
        video = calibration_video(work / "in")
        db = work / "calibrate.duckdb"
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parent.parent),
                                                           os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
        env.pop("TEXTBOOK_DB", None)
        cmd = [sys.executable, "-m", "textbook.cli", "process", str(video), "--db", str(db), "--out",
               str(work / "out"), "-q", "--json", *(["--config", str(config)] if config else [])]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout_s)
        except subprocess.TimeoutExpired as exc:
            raise EstimateError(f"calibration run took over {timeout_s:.0f} s (pass --from-run or "
                                "--no-calibrate)") from exc
        if proc.returncode != 0:
            last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            raise EstimateError(f"calibration run failed: {last}")
        run_id = json.loads(proc.stdout)["run_id"]
        from store import open_store

        store = open_store(db, read_only=True)
        try:
            measured = rates_from_run(store, run_id, base,
                                      label="measured here (calibration: a generated 4-slide lesson)")
        finally:
            store.close()
    # stage seconds only: a 40 s fixture says nothing about a lecture's clips, keyframes or length
    return replace(base, stages=measured.stages)


# -- the paper's corpus ----------------------------------------------------------------------------------------
def paper_sizes() -> Sizes:
    """The paper's corpus as sizes: 3,915 points, 159,565 videos judged on their metadata and transcribed
    (its count after the metadata filter), 75K kept with 22,697 h, 4M clips, 6.58M keyframes; the
    transcribed videos' hours at the kept ones' mean length (18.2 min: the paper gives no other)."""
    p = PAPER
    rates = default_rates()
    return derive_sizes(rates, points=p["points"], found=p["found"], transcribed=p["found"], kept=p["kept"],
                        hours=p["hours_kept"], clips=p["clips"], keyframes=p["keyframes"], given=PAPER_SOURCE)


def paper_design(visual_filter: bool = True) -> Design:
    """The paper's search (one query a point, top 50 results, comments for the judge), our per-clip design, and
    the paper's visual filter (a caption of every clip) unless ``visual_filter`` is False."""
    return Design(queries_per_point=1, results_per_query=PAPER["results_per_query"], rounds=1, comments=5,
                  visual_filter=visual_filter)


# -- text ----------------------------------------------------------------------------------------------------
def _n(x: float) -> str:
    if not x:
        return "0"
    if abs(x) < 1:
        return f"{x:.2g}"
    return f"{x:,.0f}" if abs(x) >= 100 else f"{x:,.2f}".rstrip("0").rstrip(".")


def hours_text(hours: float) -> str:
    """``hours`` as minutes, hours or days, whichever reads best."""
    if hours >= 48:
        return f"{hours / 24:,.1f} days"
    if hours >= 1:
        return f"{hours:,.1f} h"
    return f"{hours * 60:,.1f} min"


def render(est: Estimate, rates: Rates) -> list[str]:
    """The estimate as plain lines (what `textbook estimate` prints), every figure with its source."""
    s, d, c = est.sizes, est.design, est.cluster
    lines = ["sizes:"]
    for name, value in (("points", s.points), ("found", s.found), ("transcribed", s.transcribed),
                        ("kept", s.kept), ("hours_transcribed", s.hours_transcribed), ("hours_kept", s.hours_kept),
                        ("clips", s.clips), ("keyframes", s.keyframes)):
        lines.append(f"  {name:<18} {_n(value):>14}   {s.sources.get(name, '')}")
    lines.append(f"LLM calls: {est.llm_calls:,} ({est.input_tokens:,} tokens in, {est.output_tokens:,} out)")
    for r in est.roles:
        lines.append(f"  {r.role:<18} {r.calls:>12,} calls {r.input_tokens:>16,} in {r.output_tokens:>14,} out   "
                     f"{r.source}")
    if d.youtube:
        lines.append(f"search: {est.queries:,} queries x {search_units_per_query(d)} YouTube API units = "
                     f"{est.search_units:,} units = {est.search_days:,.1f} days of a {c.daily_search_units:,}-unit "
                     "daily quota (search.list 100, videos.list 1 a page, 1 per comment thread)")
    else:
        lines.append(f"search: {est.queries:,} queries, no API quota (yt-dlp search or a local library)")
    lines.append(f"device hours: GPU {_n(est.gpu_hours)}, CPU {_n(est.cpu_hours)}")
    for st in est.stages:
        unit = {"media_hour": "media h", "video": "videos", "keyframe": "keyframes"}[st.unit]
        lines.append(f"  {st.stage:<10} {st.device}  {_n(st.work):>12} {unit:<9} {_n(st.device_hours):>10} "
                     f"{st.device.upper()}-h   {st.source}")
    lines.append(f"wall on {c.gpus} GPUs, {c.cpu_cores} CPU cores, {_n(c.llm_calls_per_s.value)} LLM calls/s "
                 f"({c.llm_calls_per_s.source}):")
    for k, v in est.bounds.items():
        mark = "  <- bottleneck" if k == est.bottleneck else ""
        lines.append(f"  {k:<7} {hours_text(v):>14}{mark}")
    lines.append(f"  at least {hours_text(est.wall_hours)} (stages overlap), at most {hours_text(est.serial_hours)} "
                 "(one after another); downloads not counted")
    lines += [f"note: {n}" for n in est.notes]
    return lines
