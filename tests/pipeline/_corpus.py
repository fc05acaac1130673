"""A synthetic corpus made by the real interleave and pack: fake videos, clips and keyframes -> samples.

Used by tests/pipeline/test_export.py and bench/bench_export.py. Every keyframe is a distinct small JPEG in
a media folder laid out as the store's (``images/VID/NAME``), so exports link, copy and embed real files.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw

from pipeline import assemble
from pipeline.config import PackConfig

WORDS = ("atom electron nucleus proton molecule bond energy force mass velocity gravity equation fraction "
         "triangle angle circle radius area volume density pressure temperature cell").split()
SUBJECTS = [("physics", "mechanics", "forces", "Newton's laws"), ("chemistry", "matter", "atoms", "atomic structure"),
            ("mathematics", "arithmetic", "fractions", "adding fractions")]


@dataclass
class Corpus:
    samples: list[dict]
    media: Path  # the store's media folder: media/images/VID/...
    videos: list[dict]


def make_corpus(root: Path, videos: int = 6, clips: int = 3, frames: int = 2, size: tuple[int, int] = (96, 54),
                mode: str = "video", max_tokens: int = 4096, seed: int = 0, difficulties=(3, 1, 2, None),
                special_text: bool = True, drop_frames_every: int = 0, words: int = 30) -> Corpus:
    """``videos`` videos of ``clips`` clips with ``frames`` keyframes each (difficulty cycling through
    ``difficulties``), interleaved and packed (``mode``). The first clip of the first video says "<image>"
    in its ASR and OCR when ``special_text``; every ``drop_frames_every``-th clip keeps only its text;
    each clip says ``words`` words."""
    rng = random.Random(seed)
    media = root / "media"
    rows, per_video = [], []
    n_clip = 0
    for v in range(videos):
        vid = f"lesson{v:03d}-{rng.getrandbits(32):08x}"
        subject, course, subcourse, point = SUBJECTS[v % len(SUBJECTS)]
        video = {"video_id": vid, "source": str(root / "input" / subject / f"{vid}.mp4"),
                 "public_source": f"{subject}/{vid}.mp4", "subject": subject, "course": course,
                 "subcourse": subcourse, "knowledge_point": point,
                 "difficulty": difficulties[v % len(difficulties)]}
        frame_rows, clip_rows = {}, []
        t = 0.0
        for c in range(clips):
            start, end = round(t, 3), round(t + 10.0 + rng.random() * 5, 3)
            idxs = []
            for k in range(frames):
                idx = len(frame_rows)
                path = media / "frames" / vid / f"{idx:05d}.jpg"
                _slide(path, size, rng, f"{vid} clip {c} frame {k}")
                ocr = " ".join(rng.choices(WORDS, k=6))
                if special_text and v == 0 and c == 0:
                    ocr += " <image> <|endoftext|>"
                frame_rows[idx] = {"idx": idx, "time_s": round(start + 1 + k * 2.5, 3), "path": str(path),
                                   "ocr_text": ocr, "ocr_kept": True}
                idxs.append(idx)
            text = " ".join(rng.choices(WORDS, k=words)) + "."
            if special_text and v == 0 and c == 0:
                text = "Look at the <image> tag and </s> here. " + text
            n_clip += 1
            decision = "drop_frames" if drop_frames_every and n_clip % drop_frames_every == 0 else "keep"
            clip_rows.append({"idx": c, "start_s": start, "end_s": end, "text": text, "polished": None,
                              "keyframes": idxs, "decision": decision})
            t = end
        positions = assemble.interleave(video, clip_rows, frame_rows)
        for p in positions:  # what the runner's _link_images does: the clip's frames under their names
            if p.image:
                dst = media / p.image
                dst.parent.mkdir(parents=True, exist_ok=True)
                if not dst.exists():
                    dst.hardlink_to(p.source_path)
        rows.append(video)
        per_video.append(positions)
    samples = assemble.pack(per_video, PackConfig(mode=mode, max_tokens=max_tokens))
    return Corpus(samples=samples, media=media, videos=rows)


def _slide(path: Path, size: tuple[int, int], rng: random.Random, label: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.new("RGB", size, tuple(rng.randrange(150, 256) for _ in range(3)))
    draw = ImageDraw.Draw(im)
    draw.text((4, 4), label, fill=(0, 0, 0))
    x = rng.randrange(0, max(1, size[0] - 20))
    draw.rectangle((x, size[1] // 2, x + 16, size[1] // 2 + 12), fill=(200, 0, 0))
    im.save(path, quality=88)
