"""What `textbook` does at the paper's scale (issue 19): one subcommand per part, each printing its figures
and its ratio against a baseline measured in the same run.

- gateway: paid LLM calls per second through the gateway (agents/llm.py: prompt, cache lookup, the
  ChatOpenAI request, validation, the response cache write and the ``llm_calls`` row in the DuckDB
  store) against the OpenAI-compatible stand-in (agents/standin.py) at zero latency, served by its own
  process on 127.0.0.1, beside a bare HTTP client (httpx, one pooled client) sending the same request
  body to the same stand-in from the same number of threads. Every gateway call has its own prompt
  (a distinct cache key): all are paid. Target: >= 300 calls/s and >= 50% of the bare client's
  requests/s.

    python bench/bench_scale.py gateway [--threads 16] [--calls 2000] [--concurrency N] [--rounds 3]

- process: `process` of N one-second silent videos against ffprobe alone over the same files, on the
  local executor and on Ray (bench/_scale_process.py). Target: <= 2x.

    python bench/bench_scale.py process [--videos 2000] [--executors local,ray]

- build: N candidates through `textbook build` with the stand-in at zero latency: its metadata judge
  rejecting them all (target <= 10 ms a candidate from search result to stored verdict, memory flat), and
  accepting them all, each downloaded (a local file) and probed, against ffprobe alone over the same files
  (target <= 1.5x) (bench/_scale_build.py).

    python bench/bench_scale.py build [--candidates 20000] [--parts reject,accept] [--profile FILE]

- estimate: the paper's corpus through `textbook estimate` (bench/_scale_estimate.py).

    python bench/bench_scale.py estimate [--gpus 8] [--cpus 128] [--llm-rps 32 300]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import prompts  # noqa: E402
from agents import schemas  # noqa: E402
from agents.config import LLMConfig  # noqa: E402
from agents.llm import Gateway, strict_schema  # noqa: E402
from bench._standin_process import StandInProcess  # noqa: E402
from store import open_store  # noqa: E402


def _judge_values(title: str) -> dict:
    p = prompts.load("metadata_judge")
    return {**{v: "unknown" for v in p.variables()}, "point": "Newton's laws of motion",
            "path": "Physics > Mechanics", "level": "middle school", "language": "en", "title": title,
            "description": "A lesson.", "comments": "- great"}


CPU_MS: dict[str, list[float]] = {"bare": [], "gateway": []}
"""CPU milliseconds of this process (every thread, DuckDB's included) per request or call, per round."""


def _run_threads(n_threads: int, n_items: int, one, cpu: str | None = None) -> float:
    """Seconds to run ``one(i)`` for i in range(n_items) on ``n_threads`` threads (errors re-raised);
    the process's CPU time per item is added to ``CPU_MS[cpu]`` when given."""
    t0, c0 = time.perf_counter(), time.process_time()
    with ThreadPoolExecutor(n_threads) as pool:
        for _ in pool.map(one, range(n_items)):
            pass
    if cpu is not None:
        CPU_MS[cpu].append((time.process_time() - c0) / n_items * 1e3)
    return time.perf_counter() - t0


def bare_rate(base_url: str, n_threads: int, n_requests: int) -> float:
    """Requests/s of one pooled httpx client posting the gateway's request (the metadata judge in
    json_schema mode) to ``base_url`` from ``n_threads`` threads."""
    import httpx

    messages = prompts.load("metadata_judge").render(_judge_values("a lesson"))
    body = {"model": "standin", "messages": messages, "temperature": 0.0, "max_completion_tokens": 512,
            "response_format": {"type": "json_schema", "json_schema": {
                "name": "MetadataVerdict", "schema": strict_schema(schemas.MetadataVerdict), "strict": True}}}
    limits = httpx.Limits(max_connections=n_threads, max_keepalive_connections=n_threads)
    with httpx.Client(base_url=base_url, limits=limits, timeout=30, trust_env=False) as client:
        def one(i: int) -> None:
            """One request, its answer read."""
            resp = client.post("/chat/completions", json=body)
            resp.raise_for_status()
            resp.json()

        _run_threads(n_threads, min(n_requests, 4 * n_threads), one)  # warm: connections open
        return n_requests / _run_threads(n_threads, n_requests, one, cpu="bare")


def gateway_rate(base_url: str, n_threads: int, n_calls: int, concurrency: int) -> tuple[float, dict]:
    """Paid calls/s of the gateway (a fresh store in a temporary folder) from ``n_threads`` threads,
    each call a distinct metadata-judge prompt; with the counts checked (every call paid and logged)."""
    with tempfile.TemporaryDirectory() as tmp:
        store = open_store(Path(tmp) / "bench.duckdb")
        try:
            cfg = LLMConfig(base_url=base_url, model="standin", structured="json_schema", timeout_s=30,
                            concurrency=concurrency)
            gw = Gateway(store, "bench-gateway", cfg)

            def one(i: int) -> None:
                """One paid call (its own prompt)."""
                gw.call("metadata_judge", "judge_metadata", "metadata_judge", _judge_values(f"lesson {i}"),
                        schemas.MetadataVerdict, video_id=f"v{i}")

            warm = min(n_calls, 4 * n_threads)
            _run_threads(n_threads, warm, lambda i: one(n_calls + i))
            seconds = _run_threads(n_threads, n_calls, one, cpu="gateway")
            stats = gw.stats()
            totals = store.llm_totals("bench-gateway")
            flight = gw.in_flight()[base_url]
            if stats.calls != n_calls + warm or stats.cached or stats.failed or totals["paid_calls"] != n_calls + warm:
                raise RuntimeError(f"counts are off: {stats} {totals}")
            if hasattr(gw, "close"):
                gw.close()
            per_commit = store.writes / store.commits if getattr(store, "commits", 0) else float("nan")
            return n_calls / seconds, {"peak_in_flight": flight.peak, "limit": flight.limit,
                                       "writes_per_commit": per_commit}
        finally:
            store.close()


def part_gateway(args: argparse.Namespace) -> None:
    """(a) gateway paid calls/s beside a bare HTTP client, same stand-in, same threads: ``--rounds``
    rounds, each the bare client then the gateway (a fresh store); the best round of each is
    compared (the least disturbed by whatever else the machine runs)."""
    concurrency = args.concurrency or args.threads
    bare, gw, info = [], [], {}
    with StandInProcess(latency_s=0.0) as srv:
        for _ in range(args.rounds):
            bare.append(bare_rate(srv.base_url, args.threads, args.calls))
            rate, info = gateway_rate(srv.base_url, args.threads, args.calls, concurrency)
            gw.append(rate)
    print(f"gateway: {args.calls} calls a round, {args.rounds} rounds, {args.threads} threads, stand-in at 0 s "
          "latency (own process)")
    print("  bare httpx client   " + " ".join(f"{r:7.1f}" for r in bare) + "  requests/s")
    print("  gateway (paid)      " + " ".join(f"{r:7.1f}" for r in gw) + "  calls/s  "
          f"(peak in flight {info['peak_in_flight']}, limit {info['limit']}, "
          f"{info['writes_per_commit']:.1f} store writes a commit)")
    print(f"  CPU of this process: bare {min(CPU_MS['bare']):.2f} ms a request, gateway "
          f"{min(CPU_MS['gateway']):.2f} ms a call (least of the rounds; the stand-in's own process not counted)")
    print(f"  best: bare {max(bare):.1f} requests/s, gateway {max(gw):.1f} calls/s, ratio {max(gw) / max(bare):.1%}"
          "   (target >= 300 calls/s and >= 50%)")


def part_process(args: argparse.Namespace) -> None:
    """(c) process vs ffprobe alone (bench/_scale_process.py)."""
    from bench._scale_process import process_vs_probe

    process_vs_probe(args.videos, args.executors.split(","))


def part_build(args: argparse.Namespace) -> None:
    """(b) candidates through build: reject-all and accept-all with downloads and probes (bench/_scale_build.py)."""
    from bench._scale_build import build_scale

    build_scale(args.candidates, args.parts.split(","), args.profile)


def part_estimate(args: argparse.Namespace) -> None:
    """(d) the paper's corpus estimated (bench/_scale_estimate.py)."""
    from bench._scale_estimate import estimate_paper

    estimate_paper(args.gpus, args.cpus, args.llm_rps, not args.no_calibrate, args.json)


def main(argv: list[str] | None = None) -> int:
    """The command line: one subcommand per part (``gateway``, ``build``, ``process``, ``estimate``)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="part", required=True)
    g = sub.add_parser("gateway", help="(a) gateway paid calls/s against a bare HTTP client")
    g.add_argument("--threads", type=int, default=16, help="caller threads (and bare client threads)")
    g.add_argument("--calls", type=int, default=2000, help="calls (and bare requests) measured")
    g.add_argument("--concurrency", type=int, default=0, help="gateway slots per endpoint (0: --threads)")
    g.add_argument("--rounds", type=int, default=3, help="rounds of (bare, gateway); the best of each compared")
    g.set_defaults(fn=part_gateway)
    from bench import _scale_build, _scale_estimate, _scale_process

    b = sub.add_parser("build", help="(b) candidates through build: reject-all, and accept-all against ffprobe")
    _scale_build.add_arguments(b)
    b.set_defaults(fn=part_build)
    p = sub.add_parser("process", help="(c) process N silent videos against ffprobe alone, local and Ray")
    _scale_process.add_arguments(p)
    p.set_defaults(fn=part_process)
    e = sub.add_parser("estimate", help="(d) the paper's corpus through textbook estimate")
    _scale_estimate.add_arguments(e)
    e.set_defaults(fn=part_estimate)
    args = ap.parse_args(argv)
    args.fn(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
