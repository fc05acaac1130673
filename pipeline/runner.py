"""The driver of ``textbook process``: video files in, samples out, every step in the store.

``process`` is a list of stages (``PROCESS_STAGES``, on the contract of pipeline.stage) that one
scheduler (pipeline.flow.Flow, the same as ``build``'s) moves each video through:
probe -> asr -> keyframes -> ocr -> clips; then, for the run, pack -> export. ASR of one video runs
while keyframes and OCR of another do (the ``asr`` and ``visual`` lanes).
Each output is stored under (video, stage, config hash), so a rerun with the same config skips it
and a run with another config keeps its own beside it; each run records in ``run_videos`` the
hashes it used and the status of each video. One bad video is an error row with a kind and the run
goes on; the same command again redoes what failed (``failed_before``), except the permanent kinds.
Only the driver process writes the store: executors return results.
Inputs, the media root (``media``) and ``out_dir`` may be object-store URIs (tools.storage): the tasks read
and write through them, and a preflight (pipeline.preflight) proves every node can before the first task.

The build (agents/graph.py) uses ``register``, ``pack`` and the same stages, in its own longer list
(agents/stages.py), through the same Flow.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.config import PipelineConfig, config_hash
from pipeline.curriculum import parse_difficulty
from pipeline.executors import make_executor
from pipeline.export import ExportOptions, export
from pipeline.flow import Flow
from pipeline.pools import PoolUnavailable, RayPoolExecutor
from pipeline.preflight import PreflightError, check_here, check_nodes
from pipeline.provenance import public_source
from pipeline.records import Status, Video
from pipeline.stage import STAGE_VERSIONS, Context, NullReporter, Reporter, Stage
from pipeline.stages import AsrStage, ClipsStage, KeyframesStage, OcrStage, PackStage, ProbeStage
from store import Store
from store.paths import media_dir
from tools import storage
from tools.errors import PERMANENT_KINDS, ToolError
from tools.media import VIDEO_EXTENSIONS, file_sha256, read_sidecar
from tools.media import local_video_id as make_video_id

log = logging.getLogger(__name__)

__all__ = ["PROCESS_STAGES", "STAGE_VERSIONS", "InputError", "PreflightError", "Runner", "RunResult", "VideoSummary",
           "discover"]

# the stages of ``process``, in flow order (the build adds its judges and download around them: agents/stages.py)
PROCESS_STAGES: tuple[type[Stage], ...] = (ProbeStage, AsrStage, KeyframesStage, OcrStage, ClipsStage)


class InputError(Exception):
    """Bad input from the user: reported as one line, non-zero exit, nothing recorded lost."""


@dataclass
class VideoSummary:
    """One video of a ``process`` run as the summary shows it (status, counts, the stage it failed in)."""

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
    """What ``process`` did: the run, per-video summaries, samples written, stages computed, drops by reason,
    warnings, retried failures."""

    run_id: str
    videos: list[VideoSummary]
    samples: int
    out_dir: str
    seconds: float
    stages_run: dict[str, int] = field(default_factory=dict)
    export: str | None = None  # the samples file written (samples.jsonl, or samples.RUN.jsonl beside another run's)
    dropped: dict[str, dict[str, int]] = field(default_factory=dict)  # stage -> {reason: videos}; failures: failed
    warnings: dict[str, int] = field(default_factory=dict)  # warning kind -> videos of the run with one
    retried: dict[str, int] = field(default_factory=dict)  # "STAGE KIND" -> videos that failed last time, redone
    media: str | None = None  # the media root its images went to (redacted URI, or absolute local folder)

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
        """The result as JSON-safe dicts (``--json`` and the run's stored result)."""
        return {"run_id": self.run_id, "samples": self.samples, "out": self.out_dir, "export": self.export,
                "media": self.media,
                "seconds": self.seconds, "stages_run": self.stages_run, "dropped": self.dropped,
                "failed": self.failed, "retried": self.retried, "warnings": self.warnings,
                "videos": [v.__dict__ for v in self.videos]}


# -- inputs ------------------------------------------------------------------
def discover(paths: list[str | Path]) -> list[Path | str]:
    """Video files named by ``paths`` (files, or folders searched recursively), in a stable order: local
    ones as resolved Paths, those of an object store (``s3://bucket/in/``, a prefix or one object) as URI
    strs (tools.storage; a Path would fold ``s3://`` into ``s3:/``)."""
    if not paths:
        raise InputError("no input given: name video files or folders")
    found: list[Path | str] = []
    for raw in paths:
        if storage.is_remote(raw):
            found.extend(_discover_uri(str(raw)))
            continue
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
    unique = list(dict.fromkeys(f if isinstance(f, str) else f.resolve() for f in found))
    return unique


def _discover_uri(uri: str) -> list[str]:
    """The videos of one object-store input: the object itself, or those under the prefix (VIDEO_EXTENSIONS)."""
    shown = storage.redact(uri)
    ext = os.path.splitext(uri.rstrip("/"))[1].lower()
    try:
        if ext and storage.is_file(uri):
            if ext not in VIDEO_EXTENSIONS:
                raise InputError(f"{shown}: not a video file (extension {ext})")
            return [uri]
        vids = storage.listdir(uri, VIDEO_EXTENSIONS)
    except ToolError as exc:
        if exc.kind == "not_found":
            raise InputError(f"no such file or folder: {shown}") from None
        raise InputError(f"cannot list {shown}: {exc.message}") from None
    if not vids:
        raise InputError(f"{shown}: folder holds no video files (looked for {' '.join(sorted(VIDEO_EXTENSIONS))})")
    return vids


def sidecar(f: Path | str) -> dict:
    """NAME.json / NAME.info.json beside a video (never a *.truth.json); beside an object, read from the store."""
    if not storage.is_remote(f):
        return read_sidecar(Path(f))
    stem = os.path.splitext(str(f))[0]
    for candidate in (f"{stem}.json", f"{stem}.info.json"):
        if candidate.endswith(".truth.json") or not storage.is_file(candidate):
            continue
        try:
            data = json.loads(storage.read_bytes(candidate))
        except (ToolError, ValueError) as exc:
            log.warning("ignoring unreadable metadata %s: %s", storage.redact(candidate), exc)
            return {}
        return data if isinstance(data, dict) else {}
    return {}


def _content(f: Path | str) -> tuple[str, int]:
    """(sha256, bytes) of a video's content; an object is streamed from the store (never its ETag: that is
    not a content hash for a multipart upload, and duplicates are found across local and remote inputs)."""
    if not storage.is_remote(f):
        return file_sha256(f), Path(f).stat().st_size
    return storage.sha256(f)


def check_writable(folder: Path) -> None:
    """Create ``folder`` if needed and prove it writable; InputError (one line) when it is not."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".textbook-write-test-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise InputError(f"cannot write to {folder}: {exc.strerror or exc}") from exc


def recorded_media(store: Store, run_id: str) -> str | None:
    """The media root a finished run recorded (its summary's ``media``: where its keyframes and clip images
    are, as ``process --media`` or ``build --media`` gave it or the store's default, credentials redacted), so
    ``export`` and ``view`` find them without ``--media`` again. None when the run recorded none (an older
    run), or a local folder that is no longer there (the store and its NAME_media/ moved together: the
    caller's default, beside the store, is right then)."""
    row = store.run(run_id)
    try:
        media = json.loads((row or {}).get("summary") or "{}").get("media")
    except (ValueError, AttributeError):
        return None
    if not isinstance(media, str) or not media:
        return None
    if not storage.is_remote(media) and not storage.local_path(media).is_dir():
        return None
    return media


def media_dir_for(db_path: Path) -> Path:
    """Where the store keeps keyframe files: beside the database, NAME_media/, as an absolute path (so
    what is written under it is found from any working directory; store.paths)."""
    return media_dir(db_path)


# -- the driver ----------------------------------------------------------------
class Runner:
    """``process``'s stages over video files (``run``), and what the build shares with it: ``register``
    (a file as a video), ``flow`` (the scheduler over a list of stages, with this run's lanes), ``pack``
    and ``export_samples``. ``start(run_id)`` binds the runner to a run (the one place ``ctx.run_id`` is
    set). ``register`` may be called from several threads at once for different videos of the same run.
    """

    def __init__(self, store: Store, cfg: PipelineConfig, out_dir: Path | str, reporter: Reporter | None = None,
                 command: str = "process", media: Path | str | None = None):
        self.store = store
        self.cfg = cfg
        self.out_dir = out_dir
        # where frames and clip images go: beside the store (store.paths), or ``media`` (a path or a URI)
        if media is None:
            self.media: Path | str = media_dir_for(store.path)
        else:
            self.media = str(media) if storage.is_remote(media) else storage.local_path(media).absolute()
        self.reporter = reporter or NullReporter()
        self.command = command
        self._exec = None
        self._exec_lock = threading.Lock()
        self.ctx = Context(store, cfg, self.media, executor=self._executor, reporter=self.reporter)
        self.asr_h = AsrStage(self.ctx).config_hash(None)

    @property
    def stages_run(self) -> dict[str, int]:
        """Videos (runs, for pack) each stage computed in this runner's life."""
        return dict(self.ctx.ran)

    def start(self, run_id: str) -> None:
        """Bind this runner's stages to ``run_id`` (their ``run_videos`` rows, errors and events)."""
        self.ctx.run_id = run_id

    def flow(self, stages: list[Stage], workers: int | None = None, **kw) -> Flow:
        """The scheduler over ``stages`` with this run's lanes (pipeline.flow): on the local executor one
        video in ASR and one in keyframes/OCR at a time (``overlap`` false: one video at a time through
        every stage); on a process pool ``workers`` videos per lane; on Ray what each lane's pools take at
        once (pipeline/pools.py), the build's ``download`` lane too (elsewhere it is unbounded: its downloads
        run in the flow's threads, as they always did). ``workers``: videos in flight (default: enough to
        fill the lanes); ``kw``: Flow's ledger, reporter, on_progress, before_step."""
        cfg = self.cfg
        kw.setdefault("reporter", self.reporter)
        if cfg.executor == "ray":  # what the actor pools take at once (pipeline/pools.py: backpressure)
            pools = self._executor()
            limits = {"asr": pools.capacity("asr"), "visual": pools.capacity("keyframes") + pools.capacity("ocr")}
            workers = workers or sum(limits.values()) + 1
            limits["download"] = pools.capacity("download")  # the build's lane (process has no download stage)
            return Flow(stages, limits=limits, workers=workers, **kw)
        per_lane = 1 if cfg.executor == "local" else max(1, cfg.workers)
        if cfg.executor == "local" and not cfg.overlap:
            workers = 1
        return Flow(stages, limits={"asr": per_lane, "visual": per_lane}, workers=workers or 2 * per_lane + 1, **kw)

    def run(self, paths: list[str | Path]) -> RunResult:
        """``process`` over ``paths`` (files or folders): register, the flow, pack, export. InputError for bad
        input, PreflightError when a node cannot write the media root or this machine ``out_dir`` (nothing
        recorded then); the run's row records ``finished`` with the result, or ``failed`` with the error."""
        t0 = time.perf_counter()
        files = discover(paths)
        # public_source: paths relative to these
        self._input_roots = [str(p) if storage.is_remote(p) else Path(p).expanduser().resolve() for p in paths]
        self.preflight()
        inputs = [storage.redact(f) for f in files]
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

    def preflight(self) -> None:
        """Before the first task: a local ``out_dir`` and media folder made and written here (InputError, one
        line, as a mistyped path is); an object-store one written and read back here (pipeline.preflight); on
        Ray, the media root written and read by every alive node, each reading the others' (the frames a
        worker writes must be where the driver and the other workers read them). Raises PreflightError (one
        line naming the node) when one cannot."""
        for where in (self.out_dir, self.media):
            if not storage.is_remote(where):
                check_writable(storage.local_path(where))
        if self.cfg.executor == "ray":  # the workers' nodes first (the driver reads what they write): named
            try:
                self._executor().start()  # Ray started (or joined) now, so its nodes can be asked
            except PoolUnavailable as exc:
                raise PreflightError(str(exc)) from None
            check_nodes(self.media)
        check_here([w for w in (self.out_dir, self.media) if storage.is_remote(w)])

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
        err = self.store.last_error(vid, kind)
        return err["stage"] if err else None

    def _run(self, run_id: str, files: list[Path | str]) -> RunResult:
        """The ``process`` flow: every video through PROCESS_STAGES, then pack and export."""
        self.start(run_id)
        videos = self.register(run_id, [(f, {}) for f in files])
        work = self.originals(videos)
        self.store.set_run_videos(run_id, list(dict.fromkeys(v["video_id"] for v in [*work, *videos])))
        stages = [stage(self.ctx) for stage in PROCESS_STAGES]
        passed = self.flow(stages).run([Video.from_row(v) for v in work]).passed
        samples = self.pack(run_id, work, [v.as_dict() for v in passed])
        return self._summary(run_id, videos, samples)

    # -- what the build shares ------------------------------------------------------------------------
    def register(self, run_id: str, items: list[tuple[Path | str, dict]],
                 content: tuple[str, int] | None = None) -> list[dict]:
        """Record each file as a video (sidecar metadata, overridden by ``extra``); dedup by video id.
        A file is a Path, or an object-store URI str (tools.storage: its content streamed for the sha256, its
        sidecar read beside it, its source stored as the URI, tools.storage.redact applied).

        Keys read from the metadata: title, subject, course, subcourse, knowledge_point, difficulty (a grade
        level or rank, pipeline.curriculum.parse_difficulty), and the URL keys of pipeline.provenance (the
        public source exports show; else the path relative to the input root, ``input_root`` if given).
        A file whose content (sha256) is already stored under another video is recorded as a
        ``duplicate`` pointing to that video (``duplicate_of``) and costs no stage work; an
        empty file is an ``empty`` error. Each video gets a ``run_videos`` row of the run (status pending,
        duplicate or error). Returns every registered video, duplicates included. ``content``: (sha256, bytes)
        of a single item, computed where it was written (the build's download task on a Ray worker), so the
        driver does not read the file.
        """
        store = self.store
        videos: list[dict] = []
        self.reporter.stage("register", len(items))
        for f, extra in items:
            meta = {**sidecar(f), **{k: v for k, v in extra.items() if v is not None}}
            sha, size = content if content is not None and len(items) == 1 else _content(f)
            vid = extra.get("id") or make_video_id(f, meta, sha)
            name = Path(str(f)).name
            row = {"video_id": vid, "source": storage.redact(f), "sha256": sha,
                   "title": meta.get("title") or Path(name).stem,
                   "subject": meta.get("subject"), "course": meta.get("course"),
                   "knowledge_point": meta.get("knowledge_point"), "metadata": meta,
                   "subcourse": meta.get("subcourse"), "difficulty": parse_difficulty(meta.get("difficulty")),
                   "public_source": public_source(f, meta, getattr(self, "_input_roots", ()))}
            store.upsert_video(row)
            status, reason = Status.PENDING, None
            if size == 0:
                probe = ProbeStage(self.ctx)
                probe.error(vid, probe.config_hash(None), ToolError("empty", f"{name} is empty (0 bytes)"))
                status, reason = Status.ERROR, "empty"
            elif (kept := store.video_by_sha256(sha, exclude=vid)) is not None:
                store.update_video(vid, status=Status.DUPLICATE.value, reason="duplicate",
                                   duplicate_of=kept["video_id"])
                row["duplicate_of"] = kept["video_id"]
                status, reason = Status.DUPLICATE, "duplicate"
                self.ctx.count("register", "duplicate")  # a drop of its own (RunResult.dropped), as stats counts it
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

    def pack(self, run_id: str, videos: list[dict], kept: list[dict]) -> list[dict]:
        """Interleave and pack the run's ``kept`` videos (in the order of ``videos``), store the samples under
        the run and write them to ``out_dir`` (``export_samples``), cached or not."""
        samples = PackStage(self.ctx).run(run_id, videos, kept)
        self.export_samples(run_id, samples)
        return samples

    def export_samples(self, run_id: str, samples: list[dict]) -> Path | str:
        """Write the run's samples (jsonl) and images to ``out_dir``: samples.jsonl, or samples.RUN.jsonl
        when the folder holds another run's samples.jsonl (pipeline.export: nothing another run wrote is
        lost). Returns the file written."""
        result = export(samples, self.out_dir, "jsonl", self.media,
                        ExportOptions(run_id=run_id, tokenizer=self.cfg.tokenizer))
        self.exported = result.target
        return result.target

    def transcript(self, vid: str) -> dict | None:
        """The transcript this runner's ASR config made for the video (Store.transcript at its hash)."""
        return self.store.transcript(vid, self.asr_h)

    def _executor(self):
        """One executor for the runner's life (a Ray or process pool starts once, not per stage)."""
        with self._exec_lock:
            if self._exec is None:
                if self.cfg.executor == "ray":  # an actor pool per heavy stage, models loaded once per actor
                    self._exec = RayPoolExecutor(self.cfg.pools, address=self.cfg.ray_address,
                                                 workers=self.cfg.workers)
                else:
                    self._exec = make_executor(self.cfg.executor, self.cfg.workers)
            return self._exec

    def close(self) -> None:
        """Stop the executor (a process pool, a Ray instance this runner started)."""
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
                         warnings=dict(sorted(kinds.items())), media=storage.redact(self.media))
