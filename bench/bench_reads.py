"""Reads through a running writer (store/serve.py) against reads of the file: the overhead of
`textbook runs`, `trace` and `stats` while a build runs.

A synthetic build (tests/web/seed.py) is written to a store that then serves its reads; each read
the commands make runs on the store itself (the baseline: what a command pays when it opens the
file) and on a ``RemoteStore`` of it (HTTP on 127.0.0.1, Arrow IPC, the reading side in the same
process), in the same run. Printed: median seconds of each and the ratio remote/direct.

    python bench/bench_reads.py [--candidates 2000] [--samples 1000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipeline.stats import corpus_stats  # noqa: E402
from store import open_store  # noqa: E402
from store.serve import RemoteStore, read_endpoint, serve_reads  # noqa: E402
from tests.web.seed import synthetic  # noqa: E402


def median_s(fn, repeat: int) -> float:
    fn()  # warm
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--candidates", type=int, default=2000)
    ap.add_argument("--samples", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        store = open_store(Path(tmp) / "bench.duckdb")
        run_id = synthetic(store, candidates=args.candidates, samples=args.samples)
        ops = {
            "one small query (runs count)": lambda s: s.scalar("SELECT count(*) FROM runs"),
            "textbook runs": lambda s: s.runs(),
            "textbook trace (events, calls, judgments, taxonomy)": lambda s: (
                s.run(run_id), s.events(run_id), s.llm_calls(run_id), s.judgments(run_id), s.taxonomy(run_id)),
            "textbook stats (corpus_stats)": lambda s: corpus_stats(s, run_id),
            f"samples ({args.samples})": lambda s: s.samples(run_id),
        }
        with serve_reads(store, "bench"):
            remote = RemoteStore(read_endpoint(store.path), store.path)
            print(f"{args.candidates} candidates, {args.samples} samples; median of {args.repeat}")
            print(f"{'read':55} {'direct s':>10} {'served s':>10} {'ratio':>7}")
            for name, op in ops.items():
                direct = median_s(lambda op=op: op(store), args.repeat)
                served = median_s(lambda op=op: op(remote), args.repeat)
                print(f"{name:55} {direct:10.4f} {served:10.4f} {served / direct:7.2f}")
            remote.close()
        store.close()


if __name__ == "__main__":
    main()
