"""clips: transcript paragraphs as clips with their keyframes, a decision per clip (keep, drop_frames,
drop; the agent's clip judge may decide), and the kept keyframes named by the export rule under
media/images/VID/HASH/. Its hash covers the clip policy, the judge's policy (``decide_hash``) and the
ASR and OCR hashes, so runs with other clip policies keep their own clips and images."""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Callable
from pathlib import Path

from pipeline import assemble
from pipeline.config import config_hash
from pipeline.records import Clip, Status
from pipeline.stage import Stage
from pipeline.stages.ocr import OcrStage, plan
from pipeline.tokens import count_tokens

# decide(video_id, clip rows, keyframes by idx) -> clip rows: may set decision, reason, polished, signals
Decide = Callable[[str, list[dict], dict[int, dict]], list[dict]]


def images_dir(media: Path, vid: str, h: str) -> Path:
    """Where a video's clip images for the clips hash ``h`` live: media/images/VID/HASH/."""
    return media / "images" / vid / h


def link_images(media: Path, vid: str, h: str, clip_rows: list[dict], frames: dict[int, dict]) -> None:
    """Name each kept clip's keyframes by the export rule (pipeline.assemble.image_name) under
    media/images/VID/HASH/, as hard links to the frame files; the folder is replaced whole."""
    target = images_dir(media, vid, h)
    tmp = target.with_name(f".{h}.{os.getpid()}.{threading.get_ident()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for c in clip_rows:
        if c["decision"] != "keep":
            continue
        for k, idx in enumerate(c["keyframes"]):
            name = Path(assemble.image_name(vid, c["start"], c["end"], k)).name
            _link_or_copy(Path(frames[idx]["path"]), tmp / name)
    shutil.rmtree(target, ignore_errors=True)
    os.replace(tmp, target)


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


class ClipsStage(Stage):
    name = "clips"
    hash_field = "clips_hash"
    on_driver = True  # ``decide`` calls the agent's gateway; the store rows it reads are here

    def __init__(self, ctx, decide: Decide | None = None, decide_hash: str = ""):
        super().__init__(ctx)
        ocr = OcrStage(ctx)
        self.asr_h, self.kf_h, self.ocr_h = ocr.asr_h, ocr.kf_h, ocr.config_hash({})
        self.decide, self.decide_hash = decide, decide_hash

    def config_hash(self, video: dict) -> str:
        return config_hash("clips", self.version, self.cfg.clips, self.asr_h, self.ocr_h, self.decide_hash)

    def cached(self, video: dict, h: str) -> bool:
        return super().cached(video, h) and images_dir(self.ctx.media, video["video_id"], h).is_dir()

    def compute(self, video: dict, h: str) -> list[dict]:
        vid = video["video_id"]
        frames = {f["idx"]: f for f in self.store.keyframes(vid, self.kf_h, self.ocr_h)}
        rows = []
        for i, p in enumerate(plan(self, vid, self.asr_h, self.kf_h)):
            decision, reason = ("keep", None) if p.keyframes else ("drop_frames", "no_keyframes")
            rows.append(Clip(index=i, start=p.span.start, end=p.span.end, text=p.span.text,
                             n_tokens=count_tokens(p.span.text, self.cfg.tokenizer),
                             keyframes=[k["idx"] for k in p.keyframes], capped=[k["idx"] for k in p.capped],
                             decision=decision, reason=reason).as_dict())
        if self.decide is not None:
            rows = self.decide(vid, rows, frames)
        link_images(self.ctx.media, vid, h, rows, frames)
        return rows

    def save(self, video: dict, h: str, rows: list[dict], seconds: float) -> None:
        self.store.save_clips(video["video_id"], h, rows)

    def keep(self, video: dict, h: str) -> str | None:
        vid = video["video_id"]
        if not self.store.clips(vid, h):
            return "no_clips"
        self.store.update_video(vid, status=Status.KEPT.value, reason=None)
        self._run_status(vid, Status.KEPT, None)
        return None
