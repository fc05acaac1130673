"""Media: probe a file, extract its audio, read frames at a chosen rate.

Uses ffprobe/ffmpeg for probing and audio (robust, clear errors) and PyAV for frames.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tools.errors import ToolError

VIDEO_EXTENSIONS = frozenset({".mp4", ".mkv", ".webm", ".mov", ".avi", ".m4v", ".flv", ".mpg", ".mpeg", ".ts"})


@dataclass(frozen=True)
class MediaInfo:
    """What ffprobe says about a file."""

    path: str
    size_bytes: int
    duration: float
    format_name: str
    has_video: bool
    has_audio: bool
    width: int = 0
    height: int = 0
    fps: float = 0.0
    video_codec: str = ""
    audio_codec: str = ""


def _require(tool: str) -> str:
    found = shutil.which(tool)
    if not found:
        raise ToolError("missing-tool", f"{tool} is not installed (apt-get install ffmpeg)")
    return found


def _rate(text: str | None) -> float:
    if not text or text in ("0/0", "0"):
        return 0.0
    num, _, den = text.partition("/")
    try:
        return float(num) / float(den or 1)
    except (ValueError, ZeroDivisionError):
        return 0.0


def probe(path: str | Path, timeout: float = 60.0) -> MediaInfo:
    """Probe a media file; raise ToolError(kind="corrupt") if it cannot be read."""
    path = Path(path)
    if not path.is_file():
        raise ToolError("missing", f"no such file: {path}")
    cmd = [_require("ffprobe"), "-v", "error", "-print_format", "json", "-show_format", "-show_streams", str(path)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        raise ToolError("timeout", f"ffprobe took over {timeout:.0f}s on {path.name}") from exc
    if proc.returncode != 0:
        detail = (proc.stderr.strip().splitlines() or ["unreadable"])[-1].replace(f"{path}: ", "")
        raise ToolError("corrupt", f"{path.name}: {detail}")
    data = json.loads(proc.stdout or "{}")
    streams = data.get("streams", [])
    fmt = data.get("format", {})
    video = next((s for s in streams if s.get("codec_type") == "video"
                  and not s.get("disposition", {}).get("attached_pic")), None)
    audio = next((s for s in streams if s.get("codec_type") == "audio"), None)
    duration = float(fmt.get("duration") or (video or {}).get("duration") or 0.0)
    if video is None and audio is None:
        raise ToolError("corrupt", f"{path.name}: no audio or video streams")
    return MediaInfo(
        path=str(path),
        size_bytes=path.stat().st_size,
        duration=duration,
        format_name=fmt.get("format_name", ""),
        has_video=video is not None,
        has_audio=audio is not None,
        width=int((video or {}).get("width") or 0),
        height=int((video or {}).get("height") or 0),
        fps=_rate((video or {}).get("avg_frame_rate")) or _rate((video or {}).get("r_frame_rate")),
        video_codec=(video or {}).get("codec_name", ""),
        audio_codec=(audio or {}).get("codec_name", ""),
    )


def extract_audio(path: str | Path, sample_rate: int = 16000, timeout: float = 600.0) -> np.ndarray:
    """Decode the first audio track to mono float32 PCM at ``sample_rate``."""
    cmd = [_require("ffmpeg"), "-nostdin", "-v", "error", "-i", str(path), "-map", "0:a:0", "-vn",
           "-ac", "1", "-ar", str(sample_rate), "-f", "f32le", "-"]
    try:
        proc = subprocess.run(cmd, capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        raise ToolError("timeout", f"audio extraction took over {timeout:.0f}s") from exc
    if proc.returncode != 0:
        msg = proc.stderr.decode(errors="replace").strip().splitlines()
        detail = msg[-1] if msg else "ffmpeg failed"
        kind = "no-audio" if any("matches no streams" in line for line in msg) else "corrupt"
        raise ToolError(kind, f"{Path(path).name}: {detail}")
    return np.frombuffer(proc.stdout, dtype=np.float32).copy()


def read_frames(path: str | Path, rate: float = 1.0, width: int | None = None,
                fmt: str = "rgb24") -> Iterator[tuple[float, np.ndarray]]:
    """Yield (time, frame) at about ``rate`` frames per second, decoding the whole stream."""
    import av

    step = 1.0 / rate if rate > 0 else 0.0
    next_t = 0.0
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            for frame in container.decode(stream):
                if frame.time is None or frame.time + 1e-6 < next_t:
                    continue
                next_t = frame.time + step
                if width:
                    height = max(2, round(frame.height * width / frame.width / 2) * 2)
                    frame = frame.reformat(width=width, height=height)
                yield frame.time, frame.to_ndarray(format=fmt)
    except av.FFmpegError as exc:
        raise ToolError("corrupt", f"{Path(path).name}: {exc}") from exc


_ID_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")


def file_sha256(path: str | Path) -> str:
    """sha256 of a file's bytes (a video's identity when it has no id of its own)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 22):
            digest.update(block)
    return digest.hexdigest()


def local_video_id(path: str | Path, meta: dict, sha: str) -> str:
    """A sidecar's id (a YouTube id), else the file stem plus 8 hex of its sha256."""
    if isinstance(meta.get("id"), str) and _ID_RE.fullmatch(meta["id"]):
        return meta["id"]
    stem = re.sub(r"[^A-Za-z0-9_-]+", "_", Path(path).stem).strip("_")[:40] or "video"
    return f"{stem}-{sha[:8]}"


def read_sidecar(path: Path) -> dict:
    """Metadata beside a video: NAME.json or NAME.info.json (yt-dlp's); never a *.truth.json."""
    for candidate in (path.with_suffix(".json"), path.with_suffix(".info.json")):
        if candidate.name.endswith(".truth.json") or not candidate.is_file():
            continue
        try:
            data = json.loads(candidate.read_text())
        except (OSError, ValueError) as exc:
            logging.getLogger(__name__).warning("ignoring unreadable metadata %s: %s", candidate, exc)
            return {}
        return data if isinstance(data, dict) else {}
    return {}
