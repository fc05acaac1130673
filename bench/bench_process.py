"""`textbook process` end to end: wall seconds per minute of video and peak memory (RSS of
the process and its children), in a fresh database, on the narrated lessons.
    python bench/bench_process.py
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


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "textbook.cli", "process", *map(str, INPUTS), "--db", f"{tmp}/runs.duckdb",
               "--out", f"{tmp}/out", "--json", "-q"]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            raise SystemExit(proc.stderr)
        summary = json.loads(proc.stdout)
        duration = sum(media.probe(v["source"]).duration for v in summary["videos"])
        peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        print(f"videos {len(summary['videos'])}, {duration:.0f} s of video, {summary['samples']} samples")
        print(f"  wall {wall:.1f} s = {wall / (duration / 60):.1f} s per minute of video "
              f"= {duration / wall:.1f}x faster than real time")
        print(f"  peak memory (largest process) {peak_mb:.0f} MB")
        # rerun: nothing to do
        t0 = time.perf_counter()
        subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, check=True)
        print(f"  rerun (all stages cached) {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
