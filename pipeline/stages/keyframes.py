"""keyframes: the states of the screen (SSIM, tools.keyframes), written under media/frames/VID/HASH/."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from pipeline.config import config_hash
from pipeline.records import Video
from pipeline.stage import Needs, Stage
from tools.keyframes import KeyframeOptions, detect


def keyframes_task(path: str, out_dir: str, options: KeyframeOptions) -> dict:
    """tools.keyframes.KeyframeResult as a dict; the frame files go to ``out_dir``."""
    return asdict(detect(path, out_dir, options))


class KeyframesStage(Stage):
    """Screen states by SSIM (tools.keyframes), in the ``visual`` lane; frames under media/frames/VID/HASH/."""

    name = "keyframes"
    hash_field = "keyframes_hash"
    needs = Needs(lane="visual", cpus=1)

    def config_hash(self, video: Video | None) -> str:
        """The keyframe options."""
        return config_hash("keyframes", self.version, self.cfg.keyframes)

    def frames_dir(self, vid: str, h: str) -> Path:
        """Where the video's frame files for hash ``h`` go."""
        return self.ctx.media / "frames" / vid / h

    def cached(self, video: Video, h: str) -> bool:
        """Stored, and every frame file still there."""
        return super().cached(video, h) and all(
            Path(k["path"]).is_file() for k in self.store.keyframes(video.video_id, h))

    def task(self, video: Video, h: str):
        """keyframes_task writing to frames_dir."""
        return keyframes_task, (video.source, str(self.frames_dir(video.video_id, h)), self.cfg.keyframes)

    def save(self, video: Video, h: str, result: dict, seconds: float) -> None:
        """The keyframes' rows."""
        self.store.save_keyframes(video.video_id, h, result["keyframes"], result["seconds"])
