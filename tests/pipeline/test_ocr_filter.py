"""The OCR line filter on what real tesseract reads: photos, faces and paintings give no text; slides do."""

import difflib
import json
from pathlib import Path

import pytest
import skimage.data
from PIL import Image

from pipeline.assemble import filter_ocr, speech_words, spoken_share
from pipeline.config import OcrFilterConfig
from tools import keyframes
from tools.ocr import TesseractOCR

PHOTOS = ("astronaut", "camera", "coffee", "chelsea", "rocket", "immunohistochemistry", "hubble_deep_field")


@pytest.mark.slow
def test_photos_give_no_training_text_and_slides_keep_theirs(lessons, tmp_path):
    paths = []
    for name in PHOTOS:  # photographs shipped with scikit-image, shown at a lecture video's size
        path = tmp_path / f"{name}.jpg"
        Image.fromarray(getattr(skimage.data, name)()).convert("RGB").resize((854, 480)).save(path)
        paths.append(path)
    read = TesseractOCR().read_many(paths)
    assert sum(len(r.lines) for r in read) > 20  # tesseract does read "text" in them
    verdicts = filter_ocr([r.lines for r in read], OcrFilterConfig())
    assert [v.kept_lines for v in verdicts] == [[] for _ in PHOTOS]
    assert {v.reason for v in verdicts} <= {"ocr_noise", "ocr_empty"}

    slides = keyframes.detect(lessons / "chemistry_atoms.mp4", tmp_path / "kf").keyframes
    verdicts = filter_ocr([r.lines for r in TesseractOCR().read_many([k.path for k in slides])], OcrFilterConfig())
    assert all(v.kept for v in verdicts)
    text = "\n".join(v.text for v in verdicts).lower()
    assert "atoms and elements" in text and "an element has one kind of atom" in text


def _said(captions: list[dict]) -> list[dict]:
    """ASR segments (tools.asr's shape) saying each caption's words evenly over its time."""
    out = []
    for c in captions:
        words = c["text"].split()
        step = (c["end"] - c["start"]) / len(words)
        out.append({"start": c["start"], "end": c["end"], "text": c["text"],
                    "words": [{"start": c["start"] + i * step, "end": c["start"] + (i + 1) * step, "word": f" {w}",
                               "probability": 0.9} for i, w in enumerate(words)]})
    return out


def test_burned_in_captions_are_not_slide_text(tmp_path):
    """The captions fixture (examples/make_conditions.py): tesseract reads each keyframe's caption; the
    words spoken around the keyframe drop it (ocr_spoken), the slide's own lines stay, even one that
    the narrator says too (it is not at the bottom of the frame)."""
    folder = Path(__file__).resolve().parent.parent / "data" / "conditions"
    t = json.loads((folder / "captions.truth.json").read_text())
    kfs = keyframes.detect(folder / "captions.mp4", tmp_path).keyframes
    read = TesseractOCR().read_many([k.path for k in kfs])
    cfg = OcrFilterConfig()
    captions = [c["text"].lower() for c in t["captions"]]
    read_text = "\n".join(r.text for r in read).lower()
    assert sum(c in read_text for c in captions) >= 3  # tesseract does read the captions

    segments = _said(t["captions"]) + [{"start": 11.0, "end": 12.0, "text": "charge per second", "words": []}]
    speech = [speech_words(segments, k.time - cfg.spoken_before, k.time + cfg.spoken_after) for k in kfs]
    verdicts = filter_ocr([r.lines for r in read], cfg, speech, [r.height for r in read])
    kept = "\n".join(v.text for v in verdicts).lower()
    assert not any(c in kept for c in captions), kept
    assert any(why == "ocr_spoken" for v in verdicts for _, why in v.lines)
    for line in ("current", "charge per second", "resistance", "measured in ohms"):
        assert line in kept, (line, kept)

    unfiltered = "\n".join(v.text for v in filter_ocr([r.lines for r in read], cfg)).lower()
    assert sum(c in unfiltered for c in captions) >= 3  # without the speech they would be training text


def test_spoken_share_is_in_order_and_forgives_misread_letters():
    said = "today we look at how voltage current and resistance depend on each other".split()
    assert spoken_share("Todav we look at how voltaqe", said) == (6, 1.0)
    assert spoken_share("voltage look today how", said)[1] <= 0.5  # the words, not the narration's order
    assert spoken_share("Kirchhoff's loop rule", said)[1] == 0.0


@pytest.mark.e2e
def test_a_captioned_narrated_lesson_gives_one_image_per_slide_and_no_caption_text(tmp_path):
    """The captions fixture with its captions spoken (espeak-ng, each at its caption's time), through
    `textbook process` (whisper ASR, keyframes, tesseract, the filter): one image per slide, and the
    OCR part of the text holds the slides' lines, not the narration again."""
    import subprocess
    import wave

    import numpy as np

    from tests.conftest import run_cli

    folder = Path(__file__).resolve().parent.parent / "data" / "conditions"
    t = json.loads((folder / "captions.truth.json").read_text())
    rate = 22050
    audio = np.zeros(int(t["duration"] * rate), np.int16)
    for i, c in enumerate(t["captions"]):
        wav = tmp_path / f"c{i}.wav"
        subprocess.run(["espeak-ng", "-v", "en-us", "-s", "175", "-w", str(wav), c["text"]], check=True)
        with wave.open(str(wav)) as w:
            assert w.getframerate() == rate
            said = np.frombuffer(w.readframes(w.getnframes()), np.int16)[: int((c["end"] - c["start"]) * rate)]
        audio[int(c["start"] * rate): int(c["start"] * rate) + len(said)] = said
    with wave.open(str(tmp_path / "narration.wav"), "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(rate)
        w.writeframes(audio.tobytes())
    video = tmp_path / "captioned_lesson.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(folder / "captions.mp4"), "-i",
                    str(tmp_path / "narration.wav"), "-c:v", "copy", "-c:a", "aac", "-shortest", str(video)],
                   check=True)
    proc = run_cli("process", str(video), "--db", str(tmp_path / "db.duckdb"), "--out", str(tmp_path / "out"),
                   "--json", "-q")
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in (tmp_path / "out" / "samples.jsonl").read_text().splitlines()]
    assert sum(1 for r in rows for image in r["images"] if image) == 4  # before: 8 (16 keyframes, 4 a clip)
    ocr = []
    for r in rows:
        for with_ocr, text in zip(r["text_ocr_list"], r["texts"], strict=True):
            if with_ocr and text and with_ocr != text:
                ocr += with_ocr[: len(with_ocr) - len(text)].strip().lower().splitlines()
    captions = {c["text"].lower() for c in t["captions"]}
    said = [line for line in ocr if any(difflib.SequenceMatcher(None, line, c).ratio() >= 0.8 for c in captions)]
    assert not said, ocr  # before: 11 of 13 OCR lines were captions
    assert "charge per second" in ocr and "measured in ohms" in ocr, ocr
