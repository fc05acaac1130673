"""Page time of `textbook view` on a large build: the run page and the samples page.

A synthetic store (tests/web/seed.py: 10,000 candidates with judgments, LLM calls and decision
events over 100 knowledge points; 5,000 samples of 6 positions) is served by the viewer app, and
each page is requested through HTTP (Starlette's test client, the app's whole stack including the
per-request read-only open of the store). The baseline, measured in the same run, is the runs page
of the same store: what a page costs whatever its size (opening the store, the template, the
middleware). Target: run and samples pages under 1 s each.

    python bench/bench_view.py [--candidates 10000] [--samples 5000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fastapi.testclient import TestClient  # noqa: E402

from store import open_store  # noqa: E402
from tests.web.seed import synthetic  # noqa: E402
from textbook.web.app import create_app  # noqa: E402
from textbook.web.backend import FileBackend  # noqa: E402


def timed(client: TestClient, url: str, repeat: int) -> tuple[float, float, int]:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        r = client.get(url)
        times.append(time.perf_counter() - t)
        if r.status_code != 200:
            raise SystemExit(f"{url}: HTTP {r.status_code}")
    return statistics.median(times), max(times), len(r.content)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--candidates", type=int, default=10_000)
    ap.add_argument("--samples", type=int, default=5_000)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "big.duckdb"
        t = time.perf_counter()
        store = open_store(db)
        run = synthetic(store, candidates=args.candidates, samples=args.samples)
        store.close()
        print(f"synthetic store: {args.candidates:,} candidates, {args.samples:,} samples "
              f"({time.perf_counter() - t:.1f} s to make)")
        client = TestClient(create_app(FileBackend(db)))
        pages = [("runs (baseline)", "/"), ("run", f"/runs/{run}"), ("run, page 100", f"/runs/{run}?page=100"),
                 ("run, accepted only", f"/runs/{run}?status=accepted"), ("samples", f"/runs/{run}/samples"),
                 ("samples, page 100", f"/runs/{run}/samples?page=100"),
                 ("samples, one point", f"/runs/{run}/samples?point=s1.c1.u1.p7")]
        client.get("/")  # warm: imports, templates
        base = None
        print(f"{'page':<22} {'median':>8} {'max':>8} {'x runs page':>12} {'bytes':>9}")
        for name, url in pages:
            med, worst, size = timed(client, url, args.repeat)
            base = base or med
            flag = "" if med < 1.0 or name.startswith("runs") else "  OVER 1 s"
            print(f"{name:<22} {med:>7.3f}s {worst:>7.3f}s {med / base:>11.1f}x {size:>9,}{flag}")


if __name__ == "__main__":
    main()
