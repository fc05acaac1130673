"""`textbook process` end to end: wall seconds per minute of video and peak memory (RSS of
the process and its children), in a fresh database, on the narrated lessons, and on a recorded
lecture when one is given (or found at ../shared/cases/media/lecture_hall_60s.webm beside the project).
Each case runs in its own `textbook process` command; a rerun with everything cached follows.
The lessons run twice more, one video at a time through every stage (config ``overlap = false``) and
with the default ASR/visuals overlap (pipeline/flow.py's asr and visual lanes), in turn: the ratio is
of the faster run of each, CPU seconds (all processes) beside wall seconds.
Targets (issue 8): >= 8x faster than real time on the lessons, >= 3x on the lecture, under 2 GB.
With ``--baseline DIR`` (another checkout of the project, e.g. ``git archive`` of the commit before a change)
it only times the lessons with that code and with this code, in turn, and prints the ratio.
    python bench/bench_process.py [LECTURE]
    python bench/bench_process.py --baseline /tmp/before [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tools import media  # noqa: E402

INPUTS = [ROOT / "examples/lessons", ROOT / "tests/data/lessons/physics_newton.mp4",
          ROOT / "tests/data/lessons/chemistry_atoms.mp4"]


LECTURE = ROOT.parent / "shared/cases/media/lecture_hall_60s.webm"


def command(tmp: str, inputs: list[Path], overlap: bool = True) -> list[str]:
    cmd = [sys.executable, "-m", "textbook.cli", "process", *map(str, inputs), "--db", f"{tmp}/runs.duckdb",
           "--out", f"{tmp}/out", "--json", "-q"]
    if not overlap:
        Path(tmp, "sequential.toml").write_text("[pipeline]\noverlap = false\n")
        cmd += ["--config", f"{tmp}/sequential.toml"]
    return cmd


def timed(inputs: list[Path], overlap: bool, code: Path = ROOT) -> tuple[float, float]:
    """(wall, CPU) seconds of one fresh `textbook process` of ``inputs``, with the project's code at ``code``."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = command(tmp, inputs, overlap)
        c0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        subprocess.run(cmd, capture_output=True, text=True, cwd=code, check=True,
                       env={**os.environ, "PYTHONPATH": str(code)})
        wall = time.perf_counter() - t0
        c1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        return wall, (c1.ru_utime + c1.ru_stime) - (c0.ru_utime + c0.ru_stime)


def overlap(inputs: list[Path], repeats: int = 2) -> None:
    runs: dict[bool, list[tuple[float, float]]] = {True: [], False: []}
    for _ in range(repeats):
        for mode in (False, True):
            runs[mode].append(timed(inputs, mode))
    (sw, sc), (ow, oc) = min(runs[False]), min(runs[True])
    print(f"  one video at a time: wall {sw:.1f} s, CPU {sc:.1f} s; overlapped lanes (default): wall {ow:.1f} s, "
          f"CPU {oc:.1f} s; wall ratio {sw / ow:.2f}x (best of {repeats} each, in turn). "
          f"CPU / 2 cores = {oc / 2:.1f} s: the wall floor on this machine")


def case(name: str, inputs: list[Path], target: float) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        cmd = command(tmp, inputs)
        before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            raise SystemExit(proc.stderr)
        summary = json.loads(proc.stdout)
        duration = sum(media.probe(v["source"]).duration for v in summary["videos"])
        peak_mb = max(before, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss) / 1024
        speed = duration / wall
        print(f"{name}: videos {len(summary['videos'])}, {duration:.0f} s of video, {summary['samples']} samples")
        print(f"  wall {wall:.1f} s = {wall / (duration / 60):.1f} s per minute of video "
              f"= {speed:.1f}x faster than real time (target {target:g}x: {'met' if speed >= target else 'NOT met'})")
        print(f"  peak memory (largest process so far) {peak_mb:.0f} MB (target < 2048 MB)")
        t0 = time.perf_counter()
        subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, check=True)
        print(f"  rerun (all stages cached) {time.perf_counter() - t0:.1f} s")


def against(baseline: Path, repeats: int) -> None:
    """The lessons with the baseline's code and with this code, in turn: the best wall and the best CPU seconds
    of each (a shared machine only slows a run down), and their ratios."""
    runs: dict[str, list[tuple[float, float]]] = {"baseline": [], "this": []}
    for _ in range(repeats):
        runs["baseline"].append(timed(INPUTS, True, baseline))
        runs["this"].append(timed(INPUTS, True, ROOT))
    best = {k: (min(w for w, _ in v), min(c for _, c in v)) for k, v in runs.items()}
    (bw, bc), (tw, tc) = best["baseline"], best["this"]
    print(f"lessons, baseline {baseline}: wall {bw:.1f} s, CPU {bc:.1f} s; this code: wall {tw:.1f} s, CPU {tc:.1f} s; "
          f"this / baseline: wall {tw / bw:.2f}x, CPU {tc / bc:.2f}x (best of {repeats} each, in turn)")
    for k, v in runs.items():
        print(f"  {k}: wall {[round(w, 1) for w, _ in v]}, CPU {[round(c, 1) for _, c in v]}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("lecture", nargs="?", type=Path, default=LECTURE)
    ap.add_argument("--baseline", type=Path, help="another checkout: time the lessons with it and with this code")
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    if args.baseline:
        against(args.baseline.resolve(), args.repeats)
        return
    case("lessons", INPUTS, 8)
    overlap(INPUTS)
    lecture = args.lecture
    if lecture.is_file():
        case(f"lecture ({lecture.name})", [lecture], 3)
    else:
        print(f"lecture: {lecture} not found (pass a recorded lecture's path)")


if __name__ == "__main__":
    main()
