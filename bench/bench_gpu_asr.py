"""ASR through the Ray actor pool on the GPU(s) of this machine (pipeline/pools.py), in the field's unit:
audio-hours per GPU-hour (whisper large-v3 runs at ~66-120 in published batch runs; /work/shared/SCALE.md).

Starts a local Ray (it finds the GPUs), an ASR pool of ``--actors`` actors of ``--gpu-share`` GPU each, and
transcribes the narrated lessons (tests/data/lessons: English speech, 35 s and 51 s) ``--copies`` times over
with the offline whisper-base (or ``--model``: a CTranslate2 folder carried to the machine). One task per
actor first (the model loads, not timed); then the timed tasks. Prints, per actor, its node, its
CUDA_VISIBLE_DEVICES and its model loads (1 each), then audio seconds, wall seconds, the GPUs the pool held
and audio-hours per GPU-hour. ``--device cpu`` runs the same plumbing on CPUs (a rate per CPU-actor-hour):
the check that this script works, on a machine without a GPU.
    python bench/bench_gpu_asr.py [--actors 2] [--gpu-share 0.5] [--copies 8] [--model DIR] [--device cpu]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

from pipeline.pools import PoolConfig, PoolSpec, RayPoolExecutor  # noqa: E402
from pipeline.stages.asr import asr_task  # noqa: E402
from tools import media  # noqa: E402
from tools.asr import OFFLINE_MODEL, AsrOptions  # noqa: E402

LESSONS = [ROOT / "tests/data/lessons/chemistry_atoms.mp4", ROOT / "tests/data/lessons/physics_newton.mp4"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--actors", type=int, default=2)
    ap.add_argument("--gpu-share", type=float, default=0.5, help="GPUs each actor holds (0.5: two a GPU)")
    ap.add_argument("--copies", type=int, default=8, help="times each lesson is transcribed (timed)")
    ap.add_argument("--model", default=OFFLINE_MODEL, help="faster-whisper model name or CTranslate2 folder")
    ap.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    args = ap.parse_args()

    if args.device == "cuda":
        import ctranslate2

        if ctranslate2.get_cuda_device_count() == 0:
            print("error: no CUDA device visible to CTranslate2 (run on a GPU machine, or --device cpu)",
                  file=sys.stderr)
            return 2
    gpus = args.gpu_share if args.device == "cuda" else 0.0
    options = AsrOptions(model=args.model, device=args.device)
    spec = PoolSpec(size=args.actors, num_cpus=1, num_gpus=gpus, max_in_flight=2)
    pools = RayPoolExecutor(PoolConfig(asr=spec), workers=max(2, args.actors))
    try:
        task = (("en",), 1.0)
        warm = [pools.submit("asr", asr_task, (str(LESSONS[0]), options, *task)) for _ in range(args.actors)]
        for f in warm:
            f.result()
        files = [str(p) for p in LESSONS] * args.copies
        audio = sum(media.probe(p).duration for p in files)
        t = time.perf_counter()
        futures = [pools.submit("asr", asr_task, (p, options, *task)) for p in files]
        words = sum(len(s["text"].split()) for f in futures for s in f.result()["segments"])
        wall = time.perf_counter() - t
        actors = pools.stats("asr")
    finally:
        pools.close()
    for a in actors:
        print(f"actor pid {a['pid']} on node {a['node_id'][:12]}: CUDA_VISIBLE_DEVICES={a['cuda_visible_devices']} "
              f"model loads {a['asr_loads']}, tasks {a['tasks']}")
    held = gpus * args.actors if gpus else args.actors
    unit = "GPU" if gpus else "CPU-actor"
    print(f"{len(files)} files, {audio / 60:.1f} min of audio, {words} words, in {wall:.1f} s wall "
          f"({audio / wall:.1f}x real time) on {held:g} {unit}s ({args.actors} actors, {args.model}, {args.device})")
    print(f"audio-hours per {unit}-hour: {audio / (wall * held):.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
