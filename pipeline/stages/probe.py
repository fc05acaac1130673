"""probe: container facts of the file (ffprobe), then the probe rules (no_video, too_short, no_audio)."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from pipeline.config import config_hash
from pipeline.records import Status, Video
from pipeline.stage import Stage
from pipeline.stages.rules import probe_rules
from tools import media, storage


def probe_task(path: str) -> dict:
    """tools.media.MediaInfo of the file or object ``path`` (a local path or a URI, read through a
    tools.storage.local_copy), as a dict (picklable); raises ToolError (corrupt, not_found, ...)."""
    if not storage.is_remote(path):
        return asdict(media.probe(Path(path)))
    with storage.local_copy(path) as local:
        return asdict(media.probe(local))


class ProbeStage(Stage):
    """Container facts (ffprobe, in the driver: quick, no executor round trip; an object's, and on Ray a file a
    worker wrote into the media root, on the executor), then the probe rules."""

    name = "probe"

    def config_hash(self, video: Video | None) -> str:
        """Version only: ffprobe has no options."""
        return config_hash("probe", self.version)

    def applies(self, video: Video) -> bool:
        """Not for a duplicate (its original is processed instead)."""
        return (self.store.video(video.video_id) or {}).get("status") != Status.DUPLICATE

    def task(self, video: Video, h: str):
        """probe_task on the executor for an object-store source (a worker copies the object, not the driver)
        and, on Ray, for a file in the media root (a worker wrote it: the build's download); for another
        local file None: ``compute`` runs in the driver."""
        remote = storage.is_remote(video.source)
        if remote or (self.cfg.executor == "ray" and self._in_media(video.source)):
            return probe_task, (video.source,)
        return None

    def _in_media(self, source: str) -> bool:
        """Whether the local file ``source`` is under the run's (local) media root."""
        media = self.ctx.media
        if storage.is_remote(media):
            return False
        return Path(source).absolute().is_relative_to(storage.local_path(media).absolute())

    def compute(self, video: Video, h: str) -> dict:
        """ffprobe of the file (probe_task)."""
        return probe_task(video.source)

    def save(self, video: Video, h: str, result: dict, seconds: float) -> None:
        """The probe onto the video's row."""
        self.store.save_probe(video.video_id, h, result, seconds)

    def keep(self, video: Video, h: str) -> str | None:
        """The probe rules on the stored probe; a ``truncated`` warning is also put in the run's trace
        (an event of node "probe", decision "warning"), with what the policy made of it."""
        vid = video.video_id
        row = self.store.video(vid)
        warned = [w for w in self.store.warnings(vid) if w["stage"] == "probe"]
        truncated = any(w["kind"] == "truncated" for w in warned)
        info = {"duration": row["duration"], "has_audio": row["has_audio"], "has_video": (row["width"] or 0) > 0,
                "truncated": truncated}
        reason = probe_rules(info, self.cfg.filters)
        for w in warned:
            policy = ""
            if w["kind"] == "truncated":
                policy = ("filters.truncated = drop: the video is dropped" if reason == "truncated" else
                          "filters.truncated = keep: what decodes is used")
            self.trace_warning(vid, w["kind"], w["message"], policy)
        return reason
