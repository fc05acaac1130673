"""Issue 19 (d): the paper's corpus worked through `textbook estimate` (agents/estimate.py).

3,915 knowledge points, 159,565 videos judged and transcribed, 75K kept (22,697 h), 4M clips, 6.58M
keyframes, at our per-clip design (two transcript judges per video, a rewrite and a clip judgment per
clip). The CPU stages' rates are measured on this machine (a calibration: `textbook process` on a
generated lesson) unless --no-calibrate; ASR on GPU at the published rate of whisper large-v3. The
cluster is one 8-GPU node with 128 CPU cores (NeMo Curator's nightly reference) unless told
otherwise. The LLM wall time is printed at each endpoint rate given (default: the gateway's measured
ceiling today, 742 calls/s, and issue 19's target, 300 calls/s).

    python bench/_scale_estimate.py [--gpus 8] [--cpus 128] [--llm-rps 742 300] [--no-calibrate] [--json]

bench/bench_scale.py wires ``add_arguments`` and ``estimate_paper`` in as its ``estimate`` subcommand.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agents import estimate as est  # noqa: E402

TARGET_CALLS_PER_S = 300.0  # issue 19: the gateway up to >= 300 paid calls/s


def add_arguments(ap: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The options of the paper estimate, on ``ap`` (a parser or a subcommand's parser)."""
    ap.add_argument("--gpus", type=int, default=8, help="GPUs of the cluster (ASR)")
    ap.add_argument("--cpus", type=int, default=128, help="CPU cores of the cluster (probe, keyframes, OCR)")
    ap.add_argument("--llm-rps", type=float, nargs="+", default=[est.GATEWAY_CALLS_PER_S, TARGET_CALLS_PER_S],
                    help="LLM endpoint paid calls/s: one estimate each (default: today's gateway ceiling and "
                         "issue 19's target)")
    ap.add_argument("--no-calibrate", action="store_true", help="leave the CPU stages unmeasured")
    ap.add_argument("--json", action="store_true", help="print the estimates as JSON")
    return ap


def estimate_paper(gpus: int = 8, cpus: int = 128, llm_rps: list[float] | None = None, calibrate: bool = True,
                   as_json: bool = False, out=sys.stdout) -> list[est.Estimate]:
    """Print (to ``out``) and return the paper corpus' estimate at each endpoint rate of ``llm_rps``: the
    first in full, then for each rate the lines that change (the LLM bound and the wall time), with the
    YouTube API's quota and without it (yt-dlp's search)."""
    rates = est.default_rates(est.PAPER["points"])
    if calibrate:
        rates = est.calibrate(rates)
    sizes, design = est.paper_sizes(), est.paper_design()
    results = [est.project(sizes, rates, design, est.Cluster(gpus, cpus, est.Figure(
        rps, est.GATEWAY_SOURCE if rps == est.GATEWAY_CALLS_PER_S else
        "issue 19's target" if rps == TARGET_CALLS_PER_S else "given"))) for rps in (llm_rps or [
            est.GATEWAY_CALLS_PER_S, TARGET_CALLS_PER_S])]
    if as_json:
        print(json.dumps([r.to_json() for r in results], indent=2), file=out)
        return results
    print("the paper's corpus (arXiv 2501.00958) at our per-clip design, with the paper's visual filter", file=out)
    print("\n".join(est.render(results[0], rates)), file=out)
    no_quota = replace(design, youtube=False)
    for r in results:
        for label, e in (("", r), (", searching with yt-dlp (no API quota)",
                                   est.project(sizes, rates, no_quota, r.cluster))):
            print(f"at {r.cluster.llm_calls_per_s.value:,.0f} LLM calls/s{label}: llm "
                  f"{est.hours_text(e.bounds['llm'])}; wall at least {est.hours_text(e.wall_hours)} ({e.bottleneck}), "
                  f"at most {est.hours_text(e.serial_hours)}", file=out)
    return results


def main(argv: list[str] | None = None) -> None:
    args = add_arguments(argparse.ArgumentParser(description=__doc__.splitlines()[0])).parse_args(argv)
    estimate_paper(args.gpus, args.cpus, args.llm_rps, not args.no_calibrate, args.json)


if __name__ == "__main__":
    main()
