"""Benchmark inputs: the committed lessons scaled to 720p and joined into one long video,
encoded twice (libx264 defaults: GOP up to 10 s; and a 2 s GOP as streaming encoders use),
with the slide ground truth shifted to match."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np

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


# -- the conditions suite (examples/make_conditions.py) ---------------------------------
CONDITIONS = ROOT / "tests/data/conditions"


def condition_truths(folder: Path = CONDITIONS) -> list[dict]:
    """Every ``*.truth.json`` of the suite, with ``path`` (the video) and ``folder`` added."""
    out = []
    for f in sorted(folder.glob("*.truth.json")):
        truth = json.loads(f.read_text())
        truth["path"] = folder / truth["video"]
        truth["folder"] = folder
        out.append(truth)
    return out


def _gray320(img) -> np.ndarray:
    from PIL import Image

    img = img.convert("L")
    return np.asarray(img.resize((320, round(img.height * 320 / img.width)), Image.LANCZOS), dtype=np.float32)


def frame_at(video: Path, t: float):
    """The picture a player shows at media time ``t`` (ffmpeg: rotation and pixel aspect applied)."""
    import io

    from PIL import Image

    png = subprocess.run(["ffmpeg", "-v", "error", "-ss", f"{max(0.0, t):.3f}", "-i", str(video), "-frames:v", "1",
                          "-vf", "scale=trunc(iw*sar/2)*2:ih,setsar=1", "-f", "image2pipe", "-vcodec", "png", "-"],
                         capture_output=True, check=True).stdout
    return Image.open(io.BytesIO(png))


def _closest_blend(gray: np.ndarray, clean: list[np.ndarray], i: int) -> float:
    from tools.keyframes import ssim

    others = [clean[j] for j in (i - 1, i + 1) if 0 <= j < len(clean)] + [np.zeros_like(clean[i])]
    return max(ssim(gray, (1 - u) * clean[i] + u * other) for other in others for u in (0.25, 0.5)
               if other.shape == gray.shape)


def score(keyframes: list[tuple[float, object]], truth: dict) -> dict:
    """Match keyframes to the truth's states by time AND by content.

    ``keyframes``: (time in seconds of media time, PIL image as written). A keyframe is
    right when its time lies in a state (from one frame before its start to its end),
    its picture (grayscale, 320 px wide) is closest by SSIM to that state's clean image
    among all states, that SSIM reaches ``truth["match_ssim"]``, and it is closer to the
    clean state than to any blend of it (25 or 50 %) with a neighbouring state or with
    black (a cross-dissolve, a fade). A second keyframe of a matched state is a
    near-duplicate. Returns recall, precision and, per keyframe, what it was judged.
    """
    from PIL import Image

    from tools.keyframes import ssim

    states = truth["states"]
    clean = [_gray320(Image.open(truth["folder"] / s["image"])) for s in states]
    found: set[int] = set()
    verdicts = []
    for t, img in keyframes:
        gray = _gray320(img)
        by_time = next((i for i, s in enumerate(states) if s["start"] - 0.045 <= t < s["end"]), None)
        sims = [ssim(gray, c) if c.shape == gray.shape else 0.0 for c in clean]
        best = int(np.argmax(sims))
        if by_time is None:
            verdict = "between states"
        elif best != by_time:
            verdict = f"shows state {best}, not {by_time}"
        elif sims[best] < truth["match_ssim"]:
            verdict = f"unclean (SSIM {sims[best]:.3f})"
        elif (ghost := _closest_blend(gray, clean, by_time)) > sims[best]:
            verdict = f"a blend (SSIM {ghost:.3f} to a blend, {sims[best]:.3f} to the state)"
        elif by_time in found:
            verdict = "duplicate"
        else:
            verdict = "ok"
            found.add(by_time)
        verdicts.append({"time": round(t, 3), "state": by_time, "ssim": round(sims[best], 3), "verdict": verdict,
                         "size": list(img.size)})
    ok = sum(v["verdict"] == "ok" for v in verdicts)
    return {"recall": len(found) / len(states), "precision": ok / len(keyframes) if keyframes else 1.0,
            "keyframes": len(keyframes), "states": len(states), "verdicts": verdicts}


def tiny_clips(folder: Path, n: int, stem: str, meta) -> list[Path]:
    """``n`` distinct one-second silent 64x48 clips ``folder/STEM_I.mp4``, each with its own title tag
    and a sidecar ``meta(i)`` (one encode, then a stream copy per clip: cheap for thousands). Returns
    the clips."""
    folder.mkdir(parents=True, exist_ok=True)
    base = folder.parent / f"{folder.name}-base.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc=size=64x48:rate=5:duration=1",
                    "-pix_fmt", "yuv420p", str(base)], check=True)
    clips = []
    for i in range(n):
        clip = folder / f"{stem}_{i:0{max(2, len(str(n - 1)))}d}.mp4"
        subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(base), "-c", "copy", "-metadata", f"title=clip {i}",
                        str(clip)], check=True)
        clip.with_suffix(".json").write_text(json.dumps(meta(i)))
        clips.append(clip)
    return clips
