"""Training throughput of the tiny model on the CPU vs the reader's throughput alone.

The reader must not be the bottleneck: its samples/s should be at least 5x the training samples/s.
Runs on a synthetic corpus shaped like the paper's (10 keyframes of 1280x720 and ~1,300 text tokens per
sample) unless --data names an export.
    python bench/bench_train.py [--data out/samples.jsonl] [--samples 24] [--steps 12] [--cpu-threads 0]
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from train.data import InterleavedDataset, ReaderConfig  # noqa: E402
from train.loop import TrainConfig, Trainer  # noqa: E402
from train.model import tiny_processor  # noqa: E402

WORDS = ("atom electron nucleus proton neutron molecule bond energy force mass velocity acceleration gravity "
         "equation fraction triangle angle circle radius area volume density pressure temperature cell").split()


def synthetic_corpus(root: Path, samples: int, images: int = 10, seed: int = 0) -> Path:
    """JSONL in the export layout: per sample ``images`` slides (1280x720 JPEG) each followed by its text."""
    from PIL import Image, ImageDraw

    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    with open(root / "samples.jsonl", "w", encoding="utf-8") as fh:
        for s in range(samples):
            vid = f"bench{s:04d}"
            (root / "images" / vid).mkdir(parents=True, exist_ok=True)
            imgs, texts = [], []
            for k in range(images):
                rel = f"images/{vid}/{vid}@{k * 15}.0_{k * 15 + 15}.0#0.jpg"
                im = Image.new("RGB", (1280, 720), tuple(rng.randrange(160, 256) for _ in range(3)))
                draw = ImageDraw.Draw(im)
                for line in range(8):
                    draw.text((60, 60 + 70 * line), " ".join(rng.choices(WORDS, k=8)), fill=(0, 0, 0))
                draw.ellipse((900, 300, 900 + rng.randrange(80, 300), 300 + rng.randrange(80, 300)),
                             outline=(200, 0, 0), width=6)
                im.save(root / rel, quality=90)
                speech = " ".join(rng.choices(WORDS, k=48)) + "."
                ocr = " ".join(rng.choices(WORDS, k=12))
                imgs += [rel, None]
                texts += [None, (ocr, speech)]
            fh.write(json.dumps({
                "images": imgs, "texts": [t and t[1] for t in texts],
                "text_ocr_list": [t and f"{t[0]}\n{t[1]}" for t in texts],
                "metadata": [{"video_id": vid} for _ in imgs], "image_num": images, "text_num": images,
                "token_num": 0}) + "\n")
    return root / "samples.jsonl"


def reader_rate(data: Path, passes: int = 2) -> tuple[float, dict]:
    """Samples/s of the reader alone (decode, resize, tokenize, labels): the best of ``passes`` passes."""
    best, stats = 0.0, {}
    processor = tiny_processor()
    for _ in range(passes):
        ds = InterleavedDataset(data, processor, ReaderConfig(max_length=4096))
        t0 = time.perf_counter()
        n = sum(e.samples for e in ds)
        best = max(best, n / (time.perf_counter() - t0))
        stats = ds.stats.as_dict()
    return best, stats


def train_rate(data: Path, steps: int, cpu_threads: int) -> dict:
    """Optimizer steps of the tiny model (batch 1): steps/s, samples/s and tokens/s after one warm-up step."""
    out = Path(tempfile.mkdtemp(prefix="textbook-bench-train-"))
    try:
        cfg = TrainConfig(data=data, out=out, model="tiny", max_steps=steps + 1, save_every=0, shuffle=False,
                          cpu_threads=cpu_threads, lr=1e-3)
        trainer = Trainer(cfg)
        entries = []
        windows = trainer._windows()
        for window in windows:
            entries.append(trainer.train_step(window))
            if len(entries) == steps + 1:
                break
        windows.close()
    finally:
        shutil.rmtree(out, ignore_errors=True)
    timed = entries[1:]
    seconds = sum(e["seconds"] for e in timed)
    return {"steps": len(timed), "steps_per_s": len(timed) / seconds,
            "samples_per_s": sum(e["samples"] for e in timed) / seconds,
            "tokens_per_s": sum(e["tokens"] for e in timed) / seconds,
            "tokens_per_sample": sum(e["tokens"] for e in timed) / sum(e["samples"] for e in timed),
            "images_per_sample": sum(e["images"] for e in timed) / sum(e["samples"] for e in timed)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, help="an export (default: a synthetic corpus)")
    ap.add_argument("--samples", type=int, default=24)
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--cpu-threads", type=int, default=0, help="torch threads for training (0: one per core)")
    args = ap.parse_args()
    data = args.data or synthetic_corpus(Path(tempfile.gettempdir()) / "textbook-bench-train", args.samples)
    if args.cpu_threads:
        torch.set_num_threads(args.cpu_threads)
    print(f"data: {data}  torch threads: {torch.get_num_threads()}  device: cpu")
    rate, stats = reader_rate(data)
    print(f"reader alone: {rate:8.2f} samples/s  ({stats['images_loaded']} images, {stats['tokens']} tokens "
          f"in {stats['samples']} samples per pass)")
    tr = train_rate(data, args.steps, args.cpu_threads)
    print(f"tiny model training: {tr['steps_per_s']:6.2f} steps/s  {tr['samples_per_s']:6.2f} samples/s  "
          f"{tr['tokens_per_s']:8.1f} tokens/s  (batch 1, {tr['tokens_per_sample']:.0f} tokens and "
          f"{tr['images_per_sample']:.1f} images per sample, {tr['steps']} steps)")
    ratio = rate / tr["samples_per_s"]
    print(f"reader_samples_per_s / train_samples_per_s = {ratio:.2f}x  "
          f"({'meets' if ratio >= 5 else 'MISSES'} the >= 5x target)")


if __name__ == "__main__":
    main()
