"""Render the keyframe conditions suite: one small video per condition, with ground truth.

Each condition is a way real lecture videos defeat a naive keyframe detector (a moving
pointer, a webcam box, a cross-dissolve, a fade to black, a camera with a person walking)
or a way their files defeat naive decoding (rotation metadata, non-square pixels,
variable frame rate, a very long GOP, a container start offset). Beside each video
``NAME.EXT`` it writes ``NAME.truth.json``:

- ``states``: the slide states a student would want, each with ``start``/``end`` in
  seconds of media time (from the start of the media, as a player counts), its text, and
  ``image``: the clean state as the viewer sees it (display size and orientation), saved
  as a grayscale PNG 320 px wide beside the video (``NAME.stateK.png``);
- ``display``: [width, height] a player shows; ``match_ssim``: the SSIM a keyframe (as
  written, grayscale, 320 px wide) must reach against its state's clean image.

A keyframe detector is right on a video when every state has one keyframe whose time is
inside the state and whose picture matches that state's image best, and there is no other
keyframe (tests/tools/test_keyframes.py, bench/bench_keyframes.py). Rendering is
deterministic (fixed seeds); no audio track (the keyframe stage does not read audio).

    python examples/make_conditions.py tests/data/conditions
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_lessons import Slide, _font, render_slide  # noqa: E402

STATE_WIDTH = 320  # clean state images are stored this wide (the detector's analysis width)


@dataclass
class State:
    start: float
    end: float
    title: str
    lines: list[str]
    image: np.ndarray = field(repr=False)  # clean RGB picture as displayed


@dataclass
class Condition:
    name: str
    condition: str
    expect: str
    duration: float
    fps: float
    states: list[State]
    frame: Callable[[float], np.ndarray] | None  # RGB frame as stored, at media time t
    ext: str = "mp4"
    x264: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)  # output options after the codec
    remux: list[str] = field(default_factory=list)  # a second, stream-copy pass (e.g. rotation)
    vfr: list[tuple[float, np.ndarray]] | None = None  # (duration, frame) pairs instead of `frame`
    match_ssim: float = 0.9
    more_truth: dict = field(default_factory=dict)  # written into the truth file as well (e.g. captions)


# -- drawing ------------------------------------------------------------------
_SLIDES: dict[tuple, np.ndarray] = {}


def slide(title: str, lines: list[str], formula: str | None = None) -> np.ndarray:
    """A 854x480 slide drawn by make_lessons.render_slide, as an RGB array (cached)."""
    key = (title, tuple(lines), formula)
    if key not in _SLIDES:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "s.png"
            render_slide(Slide(title, list(lines), formula=formula), path)
            _SLIDES[key] = np.asarray(Image.open(path).convert("RGB"))
    return _SLIDES[key]


def state(start: float, end: float, title: str, lines: list[str], image: np.ndarray | None = None) -> State:
    return State(start, end, title, lines, slide(title, lines) if image is None else image)


def at(states: list[State], t: float) -> State:
    """The state shown at time t (the last one whose start is <= t)."""
    return [s for s in states if s.start <= t + 1e-9][-1]


POINTER = [(0, 0), (0, 34), (9, 26), (15, 40), (21, 37), (15, 24), (26, 24)]


def draw_pointer(img: np.ndarray, x: float, y: float) -> np.ndarray:
    pil = Image.fromarray(img)
    d = ImageDraw.Draw(pil)
    d.polygon([(x + px, y + py) for px, py in POINTER], fill=(255, 255, 255), outline=(0, 0, 0), width=2)
    return np.asarray(pil)


def pointer_path(t: float) -> tuple[float, float]:
    """A presenter's pointer: glides between points of interest, resting at most 0.8 s at each."""
    stops = [(120, 140), (520, 150), (600, 300), (200, 330), (380, 210), (700, 120), (300, 400), (90, 250)]
    leg = 1.6  # seconds per stop: 0.8 s gliding, then up to 0.8 s resting
    i = int(t // leg)
    a, b = stops[i % len(stops)], stops[(i + 1) % len(stops)]
    u = min(1.0, (t - i * leg) / 0.8)
    u = u * u * (3 - 2 * u)  # ease in and out
    return a[0] + (b[0] - a[0]) * u, a[1] + (b[1] - a[1]) * u


def draw_webcam(img: np.ndarray, t: float, box=(646, 320, 192, 144)) -> np.ndarray:
    """A talking head in a box: head sway, nodding, blinking, a mouth that moves with speech."""
    x0, y0, w, h = box
    pil = Image.fromarray(img)
    d = ImageDraw.Draw(pil)
    for row in range(h):  # a soft backdrop gradient
        c = int(70 + 40 * row / h)
        d.line([(x0, y0 + row), (x0 + w, y0 + row)], fill=(c, c + 10, c + 30))
    sway = 10 * math.sin(2 * math.pi * 0.35 * t) + 4 * math.sin(2 * math.pi * 1.3 * t)
    nod = 4 * math.sin(2 * math.pi * 0.6 * t)
    cx, cy = x0 + w / 2 + sway, y0 + 62 + nod
    d.ellipse([cx - 58, y0 + 108 + nod / 2, cx + 58, y0 + h + 40], fill=(40, 60, 150))  # shoulders
    d.ellipse([cx - 30, cy - 38, cx + 30, cy + 38], fill=(225, 180, 150))  # face
    d.chord([cx - 31, cy - 42, cx + 31, cy + 4], 180, 360, fill=(60, 40, 30))  # hair
    blink = (t % 3.1) < 0.15
    for ex in (cx - 12, cx + 12):
        if blink:
            d.line([(ex - 5, cy - 6), (ex + 5, cy - 6)], fill=(40, 30, 30), width=2)
        else:
            d.ellipse([ex - 4, cy - 10, ex + 4, cy - 2], fill=(40, 30, 30))
    speech = abs(math.sin(2 * math.pi * 2.7 * t)) * (0.5 + 0.5 * math.sin(2 * math.pi * 0.45 * t) ** 2)
    d.ellipse([cx - 11, cy + 14, cx + 11, cy + 16 + 12 * speech], fill=(120, 40, 40))
    return np.asarray(pil)


def blend(a: np.ndarray, b: np.ndarray, u: float) -> np.ndarray:
    return np.clip(a.astype(np.float32) * (1 - u) + b.astype(np.float32) * u + 0.5, 0, 255).astype(np.uint8)


# -- the camera-like lecture ----------------------------------------------------
CAM_W, CAM_H = 480, 270
BOARD = (20, 16, 460, 206)  # x0, y0, x1, y1 of the blackboard
CHALK = (232, 232, 220)
BOARD_LINES = [
    ["Kinematics", "v = d / t"],
    ["Kinematics", "v = d / t", "a = dv / dt"],
    ["Kinematics", "v = d / t", "a = dv / dt", "d = v0 t + a t^2 / 2"],
    ["Energy", "E = m g h", "K = m v^2 / 2"],
]


def board(lines: list[str], reveal: float = 1.0) -> np.ndarray:
    """The blackboard with chalk lines; the last line written up to fraction ``reveal``."""
    img = Image.new("RGB", (CAM_W, CAM_H), (196, 190, 172))
    d = ImageDraw.Draw(img)
    d.rectangle([0, 222, CAM_W, CAM_H], fill=(118, 98, 78))  # floor
    d.rectangle(BOARD, fill=(44, 72, 54), outline=(90, 70, 50), width=4)
    d.rectangle([BOARD[0], BOARD[3], BOARD[2], BOARD[3] + 5], fill=(150, 140, 120))  # chalk tray
    y = 26
    for i, line in enumerate(lines):
        size = 22 if i == 0 else 19
        d.text((44 if i == 0 else 60, y), line, font=_font(size), fill=CHALK)
        if i == len(lines) - 1 and reveal < 1.0:
            x0 = (44 if i == 0 else 60) + d.textlength(line, font=_font(size)) * reveal
            d.rectangle([x0, y - 2, BOARD[2] - 6, y + 26], fill=(44, 72, 54))  # not yet written
        y += 30 if i == 0 else 24
    return np.asarray(img)


def draw_person(img: np.ndarray, x: float, t: float, walking: bool) -> np.ndarray:
    """A lecturer-like shape: head, torso, swinging arms and legs; feet on the floor."""
    pil = Image.fromarray(img)
    d = ImageDraw.Draw(pil)
    phase = math.sin(2 * math.pi * 1.6 * t) if walking else 0.0
    bob = 2 * abs(phase)
    top = 118 - bob
    d.polygon([(x - 14, top + 128), (x - 4, top + 128), (x - 3 + 10 * phase, top + 200), (x - 15 + 10 * phase,
               top + 200)], fill=(70, 62, 55))
    d.polygon([(x + 4, top + 128), (x + 14, top + 128), (x + 15 - 10 * phase, top + 200), (x + 3 - 10 * phase,
               top + 200)], fill=(70, 62, 55))
    d.rounded_rectangle([x - 20, top + 30, x + 20, top + 132], radius=10, fill=(64, 92, 160))  # shirt
    for side in (-1, 1):
        d.line([(x + side * 18, top + 38), (x + side * (24 + 8 * phase * side), top + 110)], fill=(64, 92, 160),
               width=9)
    d.ellipse([x - 13, top, x + 13, top + 30], fill=(214, 170, 140))  # head
    d.chord([x - 14, top - 2, x + 14, top + 16], 180, 360, fill=(120, 120, 120))  # grey hair
    return np.asarray(pil)


def person_x(t: float) -> tuple[float, bool]:
    """Walks back and forth, stops at the board while writing (5.0-6.2 s, 10.0-11.5 s)."""
    for a, b, x in ((5.0, 6.2, 300.0), (10.0, 11.5, 340.0)):
        if a <= t < b:
            return x, False
    span, speed = 330.0, 75.0
    s = (t * speed) % (2 * span)
    return 70 + (s if s < span else 2 * span - s), True


def camera_frame(t: float) -> np.ndarray:
    rng = np.random.default_rng(int(round(t * 1000)))
    if t < 5.0:
        img = board(BOARD_LINES[0])
    elif t < 6.2:
        img = board(BOARD_LINES[1], reveal=(t - 5.0) / 1.2)
    elif t < 10.0:
        img = board(BOARD_LINES[1])
    elif t < 11.5:
        img = board(BOARD_LINES[2], reveal=(t - 10.0) / 1.5)
    elif t < 15.0:
        img = board(BOARD_LINES[2])
    else:
        img = board(BOARD_LINES[3])
    x, walking = person_x(t)
    img = draw_person(img, x, t, walking).astype(np.float32)
    gain = 1.0 + 0.025 * math.sin(2 * math.pi * 0.8 * t) + 0.008 * rng.standard_normal()  # exposure flicker
    img = img * gain + rng.normal(0.0, 3.5, img.shape)  # sensor noise
    return np.clip(img + 0.5, 0, 255).astype(np.uint8)


# -- the conditions -------------------------------------------------------------
def conditions() -> list[Condition]:
    out: list[Condition] = []

    trace = ["5 3 8 1 9 2", "3 5 8 1 9 2", "3 5 1 8 9 2", "3 5 1 8 2 9", "3 1 5 8 2 9"]
    st = [state(3.0 * i, 3.0 * (i + 1), "Bubble sort, one pass", ["Swap neighbours out of order",
                                                                     f"a = {a}"]) for i, a in enumerate(trace)]
    out.append(Condition(
        "char_edit", "a step-by-step trace: each step swaps two numbers in place (2 characters change)",
        "5 keyframes, one per step", 15.0, 25, st, lambda t, st=st: at(st, t).image))

    st = [state(0.0, 9.0, "Ohm's Law", ["V = I x R", "Units: volts, amperes, ohms"]),
          state(9.0, 17.0, "Power", ["P = V x I", "Units: watts"])]
    out.append(Condition(
        "pointer", "a mouse pointer glides over two static slides, resting up to 0.8 s at a time",
        "2 keyframes, not one per pointer position", 17.0, 25, st,
        lambda t, st=st: draw_pointer(at(st, t).image, *pointer_path(t))))

    st = [state(0.0, 6.0, "Circuits", ["Charge flows in a loop"]),
          state(6.0, 11.0, "Circuits", ["Charge flows in a loop", "A battery pushes it"]),
          state(11.0, 16.0, "Resistors", ["Resistors slow the flow"]),
          state(16.0, 21.0, "Series", ["Resistances add up"], )]
    clean = [s.image for s in st]
    webcam = Condition(
        "webcam", "a talking-head webcam box (192x144) in the bottom-right corner over changing slides",
        "4 keyframes (one per slide state), not one per head movement", 21.0, 25, st,
        lambda t, st=st, clean=clean: draw_webcam(clean[st.index(at(st, t))], t))
    for s in st:  # what the viewer sees of a state includes the box (here with the head at rest)
        s.image = draw_webcam(s.image, 0.0)
    out.append(webcam)

    st = [state(0.0, 5.0, "Ohm's Law", ["Voltage, current and resistance"]),
          state(5.0, 10.0, "The Formula", ["V equals I times R", "Volts, amperes, ohms"]),
          state(10.0, 15.0, "Example", ["A current of 2 amperes", "through 5 ohms gives 10 volts"]),
          state(15.0, 20.0, "Summary", ["V = I x R", "Double the current, double the voltage"])]

    def dissolve(t: float, st=st) -> np.ndarray:
        for a, b in zip(st, st[1:], strict=False):
            if abs(t - b.start) < 0.5:
                return blend(a.image, b.image, t - b.start + 0.5)
        return at(st, t).image

    out.append(Condition("dissolve", "four slides joined by 1 s cross-dissolves centred on each boundary",
                         "4 keyframes, each a clean slide (no two-slide blend)", 20.0, 25, st, dissolve))

    lines = ["Voltage pushes charge", "Current is the flow of charge", "Resistance slows the flow", "V = I x R"]
    st = [state(3.5 * i, 3.5 * (i + 1), "Ohm's Law, step by step", lines[: i + 1]) for i in range(4)]
    out.append(Condition("bullets", "one slide whose four bullets appear one at a time", "4 keyframes",
                         14.0, 25, st, lambda t, st=st: at(st, t).image))

    st = [state(0.0, 4.0, "Ohm's Law", ["Voltage, current and resistance"]),
          state(4.0, 8.0, "The Formula", ["V equals I times R"]),
          state(8.0, 12.0, "Example", ["2 amperes through 5 ohms"])]
    stored = {id(s): np.ascontiguousarray(np.rot90(s.image, 1)) for s in st}  # turned a quarter left
    out.append(Condition(
        "rotated", "phone recording: frames stored 480x854 (turned a quarter left) with a -90 degree "
                   "display matrix; a player turns them upright to 854x480",
        "3 upright 854x480 keyframes", 12.0, 25, st, lambda t, st=st, stored=stored: stored[id(at(st, t))],
        remux=["-metadata:s:v:0", "rotate=270"]))

    st = [state(0.0, 4.0, "Anamorphic", ["Stored 720x480, shown 854x480"]),
          state(4.0, 8.0, "Pixel Aspect", ["Sample aspect ratio 32:27"]),
          state(8.0, 12.0, "Round Circles", ["Circles stay round"], None)]
    for s in st:
        img = Image.fromarray(s.image)
        ImageDraw.Draw(img).ellipse([600, 250, 760, 410], outline=(180, 40, 40), width=6)
        s.image = np.asarray(img)
    squeezed = {id(s): np.asarray(Image.fromarray(s.image).resize((720, 480), Image.LANCZOS)) for s in st}
    out.append(Condition(
        "anamorphic", "DVD-style anamorphic: 720x480 stored with sample aspect ratio 32:27 (display 854x480)",
        "3 keyframes at display size 854x480, circles round", 12.0, 25, st,
        lambda t, st=st, squeezed=squeezed: squeezed[id(at(st, t))], extra=["-vf", "setsar=32/27"]))

    st = [state(0.0, 4.5, "Fade Out", ["The slide fades to black"]),
          state(6.5, 11.5, "Fade In", ["The next slide fades in"]),
          state(13.5, 18.0, "The End", ["Black frames are not slides"])]

    def fade(t: float, st=st) -> np.ndarray:
        # each slide is fully shown from start + 0.5 to end - 0.5; 1 s fades in and out; 1 s of black between
        black = np.zeros_like(st[0].image)
        for s in st:
            a, b = (s.start + 0.5 if s.start else 0.0), (s.end - 0.5 if s is not st[-1] else s.end)
            if a <= t < b:
                return s.image
            if b <= t < b + 1:
                return blend(s.image, black, t - b)
            if a - 1 <= t < a:
                return blend(black, s.image, t - a + 1)
        return black

    out.append(Condition("fade_black", "slides separated by a 1 s fade to black, 1 s of black, a 1 s fade in",
                         "3 keyframes; no black or half-faded frame", 18.0, 25, st, fade))

    # a screen recorder's variable frame rate: a frame only when something changes
    st = [state(0.0, 3.0, "Screen Capture", ["Frames only on change"]),
          state(3.0, 6.0, "Irregular", ["Frame gaps of 40 to 700 ms"]),
          state(6.0, 8.4, "One Frame", ["Shown 2.4 s by a single frame"]),
          state(8.4, 11.8, "Last State", ["Held to the end"])]
    gaps = [0.04, 0.7, 0.25, 0.04, 0.04, 0.5, 0.3, 0.13, 0.5, 0.5]  # 3.0 s of frames for state 1
    vfr = [(3.0, st[0].image)] + [(g, st[1].image) for g in gaps] + [(2.4, st[2].image), (3.36, st[3].image),
                                                                      (0.04, st[3].image)]
    out.append(Condition("vfr", "variable frame rate (screen recorder): single frames held up to 3 s, "
                                "gaps of 40-700 ms", "4 keyframes, one of them a state shown by one frame",
                         11.8, 25, st, None, vfr=vfr))

    base = ["Long GOP", "One keyframe for 20 s"]
    st = [state(0.0, 4.0, "Long GOP", base[1:]),
          state(4.0, 8.0, "Long GOP", base[1:] + ["Changes hide inside it"]),
          state(8.0, 12.0, "Long GOP", base[1:] + ["Changes hide inside it: 12 of them"]),
          state(12.0, 16.0, "Same GOP", ["A new slide, no codec keyframe"]),
          state(16.0, 20.0, "Same GOP", ["A new slide, no codec keyframe", "x = 41"])]
    out.append(Condition(
        "long_gop", "one 500-frame GOP (x264 keyint 600, scene cuts off, B-frames) with 4 changes inside it",
        "5 keyframes", 20.0, 25, st, lambda t, st=st: at(st, t).image,
        x264=["-x264-params", "keyint=600:min-keyint=600:scenecut=0:bframes=3"]))

    st = [state(0.0, 5.0, "Start Offset", ["MPEG-TS starts at 1.4 s"]),
          state(5.0, 10.0, "Media Time", ["This slide is at 5.0 s"]),
          state(10.0, 14.0, "Not Stream Time", ["Not at 6.4 s"])]
    out.append(Condition("start_offset", "MPEG-TS with a 1.4 s start time (the muxer's default), 2 s GOPs",
                         "3 keyframes at 0, 5 and 10 s of media time", 14.0, 25, st,
                         lambda t, st=st: at(st, t).image, ext="ts", x264=["-g", "50"], extra=["-f", "mpegts"]))
    out.append(Condition("start_offset_mp4", "MP4 whose timestamps start at 1.4 s (output_ts_offset)",
                         "3 keyframes at 0, 5 and 10 s of media time", 14.0, 25, st,
                         lambda t, st=st: at(st, t).image, extra=["-output_ts_offset", "1.4"]))

    st = [state(0.0, 5.0, "Kinematics", BOARD_LINES[0], board(BOARD_LINES[0])),
          state(6.2, 10.0, "Kinematics", BOARD_LINES[1], board(BOARD_LINES[1])),
          state(11.5, 15.0, "Kinematics", BOARD_LINES[2], board(BOARD_LINES[2])),
          state(15.0, 20.0, "Energy", BOARD_LINES[3], board(BOARD_LINES[3]))]
    cam = Condition(
        "camera_lecture", "a camera on a blackboard: a lecturer walks in front of it and stops to write "
                          "two lines; sensor noise, exposure flicker; a new board at 15 s",
        "4 keyframes (one per finished board), none while a line is being written, none per step",
        20.0, 25, st, camera_frame, x264=["-crf", "28"])
    cam.match_ssim = 0.6
    out.append(cam)
    out.append(captions_condition())
    out.append(logo_fade_condition())
    return out


# burned-in captions: the narration, a chunk at a time, in a band at the bottom of the picture
CAPTION_SLIDES = [
    ("Ohm's Law", ["V = I x R"], ["Today we look at how voltage", "current and resistance depend",
                                  "on each other in a simple", "circuit with one resistor"]),
    ("Current", ["Charge per second"], ["Current tells us how much", "charge passes every second",
                                        "and we measure it in amperes", "with a meter placed in series"]),
    ("Resistance", ["Measured in ohms"], ["Resistance slows the flow", "a thin long wire resists more",
                                          "than a short thick one", "and heat is what it makes"]),
    ("Power", ["P = V x I"], ["Power is voltage times current", "a kettle takes about two kilowatts",
                              "which is why its cable is thick", "that is all for this lesson"]),
]
CAPTION_BOX = (0, 400, 854, 462)  # x0, y0, x1, y1: the band the captions are drawn in (bottom 17% of 480 px)


def draw_caption(img: np.ndarray, text: str) -> np.ndarray:
    """A burned-in caption: white text on a dark box, centred at the bottom, as a video editor renders it."""
    pil = Image.fromarray(img)
    d = ImageDraw.Draw(pil)
    font = _font(30)
    w = d.textlength(text, font=font)
    x0 = (CAPTION_BOX[2] - w) / 2
    d.rectangle([x0 - 14, CAPTION_BOX[1] + 6, x0 + w + 14, CAPTION_BOX[3] - 6], fill=(16, 16, 16))
    d.text((x0, CAPTION_BOX[1] + 12), text, font=font, fill=(255, 255, 255))
    return np.asarray(pil)


def captions_condition() -> Condition:
    """4 slides of 10 s; the narration's caption changes every 2 or 3 s (2.5 on average), never in step
    with the slides: a caption change is not a slide. The truth's ``captions`` give each chunk's time."""
    st, chunks, t = [], [], 0.0
    gaps = [2.5, 3.0, 2.0, 2.5]
    for i, (title, lines, said) in enumerate(CAPTION_SLIDES):
        st.append(state(10.0 * i, 10.0 * (i + 1), title, lines))
        for k, text in enumerate(said):
            chunks.append({"start": t, "end": t + gaps[(i + k) % 4], "text": text})
            t += gaps[(i + k) % 4]
    clean = {id(s): s.image for s in st}
    cache: dict = {}

    def frame(t: float, st=st) -> np.ndarray:
        s = at(st, t)
        chunk = next((c for c in chunks if c["start"] <= t < c["end"]), None)
        key = (id(s), chunk["text"] if chunk else "")
        if key not in cache:
            cache[key] = draw_caption(clean[id(s)], chunk["text"]) if chunk else clean[id(s)]
        return cache[key]

    for s in st:  # the viewer sees a state with some caption: here the one shown at its middle
        s.image = frame((s.start + s.end) / 2)
    c = Condition("captions", "burned-in captions: a band at the bottom whose text changes every 2-3 s "
                              "with the narration, over 4 slides of 10 s",
                  "4 keyframes, one per slide, none per caption", 40.0, 25, st, frame,
                  more_truth={"captions": chunks, "caption_box": list(CAPTION_BOX)})
    c.match_ssim = 0.75  # the keyframe's caption is another chunk than the state image's
    return c


def draw_logo(img: np.ndarray) -> np.ndarray:
    """A channel's copyright line, on screen the whole video (over black too), bottom right."""
    pil = Image.fromarray(img)
    d = ImageDraw.Draw(pil)
    d.rectangle([600, 444, 840, 470], fill=(60, 60, 60))
    d.text((608, 446), "(c) 2026 Physics Channel", font=_font(18), fill=(235, 235, 235))
    return np.asarray(pil)


def logo_fade_condition() -> Condition:
    st = [state(0.0, 5.0, "Fade Out", ["The slide fades to black"]),
          state(8.0, 13.0, "Fade In", ["The next slide fades in"]),
          state(16.0, 21.0, "The End", ["A logo on black is not a slide"])]
    for s in st:
        s.image = draw_logo(s.image)
    black = draw_logo(np.zeros_like(st[0].image))

    def fade(t: float, st=st) -> np.ndarray:
        # each slide fully shown from start + 0.5 to end - 0.5; 1 s fades; 2 s of black (with the logo) between
        for s in st:
            a, b = (s.start + 0.5 if s.start else 0.0), (s.end - 0.5 if s is not st[-1] else s.end)
            if a <= t < b:
                return s.image
            if b <= t < b + 1:
                return draw_logo(blend(s.image, black, t - b))
            if a - 1 <= t < a:
                return draw_logo(blend(black, s.image, t - a + 1))
        return black

    return Condition("fade_logo", "slides separated by fades to 2 s of black, a copyright line on screen "
                                  "all the time (over the black too)",
                     "3 keyframes; no black frame with the logo", 21.0, 25, st, fade)


# -- encoding -------------------------------------------------------------------
def _frames(c: Condition) -> Iterator[bytes]:
    last: np.ndarray | None = None
    data = b""
    for i in range(round(c.duration * c.fps)):
        img = c.frame(i / c.fps)
        if img is not last:  # static slides: one conversion per state
            last, data = img, np.ascontiguousarray(img, dtype=np.uint8).tobytes()
        yield data


def encode(c: Condition, out_dir: Path) -> Path:
    video = out_dir / f"{c.name}.{c.ext}"
    codec = ["-c:v", "libx264", "-pix_fmt", "yuv420p", "-crf", "30", "-preset", "medium", *c.x264]
    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        target = tmp / f"pass1.{c.ext}" if c.remux else video
        if c.vfr is not None:
            listing = []
            for i, (dur, img) in enumerate(c.vfr):
                Image.fromarray(img).save(tmp / f"f{i}.png")
                listing.append(f"file 'f{i}.png'\nduration {dur:.3f}\n")
            (tmp / "list.txt").write_text("".join(listing))
            cmd = ["ffmpeg", "-v", "error", "-y", "-f", "concat", "-safe", "0", "-i", str(tmp / "list.txt"),
                   "-vsync", "vfr", *codec, "-video_track_timescale", "1000", *c.extra, str(target)]
            subprocess.run(cmd, check=True)
        else:
            h, w = c.frame(0.0).shape[:2]
            cmd = ["ffmpeg", "-v", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{w}x{h}",
                   "-r", str(c.fps), "-i", "-", *codec, *c.extra, str(target)]
            proc = subprocess.Popen(cmd, stdin=subprocess.PIPE)
            for data in _frames(c):
                proc.stdin.write(data)
            proc.stdin.close()
            if proc.wait() != 0:
                raise RuntimeError(f"ffmpeg failed on {c.name}")
        if c.remux:
            subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(target), "-c", "copy", *c.remux, str(video)],
                           check=True)
    return video


def write_truth(c: Condition, video: Path) -> None:
    states = []
    for i, s in enumerate(c.states):
        img = Image.fromarray(s.image).convert("L")
        img = img.resize((STATE_WIDTH, round(img.height * STATE_WIDTH / img.width)), Image.LANCZOS)
        name = f"{c.name}.state{i}.png"
        img.save(video.parent / name, optimize=True)
        states.append({"index": i, "start": s.start, "end": s.end, "title": s.title, "lines": s.lines,
                       "image": name})
    h, w = c.states[0].image.shape[:2]
    truth = {"name": c.name, "video": video.name, "condition": c.condition, "expect": c.expect,
             "duration": c.duration, "display": [w, h], "match_ssim": c.match_ssim, "states": states,
             **c.more_truth}
    (video.parent / f"{c.name}.truth.json").write_text(json.dumps(truth, indent=2) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--only", nargs="*", help="condition names (default: all)")
    args = ap.parse_args()
    if not shutil.which("ffmpeg"):
        raise SystemExit("error: ffmpeg is not installed (apt-get install ffmpeg)")
    args.out.mkdir(parents=True, exist_ok=True)
    for c in conditions():
        if args.only and c.name not in args.only:
            continue
        video = encode(c, args.out)
        write_truth(c, video)
        print(video)


if __name__ == "__main__":
    main()
