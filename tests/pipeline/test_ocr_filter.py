"""The OCR line filter on what real tesseract reads: photos, faces and paintings give no text; slides do."""

import pytest
import skimage.data
from PIL import Image

from pipeline.assemble import filter_ocr
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
