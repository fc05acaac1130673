"""The OCR line filter on what real tesseract reads: photos, faces and paintings give no text; slides do."""

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
