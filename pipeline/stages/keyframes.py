"""keyframes: the states of the screen (SSIM, tools.keyframes), written under media/frames/VID/HASH/."""

from __future__ import annotations

import os
import tempfile
from dataclasses import asdict

from pipeline.config import config_hash
from pipeline.records import Video
from pipeline.stage import Needs, Stage
from tools import storage
from tools.keyframes import KeyframeOptions, detect


def keyframes_task(path: str, out_dir: str, options: KeyframeOptions) -> dict:
    """tools.keyframes.KeyframeResult as a dict; the frame files go to ``out_dir``.

    ``path`` and ``out_dir`` may be URIs (tools.storage): the video is copied to this worker's disk, the
    frames are detected into a temporary folder and uploaded to ``out_dir`` here, inside the task (a worker
    on another node writes to the media root, never only to its own disk); each keyframe's ``path`` is then
    its URI, and objects under ``out_dir`` that this detection did not write are removed (as ``detect``
    clears a local folder)."""
    if not storage.is_remote(path) and not storage.is_remote(out_dir):
        return asdict(detect(path, out_dir, options))
    with storage.local_copy(path) as local:
        if not storage.is_remote(out_dir):  # a remote video, local frames: what detect does
            return asdict(detect(local, out_dir, options)) | {"video": storage.redact(path)}
        with tempfile.TemporaryDirectory(prefix="textbook-frames-") as tmp:
            result = asdict(detect(local, tmp, options)) | {"video": storage.redact(path)}
            written = set(storage.put_dir(tmp, out_dir, exts=[".jpg"]))
    for k in result["keyframes"]:
        k["path"] = storage.join(out_dir, os.path.basename(k["path"]))
    if storage.exists(out_dir):
        for stale in set(storage.listdir(out_dir, exts=[".jpg"], recursive=False)) - written:
            storage.remove(stale)
    return result


class KeyframesStage(Stage):
    """Screen states by SSIM (tools.keyframes), in the ``visual`` lane; frames under media/frames/VID/HASH/."""

    name = "keyframes"
    hash_field = "keyframes_hash"
    needs = Needs(lane="visual", cpus=1)

    def config_hash(self, video: Video | None) -> str:
        """The keyframe options."""
        return config_hash("keyframes", self.version, self.cfg.keyframes)

    def frames_dir(self, vid: str, h: str) -> str:
        """Where the video's frame files for hash ``h`` go: media/frames/VID/HASH (a path, or a URI)."""
        return storage.join(self.ctx.media, "frames", vid, h)

    def cached(self, video: Video, h: str) -> bool:
        """Stored, and every frame file (or object) still there."""
        return super().cached(video, h) and all(
            storage.is_file(k["path"]) for k in self.store.keyframes(video.video_id, h))

    def task(self, video: Video, h: str):
        """keyframes_task writing to frames_dir."""
        return keyframes_task, (video.source, self.frames_dir(video.video_id, h), self.cfg.keyframes)

    def save(self, video: Video, h: str, result: dict, seconds: float) -> None:
        """The keyframes' rows."""
        self.store.save_keyframes(video.video_id, h, result["keyframes"], result["seconds"])
