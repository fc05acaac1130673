"""pack: a run's kept videos interleaved (keyframes, then OCR + ASR text, per clip) and packed into
samples (pipeline.assemble). A run-level stage: its hash covers the pack config, the tokenizer and
each video's clips hash, and its output (``samples``) belongs to the run."""

from __future__ import annotations

from pipeline import assemble
from pipeline.config import config_hash
from pipeline.stage import Context
from pipeline.stages.clips import link_images
from tools import storage


class PackStage:
    """The run-level stage: the kept videos' clips interleaved and packed into samples (pipeline.assemble)."""

    name = "pack"

    def __init__(self, ctx: Context):
        self.ctx, self.store, self.cfg = ctx, ctx.store, ctx.cfg

    @property
    def version(self) -> int:
        """STAGE_VERSIONS["pack"]."""
        from pipeline.stage import STAGE_VERSIONS

        return STAGE_VERSIONS[self.name]

    def hashes(self, run_id: str, vid: str) -> tuple[str | None, str | None, str | None]:
        """(keyframes, ocr, clips) hashes of the outputs the run used for the video (the latest for a
        run that recorded none: a store from before migration 008, or a video the run did not clip)."""
        rv = self.store.run_video(run_id, vid) or {}
        return (rv.get("keyframes_hash") or self.store.latest_hash(vid, "keyframes"),
                rv.get("ocr_hash") or self.store.latest_hash(vid, "ocr"),
                rv.get("clips_hash") or self.store.latest_hash(vid, "clips"))

    def run(self, run_id: str, videos: list[dict], kept: list[dict]) -> list[dict]:
        """The run's samples from ``kept`` (in the order of ``videos``); stored under the run."""
        store, cfg = self.store, self.cfg
        kept_ids = {v["video_id"] for v in kept}
        ordered = [v["video_id"] for v in videos if v["video_id"] in kept_ids]
        used = {vid: self.hashes(run_id, vid) for vid in ordered}
        parts = [(vid, used[vid][2]) for vid in ordered]
        h = config_hash("pack", self.version, cfg.pack, cfg.tokenizer, parts)
        row = store.stage(f"run:{run_id}", "pack", h)
        if row and row["status"] == "done" and self._media_present(run_id):
            return store.samples(run_id)
        positions = []
        media = self.ctx.media
        for vid in ordered:
            kf_h, ocr_h, clips_h = used[vid]
            frames = {f["idx"]: f for f in store.keyframes(vid, kf_h, ocr_h)}
            clip_rows = store.clips(vid, clips_h)
            folder = f"images/{vid}/{clips_h}"  # images_dir, relative to the media root
            video_positions = assemble.interleave(store.video(vid), clip_rows, frames, image_dir=folder)
            if any(p.image and not storage.is_file(storage.join(media, p.image)) for p in video_positions):
                # media lost, or named by an earlier rule: name the clips' keyframes again
                link_images(media, vid, clips_h, clip_rows, frames)
            positions.append(video_positions)
        samples = assemble.pack(positions, cfg.pack, cfg.tokenizer)
        store.save_samples(run_id, h, samples)
        self.ctx.count("pack")
        return samples

    def _media_present(self, run_id: str) -> bool:
        media = self.ctx.media
        return all(storage.is_file(storage.join(media, img)) for s in self.store.samples(run_id)
                   for img in s["images"] if img)
