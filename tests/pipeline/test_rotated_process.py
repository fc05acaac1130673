"""`textbook process` on a phone recording (frames stored sideways, a display matrix): upright keyframes.

The fixture is the conditions suite's rotated clip (480x854 stored, -90 degree display matrix) with a
lesson's narration muxed under it, the video stream copied so the matrix travels as a phone writes it.
This is the path PyAV 18.1.1 broke for every video with frame side data (issue 17): the keyframe stage
read the matrix by iterating ``frame.side_data``.
"""

import json
import subprocess

import pytest
from PIL import Image

from bench._videos import condition_truths, score
from tests.conftest import LESSONS, run_cli

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def test_phone_recording_gives_upright_keyframes_of_every_state(tmp_path):
    truth = next(t for t in condition_truths() if t["name"] == "rotated")
    phone = tmp_path / "phone.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-i", str(truth["path"]), "-i", str(LESSONS / "physics_newton.mp4"),
                    "-map", "0:v", "-map", "1:a", "-c:v", "copy", "-c:a", "aac", "-t", "12", str(phone)], check=True)
    probe = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v", "-show_entries",
                            "stream=width,height:stream_side_data=rotation", "-of", "json", str(phone)],
                           capture_output=True, text=True, check=True)
    stream = json.loads(probe.stdout)["streams"][0]
    assert (stream["width"], stream["height"]) == (480, 854)  # stored sideways, turned by the matrix
    assert stream["side_data_list"][0]["rotation"] == -90

    proc = run_cli("process", str(phone), "--db", str(tmp_path / "r.duckdb"), "--out", str(tmp_path / "out"), "--json")
    assert proc.returncode == 0, proc.stderr
    video = json.loads(proc.stdout)["videos"][0]
    assert video["status"] == "kept" and video["keyframes"] == 3
    sample = json.loads((tmp_path / "out" / "samples.jsonl").read_text().splitlines()[0])
    shown = [(m["keyframe_time"], Image.open(tmp_path / "out" / img))
             for img, m in zip(sample["images"], sample["metadata"], strict=True) if img]
    assert [im.size for _, im in shown] == [(854, 480)] * 3
    scored = score(shown, truth)  # each picture is its state's clean slide, upright (SSIM >= 0.9)
    assert scored["recall"] == 1.0 and scored["precision"] == 1.0, scored["verdicts"]
    assert "Ohm's Law" in "\n".join(t for t in sample["text_ocr_list"] if t)
