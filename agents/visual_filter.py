"""The paper's visual clip filter (section 3.4 of "2.5 Years in Class"): a vision model captions each clip's
keyframes, the caption is embedded against the clip's ASR paragraph, and a clip whose visuals do not match
its speech (a transition, a speaker only, clutter, unrelated footage) loses its frames; its ASR text stays in
the sample. The paper captioned with VideoLLaMA2-7B and embedded with gte-Qwen2-7B-instruct, threshold not
stated; here the ``captioner`` role (any OpenAI-compatible vision model, ``agent.llm.roles.captioner``)
captions up to ``agent.caption_max_images`` keyframes in one request (prompts/caption.md), and the build's
sentence embedder (all-MiniLM-L6-v2, the one of the ASR-OCR similarity) compares; the threshold
``agent.caption_min_similarity`` was chosen on a labelled set (tests/data/caption_eval,
bench/bench_caption_filter.py; docs/benchmarks.md).

``JudgedClipsStage`` (agents/stages.py) runs it on each clip whose frames the rules and the clip judge keep:
it is one more reason to drop a clip's frames, never a reason to keep them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePosixPath

from agents.config import AgentConfig
from agents.llm import Gateway, ImageInput
from tools import storage

MIME = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png", ".webp": "image/webp"}


@dataclass(frozen=True)
class Caption:
    """A clip's caption: ``text`` the vision model's answer (untrusted), ``call_id`` its ``llm_calls`` row,
    ``images`` how many keyframes it saw."""

    text: str
    call_id: str
    images: int


def policy(cfg: AgentConfig) -> list:
    """What the filter's decisions depend on (for the clips stage's policy hash): [] when it is off, else its
    threshold, image cap, enforcement and the caption prompt's sha256 (the captioner's model and endpoint are in the
    gateway's config, hashed beside it)."""
    import prompts

    if not cfg.caption_filter_on():
        return []
    return ["visual_filter", cfg.caption_min_similarity, cfg.caption_max_images, enforced(cfg),
            prompts.load("caption").sha256]


def enforced(cfg: AgentConfig) -> bool:
    """Whether the filter's drops are enforced: yes unless ``agent.enforce_judges = no`` (then advisory: the
    verdict recorded, the frames kept). The captioner is always a configured model, so ``auto`` enforces."""
    return cfg.enforce_judges != "no"


def mode(cfg: AgentConfig) -> dict[str, str]:
    """The filter as the build's summary lists it among the judges: {} when off, else ``{"visual_filter":
    "enforced (...)"}`` or ``"advisory: agent.enforce_judges = no"``."""
    if not cfg.caption_filter_on():
        return {}
    if not enforced(cfg):
        return {"visual_filter": "advisory: agent.enforce_judges = no"}
    return {"visual_filter": f"enforced (captioner {cfg.llm.roles['captioner'].model}, frames dropped under "
                             f"caption-ASR similarity {cfg.caption_min_similarity:.2f})"}


def evenly(items: list, most: int) -> list:
    """At most ``most`` of ``items``, evenly spaced from the first to the last, in order (all when fewer)."""
    if len(items) <= most:
        return list(items)
    if most == 1:
        return [items[len(items) // 2]]
    step = (len(items) - 1) / (most - 1)
    return [items[round(i * step)] for i in range(most)]


def keyframe_image(frame: dict) -> ImageInput:
    """A keyframe (a ``keyframes`` row: ``path`` a file path or storage URI) as an image to send; its logged
    name is the file's base name only. Raises tools.errors.ToolError when it cannot be read."""
    name = PurePosixPath(str(frame["path"]).replace("\\", "/")).name
    mime = MIME.get(PurePosixPath(name).suffix.lower(), "image/jpeg")
    return ImageInput(storage.read_bytes(frame["path"]), name, mime)


def caption_clip(gateway: Gateway, frames: list[dict], most: int, video_id: str | None) -> Caption:
    """One caption call (role ``captioner``, prompt ``caption``, node ``clips``) over at most ``most`` of the
    clip's keyframes ``frames`` (``keyframes`` rows, in time order). Raises what the gateway raises:
    ``LLMOutputInvalid`` or a subclass (an empty answer, after the re-asks, is kind invalid_output; a
    timeout, 429, 5xx or 400 after the re-sends), ``LLMUnavailable``; tools.errors.ToolError for a keyframe
    that cannot be read."""
    images = [keyframe_image(f) for f in evenly(frames, most)]
    ans = gateway.call("captioner", "clips", "caption", {"count": len(images)}, video_id=video_id, images=images)
    return Caption(str(ans.value).strip(), ans.call_id, len(images))
