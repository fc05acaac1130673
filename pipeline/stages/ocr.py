"""ocr: the text on the keyframes the clips will show (the per-clip cap applied first), then the line
filter (pipeline.assemble.filter_ocr: burned-in captions are told by the ASR words spoken around each
keyframe). Its hash covers the OCR options, the filter, the clip policy
(which frames are shown) and the keyframes and ASR hashes it read."""

from __future__ import annotations

import contextlib
import hashlib
import json
import uuid
from dataclasses import asdict

from pipeline import assemble
from pipeline.config import config_hash
from pipeline.records import Status, Video
from pipeline.stage import Needs, Stage
from pipeline.stages.asr import AsrStage
from pipeline.stages.keyframes import KeyframesStage
from tools import storage
from tools.ocr import OcrLine, OcrOptions, make_reader


def ocr_task(paths: list[str], options: OcrOptions) -> list[dict]:
    """tools.ocr results (one dict per image, in order) of the image files; a path may be a URI
    (tools.storage: the images are copied to this worker's disk for tesseract, deleted after)."""
    if not any(storage.is_remote(p) for p in paths):
        return [asdict(r) for r in make_reader(options).read_many(paths)]
    with contextlib.ExitStack() as stack:
        local = [str(stack.enter_context(storage.local_copy(p))) for p in paths]
        return [asdict(r) for r in make_reader(options).read_many(local)]


def plan(stage: Stage, vid: str, asr_h: str, kf_h: str) -> list[assemble.ClipPlan]:
    """The clips of a video from its transcript and keyframes at these hashes (the same for OCR and clips)."""
    tr = stage.store.transcript(vid, asr_h)
    row = stage.store.video(vid)
    return assemble.plan_clips(tr["segments"], row["duration"] or tr["duration"],
                               stage.store.keyframes(vid, kf_h), stage.cfg.clips)


def llm_call_row(call: dict, run_id: str, video_id: str, node: str = "ocr") -> dict:
    """An ``llm_calls`` row for a model call a tool made (tools.ocr.LlmCall as a dict): the
    VLM OCR backend's calls are logged like the gateway's."""
    key = hashlib.sha256(json.dumps([call["model"], call["prompt_sha256"], call["messages"]],
                                    sort_keys=True).encode()).hexdigest()
    return {"call_id": uuid.uuid4().hex, "run_id": run_id, "node": node, "role": node, "video_id": video_id,
            "prompt_name": call["prompt_name"], "prompt_sha256": call["prompt_sha256"], "model": call["model"],
            "cache_key": key, "cached": False, "messages": call["messages"], "response": call["response"],
            "input_tokens": call["input_tokens"], "output_tokens": call["output_tokens"],
            "tokens_estimated": call["tokens_estimated"], "cost_usd": 0.0, "latency_s": call["latency_s"],
            "attempts": 1, "error": call["error"]}


class OcrStage(Stage):
    """OCR of the keyframes the clips show (the ``visual`` lane), then the line filter."""

    name = "ocr"
    hash_field = "ocr_hash"
    needs = Needs(lane="visual", cpus=1, model="ocr")
    passed = Status.VISUALS

    def __init__(self, ctx):
        super().__init__(ctx)
        self.asr_h = AsrStage(ctx).config_hash(None)
        self.kf_h = KeyframesStage(ctx).config_hash(None)
        self._shown: dict[str, list[dict]] = {}

    def config_hash(self, video: Video | None) -> str:
        """OCR options, the line filter, the clip policy, and the keyframes and ASR hashes it reads."""
        c = self.cfg
        return config_hash("ocr", self.version, c.ocr, c.ocr_filter, c.clips, self.kf_h, self.asr_h)

    def shown(self, vid: str) -> list[dict]:
        """The keyframes the clips show, in time order."""
        if vid not in self._shown:
            self._shown[vid] = sorted((k for p in plan(self, vid, self.asr_h, self.kf_h) for k in p.keyframes),
                                      key=lambda k: k["time_s"])
        return self._shown[vid]

    def task(self, video: Video, h: str):
        """ocr_task over the shown keyframes' files."""
        return ocr_task, ([k["path"] for k in self.shown(video.video_id)], self.cfg.ocr)

    def save(self, video: Video, h: str, results: list[dict], seconds: float) -> None:
        """Each shown keyframe's OCR after the line filter; the others as ``clip_cap``."""
        vid = video.video_id
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
