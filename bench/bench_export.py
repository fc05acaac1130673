"""Export throughput per format, and the reader's throughput on `released` vs `jsonl`.

A synthetic corpus shaped like the paper's (10 keyframes and ~1,300 text tokens per sample; 640x360 JPEGs)
is made by the real interleave and pack (tests/pipeline/_corpus.py). Each format is exported in a fresh
process (twice: the faster time, the larger peak memory) that has imported the libraries and loaded the
samples before its clock starts; it reports wall time and peak memory (ru_maxrss). Baselines, run in the same
command: a process that only imports and loads the samples (memory), and a naive export (json.dumps per line +
shutil.copyfile of every image) for time. The reader runs the tiny Idefics3 processor over each export (best
of two passes).

    python bench/bench_export.py [--samples 1000] [--images 10] [--size 640x360] [--work DIR] [--keep]
(--work DIR keeps the corpus there and reuses it on the next run)
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

FORMATS = ("jsonl", "json", "parquet", "obelics", "released", "idefics2", "webdataset", "hf")


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(work: Path, fmt: str) -> None:
    """One export in this process: prints {"seconds", "peak_mb"} as JSON."""
    import datasets  # noqa: F401 - imported (and the tokenizer loaded) before the clock starts, in every child
    import pyarrow.parquet  # noqa: F401
    import webdataset  # noqa: F401

    from pipeline.export import ExportOptions, export
    from pipeline.tokens import count_tokens

    count_tokens("warm up")
    samples = json.loads((work / "samples.json").read_text())
    out = work / f"out-{fmt}"
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    if fmt == "baseline-load":
        seconds = 0.0
    elif fmt == "baseline-naive":
        out.mkdir(parents=True)
        with open(out / "samples.jsonl", "w", encoding="utf-8") as fh:
            for s in samples:
                for img in s["images"]:
                    if img:
                        (out / img).parent.mkdir(parents=True, exist_ok=True)
                        shutil.copyfile(work / "media" / img, out / img)
                fh.write(json.dumps(s, ensure_ascii=False) + "\n")
        seconds = time.perf_counter() - t0
    else:
        result = export(samples, out, fmt, work / "media", ExportOptions(shard_size=250))
        seconds = time.perf_counter() - t0
        assert result.samples == len(samples), result
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file()) if out.exists() else 0
    print(json.dumps({"seconds": seconds, "peak_mb": _peak_mb(), "bytes": size}))


def run_child(work: Path, fmt: str, repeats: int = 2) -> dict:
    """The fastest of ``repeats`` fresh processes (the machine is shared), with the largest peak memory."""
    runs = []
    for _ in range(repeats):
        proc = subprocess.run([sys.executable, __file__, "--child", fmt, "--work", str(work)], capture_output=True,
                              text=True, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin",
                                              "HF_DATASETS_OFFLINE": "1"})
        if proc.returncode:
            raise SystemExit(f"{fmt} failed: {proc.stderr.strip().splitlines()[-1:]}")
        runs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    return {**min(runs, key=lambda r: r["seconds"]), "peak_mb": max(r["peak_mb"] for r in runs)}


def reader_rate(data: Path, passes: int = 2) -> float:
    from train.data import InterleavedDataset, ReaderConfig
    from train.model import tiny_processor

    processor, best = tiny_processor(), 0.0
    for _ in range(passes):
        ds = InterleavedDataset(data, processor, ReaderConfig(max_length=4096))
        t0 = time.perf_counter()
        n = sum(1 for _ in ds)
        best = max(best, n / (time.perf_counter() - t0))
        assert ds.stats.images_failed == 0 and n > 0, ds.stats.as_dict()
    return best


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--samples", type=int, default=1000)
    ap.add_argument("--images", type=int, default=10, help="keyframes per sample (5 clips x images/5)")
    ap.add_argument("--size", default="640x360")
    ap.add_argument("--work", type=Path)
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--child")
    args = ap.parse_args()
    if args.child:
        child(args.work, args.child)
        return
    from tests.pipeline._corpus import make_corpus

    work = args.work or Path(tempfile.mkdtemp(prefix="bench-export-"))
    w, h = (int(x) for x in args.size.split("x"))
    t0 = time.perf_counter()
    if args.work and (work / "samples.json").is_file():  # a corpus made by an earlier run with --work
        samples = json.loads((work / "samples.json").read_text())
    else:
        samples = make_corpus(work, videos=args.samples, clips=5, frames=max(1, args.images // 5), size=(w, h),
                              mode="video", words=200, special_text=False).samples
        (work / "samples.json").write_text(json.dumps(samples))
    images = sum(s["image_num"] for s in samples)
    print(f"corpus: {len(samples)} samples, {images} images of {args.size}, "
          f"{sum(s['text_num'] for s in samples) / len(samples):.0f} ASR tokens/sample "
          f"(ready in {time.perf_counter() - t0:.1f} s) in {work}")
    base_mem = run_child(work, "baseline-load", 1)["peak_mb"]
    naive = run_child(work, "baseline-naive")
    print(f"baseline: loading the samples peaks at {base_mem:.0f} MB; naive export (json.dumps + copyfile) "
          f"{len(samples) / naive['seconds']:.0f} samples/s")
    print(f"{'format':<11} {'samples/s':>10} {'vs naive':>9} {'peak MB':>8} {'+MB over load':>14} {'output MB':>10}")
    for fmt in FORMATS:
        r = run_child(work, fmt)
        rate = len(samples) / r["seconds"]
        print(f"{fmt:<11} {rate:>10.0f} {rate * naive['seconds'] / len(samples):>8.2f}x "
              f"{r['peak_mb']:>8.0f} {max(0.0, r['peak_mb'] - base_mem):>14.0f} {r['bytes'] / 1e6:>10.1f}")
    jsonl = reader_rate(work / "out-jsonl" / "samples.jsonl")
    released = reader_rate(work / "out-released" / "multimodal_textbook.json")
    print(f"reader (tiny Idefics3 processor, ASR text): jsonl {jsonl:.1f} samples/s, released {released:.1f} "
          f"samples/s ({released / jsonl:.2f}x)")
    if not args.keep and not args.work:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
