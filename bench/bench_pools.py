"""What the Ray actor pools (pipeline/pools.py) cost per task, against one Ray task per item
(pipeline.executors.RayExecutor, today's `--executor ray`), on one local Ray in the same run:

- dispatch: N tasks that do nothing (tests.pipeline._tasks.square) through a probe pool of 2 actors at
  max_in_flight 2 (the default) and 8, and as N Ray tasks; tasks/s of each, the pool's ratio to the tasks';
- probe: ffprobe (pipeline.stages.probe_task) of N copies of a 1-second video through the pool, as Ray
  tasks, and in this process one after another (the floor the issue's bench (c) compares with).

Rounds alternate the ways, best of ``--repeats`` each. Numbers from a shared 2-core box are noisy: read
the ratios.
    python bench/bench_pools.py [--tasks 1000] [--probes 200] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

from pipeline.executors import RayExecutor  # noqa: E402
from pipeline.pools import PoolConfig, PoolSpec, RayPoolExecutor  # noqa: E402
from pipeline.stages import probe_task  # noqa: E402
from tests.pipeline._tasks import square  # noqa: E402


def through_pool(pools: RayPoolExecutor, fn, tasks: list[tuple]) -> float:
    t = time.perf_counter()
    futures = [pools.submit("probe", fn, args) for args in tasks]
    for f in futures:
        f.result()
    return time.perf_counter() - t


def as_tasks(ray_tasks: RayExecutor, fn, tasks: list[tuple]) -> float:
    t = time.perf_counter()
    for _, result in ray_tasks.map_unordered(fn, tasks):
        if isinstance(result, BaseException):
            raise result
    return time.perf_counter() - t


def in_process(fn, tasks: list[tuple]) -> float:
    t = time.perf_counter()
    for args in tasks:
        fn(*args)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", type=int, default=1000)
    ap.add_argument("--probes", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    spec = PoolSpec(size=2, num_cpus=0.5, max_in_flight=2)
    pools = RayPoolExecutor(PoolConfig(probe=spec), workers=2)  # starts the local Ray (2 CPUs)
    ray_tasks = RayExecutor(workers=2)  # the same Ray: it was started by the pools
    with tempfile.TemporaryDirectory() as tmp:
        video = Path(tmp, "one_second.mp4")
        subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "testsrc=size=320x240:rate=25", "-f", "lavfi",
                        "-i", "anullsrc=r=16000:cl=mono", "-t", "1", "-shortest", "-pix_fmt", "yuv420p",
                        str(video)], check=True)
        noop = [(i,) for i in range(args.tasks)]
        probes = [(str(video),)] * args.probes
        through_pool(pools, square, noop[:20]), as_tasks(ray_tasks, square, noop[:20])  # actors and workers up
        best: dict[str, float] = {}

        def keep(name: str, seconds: float) -> None:
            best[name] = min(best.get(name, float("inf")), seconds)

        for _ in range(args.repeats):
            for in_flight in (2, 8):
                spec.max_in_flight = in_flight  # the pool reads its spec at each dispatch
                keep(f"pool (in flight {in_flight})", through_pool(pools, square, noop))
            spec.max_in_flight = 2
            keep("ray tasks", as_tasks(ray_tasks, square, noop))
            keep("probe: pool", through_pool(pools, probe_task, probes))
            keep("probe: ray tasks", as_tasks(ray_tasks, probe_task, probes))
            keep("probe: in process", in_process(probe_task, probes))
    pools.close()
    ray_tasks.close()

    print(f"dispatch, {args.tasks} no-op tasks (best of {args.repeats}):")
    base = args.tasks / best["ray tasks"]
    for name in ("pool (in flight 2)", "pool (in flight 8)", "ray tasks"):
        rate = args.tasks / best[name]
        print(f"  {name:20s} {rate:8.0f} tasks/s   {rate / base:5.2f}x ray tasks")
    print(f"ffprobe of {args.probes} one-second videos (best of {args.repeats}):")
    floor = best["probe: in process"]
    for name in ("probe: pool", "probe: ray tasks", "probe: in process"):
        print(f"  {name:20s} {best[name] / args.probes * 1000:8.1f} ms a video   {best[name] / floor:5.2f}x in process")


if __name__ == "__main__":
    main()
