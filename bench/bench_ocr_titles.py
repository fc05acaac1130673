"""Slide titles read by OCR with and without the title-region pass (tools.ocr, issue 20: one-word
titles on a title bar were lost), and what the pass costs per keyframe.

Generated 480p slides (bench/_slides.py): 26 one-word titles and 45 multi-word titles on coloured
title bars, and 12 one-word titles on plain white slides. Each set is read with ``title_psm=0``
(the page passes only, as before) and with the default (``title_psm=7``), in turn, ``--repeats``
times; the faster run of each counts. Prints titles read before -> after per set, and wall and
CPU seconds (this process and tesseract's) per keyframe with their ratio.
    python bench/bench_ocr_titles.py [--repeats 2]
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench._slides import MULTI_WORD, ONE_WORD, read_title, slides  # noqa: E402
from tools.ocr import OcrOptions, TesseractOCR  # noqa: E402


def _cpu() -> float:
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def run(group: list[tuple[Path, str]], options: OcrOptions) -> tuple[list[str], float, float]:
    """(titles not read, wall seconds, CPU seconds) of one read of the group's slides."""
    c0, t0 = _cpu(), time.perf_counter()
    results = TesseractOCR(options).read_many([p for p, _ in group])
    wall, cpu = time.perf_counter() - t0, _cpu() - c0
    return [t for r, (_, t) in zip(results, group, strict=True) if not read_title(r.text, t)], wall, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    before, after = OcrOptions(title_psm=0), OcrOptions()
    with tempfile.TemporaryDirectory() as tmp:
        sets = {"one-word on a bar": slides(Path(tmp) / "one", ONE_WORD),
                "multi-word on a bar": slides(Path(tmp) / "multi", MULTI_WORD),
                "one-word, no bar": slides(Path(tmp) / "plain", ONE_WORD[:12], bar=False)}
        frames = sum(len(g) for g in sets.values())
        totals = {"before": [0.0, 0.0], "after": [0.0, 0.0]}
        for name, group in sets.items():
            best: dict[str, tuple] = {}
            for _ in range(args.repeats):
                for label, opts in (("before", before), ("after", after)):
                    missed, wall, cpu = run(group, opts)
                    if label not in best or wall < best[label][1]:
                        best[label] = (missed, wall, cpu)
            for label in totals:
                totals[label][0] += best[label][1]
                totals[label][1] += best[label][2]
            (m0, *_), (m1, *_) = best["before"], best["after"]
            print(f"{name}: titles read {len(group) - len(m0)}/{len(group)} -> {len(group) - len(m1)}/{len(group)}"
                  + (f"  (still missed: {', '.join(m1)})" if m1 else ""))
        (w0, c0), (w1, c1) = totals["before"], totals["after"]
        print(f"per keyframe ({frames} keyframes): wall {w0 / frames:.3f}s -> {w1 / frames:.3f}s "
              f"(x{w1 / w0:.2f}, +{(w1 - w0) / frames * 1000:.0f} ms), CPU {c0 / frames:.3f}s -> {c1 / frames:.3f}s "
              f"(x{c1 / c0:.2f}, +{(c1 - c0) / frames * 1000:.0f} ms)")


if __name__ == "__main__":
    main()
