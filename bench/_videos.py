"""Benchmark inputs: the committed lessons scaled to 720p and joined into one long video,
encoded twice (libx264 defaults: GOP up to 10 s; and a 2 s GOP as streaming encoders use),
with the slide ground truth shifted to match."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LESSONS = ["physics_newton", "chemistry_atoms", "earth_no_audio", "math_quiet_tone", "math_primos_es"]
EXAMPLES = ["earth_water_cycle", "math_fractions"]


def _sources() -> list[tuple[Path, dict]]:
    out = []
    for name in LESSONS:
        out.append((ROOT / "tests/data/lessons" / f"{name}.mp4",
                    json.loads((ROOT / "tests/data/lessons" / f"{name}.truth.json").read_text())))
    for name in EXAMPLES:
        out.append((ROOT / "examples/lessons" / f"{name}.mp4",
                    json.loads((ROOT / "examples/lessons" / f"{name}.truth.json").read_text())))
    return out


def build(work: Path, repeats: int = 1) -> dict[str, tuple[Path, list[dict]]]:
    """{'x264-default': (video, slides), 'gop-2s': (video, slides)}; slides: start/end/title."""
    work.mkdir(parents=True, exist_ok=True)
    sources = _sources() * repeats
    slides, t = [], 0.0
    for _, truth in sources:
        for s in truth["slides"]:
            slides.append({"start": round(t + s["start"], 3), "end": round(t + s["end"], 3), "title": s["title"]})
        t += truth["duration"]
    inputs = []
    for path, _ in sources:
        inputs += ["-i", str(path)]
    chain = "".join(f"[{i}:v]scale=1280:720,fps=25,setsar=1[v{i}];" for i in range(len(sources)))
    chain += "".join(f"[v{i}]" for i in range(len(sources))) + f"concat=n={len(sources)}:v=1:a=0[out]"
    videos = {}
    for name, extra in (("x264-default", []), ("gop-2s", ["-g", "50", "-keyint_min", "50"])):
        target = work / f"bench_{name}.mp4"
        if not target.is_file():
            subprocess.run(["ffmpeg", "-v", "error", "-y", *inputs, "-filter_complex", chain, "-map", "[out]",
                            "-c:v", "libx264", "-crf", "23", *extra, str(target)], check=True)
        videos[name] = (target, slides)
    return videos


def slides_found(times: list[float], slides: list[dict]) -> int:
    """How many slides have at least one detected frame inside them."""
    return sum(any(s["start"] - 1e-6 <= t < s["end"] - 1e-6 for t in times) for s in slides)
