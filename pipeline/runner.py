"""The driver of ``textbook process``: video files in, samples out, every step in the store.

``process`` is a list of stages (pipeline.stages, on the contract of pipeline.stage): per video
probe -> rules -> ASR -> rules -> keyframes -> OCR -> clips; then, for the run, pack -> export. On the
local executor, ASR of the next video runs while keyframes and OCR of the previous one do
(``Runner.overlapped``, config ``overlap``).
Each output is stored under (video, stage, config hash), so a rerun with the same config skips it
and a run with another config keeps its own beside it; each run records in ``run_videos`` the
hashes it used and the status of each video. One bad video is an error row with a kind and the run
goes on; the same command again redoes what failed (``failed_before``), except the permanent kinds.
Only this driver writes the store: executors return results.

The agent (agents/graph.py) drives the same stages through ``Runner``'s public methods, possibly
from several worker threads at once, each with its own videos.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.config import PipelineConfig, config_hash
from pipeline.curriculum import parse_difficulty
from pipeline.executors import make_executor
from pipeline.export import ExportOptions, export
from pipeline.provenance import public_source
from pipeline.records import Status
from pipeline.stage import STAGE_VERSIONS, Context, NullReporter, Reporter
from pipeline.stages import AsrStage, ClipsStage, KeyframesStage, OcrStage, PackStage, ProbeStage
from pipeline.stages.ocr import plan as plan_clips
from store import Store
from store.paths import media_dir
from tools.errors import PERMANENT_KINDS, ToolError
from tools.media import VIDEO_EXTENSIONS, file_sha256, read_sidecar
from tools.media import local_video_id as make_video_id

log = logging.getLogger(__name__)

__all__ = ["STAGE_VERSIONS", "InputError", "Runner", "RunResult", "VideoSummary", "discover"]


class InputError(Exception):
    """Bad input from the user: reported as one line, non-zero exit, nothing recorded lost."""


@dataclass
class VideoSummary:
    video_id: str
    source: str
    status: str  # pipeline.records.Status: kept | rejected | error | duplicate
    reason: str | None = None  # the rule's drop reason, or the error kind (status error)
    clips: int = 0
    keyframes: int = 0
    samples: int = 0
    failed_at: str | None = None  # status error: the stage that failed (probe, asr, keyframes, ...)
    warnings: list[str] = field(default_factory=list)  # "KIND: message" of each warning it survived (truncated, ...)


@dataclass
class RunResult:
    run_id: str
    videos: list[VideoSummary]
    samples: int
    out_dir: str
    seconds: float
    stages_run: dict[str, int] = field(default_factory=dict)
    export: str | None = None  # the samples file written (samples.jsonl, or samples.RUN.jsonl beside another run's)
    dropped: dict[str, dict[str, int]] = field(default_factory=dict)  # stage -> {reason or error kind: videos}
    warnings: dict[str, int] = field(default_factory=dict)  # warning kind -> videos of the run with one
    retried: dict[str, int] = field(default_factory=dict)  # "STAGE KIND" -> videos that failed last time, redone

    @property
    def failed(self) -> dict[str, int]:
        """The videos that failed, counted by ``"STAGE KIND"`` (``keyframes internal``, ``probe corrupt``)."""
        out: dict[str, int] = {}
        for v in self.videos:
            if v.status == "error":
                key = f"{v.failed_at or 'register'} {v.reason or 'internal'}"
                out[key] = out.get(key, 0) + 1
        return out

    def to_json(self) -> dict:
        return {"run_id": self.run_id, "samples": self.samples, "out": self.out_dir, "export": self.export,
                "seconds": self.seconds, "stages_run": self.stages_run, "dropped": self.dropped,
                "failed": self.failed, "retried": self.retried, "warnings": self.warnings,
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
    """Where the store keeps keyframe files: beside the database, NAME_media/, as an absolute path (so
    what is written under it is found from any working directory; store.paths)."""
    return media_dir(db_path)


# -- the driver ----------------------------------------------------------------
class Runner:
    """``process``'s stages over video files, and the steps the agent drives one by one.

    The public steps (``register``, ``originals``, ``transcribe``, ``visuals``, ``build_clips``, ``pack``,
    ``summary``) take and return video dicts (``videos`` rows, at least ``video_id`` and ``source``); they
    may be called from several threads at once for different videos of the same run.
    """

    def __init__(self, store: Store, cfg: PipelineConfig, out_dir: Path, reporter: Reporter | None = None,
                 command: str = "process"):
        self.store = store
        self.cfg = cfg
        self.out_dir = out_dir
        self.media = media_dir_for(store.path)
        self.reporter = reporter or NullReporter()
        self.command = command
        self._exec = None
        self._exec_lock = threading.Lock()
        self.ctx = Context(store, cfg, self.media, executor=self._executor, reporter=self.reporter)
        ocr = OcrStage(self.ctx)
        self.h = {"probe": ProbeStage(self.ctx).config_hash({}), "asr": ocr.asr_h, "keyframes": ocr.kf_h,
                  "ocr": ocr.config_hash({})}

    @property
    def stages_run(self) -> dict[str, int]:
        """Videos (runs, for pack) each stage computed in this runner's life."""
        return dict(self.ctx.ran)

    @property
    def _run_id(self) -> str:
        return self.ctx.run_id

    @_run_id.setter
    def _run_id(self, run_id: str) -> None:
        self.ctx.run_id = run_id

    def run(self, paths: list[str | Path]) -> RunResult:
        t0 = time.perf_counter()
        files = discover(paths)
        self._input_roots = [Path(p).expanduser().resolve() for p in paths]  # public_source: paths relative to these
        check_writable(self.out_dir)
        check_writable(self.media)
        inputs = [str(f) for f in files]
        cfg_json = self.cfg.model_dump(mode="json")
        run_id = "run-" + config_hash(self.command, inputs, cfg_json)[:12]
        retried = self.failed_before(run_id)
        self.store.start_run(run_id, self.command, inputs, cfg_json, config_hash(cfg_json))
        try:
            result = self._run(run_id, files)
            result.retried = retried
        except BaseException as exc:
            self.store.finish_run(run_id, "failed", {"error": f"{type(exc).__name__}: {exc}"})
            raise
        finally:
            self.close()
        result.seconds = round(time.perf_counter() - t0, 2)
        self.store.finish_run(run_id, "finished", result.to_json())
        return result

    def failed_before(self, run_id: str) -> dict[str, int]:
        """The videos that an earlier run with this id left failed and that this one redoes, counted by
        ``"STAGE KIND"``: every error but those of a permanent kind (tools.errors.PERMANENT_KINDS: the
        input itself is corrupt, empty, ...), whose stage status serves the error again. A failure is not
        a result: the same command after a fix (a library, a model, a bug) redoes the stage that failed."""
        out: dict[str, int] = {}
        for r in self.store.rows("SELECT video_id, reason FROM run_videos WHERE run_id = ? AND status = ? "
                                 "ORDER BY position", [run_id, Status.ERROR.value]):
            kind = r["reason"] or "internal"
            if kind in PERMANENT_KINDS:
                continue
            key = f"{self._failed_at(r['video_id'], kind) or 'register'} {kind}"
            out[key] = out.get(key, 0) + 1
        return out

    def _failed_at(self, vid: str, kind: str) -> str | None:
        """The stage of the video's latest error of this kind."""
        return self.store.scalar("SELECT stage FROM errors WHERE video_id = ? AND kind = ? "
                                 "ORDER BY occurred_at DESC LIMIT 1", [vid, kind])

    def _run(self, run_id: str, files: list[Path]) -> RunResult:
        """The ``process`` flow: the stages in order over all videos, then pack and export."""
        videos = self.register(run_id, [(f, {}) for f in files])
        work = self.originals(videos)
        self.store.set_run_videos(run_id, list(dict.fromkeys(v["video_id"] for v in [*work, *videos])))
        active = ProbeStage(self.ctx).run(work)
        if self.cfg.executor == "local" and self.cfg.overlap and len(active) > 1:
            active = self.overlapped(active)
        else:
            for stage in (AsrStage(self.ctx), KeyframesStage(self.ctx), OcrStage(self.ctx)):
                active = stage.run(active)
        active = ClipsStage(self.ctx).run(active)
        samples = self.pack(run_id, work, active)
        return self._summary(run_id, videos, samples)

    def overlapped(self, videos: list[dict]) -> list[dict]:
        """ASR, keyframes and OCR over ``videos`` as a two-lane pipeline in this process: a worker thread
        transcribes the videos one after another while this thread runs keyframes then OCR on each video
        as soon as its transcript is done, so decoding and tesseract fill the cores CTranslate2 leaves
        idle. The same work as running the stages one after another (no keyframes for a video the
        transcript rules drop; OCR reads the transcript's clips), and the same stored results. Returns the
        videos that pass all three, in the order given.

        An exception that ends the run (not a video's fault; those are error rows) stops the ASR lane
        after the video in progress, so nothing is half written."""
        ctx = self.ctx
        asr, keyframes, ocr = AsrStage(ctx), KeyframesStage(ctx), OcrStage(ctx)
        for stage in (asr, keyframes, ocr):
            ctx.reporter.stage(stage.name, len(videos))
        done: queue.Queue = queue.Queue()
        stop = threading.Event()

        def transcribe() -> None:
            try:
                for v in videos:
                    if stop.is_set():
                        break
                    done.put((v, bool(asr.run([v], announce=False)), None))
            except BaseException as exc:  # handed to the driver thread, which raises it
                done.put((None, False, exc))
            finally:
                done.put(None)

        lane = threading.Thread(target=transcribe, name="textbook-asr", daemon=True)
        lane.start()
        passed: set[str] = set()
        try:
            while (item := done.get()) is not None:
                v, transcribed, exc = item
                if exc is not None:
                    raise exc
                if not transcribed:  # dropped or failed at ASR: no visual work, counted as done
                    ctx.reporter.advance(keyframes.name)
                    ctx.reporter.advance(ocr.name)
                elif not keyframes.run([v], announce=False):
                    ctx.reporter.advance(ocr.name)
                elif ocr.run([v], announce=False):
                    passed.add(v["video_id"])
        finally:
            stop.set()
            lane.join()
        return [v for v in videos if v["video_id"] in passed]

    # -- steps, public so the agent can put its judges between them ----------------
    def register(self, run_id: str, items: list[tuple[Path, dict]]) -> list[dict]:
        """Record each file as a video (sidecar metadata, overridden by ``extra``); dedup by video id.

        Keys read from the metadata: title, subject, course, subcourse, knowledge_point, difficulty (a grade
        level or rank, pipeline.curriculum.parse_difficulty), and the URL keys of pipeline.provenance (the
        public source exports show; else the path relative to the input root, ``input_root`` if given).
        A file whose content (sha256) is already stored under another video is recorded as a
        ``duplicate`` pointing to that video (``duplicate_of``) and costs no stage work; an
        empty file is an ``empty`` error. Each video gets a ``run_videos`` row of the run (status pending,
        duplicate or error). Returns every registered video, duplicates included.
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
            status, reason = Status.PENDING, None
            if f.stat().st_size == 0:
                ProbeStage(self.ctx).error(vid, self.h["probe"], ToolError("empty", f"{f.name} is empty (0 bytes)"))
                status, reason = Status.ERROR, "empty"
            elif (kept := store.video_by_sha256(sha, exclude=vid)) is not None:
                store.update_video(vid, status=Status.DUPLICATE.value, reason="duplicate",
                                   duplicate_of=kept["video_id"])
                row["duplicate_of"] = kept["video_id"]
                status, reason = Status.DUPLICATE, "duplicate"
            elif store.video(vid)["status"] == Status.DUPLICATE:  # its original is gone from the store
                store.update_video(vid, status=Status.PENDING.value, reason=None, duplicate_of=None)
            store.update_run_video(run_id, vid, status=status, reason=reason)
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
        return AsrStage(self.ctx).run(ProbeStage(self.ctx).run(videos))

    def visuals(self, run_id: str, videos: list[dict]) -> list[dict]:
        """Keyframes and OCR: the videos whose both stages are done."""
        self._run_id = run_id
        return OcrStage(self.ctx).run(KeyframesStage(self.ctx).run(videos))

    def build_clips(self, videos: list[dict], decide=None, decide_hash: str = "",
                    run_id: str | None = None) -> list[dict]:
        """Clips per video; ``decide(video_id, rows, frames) -> rows`` may set decision, reason, polished,
        signals. ``decide_hash`` is the hash of the policy behind ``decide`` (part of the clips hash, so
        two policies keep their own clips); the clips hash used is recorded in the run's ``run_videos``."""
        if run_id:
            self._run_id = run_id
        return ClipsStage(self.ctx, decide, decide_hash).run(videos)

    def pack(self, run_id: str, videos: list[dict], kept: list[dict]) -> list[dict]:
        """Interleave and pack the run's ``kept`` videos (in the order of ``videos``), store the samples under
        the run and write them to ``out_dir`` (``export_samples``), cached or not."""
        self._run_id = run_id
        samples = PackStage(self.ctx).run(run_id, videos, kept)
        self.export_samples(run_id, samples)
        return samples

    def export_samples(self, run_id: str, samples: list[dict]) -> Path:
        """Write the run's samples (jsonl) and images to ``out_dir``: samples.jsonl, or samples.RUN.jsonl
        when the folder holds another run's samples.jsonl (pipeline.export: nothing another run wrote is
        lost). Returns the file written."""
        result = export(samples, self.out_dir, "jsonl", self.media,
                        ExportOptions(run_id=run_id, tokenizer=self.cfg.tokenizer))
        self.exported = result.target
        return result.target

    def summary(self, run_id: str, videos: list[dict], samples: list[dict]) -> RunResult:
        return self._summary(run_id, videos, samples)

    def transcript(self, vid: str) -> dict | None:
        """The transcript this runner's ASR config made for the video (Store.transcript at its hash)."""
        return self.store.transcript(vid, self.h["asr"])

    def _frames_dir(self, vid: str) -> Path:
        return KeyframesStage(self.ctx).frames_dir(vid, self.h["keyframes"])

    def _plan(self, vid: str):
        """The clips of a video from its transcript and keyframes at this runner's hashes."""
        return plan_clips(OcrStage(self.ctx), vid, self.h["asr"], self.h["keyframes"])

    def _executor(self):
        """One executor for the runner's life (a Ray or process pool starts once, not per stage)."""
        with self._exec_lock:
            if self._exec is None:
                if self.cfg.executor == "ray":
                    self._exec = make_executor("ray", self.cfg.workers, address=self.cfg.ray_address)
                else:
                    self._exec = make_executor(self.cfg.executor, self.cfg.workers)
            return self._exec

    def close(self) -> None:
        with self._exec_lock:
            if self._exec is not None:
                self._exec.close()
                self._exec = None

    def _summary(self, run_id: str, videos: list[dict], samples: list[dict]) -> RunResult:
        per_video_samples: dict[str, int] = {}
        for s in samples:
            for vid in {m.get("video_id") for m in s["metadata"] if m.get("video_id")}:
                per_video_samples[vid] = per_video_samples.get(vid, 0) + 1
        out = []
        warned: dict[str, list[dict]] = {}
        for w in self.store.warnings(run_id=run_id):
            warned.setdefault(w["video_id"], []).append(w)
        kinds: dict[str, int] = {}
        for v in videos:
            vid = v["video_id"]
            for kind in {w["kind"] for w in warned.get(vid, [])}:
                kinds[kind] = kinds.get(kind, 0) + 1
            row = self.store.video(vid)
            rv = self.store.run_video(run_id, vid) or {}
            status = rv.get("status") or row["status"]
            reason = rv.get("reason") if rv.get("status") else row["reason"]
            if status == Status.DUPLICATE:
                reason = f"duplicate of {row['duplicate_of']}"
            clips = self.store.clips(vid, rv.get("clips_hash")) if status == Status.KEPT else []
            out.append(VideoSummary(
                video_id=vid, source=v["source"], status=status, reason=reason,
                clips=len(clips), keyframes=sum(len(c["keyframes"]) for c in clips if c["decision"] == "keep"),
                samples=per_video_samples.get(vid, 0),
                failed_at=self._failed_at(vid, reason or "internal") if status == Status.ERROR else None,
                warnings=[f"{w['kind']}: {w['message']}" for w in warned.get(vid, [])]))
        exported = getattr(self, "exported", None)
        return RunResult(run_id=run_id, videos=out, samples=len(samples), out_dir=str(self.out_dir), seconds=0.0,
                         stages_run=self.stages_run, export=str(exported) if exported else None,
                         dropped={k: dict(v) for k, v in self.ctx.reasons.items()},
                         warnings=dict(sorted(kinds.items())))

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

