"""The default packing fits the training reader's defaults (issue 20, kind 6).

A 16-minute-style lecture (64 clips of 15 s, 45 keyframes, ~2,800 ASR tokens and the keyframes' OCR) was one
sample of 45 images that the reader (12 images, 2,048 tokens) mostly never trained on. Packed by default it is
several samples, split at clip boundaries, each read whole by train/data.py; pipeline.stats.trainer_drops says
what the reader would drop, and agrees with what the reader itself counts.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from PIL import Image

from pipeline import assemble
from pipeline.config import TRAIN_MAX_IMAGES, TRAIN_MAX_LENGTH, PackConfig
from pipeline.stats import trainer_drops
from pipeline.tokens import count_tokens
from train.data import InterleavedDataset, ReaderConfig
from train.model import tiny_processor

VOCAB = ("force mass energy the a of to and is velocity we when acceleration field charge current this that "
         "equation measure motion object system so because now let us see which gives friction spring wave "
         "momentum conserved law first second third here there look at how fast it moves").split()


def _lecture(root: Path, vid: str = "lecture16", n_clips: int = 64, n_images: int = 45,
             seed: int = 0) -> list[assemble.Position]:
    """The positions of a 16-minute-style lecture (assemble.interleave), its keyframe files under ``root``."""
    rng = random.Random(seed)
    with_image = sorted(rng.sample(range(n_clips), 38))  # 38 clips show keyframes: 31 one, 7 two
    two = set(with_image[::5][:n_images - len(with_image)])
    clips, frames, k = [], {}, 0
    for c in range(n_clips):
        idxs = []
        if c in with_image:
            for _ in range(2 if c in two else 1):
                path = root / "frames" / f"k{k:03d}.jpg"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.new("RGB", (96, 54), (k * 5 % 256, 90, 160 - k)).save(path)
                ocr = "\n".join(" ".join(rng.choice(VOCAB) for _ in range(6)) for _ in range(3))
                frames[k] = {"idx": k, "time_s": 15.0 * c + 1, "path": str(path), "ocr_kept": True, "ocr_text": ocr}
                idxs.append(k)
                k += 1
        words = [rng.choice(VOCAB) for _ in range(rng.randint(34, 52))]
        text = " ".join(words).capitalize() + "."
        clips.append({"idx": c, "start_s": 15.0 * c, "end_s": 15.0 * (c + 1), "text": text, "decision": "keep",
                      "keyframes": idxs, "polished": None})
    assert k == n_images
    positions = assemble.interleave({"video_id": vid, "source": f"{vid}.mp4"}, clips, frames)
    for p in positions:
        if p.image:
            (root / p.image).parent.mkdir(parents=True, exist_ok=True)
            (root / p.image).write_bytes(Path(p.source_path).read_bytes())
    return positions


def _write(root: Path, samples: list[dict]) -> Path:
    path = root / "samples.jsonl"
    with open(path, "w", encoding="utf-8") as fh:
        for s in samples:
            fh.write(json.dumps({k: s[k] for k in ("images", "texts", "text_ocr_list", "metadata", "image_num",
                                                   "text_num", "token_num")}) + "\n")
    return path


@pytest.fixture(scope="module")
def processor():
    return tiny_processor(vocab_size=None)  # Whisper's whole vocabulary: the pipeline's default tokenizer


@pytest.fixture(scope="module")
def lecture(tmp_path_factory):
    root = tmp_path_factory.mktemp("lecture")
    return root, _lecture(root)


def _read(path: Path, processor, **kw) -> InterleavedDataset:
    ds = InterleavedDataset(path, processor, ReaderConfig(max_images=TRAIN_MAX_IMAGES, max_length=TRAIN_MAX_LENGTH,
                                                          **kw))
    for _ in ds:
        pass
    return ds


def test_a_long_video_packs_into_samples_the_reader_reads_whole(lecture, processor, tmp_path):
    root, positions = lecture
    samples = assemble.pack([positions], PackConfig())
    assert 4 <= len(samples) <= 8
    assert all(s["image_num"] <= TRAIN_MAX_IMAGES for s in samples)
    assert sum(s["image_num"] for s in samples) == 45
    # split at clip boundaries: every clip's text in exactly one sample, after its images, in order
    texts = [t for s in samples for t in s["texts"] if t]
    assert texts == [p.text for p in positions if p.text]
    assert all(s["texts"][-1] is not None for s in samples)
    for field in ("texts", "text_ocr_list"):
        ds = _read(_write(root, samples), processor, text_field=field)
        st = ds.stats
        assert (st.samples, st.truncated_samples, st.images_truncated, st.images_over_cap) == \
            (len(samples), 0, 0, 0), (field, st.as_dict())
        assert st.images_loaded == 45
    drops = trainer_drops(samples)
    assert (drops["samples_cut"], drops["images_over_cap"], drops["images_cut"], drops["text_tokens_cut"]) == \
        (0, 0, 0, 0)
    # the texts as the reader joins them ("a. B" counts a token or so less than "a." and "B" apart)
    apart = sum(count_tokens(p.text) for p in positions if p.text)
    assert drops["images"] == 45 and 0.97 * apart <= drops["text_tokens"] <= apart


def test_trainer_drops_agree_with_the_reader(lecture, processor):
    """One sample per video (the old default): the reader ignores 33 images and cuts the text;
    trainer_drops counts the same images, and the tokens it cuts are the rest of the sample."""
    root, positions = lecture
    (sample,) = assemble.pack([positions], PackConfig(mode="video"))
    assert sample["image_num"] == 45
    ds = _read(_write(root, [sample]), processor)
    st = ds.stats
    assert st.truncated_samples == 1 and st.images_over_cap == 33
    per_image = len(ds.encoder.encode_image(Image.new("RGB", (96, 54)))[0])  # the tiny processor's expansion
    drops = trainer_drops([sample], image_tokens=per_image)
    assert (drops["samples_cut"], drops["images_over_cap"], drops["images_cut"]) == \
        (1, st.images_over_cap, st.images_truncated)
    read = st.tokens - 1 - st.images_loaded * per_image  # BOS; a cut sample gets no EOS
    assert abs(drops["text_tokens"] - drops["text_tokens_cut"] - read) <= 2
    assert drops["text_tokens_cut"] > 0


def test_split_samples_respect_image_and_token_budgets():
    cfg = PackConfig(max_tokens=300, max_images=3, image_tokens=64)
    pos = []
    for c in range(10):
        pos.append(assemble.Position(f"images/v/{c}.jpg", None, None, {"type": "image"}))
        pos.append(assemble.Position(None, f"clip {c} talks about force and mass.",
                                     f"F = ma\nclip {c} talks about force and mass.", {"type": "text"}))
    samples = assemble.pack([pos], cfg)
    for s in samples:
        cost = 2 + 64 * s["image_num"] + sum(count_tokens(t) + 1 for t in s["text_ocr_list"] if t)
        assert cost <= 300 and s["image_num"] <= 3
    assert sum(s["image_num"] for s in samples) == 10
    # three clips fit 300 (2 + 3 x (64 + tokens + 1)); a fourth would pass both budgets
    assert [s["image_num"] for s in samples][:3] == [3, 3, 3]
