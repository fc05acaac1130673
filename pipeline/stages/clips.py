"""clips: transcript paragraphs as clips with their keyframes, a decision per clip (keep, drop_frames,
drop; the build's clip judge may decide), and the kept keyframes named by the export rule under
media/images/VID/HASH/. Its hash covers the clip policy, the judging policy (``ClipsStage.policy_hash``) and the
ASR and OCR hashes, so runs with other clip policies keep their own clips and images."""

from __future__ import annotations

import os
import shutil
import threading
from pathlib import Path

from pipeline import assemble
from pipeline.config import config_hash
from pipeline.records import Clip, Status, Video
from pipeline.stage import Stage
from pipeline.stages.ocr import OcrStage, plan
from pipeline.tokens import count_tokens
from tools import storage


def images_dir(media: Path | str, vid: str, h: str) -> Path | str:
    """Where a video's clip images for the clips hash ``h`` live: media/images/VID/HASH/ (a Path under a
    local media folder, a URI str under an object-store one)."""
    if storage.is_remote(media):
        return storage.join(media, "images", vid, h)
    return Path(media) / "images" / vid / h


def image_names(vid: str, clip_rows: list[dict], frames: dict[int, dict]) -> dict[str, str]:
    """The kept clips' images: file name (pipeline.assemble.image_name) -> the frame file it shows."""
    out = {}
    for c in clip_rows:
        if c["decision"] != "keep":
            continue
        for k, idx in enumerate(c["keyframes"]):
            out[Path(assemble.image_name(vid, c["start_s"], c["end_s"], k)).name] = frames[idx]["path"]
    return out


def link_images(media: Path | str, vid: str, h: str, clip_rows: list[dict], frames: dict[int, dict]) -> None:
    """Name each kept clip's keyframes by the export rule (pipeline.assemble.image_name) under
    media/images/VID/HASH/, as hard links to the frame files; the folder is replaced whole. Under an
    object-store media root: server-side copies of the frame objects (tools.storage.copy), and the objects
    under the prefix that are not the clips' images removed."""
    if storage.is_remote(media):
        _copy_images(str(images_dir(media, vid, h)), image_names(vid, clip_rows, frames))
        return
    target = images_dir(media, vid, h)
    tmp = target.with_name(f".{h}.{os.getpid()}.{threading.get_ident()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for name, frame in image_names(vid, clip_rows, frames).items():
        _link_or_copy(Path(frame), tmp / name)
    shutil.rmtree(target, ignore_errors=True)
    os.replace(tmp, target)


def _copy_images(target: str, names: dict[str, str]) -> None:
    for name, frame in names.items():
        storage.copy(frame, storage.join(target, name))
    if storage.exists(target):
        wanted = {storage.join(target, name) for name in names}
        for stale in set(storage.listdir(target, recursive=False)) - wanted:
            storage.remove(stale)


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


class ClipsStage(Stage):
    """Transcript paragraphs as clips with their keyframes, a decision per clip, and the kept keyframes
    named by the export rule. ``judge`` decides the clips: here the rules only (a clip without keyframes
    is ``drop_frames``); the build's stage (agents/stages.py) overrides it with the rewrite and the clip
    judge, and ``policy_hash`` with the hash of that policy (part of the clips hash)."""

    name = "clips"
    hash_field = "clips_hash"
    passed = Status.ACCEPTED

    def __init__(self, ctx):
        super().__init__(ctx)
        ocr = OcrStage(ctx)
        self.asr_h, self.kf_h, self.ocr_h = ocr.asr_h, ocr.kf_h, ocr.config_hash(None)

    def policy_hash(self) -> str:
        """The hash of the clip-judging policy (``judge``); '' for the rules alone."""
        return ""

    def config_hash(self, video: Video | None) -> str:
        """The clip policy, the judging policy, and the ASR and OCR hashes."""
        return config_hash("clips", self.version, self.cfg.clips, self.asr_h, self.ocr_h, self.policy_hash())

    def cached(self, video: Video, h: str) -> bool:
        """Stored, and the clip images' folder there (under an object-store media root, which has no
        folders: every kept clip's image object)."""
        if not super().cached(video, h):
            return False
        media, vid = self.ctx.media, video.video_id
        if not storage.is_remote(media):
            return images_dir(media, vid, h).is_dir()
        frames = {f["idx"]: f for f in self.store.keyframes(vid, self.kf_h)}
        target = images_dir(media, vid, h)
        return all(storage.is_file(storage.join(target, name))
                   for name in image_names(vid, self.store.clips(vid, h), frames))

    def plan(self, video: Video) -> list[Clip]:
        """The video's clips from its transcript and keyframes (pipeline.assemble.plan_clips), decided by
        the rules: ``keep``, or ``drop_frames`` (reason no_keyframes) for a clip without keyframes."""
        clips = []
        for i, p in enumerate(plan(self, video.video_id, self.asr_h, self.kf_h)):
            decision, reason = ("keep", None) if p.keyframes else ("drop_frames", "no_keyframes")
            clips.append(Clip(idx=i, start_s=p.span.start, end_s=p.span.end, text=p.span.text,
                              n_tokens=count_tokens(p.span.text, self.cfg.tokenizer),
                              keyframes=[k["idx"] for k in p.keyframes], capped=[k["idx"] for k in p.capped],
                              decision=decision, reason=reason))
        return clips

    def judge(self, video: Video, clips: list[Clip], frames: dict[int, dict]) -> list[Clip]:
        """Decide each clip (``decision``, ``reason``; a build also sets ``polished``, ``rewrite``,
        ``signals``); ``frames``: the video's keyframes with OCR by idx. Here: the rules' decisions."""
        return clips

    def compute(self, video: Video, h: str) -> list[Clip]:
        """Plan, judge, and name the kept clips' images."""
        vid = video.video_id
        frames = {f["idx"]: f for f in self.store.keyframes(vid, self.kf_h, self.ocr_h)}
        clips = self.judge(video, self.plan(video), frames)
        rows = [c.as_dict() for c in clips]
        link_images(self.ctx.media, vid, h, rows, frames)
        return clips

    def save(self, video: Video, h: str, clips: list[Clip], seconds: float) -> None:
        """The clips' rows."""
        self.store.save_clips(video.video_id, h, [c.as_dict() for c in clips])

    def keep(self, video: Video, h: str) -> str | None:
        """``no_clips`` when the video has no clip; else the video is ``kept``."""
        vid = video.video_id
        if not self.store.clips(vid, h):
            return "no_clips"
        self.store.update_video(vid, status=Status.KEPT.value, reason=None)
        self._run_status(vid, Status.KEPT, None)
        return None
