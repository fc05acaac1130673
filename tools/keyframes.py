"""Keyframes: the paper's SSIM algorithm over frames decoded only where needed.

The paper: the first frame is the reference; a later frame whose SSIM to the
reference falls below T becomes a keyframe and the new reference. We add a local
test (any tile of the SSIM map below ``tile_threshold``) so a slide that gains
one line is still a new keyframe, then drop blank, blurred and near-duplicate frames.

Decoding every frame is the cost, so ``decode="auto"`` reads the packet index
first (no decoding) and decodes:
- the codec keyframe of each GOP (encoders place them at scene cuts), and
- the reference frames (B-frames skipped) of a GOP longer than ``max_gap``
  seconds (a change may hide inside it without a cut), sampled at
  ``sample_rate`` frames per second.
Packet sizes are no safe sign of "nothing changed": x264's weighted prediction
codes a cut to a blank slide in a few dozen bytes, so they are not used.
``decode="all"`` samples the whole video at ``sample_rate`` (the plain method).
"""

from __future__ import annotations

import time as _time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from scipy.ndimage import laplace, uniform_filter

from tools.errors import ToolError

_C1 = (0.01 * 255) ** 2
_C2 = (0.03 * 255) ** 2


@dataclass(frozen=True)
class KeyframeOptions:
    """Options of ``detect``; all of them are recorded with the result."""

    threshold: float = 0.90  # the paper's T on mean SSIM
    tile_threshold: float = 0.5  # a local change: some tile's mean SSIM below this
    tiles: tuple[int, int] = (12, 16)  # rows, cols of the tile grid
    analysis_width: int = 320  # frames are compared downscaled, in grayscale
    decode: str = "auto"  # "auto" (codec keyframes + gap fallback) or "all"
    sample_rate: float = 2.0  # frames per second where frames are sampled
    max_gap: float = 2.0  # a GOP longer than this may hide a change
    skip_nonref: bool = True  # skip non-reference frames where frames are sampled
    blank_std: float = 6.0  # grayscale std below this: a blank frame
    blur_min: float = 15.0  # variance of the Laplacian below this: blurred
    dedup: bool = True  # drop frames that repeat an earlier keyframe
    jpeg_quality: int = 90


@dataclass
class Keyframe:
    index: int
    time: float
    ssim: float  # mean SSIM to the previous reference (1.0 for the first frame)
    min_tile_ssim: float
    sharpness: float
    path: str = ""


@dataclass
class KeyframeResult:
    video: str
    keyframes: list[Keyframe]
    dropped: dict[str, int] = field(default_factory=dict)  # reason -> count
    frames_decoded: int = 0
    frames_compared: int = 0
    seconds: float = 0.0
    options: dict = field(default_factory=dict)


def ssim_map(a: np.ndarray, b: np.ndarray, win: int = 7) -> np.ndarray:
    """SSIM map of two grayscale float images (skimage's defaults: 7x7 uniform window)."""
    a = a.astype(np.float32, copy=False)
    b = b.astype(np.float32, copy=False)
    cov_norm = win * win / (win * win - 1.0)
    mu_a = uniform_filter(a, win)
    mu_b = uniform_filter(b, win)
    saa = cov_norm * (uniform_filter(a * a, win) - mu_a * mu_a)
    sbb = cov_norm * (uniform_filter(b * b, win) - mu_b * mu_b)
    sab = cov_norm * (uniform_filter(a * b, win) - mu_a * mu_b)
    num = (2 * mu_a * mu_b + _C1) * (2 * sab + _C2)
    den = (mu_a * mu_a + mu_b * mu_b + _C1) * (saa + sbb + _C2)
    pad = (win - 1) // 2
    return (num / den)[pad:-pad, pad:-pad]


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Mean SSIM of two grayscale images, as skimage's structural_similarity(data_range=255)."""
    return float(ssim_map(a, b).mean())


def _tile_min(smap: np.ndarray, tiles: tuple[int, int]) -> float:
    rows, cols = tiles
    h, w = smap.shape
    th, tw = h // rows, w // cols
    if th == 0 or tw == 0:
        return float(smap.mean())
    grid = smap[: th * rows, : tw * cols].reshape(rows, th, cols, tw).mean(axis=(1, 3))
    return float(grid.min())


def compare(a: np.ndarray, b: np.ndarray, tiles: tuple[int, int] = (12, 16)) -> tuple[float, float]:
    """(mean SSIM, lowest tile mean SSIM) of two grayscale frames."""
    smap = ssim_map(a, b)
    return float(smap.mean()), _tile_min(smap, tiles)


def sharpness(gray: np.ndarray) -> float:
    """Variance of the Laplacian: low for blurred or flat frames."""
    return float(laplace(gray.astype(np.float32)).var())


def _plan(container, stream, opts: KeyframeOptions) -> list[tuple[int, bool, list]]:
    """Demux all packets (no decoding) and decide, per GOP, whether to decode all of it.

    Returns (start pts, decode all, packets) per GOP, in decode order.
    """
    gops: list[list] = []
    for packet in container.demux(stream):
        if packet.size == 0 or packet.pts is None:
            continue
        if packet.is_keyframe or not gops:
            gops.append([])
        gops[-1].append(packet)
    tb = float(stream.time_base)
    plan = []
    for i, gop in enumerate(gops):
        start = min(p.pts for p in gop)
        if opts.decode == "all":
            plan.append((start, True, gop))
            continue
        end = min(p.pts for p in gops[i + 1]) if i + 1 < len(gops) else max(p.pts for p in gop)
        plan.append((start, (end - start) * tb > opts.max_gap, gop))
    return plan


def _frames(path: Path, opts: KeyframeOptions, stats: dict):
    """Yield (time, av.VideoFrame) candidates in time order.

    Covered GOPs are fed with skip_frame=NONKEY so only their codec keyframe is
    decoded; the decoder may return frames late (B-frame delay), so each output
    frame is matched to its GOP by timestamp, not by when it came out.
    """
    import bisect

    import av

    with av.open(str(path)) as container:
        if not container.streams.video:
            raise ToolError("no-video", f"{path.name} has no video stream")
        stream = container.streams.video[0]
        tb = float(stream.time_base)
        plan = _plan(container, stream, opts)
        starts = sorted((start, decode_all) for start, decode_all, _ in plan)
        start_pts = [s for s, _ in starts]
        step = 1.0 / opts.sample_rate
        next_t = -1.0
        cc = stream.codec_context
        cc.thread_type = "SLICE"

        def wanted(frame) -> float | None:
            nonlocal next_t
            if frame.pts is None:
                return None
            t = frame.pts * tb
            i = bisect.bisect_right(start_pts, frame.pts) - 1
            if i < 0:
                return None
            gop_start, decode_all = starts[i]
            if decode_all:
                if t + 1e-6 < next_t:
                    return None
                next_t = t + step
                return t
            if frame.pts == gop_start:
                next_t = t + step
                return t
            return None

        for _, decode_all, gop in plan:
            # inside a sampled GOP, non-reference (B) frames are skipped: at a few frames per
            # second the neighbouring reference frames show the same content, at half the cost
            cc.skip_frame = ("NONREF" if opts.skip_nonref else "DEFAULT") if decode_all else "NONKEY"
            for packet in gop:
                for frame in cc.decode(packet):
                    stats["decoded"] += 1
                    t = wanted(frame)
                    if t is not None:
                        yield t, frame
        for frame in cc.decode(None):
            stats["decoded"] += 1
            t = wanted(frame)
            if t is not None:
                yield t, frame


def detect(video: str | Path, out_dir: str | Path | None = None,
           options: KeyframeOptions | None = None) -> KeyframeResult:
    """Find the keyframes of ``video``; write them as JPEG into ``out_dir`` if given.

    Raises ToolError(kind="corrupt") when the video cannot be decoded.
    """
    import av

    opts = options or KeyframeOptions()
    path = Path(video)
    t0 = _time.perf_counter()
    stats = {"decoded": 0}
    compared = 0
    kept: list[tuple[Keyframe, np.ndarray]] = []
    dropped: dict[str, int] = {}
    ref: np.ndarray | None = None
    out = Path(out_dir) if out_dir else None
    if out:
        out.mkdir(parents=True, exist_ok=True)
        for old in out.glob("t*.jpg"):
            old.unlink()

    def drop(reason: str) -> None:
        dropped[reason] = dropped.get(reason, 0) + 1

    try:
        for t, frame in _frames(path, opts, stats):
            h = max(2, round(frame.height * opts.analysis_width / frame.width / 2) * 2)
            gray = frame.reformat(width=opts.analysis_width, height=h, format="gray").to_ndarray()
            gray = gray.astype(np.float32)
            if ref is None:
                score, tile = 1.0, 1.0
            else:
                compared += 1
                score, tile = compare(ref, gray, opts.tiles)
                if score >= opts.threshold and tile >= opts.tile_threshold:
                    continue
            ref = gray  # a keyframe becomes the new reference, kept or not
            if gray.std() < opts.blank_std:
                drop("blank")
                continue
            sharp = sharpness(gray)
            if sharp < opts.blur_min:
                drop("blurred")
                continue
            if opts.dedup and _is_duplicate(gray, kept, opts):
                drop("duplicate")
                continue
            kf = Keyframe(index=len(kept), time=round(float(t), 3), ssim=round(score, 4),
                          min_tile_ssim=round(tile, 4), sharpness=round(sharp, 1))
            if out:
                kf.path = str(out / f"t{int(round(kf.time * 1000)):09d}.jpg")
                frame.to_image().save(kf.path, quality=opts.jpeg_quality)
            kept.append((kf, gray))
    except av.FFmpegError as exc:
        raise ToolError("corrupt", f"{path.name}: {exc}") from exc
    return KeyframeResult(video=str(path), keyframes=[k for k, _ in kept], dropped=dropped,
                          frames_decoded=stats["decoded"], frames_compared=compared,
                          seconds=round(_time.perf_counter() - t0, 3), options=asdict(opts))


def _thumb(gray: np.ndarray) -> np.ndarray:
    h, w = gray.shape
    return gray[: h - h % 8, : w - w % 8].reshape(h // 8, 8, w // 8, 8).mean(axis=(1, 3))


def _is_duplicate(gray: np.ndarray, kept: list[tuple[Keyframe, np.ndarray]], opts: KeyframeOptions) -> bool:
    """True if ``gray`` repeats an earlier keyframe (A -> B -> A), by the detection test itself."""
    thumb = _thumb(gray)
    for _, other in reversed(kept):
        if other.shape != gray.shape:
            continue
        if np.abs(_thumb(other) - thumb).mean() > 12.0:  # cheap screen before SSIM
            continue
        score, tile = compare(other, gray, opts.tiles)
        if score >= opts.threshold and tile >= opts.tile_threshold:
            return True
    return False
