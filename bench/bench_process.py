"""`textbook process` end to end: wall seconds per minute of video and peak memory (RSS of
the process and its children), in a fresh database, on the narrated lessons, and on a recorded
lecture when one is given (or found at ../shared/cases/media/lecture_hall_60s.webm beside the project).
Each case runs in its own `textbook process` command; a rerun with everything cached follows.
The lessons run twice more, with the stages one after another (config ``overlap = false``) and
with the default ASR/visuals overlap (pipeline.runner.Runner.overlapped), in turn: the ratio is
of the faster run of each, CPU seconds (all processes) beside wall seconds.
Targets (issue 8): >= 8x faster than real time on the lessons, >= 3x on the lecture, under 2 GB.
    python bench/bench_process.py [LECTURE]
"""

from __future__ import annotations

import json
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


def timed(inputs: list[Path], overlap: bool) -> tuple[float, float]:
    """(wall, CPU) seconds of one fresh `textbook process` of ``inputs``."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = command(tmp, inputs, overlap)
        c0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, check=True)
        wall = time.perf_counter() - t0
        c1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        return wall, (c1.ru_utime + c1.ru_stime) - (c0.ru_utime + c0.ru_stime)


def overlap(inputs: list[Path], repeats: int = 2) -> None:
    runs: dict[bool, list[tuple[float, float]]] = {True: [], False: []}
    for _ in range(repeats):
        for mode in (False, True):
            runs[mode].append(timed(inputs, mode))
    (sw, sc), (ow, oc) = min(runs[False]), min(runs[True])
    print(f"  stages one after another: wall {sw:.1f} s, CPU {sc:.1f} s; overlapped (default): wall {ow:.1f} s, "
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


def main() -> None:
    case("lessons", INPUTS, 8)
    overlap(INPUTS)
    lecture = Path(sys.argv[1]) if len(sys.argv) > 1 else LECTURE
    if lecture.is_file():
        case(f"lecture ({lecture.name})", [lecture], 3)
    else:
        print(f"lecture: {lecture} not found (pass a recorded lecture's path)")


if __name__ == "__main__":
    main()
