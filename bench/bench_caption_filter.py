"""The visual clip filter's threshold (agents/visual_filter.py, issue 21): caption-ASR similarity
(all-MiniLM-L6-v2, the build's embedder) on a labelled set of clips, and the threshold chosen on it.

The set (tests/data/caption_eval/clips.jsonl) is hand-written: each clip's ASR paragraph (lower case,
unpunctuated, as faster-whisper's paragraphs read after our normalisation), a caption **written by hand
as a vision model would describe the clip's keyframes** (no vision model runs offline here, so these are
stand-ins for a VLM's output, not a VLM's output), and a label: ``keep`` (slides, boards, diagrams,
demonstrations that show what is said) or ``drop`` (speaker only, transitions, clutter, unrelated
b-roll, end cards, a slide about something else). The filter drops a clip's frames when the
similarity is below the threshold; "positive" below is a drop.

Prints the similarity of each clip, then accuracy, precision and recall of the drops for each
threshold from 0.00 to 0.60, the chosen threshold (the middle of the widest run of thresholds with
the best accuracy, so the choice does not sit on one clip's similarity), its leave-one-out accuracy
(the threshold chosen on the other clips, tested on the one left out) and the per-kind results; and
``agent.caption_min_similarity``'s default, which should be the chosen value.
    python bench/bench_caption_filter.py [--set tests/data/caption_eval/clips.jsonl] [--step 0.01]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from agents.config import AgentConfig  # noqa: E402
from tools.embed import TextEmbedder  # noqa: E402

DEFAULT_SET = ROOT / "tests" / "data" / "caption_eval" / "clips.jsonl"


def scores(sims: np.ndarray, drop: np.ndarray, t: float) -> tuple[float, float, float]:
    """(accuracy, precision, recall) of dropping every clip whose similarity is below ``t``; ``drop``: the
    labels (True: drop). Precision is 1.0 when nothing is dropped."""
    pred = sims < t
    tp = int((pred & drop).sum())
    acc = float((pred == drop).mean())
    prec = tp / int(pred.sum()) if pred.sum() else 1.0
    rec = tp / int(drop.sum()) if drop.sum() else 1.0
    return acc, prec, rec


def choose(sims: np.ndarray, drop: np.ndarray, grid: np.ndarray) -> float:
    """The threshold of ``grid`` in the middle of the widest run of consecutive thresholds with the best
    accuracy (the first such run on a tie)."""
    acc = np.array([scores(sims, drop, t)[0] for t in grid])
    best = acc.max()
    runs, start = [], None
    for i, a in enumerate(acc):
        if a == best and start is None:
            start = i
        if a != best and start is not None:
            runs.append((start, i - 1))
            start = None
    if start is not None:
        runs.append((start, len(acc) - 1))
    lo, hi = max(runs, key=lambda r: (r[1] - r[0], -r[0]))
    return float(round(grid[(lo + hi) // 2], 4))


def main(argv: list[str] | None = None) -> int:
    """Print the sweep and the chosen threshold; returns the exit code (0)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--set", type=Path, default=DEFAULT_SET, help="the labelled clips (JSON lines)")
    ap.add_argument("--step", type=float, default=0.01, help="threshold step")
    args = ap.parse_args(argv)
    items = [json.loads(line) for line in args.set.read_text().splitlines() if line.strip()]
    emb = TextEmbedder()
    sims = emb.pairwise([x["caption"] for x in items], [x["asr"] for x in items]).astype(float)
    drop = np.array([x["label"] == "drop" for x in items])
    print(f"{len(items)} clips ({int((~drop).sum())} keep, {int(drop.sum())} drop), embedder {emb.model_name}")
    for x, s in sorted(zip(items, sims, strict=True), key=lambda p: p[1]):
        print(f"  {s:6.3f}  {x['label']:4}  {x['kind']:10} {x['id']}")
    grid = np.round(np.arange(0.0, 0.6 + 1e-9, args.step), 4)
    print("\nthreshold  accuracy  precision(drop)  recall(drop)")
    for t in grid[::5] if args.step < 0.05 else grid:
        acc, prec, rec = scores(sims, drop, t)
        print(f"  {t:5.2f}     {acc:6.1%}      {prec:6.1%}         {rec:6.1%}")
    t = choose(sims, drop, grid)
    acc, prec, rec = scores(sims, drop, t)
    print(f"\nchosen threshold {t:.2f}: accuracy {acc:.1%}, precision {prec:.1%}, recall {rec:.1%} "
          f"(middle of the widest run of best-accuracy thresholds)")
    right = 0
    for i in range(len(items)):
        rest = np.arange(len(items)) != i
        ti = choose(sims[rest], drop[rest], grid)
        right += int((sims[i] < ti) == drop[i])
    print(f"leave-one-out accuracy (threshold chosen without the clip): {right / len(items):.1%}")
    wrong = Counter(x["kind"] for x, s in zip(items, sims, strict=True) if (s < t) != (x["label"] == "drop"))
    kinds = Counter(x["kind"] for x in items)
    print("per kind (wrong/all): " + ", ".join(f"{k} {wrong.get(k, 0)}/{n}" for k, n in sorted(kinds.items())))
    default = AgentConfig.model_fields["caption_min_similarity"].default
    print(f"agent.caption_min_similarity default: {default:.2f}" + ("" if abs(default - t) < 1e-9 else
                                                                    f" (differs from the chosen {t:.2f})"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
