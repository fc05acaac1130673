"""A keyframe goes with the narration during which it is really on screen (issue 20, kind 2).

The fixture is a blackboard written word by word (the writing never settles for 2 s), each finished board held
4 s, then wiped: to a blank board held 3 s (a state, dropped as blank), or in a 0.5 s wipe that no state holds,
the next board's writing starting at once. The narration of each board
covers its writing, its finished state and its wipe. Under the old rule (a keyframe is on screen until the next
keyframe) the wipe and the next board's writing counted as the earlier board's time: board 1 went with board 2's
narration, board 2 with board 3's, and the first clip got no image.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from PIL import Image, ImageDraw, ImageFont

from pipeline import assemble
from pipeline.config import ClipConfig
from store import open_store
from tools.keyframes import detect

FPS = 4
WORDS = [  # three boards, 18 words each: one word every 0.5 s over 9 s of writing
    "Newton first law: a body at rest stays at rest unless some outside force acts upon it now",
    "Second law: the net force equals the mass times the acceleration of the body in motion here",
    "Third law: every action has an equal and opposite reaction between the two bodies in contact",
]
WRITE, HOLD = 9.0, 4.0  # seconds of writing, of the finished board
WIPES = (3.0, 0.5)  # seconds of the blank board between two boards


def _board_times(wipe: float) -> list[tuple[float, float, float]]:
    """(writing starts, finished board shown, wiped) of each board, in seconds."""
    out, t = [], 0.0
    for _ in WORDS:
        out.append((t, t + WRITE, t + WRITE + HOLD))
        t += WRITE + HOLD + wipe
    return out


def _frame(words: list[str]) -> Image.Image:
    im = Image.new("RGB", (640, 360), (28, 60, 44))  # a green board
    draw = ImageDraw.Draw(im)
    font = ImageFont.truetype("DejaVuSans.ttf", 30)
    x, y = 24, 24
    for w in words:
        width = draw.textlength(w + " ", font=font)
        if x + width > 620:
            x, y = 24, y + 48
        draw.text((x, y), w, fill=(235, 235, 225), font=font)
        x += width
    return im


def _blackboard(path: Path, wipe: float) -> float:
    """Write the fixture video (H.264, 4 fps); returns its duration in seconds."""
    frames: list[Image.Image] = []
    for (start, _, wiped), text in zip(_board_times(wipe), WORDS, strict=True):
        words = text.split()
        per_word = WRITE / len(words)
        for n in range(int(round((wiped + wipe - start) * FPS))):
            t = start + n / FPS
            if t < wiped:
                frames.append(_frame(words[: min(len(words), int((t - start) / per_word) + 1)]))
            else:
                frames.append(Image.new("RGB", (640, 360), (28, 60, 44)))
    frames = frames[: -int(round(wipe * FPS))]  # the video ends on the last finished board
    folder = path.parent / "frames"
    folder.mkdir()
    for i, im in enumerate(frames):
        im.save(folder / f"{i:05d}.png")
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-framerate", str(FPS), "-i", str(folder / "%05d.png"),
                    "-c:v", "libx264", "-pix_fmt", "yuv420p", "-g", str(2 * FPS), str(path)], check=True)
    return len(frames) / FPS


def _narration(wipe: float) -> list[dict]:
    """One ASR segment per board, from its writing to its wipe's end (as a lecturer talks while writing)."""
    out = []
    for n, (start, _, wiped) in enumerate(_board_times(wipe)):
        out.append({"start_s": start + 0.3, "end_s": wiped + max(wipe - 0.5, 0.0),
                    "text": f"Now board {n + 1}: {WORDS[n]}.", "words": []})
    out[-1]["end_s"] = _board_times(wipe)[-1][2] - 0.5
    return out


@pytest.fixture(scope="module", params=WIPES, ids=lambda w: f"wipe{w}s")
def blackboard(request, tmp_path_factory) -> tuple[float, list[dict], float]:
    """The wipe's seconds, the fixture's keyframes as the store gives them back (DuckDB file, with
    ``end_s``), and the video's duration."""
    wipe = request.param
    root = tmp_path_factory.mktemp("blackboard")
    duration = _blackboard(root / "board.mp4", wipe)
    result = detect(root / "board.mp4", root / "kf")
    store = open_store(root / "t.duckdb")
    try:
        store.upsert_video({"video_id": "board", "source": str(root / "board.mp4")})
        from dataclasses import asdict

        store.save_keyframes("board", "h1", [asdict(k) for k in result.keyframes], result.seconds)
        rows = store.keyframes("board", "h1")
    finally:
        store.close()
    return wipe, rows, duration


def test_a_finished_board_is_on_screen_until_its_wipe(blackboard):
    """Each finished board is found, and its stored end is the wipe, not the next board's keyframe."""
    wipe, rows, _ = blackboard
    boards = _board_times(wipe)
    finished = []
    for _, done, wiped in boards:
        (kf,) = [k for k in rows if done - 0.5 <= k["time_s"] <= done + 1.5]
        assert kf["end_s"] is not None and wiped - 0.5 <= kf["end_s"] <= wiped + 1.0, (kf, wiped)
        finished.append(kf["idx"])
    assert len(finished) == len(set(finished)) == 3


def test_each_finished_board_goes_with_its_own_narration(blackboard):
    wipe, rows, duration = blackboard
    plans = assemble.plan_clips(_narration(wipe), duration, rows, ClipConfig())
    assert len(plans) == 3
    boards = _board_times(wipe)
    for n, plan in enumerate(plans):
        start, done, wiped = boards[n]
        speech = plan.span.speech
        assert speech[0] <= done and wiped <= speech[1] + wipe  # the fixture: board n's narration covers it
        shown = [k["time_s"] for k in plan.keyframes]
        assert any(done - 0.5 <= t <= done + 1.5 for t in shown), (n, shown)  # its finished board
        assert all(start - 0.5 <= t < wiped for t in shown), (n, shown)  # and nothing of another board
    # the old rule (on screen until the next keyframe) fails on this fixture: the first clip gets no board
    old = assemble.plan_clips(_narration(wipe), duration, [{**k, "end_s": None} for k in rows], ClipConfig())
    assert not old[0].keyframes


def test_on_screen_intervals():
    rows = [{"time_s": 0.0, "end_s": 4.0}, {"time_s": 10.0, "end_s": 30.0}, {"time_s": 20.0, "end_s": None},
            {"time_s": 40.0, "end_s": 45.0}]
    assert assemble.on_screen(rows, 60.0) == [(0.0, 4.0), (10.0, 20.0), (20.0, 40.0), (40.0, 45.0)]
    assert assemble.on_screen([{"time_s": 5.0}], 60.0) == [(5.0, 60.0)]  # stored before migration 014
