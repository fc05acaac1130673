"""The driver of ``textbook process``: video files in, samples out, every step in the store.

Stages per video: probe -> rules -> ASR -> rules -> keyframes -> OCR -> clips;
then, for the run: interleave -> pack -> export. Each (video, stage) records the
hash of the config it ran with; a rerun with the same config skips it. One bad
video is an error row with a kind and the run goes on. Only this driver writes
the store: executors return results.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from pipeline import assemble, stages
from pipeline.config import PipelineConfig, config_hash
from pipeline.curriculum import parse_difficulty
from pipeline.executors import make_executor
from pipeline.export import ExportOptions, export
from pipeline.provenance import public_source
from pipeline.tokens import count_tokens
from store import Store
from tools.errors import PERMANENT_KINDS, ToolError
from tools.media import VIDEO_EXTENSIONS, file_sha256, read_sidecar
from tools.media import local_video_id as make_video_id
from tools.ocr import OcrLine

log = logging.getLogger(__name__)

# a stage's version is part of its config hash: bump it when its code changes what it stores, so a
# rerun redoes that stage (and the stages after it) and nothing else
STAGE_VERSIONS = {"probe": 2, "asr": 2, "keyframes": 2, "ocr": 2, "clips": 2, "pack": 3}


class InputError(Exception):
    """Bad input from the user: reported as one line, non-zero exit, nothing recorded lost."""


class Reporter(Protocol):
    def stage(self, name: str, total: int) -> None: ...

    def advance(self, name: str) -> None: ...


class NullReporter:
    def stage(self, name: str, total: int) -> None:
        pass

    def advance(self, name: str) -> None:
        pass


@dataclass
class VideoSummary:
    video_id: str
    source: str
    status: str  # kept | rejected | error
    reason: str | None = None
    clips: int = 0
    keyframes: int = 0
    samples: int = 0


@dataclass
class RunResult:
    run_id: str
    videos: list[VideoSummary]
    samples: int
    out_dir: str
    seconds: float
    stages_run: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"run_id": self.run_id, "samples": self.samples, "out": self.out_dir, "seconds": self.seconds,
                "stages_run": self.stages_run,
                "videos": [v.__dict__ for v in self.videos]}


# -- inputs ------------------------------------------------------------------
def discover(paths: list[str | Path]) -> list[Path]:
    """Video files named by ``paths`` (files, or folders searched recursively), in a stable order."""
    if not paths:
        raise InputError("no input given: name video files or folders")
    found: list[Path] = []
    for raw in paths:
        p = Path(raw)
        if not p.exists():
            raise InputError(f"no such file or folder: {p}")
        if p.is_dir():
            vids = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in VIDEO_EXTENSIONS)
            if not vids:
                exts = " ".join(sorted(VIDEO_EXTENSIONS))
                raise InputError(f"{p}: folder holds no video files (looked for {exts})")
            found.extend(vids)
        elif p.suffix.lower() not in VIDEO_EXTENSIONS:
            raise InputError(f"{p}: not a video file (extension {p.suffix or 'none'})")
        else:
            found.append(p)
    unique = list(dict.fromkeys(f.resolve() for f in found))
    return unique


sidecar = read_sidecar  # NAME.json / NAME.info.json beside a video (never a *.truth.json)


def check_writable(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".textbook-write-test-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise InputError(f"cannot write to {folder}: {exc.strerror or exc}") from exc


def media_dir_for(db_path: Path) -> Path:
    """Where the store keeps keyframe files: beside the database, NAME_media/."""
    return db_path.parent / f"{db_path.stem}_media"


# -- the driver ----------------------------------------------------------------
class Runner:
    def __init__(self, store: Store, cfg: PipelineConfig, out_dir: Path, reporter: Reporter | None = None,
                 command: str = "process"):
        self.store = store
        self.cfg = cfg
        self.out_dir = out_dir
        self.media = media_dir_for(store.path)
        self.reporter = reporter or NullReporter()
        self.command = command
        self.stages_run: dict[str, int] = {}
        self._exec = None
        c = cfg
        self.h = {"probe": config_hash("probe", STAGE_VERSIONS["probe"])}
        self.h["asr"] = config_hash("asr", STAGE_VERSIONS["asr"], c.asr, c.filters.languages,
                                    c.filters.min_speech_seconds)
        self.h["keyframes"] = config_hash("keyframes", STAGE_VERSIONS["keyframes"], c.keyframes)
        self.h["ocr"] = config_hash("ocr", STAGE_VERSIONS["ocr"], c.ocr, c.ocr_filter, c.clips, self.h["keyframes"],
                                    self.h["asr"])

    def _ran(self, stage: str) -> None:
        self.stages_run[stage] = self.stages_run.get(stage, 0) + 1

    def _done(self, vid: str, stage: str, h: str) -> bool:
        row = self.store.stage(vid, stage)
        if row is None or row["config_hash"] != h:
            return False
        return row["status"] != "error" or row["detail"] in PERMANENT_KINDS

    def _error(self, vid: str, stage: str, exc: BaseException, run_id: str) -> None:
        kind = exc.kind if isinstance(exc, ToolError) else "internal"
        msg = exc.message if isinstance(exc, ToolError) else f"{type(exc).__name__}: {exc}"
        log.warning("%s: %s failed (%s): %s", vid, stage, kind, msg)
        self.store.record_error(vid, stage, self.h.get(stage, ""), kind, msg, run_id)

    def _reject(self, vid: str, reason: str) -> None:
        self.store.update_video(vid, status="rejected", reason=reason)

    def run(self, paths: list[str | Path]) -> RunResult:
        t0 = time.perf_counter()
        files = discover(paths)
        self._input_roots = [Path(p).expanduser().resolve() for p in paths]  # public_source: paths relative to these
        check_writable(self.out_dir)
        check_writable(self.media)
        inputs = [str(f) for f in files]
        cfg_json = self.cfg.model_dump(mode="json")
        run_id = "run-" + config_hash(self.command, inputs, cfg_json)[:12]
        self.store.start_run(run_id, self.command, inputs, cfg_json, config_hash(cfg_json))
        try:
            result = self._run(run_id, files)
        except BaseException as exc:
            self.store.finish_run(run_id, "failed", {"error": f"{type(exc).__name__}: {exc}"})
            raise
        finally:
            self.close()
        result.seconds = round(time.perf_counter() - t0, 2)
        self.store.finish_run(run_id, "finished", result.to_json())
        return result

    def _run(self, run_id: str, files: list[Path]) -> RunResult:
        videos = self.register(run_id, [(f, {}) for f in files])
        work = self.originals(videos)
        self.store.set_run_videos(run_id, list(dict.fromkeys(v["video_id"] for v in [*work, *videos])))
        active = self.transcribe(run_id, work)
        active = self.visuals(run_id, active)
        kept = self.build_clips(active)
        samples = self.pack(run_id, work, kept)
        return self._summary(run_id, videos, samples)

    # -- steps, public so the agent can put its judges between them ----------------
    def register(self, run_id: str, items: list[tuple[Path, dict]]) -> list[dict]:
        """Record each file as a video (sidecar metadata, overridden by ``extra``); dedup by video id.

        Keys read from the metadata: title, subject, course, subcourse, knowledge_point, difficulty (a grade
        level or rank, pipeline.curriculum.parse_difficulty), and the URL keys of pipeline.provenance (the
        public source exports show; else the path relative to the input root, ``input_root`` if given).
        A file whose content (sha256) is already stored under another video is recorded as a
        ``duplicate`` pointing to that video (``duplicate_of``) and costs no stage work; an
        empty file is an ``empty`` error. Returns every registered video, duplicates included.
        """
        store = self.store
        self._run_id = run_id
        videos: list[dict] = []
        self.reporter.stage("register", len(items))
        for f, extra in items:
            meta = {**sidecar(f), **{k: v for k, v in extra.items() if v is not None}}
            sha = file_sha256(f)
            vid = extra.get("id") or make_video_id(f, meta, sha)
            row = {"video_id": vid, "source": str(f), "sha256": sha, "title": meta.get("title") or f.stem,
                   "subject": meta.get("subject"), "course": meta.get("course"),
                   "knowledge_point": meta.get("knowledge_point"), "metadata": meta,
                   "subcourse": meta.get("subcourse"), "difficulty": parse_difficulty(meta.get("difficulty")),
                   "public_source": public_source(f, meta, getattr(self, "_input_roots", ()))}
            store.upsert_video(row)
            if f.stat().st_size == 0:
                self._error(vid, "probe", ToolError("empty", f"{f.name} is empty (0 bytes)"), run_id)
            elif (kept := store.video_by_sha256(sha, exclude=vid)) is not None:
                store.update_video(vid, status="duplicate", reason="duplicate", duplicate_of=kept["video_id"])
                row["duplicate_of"] = kept["video_id"]
            elif store.video(vid)["status"] == "duplicate":  # its original is gone from the store
                store.update_video(vid, status="pending", reason=None, duplicate_of=None)
            videos.append(row)
            self.reporter.advance("register")
        return list({v["video_id"]: v for v in videos}.values())

    def originals(self, videos: list[dict]) -> list[dict]:
        """The videos to process: duplicates replaced by the video they duplicate (once each)."""
        out: dict[str, dict] = {}
        for v in videos:
            if v.get("duplicate_of"):
                kept = self.store.video(v["duplicate_of"])
                out.setdefault(kept["video_id"], kept)
            else:
                out.setdefault(v["video_id"], v)
        return list(out.values())

    def transcribe(self, run_id: str, videos: list[dict]) -> list[dict]:
        """Probe, rule filters, ASR, transcript rules: the videos still active."""
        self._run_id = run_id
        return self._asr(run_id, self._probe(run_id, videos))

    def visuals(self, run_id: str, videos: list[dict]) -> list[dict]:
        """Keyframes and OCR: the videos whose both stages are done."""
        self._run_id = run_id
        return self._ocr(run_id, self._keyframes(run_id, videos))

    def build_clips(self, videos: list[dict], decide=None, decide_hash: str = "") -> list[dict]:
        """Clips per video; ``decide(video_id, rows, frames) -> rows`` may set decision, reason, polished."""
        return self._clips(videos, decide, decide_hash)

    def pack(self, run_id: str, videos: list[dict], kept: list[dict]) -> list[dict]:
        return self._pack(run_id, videos, kept)

    def summary(self, run_id: str, videos: list[dict], samples: list[dict]) -> RunResult:
        return self._summary(run_id, videos, samples)

    def _probe(self, run_id: str, videos: list[dict]) -> list[dict]:
        store, h = self.store, self.h["probe"]
        self.reporter.stage("probe", len(videos))
        active = []
        for v in videos:
            vid = v["video_id"]
            if (store.video(vid) or {}).get("status") == "duplicate":
                self.reporter.advance("probe")
                continue
            if not self._done(vid, "probe", h):
                t = time.perf_counter()
                try:
                    info = stages.probe_task(v["source"])
                except ToolError as exc:
                    self._error(vid, "probe", exc, run_id)
                    self.reporter.advance("probe")
                    continue
                store.save_probe(vid, h, info, time.perf_counter() - t)
                self._ran("probe")
            row = store.video(vid)
            if store.stage(vid, "probe")["status"] == "error":
                self.reporter.advance("probe")
                continue
            info = {"duration": row["duration"], "has_audio": row["has_audio"], "has_video": (row["width"] or 0) > 0}
            reason = stages.probe_rules(info, self.cfg.filters)
            if reason:
                self._reject(vid, reason)
            else:
                active.append(v)
            self.reporter.advance("probe")
        return active

    def _heavy(self, stage: str, todo: list[dict], fn, args_of, save) -> None:
        """Run ``fn`` over the videos in ``todo`` with the executor; save each result as it lands."""
        if not todo:
            return
        for i, result in self._executor().map_unordered(fn, [args_of(v) for v in todo]):
            v = todo[i]
            if isinstance(result, BaseException):
                self._error(v["video_id"], stage, result, self._run_id)
            else:
                save(v, result)
                self._ran(stage)
            self.reporter.advance(stage)

    def _executor(self):
        """One executor for the runner's life (a Ray or process pool starts once, not per stage)."""
        if self._exec is None:
            if self.cfg.executor == "ray":
                self._exec = make_executor("ray", self.cfg.workers, address=self.cfg.ray_address)
            else:
                self._exec = make_executor(self.cfg.executor, self.cfg.workers)
        return self._exec

    def close(self) -> None:
        if self._exec is not None:
            self._exec.close()
            self._exec = None

    def _asr(self, run_id: str, videos: list[dict]) -> list[dict]:
        store, cfg, h = self.store, self.cfg, self.h["asr"]
        self._run_id = run_id
        self.reporter.stage("asr", len(videos))
        todo = [v for v in videos if not self._done(v["video_id"], "asr", h)]
        for _ in range(len(videos) - len(todo)):
            self.reporter.advance("asr")

        def save(v, tr):
            store.save_transcript(v["video_id"], h, tr, count_tokens(" ".join(s["text"] for s in tr["segments"]),
                                                                     cfg.tokenizer))

        self._heavy("asr", todo, stages.asr_task,
                    lambda v: (v["source"], cfg.asr, tuple(cfg.filters.languages), cfg.filters.min_speech_seconds),
                    save)
        active = []
        for v in videos:
            vid = v["video_id"]
            if store.stage(vid, "asr") is None or store.stage(vid, "asr")["status"] == "error":
                continue
            tr = store.transcript(vid)
            reason = stages.transcript_rules(tr, tr["n_tokens"], cfg.filters)
            if reason:
                self._reject(vid, reason)
            else:
                active.append(v)
        return active

    def _frames_dir(self, vid: str) -> Path:
        return self.media / "frames" / vid

    def _keyframes(self, run_id: str, videos: list[dict]) -> list[dict]:
        store, cfg, h = self.store, self.cfg, self.h["keyframes"]
        self.reporter.stage("keyframes", len(videos))

        def cached(vid: str) -> bool:
            return self._done(vid, "keyframes", h) and all(Path(k["path"]).is_file() for k in store.keyframes(vid))

        todo = [v for v in videos if not cached(v["video_id"])]
        for _ in range(len(videos) - len(todo)):
            self.reporter.advance("keyframes")
        self._heavy("keyframes", todo, stages.keyframes_task,
                    lambda v: (v["source"], str(self._frames_dir(v["video_id"])), cfg.keyframes),
                    lambda v, r: store.save_keyframes(v["video_id"], h, r["keyframes"], r["seconds"]))
        return [v for v in videos if store.stage(v["video_id"], "keyframes")["status"] == "done"]

    def _plan(self, vid: str) -> list[assemble.ClipPlan]:
        """The clips of a video from its stored transcript and keyframes (the same for OCR and clips)."""
        tr = self.store.transcript(vid)
        row = self.store.video(vid)
        return assemble.plan_clips(tr["segments"], row["duration"] or tr["duration"], self.store.keyframes(vid),
                                   self.cfg.clips)

    def _ocr(self, run_id: str, videos: list[dict]) -> list[dict]:
        """OCR of the keyframes the clips will show (the per-clip cap applied first), then the line filter."""
        store, cfg, h = self.store, self.cfg, self.h["ocr"]
        self.reporter.stage("ocr", len(videos))
        todo = [v for v in videos if not self._done(v["video_id"], "ocr", h)]
        for _ in range(len(videos) - len(todo)):
            self.reporter.advance("ocr")
        shown = {v["video_id"]: sorted((k for p in self._plan(v["video_id"]) for k in p.keyframes),
                                       key=lambda k: k["time_s"]) for v in todo}

        def save(v, results):
            vid = v["video_id"]
            frames = shown[vid]
            verdicts = assemble.filter_ocr([[OcrLine(**line) for line in r["lines"]] for r in results],
                                           cfg.ocr_filter)
            read = {f["idx"] for f in frames}
            rows = [{**r, "index": f["idx"], "raw": r["text"], "text": verdict.text, "lines": verdict.lines,
                     "kept": verdict.kept, "drop_reason": verdict.reason}
                    for f, r, verdict in zip(frames, results, verdicts, strict=True)]
            rows += [{"index": f["idx"], "text": None, "raw": None, "lines": None, "confidence": None, "engine": None,
                      "kept": False, "drop_reason": "clip_cap"} for f in store.keyframes(vid) if f["idx"] not in read]
            calls = [llm_call_row(r["llm_call"], run_id, vid) for r in results if r.get("llm_call")]
            store.save_ocr(vid, h, rows, sum(r["seconds"] for r in results), calls)

        self._heavy("ocr", todo, stages.ocr_task, lambda v: ([k["path"] for k in shown[v["video_id"]]], cfg.ocr),
                    save)
        return [v for v in videos if (store.stage(v["video_id"], "ocr") or {}).get("status") == "done"]

    def _clips(self, videos: list[dict], decide=None, decide_hash: str = "") -> list[dict]:
        """Segment transcripts into clips, attach keyframes, decide per clip, link the images."""
        store, cfg = self.store, self.cfg
        kept = []
        for v in videos:
            vid = v["video_id"]
            h = config_hash("clips", STAGE_VERSIONS["clips"], cfg.clips, self.h["asr"], self.h["ocr"], decide_hash)
            images_dir = self.media / "images" / vid
            if not (self._done(vid, "clips", h) and images_dir.is_dir()):
                frames = store.keyframes(vid)
                rows = []
                for i, plan in enumerate(self._plan(vid)):
                    span, kfs = plan.span, plan.keyframes
                    decision, reason = ("keep", None) if kfs else ("drop_frames", "no_keyframes")
                    rows.append({"index": i, "start": span.start, "end": span.end, "text": span.text,
                                 "n_tokens": count_tokens(span.text, cfg.tokenizer),
                                 "keyframes": [k["idx"] for k in kfs], "capped": [k["idx"] for k in plan.capped],
                                 "decision": decision, "reason": reason})
                if decide is not None:
                    rows = decide(vid, rows, {f["idx"]: f for f in frames})
                self._link_images(vid, rows, {f["idx"]: f for f in frames})
                store.save_clips(vid, h, rows)
                self._ran("clips")
            if store.clips(vid):
                store.update_video(vid, status="kept", reason=None)
                kept.append(v)
            else:
                self._reject(vid, "no_clips")
        return kept

    def _link_images(self, vid: str, clip_rows: list[dict], frames: dict[int, dict]) -> None:
        """Name each clip's keyframes by the released rule, as hard links to the frame files."""
        target = self.media / "images" / vid
        tmp = target.with_name(f".{vid}.tmp")
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

    def _pack(self, run_id: str, videos: list[dict], kept: list[dict]) -> list[dict]:
        store, cfg = self.store, self.cfg
        kept_ids = {v["video_id"] for v in kept}
        ordered = [v for v in videos if v["video_id"] in kept_ids]
        parts = [(v["video_id"], store.stage(v["video_id"], "clips")["config_hash"]) for v in ordered]
        h = config_hash("pack", STAGE_VERSIONS["pack"], cfg.pack, cfg.tokenizer, parts)
        out_file = self.out_dir / "samples.jsonl"
        row = store.stage(f"run:{run_id}", "pack")
        if row and row["config_hash"] == h and out_file.is_file():
            return store.samples(run_id)
        positions = []
        for v in ordered:
            row_v = store.video(v["video_id"])
            frames = {f["idx"]: f for f in store.keyframes(v["video_id"])}
            clip_rows = store.clips(v["video_id"])
            video_positions = assemble.interleave(row_v, clip_rows, frames)
            if any(p.image and not (self.media / p.image).is_file() for p in video_positions):
                # media named by an earlier naming rule (or lost): name the clips' keyframes again
                self._link_images(v["video_id"], [{**c, "start": c["start_s"], "end": c["end_s"]} for c in clip_rows],
                                  frames)
            positions.append(video_positions)
        samples = assemble.pack(positions, cfg.pack, cfg.tokenizer)
        store.save_samples(run_id, h, samples)
        self._ran("pack")
        export(samples, self.out_dir, "jsonl", self.media, ExportOptions(run_id=run_id, tokenizer=cfg.tokenizer))
        return samples

    def _summary(self, run_id: str, videos: list[dict], samples: list[dict]) -> RunResult:
        per_video_samples: dict[str, int] = {}
        for s in samples:
            for vid in {m.get("video_id") for m in s["metadata"] if m.get("video_id")}:
                per_video_samples[vid] = per_video_samples.get(vid, 0) + 1
        out = []
        for v in videos:
            row = self.store.video(v["video_id"])
            clips = self.store.clips(v["video_id"]) if row["status"] == "kept" else []
            reason = f"duplicate of {row['duplicate_of']}" if row["status"] == "duplicate" else row["reason"]
            out.append(VideoSummary(
                video_id=v["video_id"], source=v["source"], status=row["status"], reason=reason,
                clips=len(clips), keyframes=sum(len(c["keyframes"]) for c in clips if c["decision"] == "keep"),
                samples=per_video_samples.get(v["video_id"], 0)))
        return RunResult(run_id=run_id, videos=out, samples=len(samples), out_dir=str(self.out_dir), seconds=0.0,
                         stages_run=dict(self.stages_run))


def llm_call_row(call: dict, run_id: str, video_id: str, node: str = "ocr") -> dict:
    """An ``llm_calls`` row for a model call a tool made (tools.ocr.LlmCall as a dict): the
    VLM OCR backend's calls are logged like the gateway's."""
    import hashlib
    import json
    import uuid

    key = hashlib.sha256(json.dumps([call["model"], call["prompt_sha256"], call["messages"]],
                                    sort_keys=True).encode()).hexdigest()
    return {"call_id": uuid.uuid4().hex, "run_id": run_id, "node": node, "role": node, "video_id": video_id,
            "prompt_name": call["prompt_name"], "prompt_sha256": call["prompt_sha256"], "model": call["model"],
            "cache_key": key, "cached": False, "messages": call["messages"], "response": call["response"],
            "input_tokens": call["input_tokens"], "output_tokens": call["output_tokens"],
            "tokens_estimated": call["tokens_estimated"], "cost_usd": 0.0, "latency_s": call["latency_s"],
            "attempts": 1, "error": call["error"]}


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)
