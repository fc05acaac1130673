"""ASR real-time factor: the default configuration vs plain unbatched beam-5 faster-whisper,
on the same audio (the narrated lessons joined, about 3.5 minutes), with WER for each.
    python bench/bench_asr.py
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pipeline.textnorm import wer  # noqa: E402
from tools import media  # noqa: E402
from tools.asr import AsrOptions, Transcriber  # noqa: E402

NARRATED = [ROOT / "tests/data/lessons/physics_newton", ROOT / "tests/data/lessons/chemistry_atoms",
            ROOT / "examples/lessons/earth_water_cycle", ROOT / "examples/lessons/math_fractions"]


def main() -> None:
    audio = np.concatenate([media.extract_audio(p.with_suffix(".mp4")) for p in NARRATED] * 2)
    reference = " ".join(json.loads(p.with_suffix(".truth.json").read_text())["narration"] for p in NARRATED * 2)
    seconds = len(audio) / 16000
    print(f"audio: {seconds:.0f} s (4 narrated lessons, twice)")
    configs = [("plain faster-whisper: unbatched, beam 5, no VAD, no word timestamps",
                AsrOptions(batch_size=1, beam_size=5, vad=False, word_timestamps=False)),
               ("textbook default: " + "batched 8, beam 5, VAD, word timestamps", AsrOptions()),
               ("batched 8, greedy, VAD, word timestamps", AsrOptions(beam_size=1))]
    base = None
    for label, opts in configs:
        tr = Transcriber(opts)
        tr.transcribe(audio[: 16000 * 5])  # warm-up
        t0 = time.perf_counter()
        result = tr.transcribe(audio)
        secs = time.perf_counter() - t0
        base = base or secs
        print(f"  {label:<72} RTF {secs / seconds:.3f}  WER {wer(reference, result.text):.3f}  "
              f"speed vs plain {base / secs:.2f}x")


if __name__ == "__main__":
    main()
