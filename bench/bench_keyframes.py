"""Keyframe stage vs PySceneDetect's ContentDetector on the same 720p videos.

Prints wall time of each, the ratio, and how many of the slides each found.
    python bench/bench_keyframes.py
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._videos import build, slides_found  # noqa: E402
from tools import keyframes  # noqa: E402


def scenedetect_times(video: Path, threshold: float = 27.0) -> tuple[float, list[float]]:
    from scenedetect import ContentDetector, detect

    t0 = time.perf_counter()
    scenes = detect(str(video), ContentDetector(threshold=threshold))
    seconds = time.perf_counter() - t0
    starts = [s[0].seconds for s in scenes] or [0.0]
    return seconds, starts


def main() -> None:
    work = Path(tempfile.gettempdir()) / "textbook-bench"
    for name, (video, slides) in build(work).items():
        print(f"== {name}: {video.name}, {len(slides)} slides, {slides[-1]['end']:.0f} s at 1280x720")
        sd_s, sd_times = scenedetect_times(video)
        low_s, low_times = scenedetect_times(video, threshold=5.0)
        rows = [("PySceneDetect ContentDetector", sd_s, slides_found(sd_times, slides), len(sd_times), "-"),
                ("PySceneDetect threshold=5", low_s, slides_found(low_times, slides), len(low_times), "-")]
        for mode in ("auto", "all"):
            t0 = time.perf_counter()
            res = keyframes.detect(video, None, keyframes.KeyframeOptions(decode=mode))
            secs = time.perf_counter() - t0
            times = [k.time for k in res.keyframes]
            rows.append((f"textbook keyframes decode={mode}", secs, slides_found(times, slides), len(times),
                         res.frames_decoded))
        for label, secs, found, n, decoded in rows:
            print(f"  {label:<34} {secs:6.2f} s  slides found {found}/{len(slides)}  frames out {n:3d}  "
                  f"decoded {decoded}  speed-up vs PySceneDetect {sd_s / secs:5.2f}x")


if __name__ == "__main__":
    main()
