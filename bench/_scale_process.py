"""bench_scale part (c): `process` of N one-second silent videos (the probe rules drop them all: no audio)
against ffprobe alone over the same files, on the local executor and on Ray (actor pools), each in its own
command, in turn. The ratio is the bookkeeping and scheduling a video costs beyond its probe.

    python bench/_scale_process.py [--videos 2000] [--executors local,ray]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench._videos import tiny_clips  # noqa: E402


def _probe_alone(clips: list[Path]) -> float:
    """ffprobe of every clip, one after another, as the probe stage calls it (tools.media.probe)."""
    code = ("import sys, time; from tools import media; t = time.perf_counter(); "
            "[media.probe(p) for p in sys.argv[1:]]; print(time.perf_counter() - t)")
    out = subprocess.run([sys.executable, "-c", code, *map(str, clips)], capture_output=True, text=True, cwd=ROOT,
                         check=True)
    return float(out.stdout.strip())


def _process(folder: Path, work: Path, executor: str) -> float:
    cmd = [sys.executable, "-m", "textbook.cli", "process", str(folder), "--db", str(work / f"{executor}.duckdb"),
           "--out", str(work / f"out-{executor}"), "--executor", executor, "-q", "--json"]
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - t
    if proc.returncode not in (0, 1):  # 1: no samples (every clip dropped), as expected
        raise SystemExit(proc.stderr[-2000:])
    return wall


def process_vs_probe(videos: int, executors: list[str]) -> dict[str, float]:
    """Wall seconds of ffprobe alone and of `process` per executor over ``videos`` tiny clips; prints ratios."""
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        t = time.perf_counter()
        clips = tiny_clips(work / "clips", videos, "silent", lambda i: {"title": f"silent clip {i}"})
        print(f"process vs ffprobe: {videos} one-second silent clips made in {time.perf_counter() - t:.0f} s")
        walls = {"ffprobe": _probe_alone(clips)}
        for executor in executors:
            walls[executor] = _process(work / "clips", work, executor)
        base = walls["ffprobe"]
        print(f"  ffprobe alone: {base:.1f} s = {1000 * base / videos:.0f} ms a video")
        for executor in executors:
            w = walls[executor]
            print(f"  process --executor {executor}: {w:.1f} s = {1000 * w / videos:.0f} ms a video, "
                  f"{w / base:.2f}x ffprobe alone (target <= 2x: {'met' if w / base <= 2 else 'NOT met'})")
        return walls


def add_arguments(ap: argparse.ArgumentParser) -> None:
    """The options of this part (bench_scale.py's ``process`` subcommand)."""
    ap.add_argument("--videos", type=int, default=2000)
    ap.add_argument("--executors", default="local,ray", help="comma-separated: local, process, ray")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(ap)
    args = ap.parse_args(argv)
    process_vs_probe(args.videos, args.executors.split(","))


if __name__ == "__main__":
    main()
