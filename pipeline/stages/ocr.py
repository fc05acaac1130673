"""ocr: the text on the keyframes the clips will show (the per-clip cap applied first), then the line
filter (pipeline.assemble.filter_ocr: burned-in captions are told by the ASR words spoken around each
keyframe). Its hash covers the OCR options, the filter, the clip policy
(which frames are shown) and the keyframes and ASR hashes it read."""

from __future__ import annotations

from dataclasses import asdict

from pipeline import assemble
from pipeline.config import config_hash
from pipeline.stage import Stage
from pipeline.stages.asr import AsrStage
from pipeline.stages.keyframes import KeyframesStage
from tools.ocr import OcrLine, OcrOptions, make_reader


def ocr_task(paths: list[str], options: OcrOptions) -> list[dict]:
    """tools.ocr results (one dict per image, in order) of the image files."""
    return [asdict(r) for r in make_reader(options).read_many(paths)]


def plan(stage: Stage, vid: str, asr_h: str, kf_h: str) -> list[assemble.ClipPlan]:
    """The clips of a video from its transcript and keyframes at these hashes (the same for OCR and clips)."""
    tr = stage.store.transcript(vid, asr_h)
    row = stage.store.video(vid)
    return assemble.plan_clips(tr["segments"], row["duration"] or tr["duration"],
                               stage.store.keyframes(vid, kf_h), stage.cfg.clips)


class OcrStage(Stage):
    name = "ocr"
    hash_field = "ocr_hash"

    def __init__(self, ctx):
        super().__init__(ctx)
        self.asr_h = AsrStage(ctx).config_hash({})
        self.kf_h = KeyframesStage(ctx).config_hash({})
        self._shown: dict[str, list[dict]] = {}

    def config_hash(self, video: dict) -> str:
        c = self.cfg
        return config_hash("ocr", self.version, c.ocr, c.ocr_filter, c.clips, self.kf_h, self.asr_h)

    def shown(self, vid: str) -> list[dict]:
        """The keyframes the clips show, in time order."""
        if vid not in self._shown:
            self._shown[vid] = sorted((k for p in plan(self, vid, self.asr_h, self.kf_h) for k in p.keyframes),
                                      key=lambda k: k["time_s"])
        return self._shown[vid]

    def task(self, video: dict, h: str):
        return ocr_task, ([k["path"] for k in self.shown(video["video_id"])], self.cfg.ocr)

    def save(self, video: dict, h: str, results: list[dict], seconds: float) -> None:
        from pipeline.runner import llm_call_row

        vid = video["video_id"]
        frames = self._shown.pop(vid)
        f = self.cfg.ocr_filter
        segments = (self.store.transcript(vid, self.asr_h) or {}).get("segments", [])
        speech = [assemble.speech_words(segments, k["time_s"] - f.spoken_before, k["time_s"] + f.spoken_after)
                  for k in frames]
        verdicts = assemble.filter_ocr([[OcrLine(**line) for line in r["lines"]] for r in results], f,
                                       speech, [r.get("height", 0) for r in results])
        read = {f["idx"] for f in frames}
        rows = [{**r, "index": f["idx"], "raw": r["text"], "text": verdict.text, "lines": verdict.lines,
                 "kept": verdict.kept, "drop_reason": verdict.reason}
                for f, r, verdict in zip(frames, results, verdicts, strict=True)]
        rows += [{"index": f["idx"], "text": None, "raw": None, "lines": None, "confidence": None, "engine": None,
                  "kept": False, "drop_reason": "clip_cap"}
                 for f in self.store.keyframes(vid, self.kf_h) if f["idx"] not in read]
        calls = [llm_call_row(r["llm_call"], self.ctx.run_id, vid) for r in results if r.get("llm_call")]
        self.store.save_ocr(vid, h, rows, sum(r["seconds"] for r in results), calls)
