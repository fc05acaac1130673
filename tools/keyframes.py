"""Keyframes: the states of what a video shows, by the paper's SSIM rule, robust to motion.

The paper (section 4): the first frame is the reference; a later frame whose SSIM to the
reference falls below T becomes a keyframe and the new reference. On real lecture video
that rule follows motion (a walking speaker, a pointer, a webcam box, a dissolve), so,
as lecture-video segmentation work does, we compare what *stays*:

1. **Frames as a player shows them.** ``sample_rate`` times a second of media time we
   take the frame on screen (a frame a variable-frame-rate recorder holds for 3 s
   counts 3 s), turned by the stream's display matrix and scaled by its sample aspect
   ratio; times count from the start of the media (the container's start time).
2. **The rule.** On a grayscale copy ``analysis_width`` px wide, a sample differs from
   the current state when its mean SSIM is below ``threshold`` (the paper's T), or any
   tile-sized window of the SSIM map averages below ``tile_threshold`` (a slide gains a
   line), or any character-sized window (``char_window`` px) changes by more than
   ``char_level`` gray levels (two digits swap places).
3. **Content, not motion.** Each sample is replaced by its per-pixel temporal median
   over ``median_window`` seconds (a pointer or a walking person vanishes; a step
   change passes unchanged). Tiles that change in two samples running, often enough
   (``mask_fraction`` of ``mask_window`` seconds: a webcam box, a talking head, a
   lecturer's hands), are left out. A change counts once it is seen in the samples of
   ``min_duration`` seconds less one (a dissolve, a fade, a pointer at rest do not).
4. **The settled picture.** The image written for a state is the sample, among those
   that confirmed it, closest to the state's median (no half dissolve, no half fade).
   Blank states (fade to black) and blurred ones are dropped, and so is a state that
   repeats any earlier keyframe of the video (near-duplicates, by the same rule with
   its local tests relaxed to the video's own sample-to-sample noise, for camera
   footage). A state that shows nothing but what stays on screen the whole video (a
   channel logo or a copyright line over a fade to black) is blank too.
4b. **Burned-in captions.** A strip at the bottom whose text is replaced again and again
   while the rest of the frame holds (``caption_changes`` times) is a caption band: it is
   left out of the rule, and states kept for its changes before it was known are merged.
5. **A camera that never holds still.** A pan or a tracking shot over a board holds no
   picture for ``min_duration``, so the rule above finds nothing there. When such a
   stretch lasts ``max_unsettled`` seconds, its sharpest sample becomes a keyframe,
   unless it shows what the state ending the stretch shows (a zoom that settles) or,
   even at the scale of 8x8-pixel blocks, what a kept keyframe shows (the camera
   following a lecturer within a shot already kept).

Decoding is the cost. ``decode="auto"`` demuxes packets (no decoding) GOP by GOP,
decodes every codec keyframe, and decodes a GOP's inside only when it may hide a state:
when the GOP is longer than ``min_duration`` or its two bounding codec keyframes differ.
A state held ``min_duration`` seconds always contains a codec keyframe of a shorter GOP,
so no state the rule keeps is lost, whatever the encoder did (frame types, variable
frame rate, GOPs of any length). Inside decoded GOPs, non-reference frames are skipped
(``skip_nonref``) where every frame is on screen under a quarter of a sample step; a
run of them then costs a state at most one of its samples. ``decode="all"`` decodes
every GOP.
"""

from __future__ import annotations

import math
import queue
import threading
import time as _time
from collections import deque
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np

from tools.errors import ToolError

_C1 = (0.01 * 255) ** 2
_C2 = (0.03 * 255) ** 2


@dataclass(frozen=True)
class KeyframeOptions:
    """Options of ``detect``; all of them are recorded with the result."""

    threshold: float = 0.90  # the paper's T on mean SSIM
    tile_threshold: float = 0.5  # a local change: some tile-sized window's mean SSIM below this
    char_window: int = 5  # pixels (of the analysis image): about one character of slide text
    char_level: float = 24.0  # gray levels: a character-sized window changing more than this is a change
    tiles: tuple[int, int] = (12, 16)  # rows, cols: the tile size, and the grid of the motion mask
    analysis_width: int = 320  # frames are compared downscaled, in grayscale (pixels)
    decode: str = "auto"  # "auto" (skip the inside of GOPs that cannot hide a state) or "all"
    sample_rate: float = 2.0  # samples per second of media time
    min_duration: float = 2.0  # seconds a new state must hold before it counts
    median_window: float = 2.0  # seconds: the temporal median that removes moving things
    mask_window: float = 6.0  # seconds: where a tile's own motion is counted
    mask_fraction: float = 0.25  # a tile changing in two samples running this often (of mask_window) is masked
    move_level: float = 6.0  # gray levels: a tile's mean change above this between samples is motion
    skip_nonref: bool = True  # skip non-reference frames inside decoded GOPs
    blank_std: float = 6.0  # grayscale std below this: a blank frame
    blur_min: float = 15.0  # variance of the Laplacian below this: blurred
    dedup: bool = True  # drop states that repeat any earlier keyframe
    # seconds of a picture that never holds still (a pan, a tracking shot over a board) after which the
    # stretch's sharpest sample is a keyframe (checked as any state: blank, blurred, duplicate); 0: off
    max_unsettled: float = 10.0
    # burned-in captions: a strip in the bottom ``caption_band`` of the frame (a fraction of its height) where
    # ``caption_changes`` state changes within ``caption_window`` seconds each replace what the strip showed and
    # leave the rest of the frame as it was is a caption band, left out of the rule from then on; at the end,
    # states that differ from the one before only there are merged into it. 0 changes: off
    caption_band: float = 0.35
    caption_changes: int = 3
    caption_window: float = 30.0
    # a state is also blank when all it shows outside what stays on screen the whole video (a channel logo,
    # a copyright line; found in samples spread over the video) is flat
    persistent_blank: bool = True
    jpeg_quality: int = 90

    def __post_init__(self):
        if self.decode not in ("auto", "all"):
            raise ValueError(f"keyframes decode must be 'auto' or 'all', not {self.decode!r}")
        if self.sample_rate <= 0 or self.min_duration <= 0 or self.analysis_width < 32:
            raise ValueError("keyframes sample_rate and min_duration must be > 0, analysis_width >= 32")
        if not 0.0 <= self.caption_band <= 0.5 or self.caption_changes < 0:
            raise ValueError("keyframes caption_band must be in [0, 0.5], caption_changes >= 0")


@dataclass
class Keyframe:
    """One state of the video: when it began, the scores that found it, its picture.

    ``time`` is when the state first showed (seconds from the start of the media);
    ``frame_time`` is the time of the frame written to ``path``; ``end`` is when the
    picture left the screen: the first sample that no longer showed it, when a change began
    that never came back to it (writing that never settles, a wipe to a blank board that is
    dropped, a dissolve), else when the next state or the end of the video came. So the
    state is on screen during [time, end).
    """

    index: int
    time: float
    ssim: float  # mean SSIM to the previous state (1.0 for the first)
    min_tile_ssim: float
    sharpness: float
    path: str = ""
    frame_time: float = 0.0
    end: float = 0.0


@dataclass
class KeyframeResult:
    """What ``detect`` found in one video: the keyframes in time order, frames dropped per reason, how many frames were
    decoded and compared (of ``frames_total``), seconds taken and the options used."""

    video: str
    keyframes: list[Keyframe]
    dropped: dict[str, int] = field(default_factory=dict)  # reason -> count
    frames_decoded: int = 0
    frames_compared: int = 0
    seconds: float = 0.0
    options: dict = field(default_factory=dict)
    frames_total: int = 0  # video packets in the file (what decoding everything would cost)
    samples: int = 0  # grid samples analysed
    display: list[int] = field(default_factory=list)  # [width, height] of the written keyframes


# -- filters -----------------------------------------------------------------------
_BORDERS = {"reflect": 2, "constant": 0, "nearest": 1}  # cv2.BORDER_REFLECT, _CONSTANT, _REPLICATE


def uniform_filter(img: np.ndarray, size: int | tuple[int, int], mode: str = "reflect") -> np.ndarray:
    """Mean over a ``size`` (rows, cols) window around each pixel, the same numbers as
    ``scipy.ndimage.uniform_filter`` with ``mode`` reflect, constant (0) or nearest, and the same
    placement of even windows, through OpenCV's boxFilter (3-7x faster on a 320x180 frame).
    ``img``: float32 or float64 (H, W); the result has its dtype."""
    import cv2

    rows, cols = (size, size) if isinstance(size, int) else size
    return cv2.boxFilter(img, -1, (int(cols), int(rows)), normalize=True, borderType=_BORDERS[mode])


def laplace(img: np.ndarray) -> np.ndarray:
    """The discrete Laplacian (4-neighbour, mirrored edges), as ``scipy.ndimage.laplace``, by OpenCV."""
    import cv2

    return cv2.Laplacian(img, cv2.CV_32F if img.dtype == np.float32 else cv2.CV_64F, ksize=1,
                         borderType=_BORDERS["reflect"])


# -- SSIM ------------------------------------------------------------------------
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


def _tile_shape(shape: tuple[int, int], tiles: tuple[int, int]) -> tuple[int, int]:
    return max(1, shape[0] // tiles[0]), max(1, shape[1] // tiles[1])


def _tile_min(smap: np.ndarray, tiles: tuple[int, int]) -> float:
    """The lowest mean of the SSIM map over any tile-sized window (sliding, not on a fixed grid)."""
    th, tw = _tile_shape(smap.shape, tiles)
    if th >= smap.shape[0] or tw >= smap.shape[1]:
        return float(smap.mean())
    return float(uniform_filter(smap, (th, tw), mode="nearest").min())


def compare(a: np.ndarray, b: np.ndarray, tiles: tuple[int, int] = (12, 16),
            mask: np.ndarray | None = None) -> tuple[float, float]:
    """(mean SSIM, lowest tile-window mean SSIM) of two grayscale frames of one size.

    ``mask`` (bool, shape ``tiles``) marks tiles to leave out: their SSIM counts as 1 in
    the tile windows and they are not in the mean (unless they are over half the frame).
    """
    smap = ssim_map(a, b)
    if mask is None or not mask.any():
        return float(smap.mean()), _tile_min(smap, tiles)
    keep = ~_expand(mask, smap.shape, a.shape)
    mean = float(smap[keep].mean()) if keep.mean() >= 0.5 else float(smap.mean())
    return mean, _tile_min(np.where(keep, smap, 1.0), tiles)


def _expand(mask: np.ndarray, shape: tuple[int, int], full: tuple[int, int]) -> np.ndarray:
    """A tile mask of a ``full``-sized image, as pixels of the (cropped) SSIM map of ``shape``."""
    rows, cols = mask.shape
    th, tw = _tile_shape(full, (rows, cols))
    pad = (full[0] - shape[0]) // 2
    big = mask.repeat(th, axis=0).repeat(tw, axis=1)
    big = np.pad(big, ((0, max(0, full[0] - big.shape[0])), (0, max(0, full[1] - big.shape[1]))), mode="edge")
    return big[pad: pad + shape[0], pad: pad + shape[1]]


def char_change(diff: np.ndarray, window: int = 5) -> float:
    """The largest mean of ``diff`` (absolute gray difference) over a ``window``-pixel square.

    At 320 px width a square of 5 px is about one character of slide text: two digits
    that swap places change one such square by 50-130 gray levels, where a recompressed
    copy of the same slide changes none by more than about 7.
    """
    return float(uniform_filter(diff, window, mode="constant").max())


def temporal_median(images: list[np.ndarray]) -> np.ndarray:
    """Per-pixel median of images of one shape, float32 (a sorting network for 2 to 5 images,
    20x faster than numpy's median along a stack; numpy's beyond)."""
    if not 2 <= len(images) <= 5:
        return np.median(np.stack(images), axis=0).astype(np.float32)
    p = [img.astype(np.float32, copy=True) for img in images]
    if len(p) in (2, 4):  # the mean of the middle two: (largest low + smallest high) / 2 of the pairs
        lows, highs = [np.minimum(p[0], p[1])], [np.maximum(p[0], p[1])]
        if len(p) == 4:
            lows.append(np.minimum(p[2], p[3]))
            highs.append(np.maximum(p[2], p[3]))
        return (np.maximum.reduce(lows) + np.minimum.reduce(highs)) * np.float32(0.5)

    def order(i: int, j: int) -> None:
        low = np.minimum(p[i], p[j])
        np.maximum(p[i], p[j], out=p[j])
        p[i] = low

    if len(p) == 3:
        order(0, 1), order(1, 2), order(0, 1)
        return p[1]
    for i, j in ((0, 1), (3, 4), (0, 3), (1, 4), (1, 2), (2, 3), (1, 2)):  # Paeth's median of 5
        order(i, j)
    return p[2]


def sharpness(gray: np.ndarray) -> float:
    """Variance of the Laplacian: low for blurred or flat frames."""
    return float(laplace(gray.astype(np.float32)).var())


def _tiled(img: np.ndarray, tiles: tuple[int, int]) -> np.ndarray:
    th, tw = _tile_shape(img.shape, tiles)
    rows, cols = min(tiles[0], img.shape[0] // th), min(tiles[1], img.shape[1] // tw)
    return img[: th * rows, : tw * cols].reshape(rows, th, cols, tw)


def _tile_means(img: np.ndarray, tiles: tuple[int, int]) -> np.ndarray:
    return _tiled(img, tiles).mean(axis=(1, 3))


def _tile_max(img: np.ndarray, tiles: tuple[int, int]) -> np.ndarray:
    return _tiled(img, tiles).max(axis=(1, 3))


# -- display: rotation and pixel aspect ---------------------------------------------
_TRANSPOSES = {"clock", "cclock", "clock_flip", "cclock_flip"}


def display_transform(matrix) -> str:
    """How a player turns frames stored under a display matrix, as ffmpeg's autorotate does.

    ``matrix``: the 9 int32 values of a DISPLAYMATRIX side data (16.16 fixed point), or
    None. Returns "" (as stored), "clock" / "cclock" (a quarter turn clockwise /
    counterclockwise), "clock_flip" / "cclock_flip" (a quarter turn and a mirror),
    "hflip", "vflip" or "hvflip" (half a turn). A rotation that is not a multiple of 90
    degrees is left as stored. Source: fftools/ffmpeg_filter.c (configure_input_video_filter).
    """
    if matrix is None:
        return ""
    m = [float(v) for v in matrix]
    s0, s1 = math.hypot(m[0], m[3]), math.hypot(m[1], m[4])
    if s0 == 0 or s1 == 0:
        return ""
    theta = -round(-math.degrees(math.atan2(m[1] / s1, m[0] / s0)))  # clockwise degrees
    theta -= 360 * math.floor(theta / 360 + 0.9 / 360)
    if abs(theta - 90) < 1:
        return "cclock_flip" if m[3] > 0 else "clock"
    if abs(theta - 270) < 1:
        return "clock_flip" if m[3] < 0 else "cclock"
    if abs(theta - 180) < 1:
        return ("h" if m[0] < 0 else "") + ("v" if m[4] < 0 else "") + ("flip" if m[0] < 0 or m[4] < 0 else "")
    if abs(theta) < 1 and m[4] < 0:
        return "vflip"
    return ""


@dataclass(frozen=True)
class Display:
    """How a player shows a stored ``width`` x ``height`` frame: scale the width by the
    sample aspect ratio, then apply ``transform`` (see ``display_transform``)."""

    width: int
    height: int
    sar: Fraction = Fraction(1)
    transform: str = ""

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) in pixels as displayed."""
        w = max(2, round(self.width * self.sar / 2) * 2) if self.sar != 1 else self.width
        return (self.height, w) if self.transform in _TRANSPOSES else (w, self.height)

    def stored_size(self, width: int) -> tuple[int, int]:
        """(width, height) to scale a stored frame to, so that it displays ``width`` px wide."""
        dw, dh = self.size
        height = max(2, round(dh * width / dw / 2) * 2)
        return (height, width) if self.transform in _TRANSPOSES else (width, height)

    def orient(self, img: np.ndarray) -> np.ndarray:
        """Turn an image (H, W[, C]) from stored to displayed orientation."""
        t = self.transform
        if t in _TRANSPOSES:
            img = img.swapaxes(0, 1)
            if t == "clock":
                img = img[:, ::-1]
            elif t == "cclock":
                img = img[::-1]
            elif t == "clock_flip":
                img = img[::-1, ::-1]
        elif t:
            img = img[::-1] if "v" in t else img
            img = img[:, ::-1] if t.startswith("h") else img
        return np.ascontiguousarray(img)

    def gray(self, frame, width: int, reformatter=None) -> np.ndarray:
        """The frame as displayed, grayscale, ``width`` px wide, float32. ``reformatter``: an
        ``av.video.reformatter.VideoReformatter`` kept across the frames of one video (its scaler is
        set up once; about 3x faster than a new one per frame)."""
        from av.video.reformatter import VideoReformatter

        w, h = self.stored_size(width)
        small = (reformatter or VideoReformatter()).reformat(frame, width=w, height=h, format="gray")
        return self.orient(small.to_ndarray()).astype(np.float32)

    def image(self, frame, reformatter=None):
        """The frame as displayed, full size, as a PIL image (RGB). ``reformatter``: as in ``gray``."""
        from av.video.reformatter import VideoReformatter
        from PIL import Image

        w, h = (self.size[1], self.size[0]) if self.transform in _TRANSPOSES else self.size
        rgb = (reformatter or VideoReformatter()).reformat(frame, width=w, height=h, format="rgb24")
        return Image.fromarray(self.orient(rgb.to_ndarray()))


def _display_matrix(frame) -> np.ndarray | None:
    """The frame's display matrix (9 int32, 16.16 and 2.30 fixed point, as FFmpeg stores it), or None.

    Read by key (``side_data.get(Type.DISPLAYMATRIX)``), the one form every PyAV since 9 answers the same:
    iterating ``frame.side_data`` yields SideData objects up to 18.1.0 and their *types* from 18.1.1 on
    (PyAV's SideDataContainer became a plain Mapping)."""
    from av.sidedata.sidedata import Type

    sd = frame.side_data.get(Type.DISPLAYMATRIX)
    return None if sd is None else np.frombuffer(bytes(sd), dtype="<i4")[:9]


def _display_of(stream, frame) -> Display:
    matrix = _display_matrix(frame)
    sar = stream.sample_aspect_ratio or stream.codec_context.sample_aspect_ratio
    sar = Fraction(sar) if sar and sar > 0 else Fraction(1)
    return Display(frame.width, frame.height, sar, display_transform(matrix))


# -- sampling ------------------------------------------------------------------------
@dataclass
class _Sample:
    t: float  # grid time (seconds of media time)
    time: float  # time of the frame shown at t
    frame: object  # av.VideoFrame
    gray: np.ndarray  # analysis image, display orientation (shared by repeats of one frame)
    display: Display
    moved: np.ndarray | None = None  # tiles that changed on their own since the previous sample
    any_move: bool = False  # some tile changed since the previous sample
    median: np.ndarray | None = None


class _Grid:
    """Turns frames in display order into samples at grid times: the frame on screen at each."""

    def __init__(self, rate: float, display: Display, width: int):
        self.step = 1.0 / rate
        self.k = 0
        self.origin: float | None = None  # the grid starts at the first frame shown
        self.pending: list | None = None  # [time, frame, gray]
        self.display, self.width = display, width
        from av.video.reformatter import VideoReformatter

        self.reformatter = VideoReformatter()

    def show(self, time: float, frame, gray: np.ndarray | None = None) -> list[_Sample]:
        if self.pending is not None and time <= self.pending[0] + 1e-9:
            return []  # a frame shown before the one on screen (open-GOP leading frames): not shown
        out = self.until(time)
        self.pending = [time, frame, gray]
        return out

    def until(self, end: float) -> list[_Sample]:
        out = []
        p = self.pending
        if p is None:
            return out
        if self.origin is None:
            self.origin = p[0]
        while self.origin + self.k * self.step < end - 1e-9:
            g = self.origin + self.k * self.step
            self.k += 1
            if p is None or g + 1e-9 < p[0]:
                continue
            if p[2] is None:
                p[2] = self.display.gray(p[1], self.width, self.reformatter)
            out.append(_Sample(round(g, 6), p[0], p[1], p[2], self.display))
        return out


def _gops(container, stream):
    """Packets of the video stream grouped by codec keyframe, in decode order."""
    gop: list = []
    for packet in container.demux(stream):
        if packet.size == 0:
            continue
        if packet.is_keyframe and gop:
            yield gop
            gop = []
        gop.append(packet)
    if gop:
        yield gop


def _samples(path: Path, opts: KeyframeOptions, stats: dict):
    """Yield samples in time order (see the module docstring for what is decoded)."""
    import av
    from av.video.reformatter import VideoReformatter

    with av.open(str(path)) as container:
        if not container.streams.video:
            raise ToolError("no-video", f"{path.name} has no video stream")
        stream = container.streams.video[0]
        tb = float(stream.time_base)
        if container.start_time is not None:
            start = container.start_time / 1_000_000
        else:
            start = float(stream.start_time or 0) * tb
        dense = stream.codec_context  # carries the stream's side data (display matrix)
        dense.thread_type = "SLICE"
        key = av.CodecContext.create(dense.name, "r")  # codec keyframes only, one at a time
        key.extradata = dense.extradata
        key.thread_type = "SLICE"
        end = (container.duration / 1_000_000) if container.duration else 0.0
        state = {"grid": None, "display": None, "dense_open": False, "last": 0.0}

        def seconds(pts) -> float | None:
            return None if pts is None else pts * tb - start

        keys_reformatter = VideoReformatter()

        def to_gray(frame) -> np.ndarray:
            return state["display"].gray(frame, opts.analysis_width, keys_reformatter)

        def decode_key(packet):
            """The codec keyframe of a GOP, decoded alone, with its analysis image."""
            frames = list(key.decode(packet)) + list(key.decode(None))
            key.flush_buffers()
            stats["decoded"] += len(frames)
            return (frames[-1], to_gray(frames[-1])) if frames else None

        def feed(packets, following):
            # non-reference frames may be skipped only where each is on screen briefly: a run of them
            # then stays under half a sample step (up to 3 frames at 8 fps, 12 at 25 fps), so a state
            # held min_duration still shows in all but one of its samples
            pts = sorted(p.pts for p in packets if p.pts is not None)
            if following is not None and following[0].pts is not None:
                pts.append(following[0].pts)
            longest = float(np.diff(pts).max()) * tb if len(pts) > 1 else math.inf
            brief = longest <= 0.25 / opts.sample_rate
            dense.skip_frame = "NONREF" if opts.skip_nonref and brief else "DEFAULT"
            state["dense_open"] = True
            for packet in packets:
                yield from dense.decode(packet)

        def drain():
            if state["dense_open"]:
                yield from dense.decode(None)
                dense.flush_buffers()
                state["dense_open"] = False

        def show(frames, decoded: bool = True, gray: np.ndarray | None = None):
            for frame in frames:
                stats["decoded"] += decoded
                t = seconds(frame.pts)
                if t is None or frame.is_corrupt:
                    continue
                if state["display"] is None:
                    state["display"] = _display_of(stream, frame)
                    state["grid"] = _Grid(opts.sample_rate, state["display"], opts.analysis_width)
                state["last"] = max(state["last"], t)
                yield from state["grid"].show(t, frame, gray)

        gops = _gops(container, stream)
        current = next(gops, None)
        key_frames: dict[int, object] = {}
        if current is not None:  # how frames are displayed: the first frame carries the display matrix
            dense.skip_frame = "DEFAULT"
            first = list(dense.decode(current[0])) + list(dense.decode(None))
            dense.flush_buffers()
            stats["decoded"] += len(first)
            if first:
                state["display"] = _display_of(stream, first[0])
                state["grid"] = _Grid(opts.sample_rate, state["display"], opts.analysis_width)
        while current is not None:
            stats["packets"] += len(current)
            following = next(gops, None)
            skip = False
            if opts.decode == "auto" and following is not None and state["display"] is not None:
                t0, t1 = seconds(current[0].pts), seconds(following[0].pts)
                if t0 is not None and t1 is not None and 0 < t1 - t0 <= opts.min_duration + 1e-6:
                    a = key_frames.pop(id(current[0]), None) or decode_key(current[0])
                    b = decode_key(following[0])
                    if a is not None and b is not None:
                        key_frames[id(following[0])] = b
                        skip = _unchanged(a[1], b[1], opts)
                        if skip:
                            yield from show(drain())
                            yield from show([a[0]], decoded=False, gray=a[1])
            if not skip:
                key_frames.pop(id(current[0]), None)
                yield from show(feed(current, following))
            current = following
        yield from show(drain())
        if state["grid"] is not None:  # the last frame stays on screen to the end of the media
            rate = float(stream.average_rate or 0) or 25.0
            yield from state["grid"].until(max(end - start, state["last"] + 1.0 / rate))


def _prefetched(items, depth: int = 16):
    """Iterate ``items`` (a generator) on a worker thread, ``depth`` items ahead of the consumer.

    Decoding (FFmpeg) and the grayscale conversion run on the worker while the tracker (numpy,
    OpenCV) runs on the caller's thread; both release the GIL for their heavy work, so on two cores
    they overlap in part (each thread still waits for the GIL between calls): the conditions suite
    took 3.78 s without it and 3.00 s with it. An exception of the worker is raised here; closing
    this generator early stops the worker and closes ``items``.
    """
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    end = object()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        try:
            for item in items:
                if not put((item, None)):
                    break
        except BaseException as exc:  # handed to the consumer
            put((end, exc))
        else:
            put((end, None))
        finally:
            items.close()

    worker = threading.Thread(target=work, name="textbook-decode", daemon=True)
    worker.start()
    try:
        while True:
            item, exc = q.get()
            if item is end:
                if exc is not None:
                    raise exc
                return
            yield item
    finally:
        stop.set()
        worker.join()


def _unchanged(a: np.ndarray, b: np.ndarray, opts: KeyframeOptions) -> bool:
    """True if two codec keyframes show the same picture (no tile's mean differs by 2 levels)."""
    if a.shape != b.shape:
        return False
    return float(_tile_means(np.abs(a - b), opts.tiles).max()) < 2.0


# -- the detector --------------------------------------------------------------------
@dataclass
class _State:
    keyframe: Keyframe | None
    median: np.ndarray  # the settled median of the state
    mask: np.ndarray
    thumb: np.ndarray | None = None


def detect(video: str | Path, out_dir: str | Path | None = None,
           options: KeyframeOptions | None = None) -> KeyframeResult:
    """Find the keyframes (one per state shown) of ``video``; write them as JPEG into ``out_dir``.

    Keyframe files are named ``tMMMMMMMMM.jpg`` by ``time`` in milliseconds, at display
    size and orientation. Raises ToolError(kind="corrupt") when the video cannot be
    decoded, ToolError(kind="no-video") when it has no video stream.
    """
    import av

    opts = options or KeyframeOptions()
    path = Path(video)
    t0 = _time.perf_counter()
    stats = {"decoded": 0, "packets": 0, "compared": 0, "samples": 0}
    out = Path(out_dir) if out_dir else None
    if out:
        out.mkdir(parents=True, exist_ok=True)
        for old in out.glob("t*.jpg"):
            old.unlink()
    tracker = _Tracker(opts, out, stats)
    try:
        for sample in _prefetched(_samples(path, opts, stats)):
            stats["samples"] += 1
            tracker.push(sample)
        tracker.finish()
    except av.FFmpegError as exc:
        raise ToolError("corrupt", f"{path.name}: {exc}") from exc
    return KeyframeResult(video=str(path), keyframes=[s.keyframe for s in tracker.kept], dropped=tracker.dropped,
                          frames_decoded=stats["decoded"], frames_compared=stats["compared"],
                          seconds=round(_time.perf_counter() - t0, 3), options=asdict(opts),
                          frames_total=stats["packets"], samples=stats["samples"],
                          display=list(tracker.display_size or ()))


class _Tracker:
    """The state machine over samples: median, motion mask, persistence, dedup, writing."""

    def __init__(self, opts: KeyframeOptions, out: Path | None, stats: dict):
        self.opts, self.out, self.stats = opts, out, stats
        self.half = max(0, int(round(opts.median_window * opts.sample_rate / 2)))
        self.mask_half = max(1, int(round(opts.mask_window * opts.sample_rate / 2)))
        # a state held min_duration covers ceil(min_duration * rate) grid times; one of them may be lost to a
        # skipped frame or a transition, so it must be seen in one sample fewer
        self.need = max(1, int(math.ceil(opts.min_duration * opts.sample_rate - 1e-6)) - 1)
        self.buf: list[_Sample] = []  # samples from index self.base on
        self.base = 0
        self.i = 0  # next sample index to decide
        self.ref: _State | None = None
        self.cand: int | None = None
        self.cand_scores: tuple | None = None  # what the candidate was compared with (for its scores)
        self.kept: list[_State] = []
        self.recent: deque[np.ndarray] = deque(maxlen=2 * self.mask_half + 1)  # masks of the last samples
        noise = max(8, int(20 * opts.sample_rate))  # the last 20 s of sample pairs
        self.noise_char: deque[float] = deque(maxlen=noise)
        self.noise_tile: deque[float] = deque(maxlen=noise // 4)
        self.pairs = 0
        self.memo: tuple | None = None
        self.dropped: dict[str, int] = {}
        self.display_size: tuple[int, int] | None = None
        self.current: Keyframe | None = None
        self.picture: _Picture | None = None
        self.reformatter = None  # the pictures' RGB scaler (this thread's own)
        self.unsettled: tuple[float, _Sample, float] | None = None  # (since, sharpest sample, its sharpness)
        self.leaving: float | None = None  # when the picture began to differ from the current state (no return)
        self.band = np.zeros(opts.tiles, bool)  # the caption band's tiles, once found (whole tile rows)
        self.band_changes: list[tuple[float, np.ndarray]] = []  # (time, tile rows) of changes confined to the bottom
        self.spread: list[np.ndarray] = []  # analysis images spread over the video (for what stays on screen)
        self.spread_step = 1
        self.pushed = 0

    # buffering
    def _at(self, i: int) -> _Sample:
        return self.buf[i - self.base]

    def push(self, s: _Sample) -> None:
        prev = self.buf[-1] if self.buf else None
        s.moved = self._moved(prev, s)
        self.buf.append(s)
        self.pushed += 1
        if self.opts.persistent_blank and (self.pushed - 1) % self.spread_step == 0:
            self.spread.append(s.gray)
            if len(self.spread) > 32:  # at most 32, evenly spaced: every other one, and half as often from now on
                del self.spread[1::2]
                self.spread_step *= 2
        while self.i + max(self.half, self.mask_half) < self.base + len(self.buf):
            self._step(self.i)
            self.i += 1
            self._trim()

    def finish(self) -> None:
        while self.i < self.base + len(self.buf):
            self._step(self.i)
            self.i += 1
        last = self.buf[-1] if self.buf else None
        if self.cand is not None:  # the video ended before it held long enough
            self._drop("transient")
        if last is not None:
            self._settled(last.t + 1.0 / self.opts.sample_rate)
            self._close(last.t + 1.0 / self.opts.sample_rate)
        self._merge_captions()
        self._drop_persistent_blanks()

    def _trim(self) -> None:
        keep_from = self.i - max(self.half, self.mask_half) - 1
        if self.cand is not None:
            keep_from = min(keep_from, self.cand)
        drop = keep_from - self.base
        if drop > 0:
            del self.buf[:drop]
            self.base += drop

    # motion
    def _moved(self, prev: _Sample | None, s: _Sample) -> np.ndarray:
        rows, cols = self.opts.tiles
        if prev is None or prev.gray.shape != s.gray.shape:
            return np.zeros((rows, cols), bool)
        if prev.gray is s.gray:  # the same frame again: no motion, no noise
            self.noise_char.append(0.0)
            self.noise_tile.append(1.0)
            return np.zeros((rows, cols), bool)
        d = s.gray - prev.gray
        d = np.abs(d - float(d.mean()))  # an exposure change is not motion
        if float(d.max()) <= min(self.opts.move_level, 6.0):  # recompression noise at most: nothing moved
            self.noise_char.append(float(d.max()))
            self.noise_tile.append(1.0)
            return np.zeros((rows, cols), bool)
        # as sensitive as the rule itself: a tile moved if it changed on average, or if any
        # character-sized window in it did (a blinking eye, a moving mouth)
        box = uniform_filter(d, self.opts.char_window, mode="constant")
        moved = (_tile_means(d, self.opts.tiles) > self.opts.move_level) | (
            _tile_max(box, self.opts.tiles) > self.opts.char_level)
        full = np.zeros((rows, cols), bool)
        s.any_move = bool(moved.any())
        if moved.mean() > 0.5:  # the whole frame changing (a cut, a dissolve, a pan) is not a tile's own motion
            return full
        full[: moved.shape[0], : moved.shape[1]] = moved
        # the video's own sample-to-sample noise where nothing moved (sensor noise, camera jitter,
        # compression): the local tests must stand out of it
        still = ~_expand(full, d.shape, d.shape)
        self.noise_char.append(float(box[still].max()) if still.any() else 0.0)
        self.pairs += 1
        if self.pairs % 4 == 1:
            smap = ssim_map(s.gray, prev.gray)
            keep = ~_expand(full, smap.shape, s.gray.shape)
            self.noise_tile.append(_tile_min(np.where(keep, smap, 1.0), self.opts.tiles))
        return full

    @property
    def char_level(self) -> float:
        """``char_level``, raised to 4x the noise floor of a noisy video (camera footage)."""
        floor = float(np.median(self.noise_char)) if self.noise_char else 0.0
        return max(self.opts.char_level, 4.0 * floor)

    @property
    def tile_threshold(self) -> float:
        """``tile_threshold``, lowered where still parts of a noisy video already fall near it."""
        floor = float(np.median(self.noise_tile)) if self.noise_tile else 1.0
        return min(self.opts.tile_threshold, 2.0 * floor - 1.0)

    def _mask(self, i: int) -> np.ndarray:
        """Tiles in motion around sample i: changed in two samples running, often enough.

        A step (a bullet appears, two digits swap) changes a tile once and leaves it
        still; a talking head or a passing person changes it in sample after sample.
        """
        lo = max(self.base, i - self.mask_half)
        hi = min(self.base + len(self.buf) - 1, i + self.mask_half)
        moves = [self._at(j).moved for j in range(lo, hi + 1)]
        if len(moves) < 2:
            return np.zeros(self.opts.tiles, bool)
        moves = np.array(moves)
        motion = moves[1:] & moves[:-1]  # pairs of consecutive changes
        need = max(2, math.ceil(self.opts.mask_fraction * 2 * self.mask_half))
        return motion.sum(axis=0) >= need

    def _median(self, i: int) -> np.ndarray:
        s = self._at(i)
        if s.median is not None:
            return s.median
        lo = max(self.base, i - self.half)
        hi = min(self.base + len(self.buf) - 1, i + self.half)
        window = [self._at(j) for j in range(lo, hi + 1)]
        if len(window) < 3 or not any(w.any_move for w in window[1:]):
            s.median = s.gray  # nothing moved: the sample is its own median
        else:
            grays = {id(w.gray): w.gray for w in window}
            s.median = s.gray if len(grays) == 1 else temporal_median([w.gray for w in window])
        return s.median

    # the rule
    def _differs(self, a: np.ndarray, b: np.ndarray, mask: np.ndarray,
                 tolerant: bool = False) -> tuple[bool, float, float]:
        """The rule: (changed, mean SSIM, lowest tile-window SSIM), masked tiles left out.

        ``tolerant`` (near-duplicates): the local tests allow for the video's own noise.
        When the character test alone decides a change, SSIM is not computed (NaN).
        """
        if a.shape != b.shape:
            return True, 0.0, 0.0
        memo = self.memo
        if memo and memo[0] is a and memo[1] is b and memo[2] == (mask.tobytes(), tolerant):
            return memo[3]  # the same images again (a GOP whose inside was not decoded)
        d = a - b
        d = np.abs(d - float(d.mean()))  # an exposure change is not a change of content
        if mask.any():
            d[_expand(mask, d.shape, d.shape)] = 0.0
        # too faint for any of the tests (SSIM's C2 alone is a 7-level contrast)
        char = float(d.max()) if d.max() < 6.0 else char_change(d, self.opts.char_window)
        char_level = self.char_level if tolerant else self.opts.char_level
        if char < 6.0:
            result = (False, 1.0, 1.0)
        elif char > char_level:
            result = (True, math.nan, math.nan)
        else:
            self.stats["compared"] += 1
            mean, tile = compare(a, b, self.opts.tiles, mask)
            tile_threshold = self.tile_threshold if tolerant else self.opts.tile_threshold
            result = (mean < self.opts.threshold or tile < tile_threshold, mean, tile)
        self.memo = (a, b, (mask.tobytes(), tolerant), result)
        return result

    def _dynamic(self) -> np.ndarray:
        """Tiles in motion at any sample of the last ``mask_window`` seconds: a person who
        moved a hand a few seconds ago has not changed what is shown."""
        return np.logical_or.reduce(self.recent) if self.recent else np.zeros(self.opts.tiles, bool)

    def _step(self, i: int, again: bool = False) -> None:
        m = self._median(i)
        mask = self._mask(i)
        if not again:
            self.recent.append(mask)
        if self.cand is None:
            if self.ref is None:
                self.cand, self.cand_scores = i, None
                return
            held = self._dynamic() | self.ref.mask | self.band
            changed, mean, tile = self._differs(m, self.ref.median, held)
            if changed:
                self.cand, self.cand_scores = i, (m, self.ref.median, held)
                if self.leaving is None:  # the state's picture leaves the screen here, unless it comes back
                    self.leaving = self._at(i).time
            else:
                self.unsettled = None  # the picture holds still again (as the last state)
                self.leaving = None
                if self.picture is not None:
                    self.picture.offer(self._at(i))
            return
        changed, _, _ = self._differs(m, self._median(self.cand), mask | self.band)
        if changed:
            self._drop("transient")
            self._unsettled(self._at(self.cand), self._at(i))
            self.cand = None
            self._step(i, again=True)  # maybe the start of another candidate
            return
        if i - self.cand + 1 >= self.need:
            self._confirm(self.cand, i)

    def _unsettled(self, start: _Sample, s: _Sample) -> None:
        """A candidate did not hold: the picture is moving. Keep the stretch's sharpest sample (the
        least motion-blurred); when the stretch lasted ``max_unsettled`` seconds or more (a pan, a
        tracking shot over a board), it becomes a keyframe at the stretch's end, unless it shows what
        the state that ends it shows (a zoom that settles) or an earlier keyframe (``_settled``)."""
        if self.opts.max_unsettled <= 0:
            return
        sharp = sharpness(s.gray)
        if self.unsettled is None:
            self.unsettled = (start.time, s, sharp)
        elif sharp > self.unsettled[2]:
            self.unsettled = (self.unsettled[0], s, sharp)

    def _settled(self, end: float, next_state: np.ndarray | None = None, mask: np.ndarray | None = None) -> None:
        """The unsettled stretch (if any) ended at ``end``, where a state showing ``next_state`` began
        (None: the video ended): its keyframe, if it earns one (see ``_unsettled``)."""
        stretch, self.unsettled = self.unsettled, None
        if stretch is None or end - stretch[0] < self.opts.max_unsettled:
            return
        since, best, _ = stretch
        if next_state is not None and best.gray.shape == next_state.shape and not self._differs(
                best.gray, next_state, mask if mask is not None else np.zeros(self.opts.tiles, bool),
                tolerant=True)[0]:
            self._drop("duplicate")
            return
        self._settle(since, best)

    def _settle(self, since: float, best: _Sample) -> None:
        """A keyframe for a stretch that never held a state, from its sharpest sample ``best``.
        Unlike a held state, a dropped one leaves the current state open (the stretch repeated it)."""
        state = _State(None, best.gray, self._dynamic() | self.band)
        previous, sharp = self.ref, self._rejected(best.gray, best, state.mask, coarse=True)
        if sharp is None:
            return
        self._close(since)  # the state before it ends here
        self.ref = state
        scores = compare(best.gray, previous.median.astype(np.float32), self.opts.tiles) \
            if previous is not None and previous.median.shape == best.gray.shape else (1.0, 1.0)
        picture = _Picture(best.t)
        picture.offer(best)
        self._keep(state, since, best, picture, sharp, scores)

    # burned-in captions
    def _changed_tiles(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Tiles (bool, shape ``tiles``) where two analysis images differ by the motion test's levels."""
        d = a - b
        d = np.abs(d - float(d.mean()))
        box = uniform_filter(d, self.opts.char_window, mode="constant")
        changed = (_tile_means(d, self.opts.tiles) > self.opts.move_level) | (
            _tile_max(box, self.opts.tiles) > self.opts.char_level)
        full = np.zeros(self.opts.tiles, bool)
        full[: changed.shape[0], : changed.shape[1]] = changed
        return full

    def _caption_change(self, time: float, settled: np.ndarray, mask: np.ndarray) -> None:
        """A state showing ``settled`` begins at ``time`` after ``self.ref``: when it changed only a strip in
        the bottom ``caption_band`` of the frame, replacing what the strip showed there (a caption, not a line
        added to an empty part of a slide), count it; ``caption_changes`` such changes within ``caption_window``
        seconds, on shared tile rows, make those rows the caption band (whole rows: a caption's width varies)."""
        opts, prev = self.opts, self.ref
        if opts.caption_changes <= 0 or opts.caption_band <= 0 or prev is None or prev.median.shape != settled.shape:
            return
        changed = self._changed_tiles(settled, prev.median) & ~(mask | prev.mask)
        rows = changed.any(axis=1)
        top = opts.tiles[0] - max(1, math.ceil(opts.caption_band * opts.tiles[0]))
        if not rows.any() or rows[:top].any():
            return
        spread = _tiled(prev.median, opts.tiles).std(axis=(1, 3))
        shown = np.zeros(opts.tiles, bool)
        shown[: spread.shape[0], : spread.shape[1]] = spread > 2 * opts.blank_std
        if (shown & changed).sum() < 0.5 * changed.sum():  # the strip was empty there: a line was added
            return
        self.band_changes.append((time, rows))
        recent = [r for t, r in self.band_changes if t >= time - opts.caption_window]
        common = np.sum(recent, axis=0) >= 2
        hits = [r for r in recent if (r & common).any()]
        if len(hits) >= opts.caption_changes:
            band = np.logical_or.reduce(hits)
            lo, hi = int(np.argmax(band)), len(band) - int(np.argmax(band[::-1]))
            self.band[lo:hi, :] = True

    def _merge_captions(self) -> None:
        """Once a caption band is known, a kept state that differs from the kept state before it only inside
        the band (it was kept for a caption change before the band was found) joins it: its picture is
        removed, the earlier state lasts until it ends (counted as dropped, "caption")."""
        if not self.band.any() or len(self.kept) < 2:
            return
        merged = [self.kept[0]]
        for s in self.kept[1:]:
            head = merged[-1]
            if s.median.shape == head.median.shape and not self._differs(
                    s.median.astype(np.float32), head.median.astype(np.float32), self.band | s.mask | head.mask,
                    tolerant=True)[0]:
                head.keyframe.end = s.keyframe.end
                if s.keyframe.path:
                    Path(s.keyframe.path).unlink(missing_ok=True)
                self._drop("caption")
            else:
                merged.append(s)
        self._renumber(merged)

    def _renumber(self, kept: list[_State]) -> None:
        for k, s in enumerate(kept):
            s.keyframe.index = k
        self.kept = kept

    # what stays on screen
    def _drop_persistent_blanks(self) -> None:
        """Drop kept states that show nothing but what stays on screen the whole video (counted "blank").

        What stays: pixels whose gray level varies by at most 24 over the samples spread over the video
        (``spread``) and that hold a structure (5-pixel local deviation of 12 levels or more) in every one of
        them (a logo, a watermark, a channel bug, a copyright line), grown by 3 pixels to take in their
        inside, and only where the level stays. It counts only where it is small (10% of the frame at
        most) and some sample shows more than it (a single slide held all video long stays on screen too,
        and is no blank). A state is blank when its pixels outside it are flat (gray
        level deviation below ``blank_std``) at a level other than the other kept states' (by ``2 * blank_std``
        levels at least), as a fade to black under a copyright line is; a slide showing only its title, which
        stays on while its lines are added one by one, is at its slides' background level, and is kept.
        """
        # a cheap screen first: such a state is flat in 80% of its 8x8-pixel blocks at least
        if not any(float(np.mean(np.abs(s.thumb - np.median(s.thumb)) > self.opts.blank_std)) <= 0.2
                   for s in self.kept):
            return
        shape = self.kept[0].median.shape
        grays = [g for g in self.spread if g.shape == shape]
        if len(grays) < 4:
            return
        stack = np.stack(grays)
        steady = (stack.max(axis=0) - stack.min(axis=0)) <= 24.0
        lasting = steady.copy()
        for g in grays:
            mean = uniform_filter(g, 5)
            lasting &= (uniform_filter(g * g, 5) - mean * mean) >= 144.0
        if not lasting.any():
            return
        import cv2

        stays = cv2.dilate(lasting.astype(np.uint8), np.ones((7, 7), np.uint8)).astype(bool) & steady
        if float(stays.mean()) > 0.1 or not any(float(g[~stays].std()) >= self.opts.blank_std for g in grays):
            return  # what stays is all the video shows: it is the content
        rest = [(float(np.median(s.median[~stays])), float(s.median[~stays].std())) if s.median.shape == shape
                else (math.nan, math.inf) for s in self.kept]
        kept = []
        for k, (s, (level, spread)) in enumerate(zip(self.kept, rest, strict=True)):
            others = [lv for j, (lv, _) in enumerate(rest) if j != k and not math.isnan(lv)]
            apart = bool(others) and abs(level - float(np.median(others))) >= 2 * self.opts.blank_std
            if spread < self.opts.blank_std and apart:
                if s.keyframe.path:
                    Path(s.keyframe.path).unlink(missing_ok=True)
                self._drop("blank")
            else:
                kept.append(s)
        if len(kept) < len(self.kept):
            self._renumber(kept)

    def _drop(self, reason: str) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + 1

    def _rejected(self, settled: np.ndarray, best: _Sample, mask: np.ndarray, coarse: bool = False) -> float | None:
        """The sharpness of ``best`` when a state showing ``settled`` earns a keyframe; None when it is
        dropped (counted as blank, blurred or duplicate). ``coarse``: a picture taken in motion must also
        differ from every kept keyframe at the scale of 8x8-pixel blocks (``_duplicate``'s screen): the
        lecture's camera following the lecturer across a shot already kept is 6 levels off it, another
        shot 60-90."""
        opts = self.opts
        if float(settled.std()) < opts.blank_std:
            self._drop("blank")
            return None
        sharp = sharpness(best.gray)
        if sharp < opts.blur_min:
            self._drop("blurred")
            return None
        if opts.dedup and (self._duplicate(settled, mask) or coarse and self._near_thumb(_thumb(settled))):
            self._drop("duplicate")
            return None
        return sharp

    def _near_thumb(self, thumb: np.ndarray) -> bool:
        """Some kept keyframe is within 12 gray levels of ``thumb`` on average (8x8-pixel blocks)."""
        return any(k.thumb.shape == thumb.shape and float(np.abs(k.thumb - thumb).mean()) <= 12.0 for k in self.kept)

    def _keep(self, state: _State, time: float, best: _Sample, picture: _Picture, sharp: float,
              scores: tuple[float, float]) -> None:
        """Record ``state`` (the new reference) as a keyframe from ``time``; its picture is written when
        it ends (a later sample may be cleaner)."""
        mean, tile = scores
        kf = Keyframe(index=len(self.kept), time=round(time, 3), ssim=round(mean, 4), min_tile_ssim=round(tile, 4),
                      sharpness=round(sharp, 1), frame_time=round(best.time, 3))
        self.display_size = best.display.size
        if self.out:
            kf.path = str(self.out / f"t{int(round(kf.time * 1000)):09d}.jpg")
        self.picture = picture
        state.keyframe = kf
        # what dedup needs of a kept state, small: its median in 8 bits and a thumbnail
        self.kept.append(_State(kf, np.round(state.median).astype(np.uint8), state.mask, _thumb(state.median)))
        self.current = kf

    def _confirm(self, c: int, i: int) -> None:
        """Samples c..i held one state: record it, write its settled picture unless dropped."""
        opts = self.opts
        settled = self._median(i)
        dynamic = self._dynamic() | self.band
        self._settled(self._at(c).time, settled, dynamic)
        pool = [self._at(j) for j in range(c, i + 1)]
        picture = _Picture(pool[0].t + opts.mask_window)
        for s in pool:
            picture.offer(s)
        best = picture.sample
        start = self._at(c)
        self.cand = None
        state = _State(None, settled, dynamic)
        self._caption_change(start.time, settled, dynamic)
        self._close(start.time)
        self.ref = state
        sharp = self._rejected(settled, best, dynamic)
        if sharp is None:
            return
        scores = compare(*self.cand_scores[:2], opts.tiles, self.cand_scores[2]) if self.cand_scores else (1.0, 1.0)
        self._keep(state, start.time, best, picture, sharp, scores)

    def _close(self, end: float) -> None:
        """The current state ended at ``end`` (or earlier, when its picture began to leave the screen
        then and never came back: ``Keyframe.end``): write its picture."""
        kf, picture = self.current, self.picture
        leaving, self.leaving = self.leaving, None
        self.current = self.picture = None
        if kf is None:
            return
        kf.end = round(end if leaving is None else max(kf.time, min(end, leaving)), 3)
        best = picture.sample
        kf.frame_time = round(best.time, 3)
        if kf.path:
            if self.reformatter is None:
                from av.video.reformatter import VideoReformatter

                self.reformatter = VideoReformatter()
            best.display.image(best.frame, self.reformatter).save(kf.path, quality=self.opts.jpeg_quality)

    def _duplicate(self, settled: np.ndarray, mask: np.ndarray) -> bool:
        thumb = _thumb(settled)
        for other in reversed(self.kept):
            if other.median.shape != settled.shape:
                continue
            if np.abs(other.thumb - thumb).mean() > 12.0:  # cheap screen before SSIM
                continue
            changed, _, _ = self._differs(settled, other.median.astype(np.float32), mask | other.mask,
                                          tolerant=True)
            if not changed:
                return True
        return False


class _Picture:
    """The settled picture of a state: of the samples offered until ``until`` (seconds),
    the one closest to their per-pixel median (a pointer over blank space rather than
    over text, a lecturer hiding the least, no half-dissolved frame). The median is of at most
    5 of them, evenly spread over the state (a sorting network: a median of 30 frames costs 50 ms)."""

    def __init__(self, until: float):
        self.until = until
        self.samples: list[_Sample] = []

    def offer(self, s: _Sample) -> None:
        if s.t <= self.until and not (self.samples and s.gray is self.samples[-1].gray):
            self.samples.append(s)

    @property
    def sample(self) -> _Sample:
        if len(self.samples) < 3:
            return self.samples[-1]
        n = len(self.samples)
        spread = [self.samples[round(k * (n - 1) / 4)] for k in range(5)] if n > 5 else self.samples
        median = temporal_median([s.gray for s in spread])
        # pixels far from the median (what passes, not recompression noise): the fewer the better
        return min(self.samples, key=lambda s: int(np.count_nonzero(np.abs(s.gray - median) > 24.0)))


def _thumb(gray: np.ndarray) -> np.ndarray:
    h, w = gray.shape
    return gray[: h - h % 8, : w - w % 8].reshape(h // 8, 8, w // 8, 8).mean(axis=(1, 3))
