"""Media: probe a file, extract its audio, read frames at a chosen rate.

Uses ffprobe/ffmpeg for probing and audio (robust, clear errors) and PyAV for frames.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
import shutil
import subprocess
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

import numpy as np

from tools.errors import ToolError

VIDEO_EXTENSIONS = frozenset({".mp4", ".mkv", ".webm", ".mov", ".avi", ".m4v", ".flv", ".mpg", ".mpeg", ".ts"})


def _doc(text: str):
    """A field description for the settings schema (pydantic reads it; the dataclass ignores it)."""
    from pydantic import Field

    return Field(description=text)


@dataclass(frozen=True)
class AudioStream:
    """One audio stream of a file, as ffprobe reports it.

    ``index`` is the stream's index in the file (ffmpeg ``-map 0:INDEX``); ``position`` its
    place among the audio streams (``0:a:POSITION``). ``language`` is the container's tag
    normalized to an ISO 639-1 code where one exists (``eng`` -> ``en``, ``ger``/``deu`` -> ``de``;
    by the langcodes library), "" when untagged or ``und``. ``dispositions`` lists the
    disposition flags that are set (default, original, dub, comment, visual_impaired, ...).
    """

    index: int
    position: int
    codec: str = ""
    channels: int = 0
    sample_rate: int = 0
    language: str = ""
    title: str = ""
    dispositions: tuple[str, ...] = ()

    @property
    def default(self) -> bool:
        """Whether the file marks this audio stream as its default (the ``default`` disposition)."""
        return "default" in self.dispositions


@dataclass(frozen=True)
class MediaInfo:
    """What ffprobe says about a file (and, where the header is silent, what demuxing measured).

    Sizes are pixels; times are seconds. ``width``/``height`` are the frame size as stored
    (what a decoder returns). A player shows the frame scaled by ``sample_aspect_ratio``
    (pixel width / pixel height) and turned ``rotation`` degrees clockwise (0, 90, 180, 270,
    from the stream's display matrix, ffmpeg's autorotate convention): ``display_width`` x
    ``display_height`` is that picture's size. ``start_time`` is the container's start offset
    (media times count from it). ``duration_source`` says where ``duration`` came from:
    "format" (the header), "stream" (a stream's duration or DURATION tag), "measured" (the
    last demuxed packet's end; WebM from browsers has no duration in its header) or "none".

    ``duration`` is what decodes: when the data ends before the header's duration by more than
    ``truncation_tolerance`` (a download cut short, the header written first), ``truncated`` is
    True, ``duration`` is the end of the last complete packet (``duration_source`` "measured")
    and ``header_duration`` keeps what the header claimed; otherwise ``header_duration`` equals
    ``duration``.
    """

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
    start_time: float = 0.0
    duration_source: str = "format"
    rotation: int = 0
    sample_aspect_ratio: float = 1.0
    display_width: int = 0
    display_height: int = 0
    audio_streams: tuple[AudioStream, ...] = ()
    header_duration: float = 0.0
    truncated: bool = False


def truncation_tolerance(duration: float) -> float:
    """Seconds by which the decodable end may fall short of a header's ``duration`` (seconds)
    before the file counts as truncated: max(1 s, 2%) (a last frame's or audio packet's length,
    and edit lists, stay well inside it)."""
    return max(1.0, 0.02 * duration)


def _require(tool: str) -> str:
    found = shutil.which(tool)
    if not found:
        raise ToolError("missing-tool", f"{tool} is not installed (apt-get install ffmpeg)")
    return found


def _rate(text: str | None) -> float:
    if not text or text in ("0/0", "0"):
        return 0.0
    num, _, den = text.replace(":", "/").partition("/")
    try:
        return float(num) / float(den or 1)
    except (ValueError, ZeroDivisionError):
        return 0.0


def _float(value) -> float | None:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def _tag_seconds(tags: dict) -> float | None:
    """A Matroska DURATION tag ("00:01:00.013000000") in seconds."""
    text = next((v for k, v in (tags or {}).items() if k.upper() == "DURATION"), None)
    m = re.fullmatch(r"(\d+):(\d{2}):(\d{2}(?:\.\d+)?)", str(text or "").strip())
    return int(m.group(1)) * 3600 + int(m.group(2)) * 60 + float(m.group(3)) if m else None


def language_code(tag: str | None) -> str:
    """A language tag (ISO 639-2 ``eng``/``ger``/``deu``, 639-1 ``en``, BCP 47 ``pt-BR``) as the
    ISO 639-1 code Whisper uses (``en``, ``de``, ``pt``); "" for none, ``und`` or an unknown tag."""
    import langcodes

    text = (tag or "").strip()
    if not text or text.lower() in ("und", "unk", "mis", "zxx", "mul", "xx"):
        return ""
    try:
        lang = langcodes.Language.get(text)
    except (ValueError, LookupError):  # a name (English) or a malformed tag
        return ""
    code = lang.language or "" if lang.is_valid() else ""
    return _WHISPER_ALIASES.get(code, code)


# langcodes' codes where Whisper's tokenizer uses another one
_WHISPER_ALIASES = {"nb": "no", "cmn": "zh", "jv": "jw", "iw": "he"}


def _rotation(stream: dict) -> int:
    """Clockwise degrees to turn a stored frame to display it (display matrix, or the old rotate tag)."""
    for side in stream.get("side_data_list") or []:
        value = _float(side.get("rotation"))
        if value is not None:
            return int(round(-value / 90.0)) * 90 % 360
    value = _float((stream.get("tags") or {}).get("rotate"))
    return int(round(value / 90.0)) * 90 % 360 if value is not None else 0


def _audio_streams(streams: list[dict]) -> tuple[AudioStream, ...]:
    out = []
    for s in streams:
        if s.get("codec_type") != "audio":
            continue
        tags = s.get("tags") or {}
        out.append(AudioStream(
            index=int(s.get("index", len(out))), position=len(out), codec=s.get("codec_name", ""),
            channels=int(s.get("channels") or 0), sample_rate=int(_float(s.get("sample_rate")) or 0),
            language=language_code(tags.get("language") or tags.get("LANGUAGE")),
            title=str(tags.get("title") or tags.get("TITLE") or ""),
            dispositions=tuple(sorted(k for k, v in (s.get("disposition") or {}).items() if v))))
    return tuple(out)


def measure_duration(path: str | Path) -> float:
    """Seconds from the first to the end of the last audio/video packet, by demuxing the file
    (no decoding; PyAV). For files whose header holds no duration. Raises ToolError("corrupt")."""
    import av

    start, end = None, 0.0
    try:
        with av.open(str(path)) as container:
            for packet in container.demux():
                t1 = _packet_end(packet)
                if t1 is None:
                    continue
                t0 = float(packet.pts * packet.time_base)
                start = t0 if start is None else min(start, t0)
                end = max(end, t1)
    except av.FFmpegError as exc:
        raise ToolError("corrupt", f"{Path(path).name}: {exc}") from exc
    return max(0.0, end - start) if start is not None else 0.0


def _packet_end(packet) -> float | None:
    """The end (seconds, media time) of a demuxed audio/video packet; None for others, or one
    without a timestamp or flagged corrupt (cut by the end of the file)."""
    if packet.pts is None or packet.stream.type not in ("video", "audio") or getattr(packet, "is_corrupt", False):
        return None
    return float((packet.pts + (packet.duration or 0)) * packet.time_base)


def _last_end(container) -> float | None:
    """The latest end (seconds, media clock) of the audio/video packets demuxed from where ``container``
    stands to the end of the file; None when there are none."""
    end = None
    for packet in container.demux():
        t = _packet_end(packet)
        if t is not None and (end is None or t > end):
            end = t
    return end


def decodable_duration(path: str | Path, header_duration: float) -> float:
    """Seconds of ``path`` on the media clock that its packets reach, for a header that claims
    ``header_duration`` seconds (demuxing only, no decoding; PyAV).

    A complete file is confirmed cheaply: seek to a keyframe a few seconds before the header's end
    and demux the rest; when the last packet ends within ``truncation_tolerance`` of the header's
    duration, ``header_duration`` is returned. Otherwise (a download cut short: an MP4 whose index,
    written first, lists samples the file no longer holds) the whole file is demuxed and the end
    of its last complete packet returned (a packet cut by the end of the file does not count; 0.0
    when none is left). The header's duration is taken as an end time, as MP4's is (it includes a
    start offset): a file that starts late is not taken for a short one. Raises ToolError("corrupt")
    when PyAV cannot open the file.
    """
    import av

    tol = truncation_tolerance(header_duration)
    try:
        with av.open(str(path)) as container:
            try:
                if header_duration - tol - 5.0 > 0:
                    container.seek(int((header_duration - tol - 5.0) * av.time_base), backward=True)
                end = _last_end(container)
            except av.FFmpegError:  # a seek into bytes the file does not have
                end = None
            if end is not None and end >= header_duration - tol:
                return header_duration
        with av.open(str(path)) as container:
            return max(0.0, _last_end(container) or 0.0)
    except av.FFmpegError as exc:
        raise ToolError("corrupt", f"{Path(path).name}: {exc}") from exc


PROBE_MEMO_SIZE = 4096
"""Most probes ``probe`` remembers (least recently used dropped first)."""
PROBE_MEMO_SETTLED_S = 2.0
"""A file is remembered only once its last change (ctime) is this many seconds old: a later rewrite then
gets a later ctime, even where the file system's clock is coarse, so it is never taken for the old file."""

_probed: OrderedDict[tuple, MediaInfo] = OrderedDict()
_probed_lock = threading.Lock()


def probe(path: str | Path, timeout: float = 60.0) -> MediaInfo:
    """Probe a media file with ffprobe.

    Raises ToolError: "missing" (no such file), "empty" (0 bytes), "corrupt" (unreadable, or
    neither audio nor video, or a header whose packets are all missing), "timeout". A duration
    missing from the header is taken from the streams, else measured by demuxing to the last
    packet (``measure_duration``). A header's duration is checked against the packets the file
    holds (``decodable_duration``): a file that ends early gets the decodable duration and
    ``truncated`` (the caller decides what to do with it).

    The same unchanged file probed again in this process (a build's download check, then its probe
    stage, then ASR's) is answered from memory: a successful probe is remembered (at most
    ``PROBE_MEMO_SIZE``) under the file's resolved path, device, inode, size and modification and change
    times (nanoseconds), so a file written again since is probed again; a file changed in the last
    ``PROBE_MEMO_SETTLED_S`` seconds is not remembered. Failures are not remembered.
    """
    path = Path(path)
    if not path.is_file():
        raise ToolError("missing", f"no such file: {path}")
    st = path.stat()
    if st.st_size == 0:
        raise ToolError("empty", f"{path.name}: the file is empty (0 bytes)")
    key = (str(path.resolve()), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
    with _probed_lock:
        known = _probed.get(key)
        if known is not None:
            _probed.move_to_end(key)
    if known is not None:
        return known if known.path == str(path) else replace(known, path=str(path))
    info = _ffprobe(path, st.st_size, timeout)
    if time.time() - st.st_ctime < PROBE_MEMO_SETTLED_S:
        return info
    with _probed_lock:
        _probed[key] = info
        while len(_probed) > PROBE_MEMO_SIZE:
            _probed.popitem(last=False)
    return info


def _ffprobe(path: Path, size: int, timeout: float) -> MediaInfo:
    """``probe``'s work, uncached: ffprobe (and a demux where the header needs checking)."""
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
    audios = _audio_streams(streams)
    if video is None and not audios:
        raise ToolError("corrupt", f"{path.name}: no audio or video streams")
    av_streams = [s for s in streams if s.get("codec_type") in ("video", "audio")]
    duration, source = _float(fmt.get("duration")), "format"
    if not duration:
        found = [d for s in av_streams for d in (_float(s.get("duration")), _tag_seconds(s.get("tags")))
                 if d and d > 0]
        duration, source = (max(found), "stream") if found else (None, "")
    if not duration:
        duration, source = measure_duration(path), "measured"
        source = source if duration > 0 else "none"
    header, truncated = duration, False
    start_time = _float(fmt.get("start_time")) or 0.0
    if source in ("format", "stream"):
        decodable = decodable_duration(path, duration)
        if decodable < duration - truncation_tolerance(duration):
            if decodable <= 0:
                raise ToolError("corrupt", f"{path.name}: no audio or video packet is in the file (its header "
                                           f"claims {duration:.1f}s)")
            duration, source, truncated = decodable, "measured", True
    width, height = int((video or {}).get("width") or 0), int((video or {}).get("height") or 0)
    sar = _rate((video or {}).get("sample_aspect_ratio")) or 1.0
    rotation = _rotation(video) if video else 0
    shown_w = int(round(width * sar / 2) * 2) if sar != 1.0 else width
    display = (height, shown_w) if rotation in (90, 270) else (shown_w, height)
    chosen = choose_audio_track(audios) if audios else None
    return MediaInfo(
        path=str(path),
        size_bytes=size,
        duration=round(duration, 3),
        format_name=fmt.get("format_name", ""),
        has_video=video is not None,
        has_audio=bool(audios),
        width=width,
        height=height,
        fps=_rate((video or {}).get("avg_frame_rate")) or _rate((video or {}).get("r_frame_rate")),
        video_codec=(video or {}).get("codec_name", ""),
        audio_codec=chosen.stream.codec if chosen else "",
        start_time=start_time,
        duration_source=source,
        rotation=rotation,
        sample_aspect_ratio=round(sar, 6),
        display_width=display[0],
        display_height=display[1],
        audio_streams=audios,
        header_duration=round(header, 3),
        truncated=truncated,
    )


# -- audio: which track, how loud --------------------------------------------------------------
@dataclass(frozen=True)
class AudioOptions:
    """How the audio for ASR is taken from a file: which track, and level normalization.

    ``track``: "auto" (a track tagged with a wanted language, preferring the default-flagged and
    original ones; else the default-flagged track; else the first that is not commentary or
    audio description), "default", "first", or a number (the track's position among the audio
    streams, 0-based). ``languages``: the wanted languages for "auto" in order of preference
    (ISO 639-1; empty: the pipeline's filter languages). ``normalize``: "auto" applies
    ``normalize_audio`` when the peak level is below ``low_peak_dbfs``; "always"; "off".
    """

    track: Annotated[str, _doc("auto (wanted language tag, then default disposition, then the first that is "
                               "not commentary or audio description), default, first, or a track number "
                               "(0-based among the audio streams)")] = "auto"
    languages: Annotated[tuple[str, ...], _doc("wanted track languages (ISO 639-1) in order of preference; "
                                               "empty: the filter languages")] = ()
    normalize: Annotated[Literal["auto", "always", "off"],
                         _doc("auto (when the peak is below low_peak_dbfs), always, or off")] = "auto"
    low_peak_dbfs: Annotated[float, _doc("auto normalizes audio whose peak is below this level")] = -20.0
    target_peak_dbfs: Annotated[float, _doc("the gain brings the peak to this level")] = -3.0
    max_gain_db: Annotated[float, _doc("never more gain than this")] = 40.0
    denoise: Annotated[bool, _doc("reduce the noise (ffmpeg afftdn at the measured floor) before the gain")] = True


@dataclass(frozen=True)
class TrackChoice:
    """The audio track taken and why: "language" (tagged with a wanted language), "default"
    (the default disposition), "first", "only", or "asked" (a track number was configured)."""

    stream: AudioStream
    reason: str


_AVOID = ("comment", "visual_impaired", "hearing_impaired", "karaoke")


def choose_audio_track(streams: tuple[AudioStream, ...] | list[AudioStream], track: str = "auto",
                       languages: tuple[str, ...] = ()) -> TrackChoice:
    """Pick the audio stream to transcribe (see ``AudioOptions.track``); never blindly the first.

    Raises ToolError("no-audio") when there is none, ToolError("unsupported") for a track
    number the file does not have or an unknown ``track`` value.
    """
    streams = list(streams)
    if not streams:
        raise ToolError("no-audio", "no audio stream")
    if len(streams) == 1 and track in ("auto", "default", "first"):
        return TrackChoice(streams[0], "only")
    if track == "first":
        return TrackChoice(streams[0], "first")
    if track not in ("auto", "default"):
        if not str(track).isdigit():
            raise ToolError("unsupported", f"audio track {track!r}: use auto, default, first or a number")
        if int(track) >= len(streams):
            raise ToolError("unsupported", f"audio track {track} asked, the file has {len(streams)}")
        return TrackChoice(streams[int(track)], "asked")
    plain = [s for s in streams if not any(f in s.dispositions for f in _AVOID)] or streams

    def rank(s: AudioStream) -> tuple:
        return (not s.default, "original" not in s.dispositions, "dub" in s.dispositions, s.position)

    if track == "auto":
        for lang in languages:
            tagged = [s for s in plain if s.language == lang]
            if tagged:
                return TrackChoice(min(tagged, key=rank), "language")
    flagged = [s for s in plain if s.default]
    if flagged:
        return TrackChoice(min(flagged, key=rank), "default")
    return TrackChoice(plain[0], "first")


@dataclass(frozen=True)
class Normalization:
    """What was done to the audio level before ASR (levels in dBFS, gain in dB).

    ``method``: "none", "gain", or "denoise+gain" (ffmpeg's afftdn FFT denoiser, its noise floor
    set from the measured one, then the gain). ``noise_floor_dbfs`` is the 10th percentile of
    20 ms frame RMS levels; ``peak_dbfs`` the 99.99th percentile of sample magnitudes.
    """

    method: str
    peak_dbfs: float
    noise_floor_dbfs: float
    gain_db: float = 0.0
    filter: str = ""


def _dbfs(value: float) -> float:
    return round(20.0 * math.log10(max(float(value), 1e-9)), 2)


def audio_levels(audio: np.ndarray, sample_rate: int = 16000) -> tuple[float, float]:
    """(peak, noise floor) of mono PCM in dBFS; see ``Normalization``."""
    if audio.size == 0:
        return -180.0, -180.0
    peak = float(np.quantile(np.abs(audio), 0.9999)) if audio.size > 10000 else float(np.abs(audio).max())
    hop = max(1, sample_rate // 50)
    frames = audio[: audio.size // hop * hop].reshape(-1, hop) if audio.size >= hop else audio.reshape(1, -1)
    rms = np.sqrt(np.mean(frames.astype(np.float64) ** 2, axis=1))
    return _dbfs(peak), _dbfs(float(np.quantile(rms, 0.1)))


def normalize_audio(audio: np.ndarray, options: AudioOptions | None = None,
                    sample_rate: int = 16000) -> tuple[np.ndarray, Normalization]:
    """Raise a low level before ASR: mono float32 PCM in, (PCM, what was applied) out.

    Whisper's features carry the absolute level, and a quiet recording from a low-gain
    microphone comes with a high noise floor: language detection drops toward 0.5 and the
    transcript degrades (bench/bench_asr.py measures it). When the peak is below
    ``low_peak_dbfs`` (or ``normalize="always"``) the noise is reduced with ffmpeg's afftdn, its
    noise floor set from the measured floor, and a gain brings the peak to ``target_peak_dbfs``
    (at most ``max_gain_db``). Raises ToolError("corrupt") if ffmpeg fails.
    """
    opts = options or AudioOptions()
    peak, floor = audio_levels(audio, sample_rate)
    if opts.normalize == "off" or audio.size == 0 or (opts.normalize == "auto" and peak >= opts.low_peak_dbfs):
        return audio, Normalization("none", peak, floor)
    gain = round(min(opts.max_gain_db, opts.target_peak_dbfs - peak), 2)
    if opts.denoise and floor > -90.0:
        nf = min(-20.0, max(-80.0, round(floor + 6.0)))
        filt = f"afftdn=nf={nf:.0f}:nr=30,volume={gain:.2f}dB"
        delay = _filter_delay("afftdn=nf=-60:nr=20", sample_rate)
        padded = np.concatenate([audio.astype(np.float32), np.zeros(delay, np.float32)])
        out = _ffmpeg_filter(padded, filt, sample_rate)[delay:delay + audio.size]
        return np.clip(out, -1.0, 1.0), Normalization("denoise+gain", peak, floor, gain, filt)
    out = np.clip(audio * np.float32(10 ** (gain / 20)), -1.0, 1.0).astype(np.float32)
    return out, Normalization("gain", peak, floor, gain)


def _ffmpeg_filter(audio: np.ndarray, filt: str, sample_rate: int) -> np.ndarray:
    """Run mono float32 PCM through an ffmpeg audio filter chain."""
    cmd = [_require("ffmpeg"), "-nostdin", "-v", "error", "-f", "f32le", "-ar", str(sample_rate), "-ac", "1",
           "-i", "-", "-af", filt, "-f", "f32le", "-"]
    proc = subprocess.run(cmd, input=audio.astype(np.float32).tobytes(), capture_output=True)
    if proc.returncode != 0:
        msg = proc.stderr.decode(errors="replace").strip().splitlines()
        raise ToolError("corrupt", f"audio filter {filt} failed: {msg[-1] if msg else 'ffmpeg failed'}")
    return np.frombuffer(proc.stdout, dtype=np.float32)


@lru_cache(maxsize=8)
def _filter_delay(filt: str, sample_rate: int) -> int:
    """Samples by which ``filt`` delays its output (afftdn buffers 25 ms), found with a click."""
    click = np.zeros(sample_rate, np.float32)
    click[sample_rate // 2] = 0.5
    return max(0, int(np.abs(_ffmpeg_filter(click, filt, sample_rate)).argmax()) - sample_rate // 2)


def extract_audio(path: str | Path, sample_rate: int = 16000, timeout: float = 600.0,
                  stream: int | None = None) -> np.ndarray:
    """Decode one audio stream to mono float32 PCM at ``sample_rate``: stream ``stream`` (its
    index in the file, ``AudioStream.index``), or the first. Raises ToolError: "no-audio",
    "corrupt", "timeout"."""
    mapping = f"0:{stream}" if stream is not None else "0:a:0"
    cmd = [_require("ffmpeg"), "-nostdin", "-v", "error", "-i", str(path), "-map", mapping, "-vn",
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
