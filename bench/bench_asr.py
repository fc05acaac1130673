"""ASR benchmarks; every figure is a ratio or a rate from this one run, on the same audio.

1. Speed and WER on the four narrated lessons (two sets of two), each transcribed as its own
   video (as ``textbook process`` does) and all four joined (a long video):
   plain faster-whisper (unbatched beam 5, no VAD), the previous textbook default
   (faster-whisper's batched pipeline: a language-detection pass over the first 30 s, then
   every chunk padded to 30 s), and the current default (each chunk's language from its own
   encoder pass), with variants (shorter padding, beam 2, batch 1).
2. Language windows: English then German (tests/data/conditions_audio/en_de.mp4, and a lesson
   followed by German speech, so the switch falls inside a chunk): WER of the English part,
   German words leaked as English, and the cost against the same audio with the language forced.
3. Normalization: the narrated lessons made quiet (peak -34 dBFS, white noise at -66 dBFS RMS,
   AAC 32k), tests/data/conditions_audio/quiet.mp4 and ../shared/cases/media/quiet_speech.mp4 (when
   there): how many are kept as English (language en at p >= 0.5), mean probability, WER, with
   normalization off, gain only, and denoise + gain (the default); and two controls that tell the
   level from the noise: the lessons as recorded, and made quiet with no noise added.

Times are wall seconds and CPU seconds of this process (all its threads; steadier than wall time
on a shared machine); each configuration runs ``--repeats`` times, interleaved, best reported.

    python bench/bench_asr.py [--repeats 2] [--only speed,language,quiet]
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pipeline.textnorm import wer  # noqa: E402
from tools import media  # noqa: E402
from tools.asr import AsrOptions, Transcriber, offline_model_path  # noqa: E402

NARRATED = [ROOT / "tests/data/lessons/physics_newton", ROOT / "tests/data/lessons/chemistry_atoms",
            ROOT / "examples/lessons/earth_water_cycle", ROOT / "examples/lessons/math_fractions"]
CONDITIONS = ROOT / "tests" / "data" / "conditions_audio"
SR = 16000


def lessons() -> list[tuple[np.ndarray, str]]:
    return [(media.extract_audio(p.with_suffix(".mp4")), json.loads(p.with_suffix(".truth.json").read_text())
             ["narration"]) for p in NARRATED]


class Previous:
    """The previous default: faster-whisper's BatchedInferencePipeline as textbook called it."""

    def __init__(self):
        from faster_whisper import BatchedInferencePipeline, WhisperModel

        self.model = WhisperModel(str(offline_model_path()), device="cpu", compute_type="int8")
        self.pipeline = BatchedInferencePipeline(self.model)

    def transcribe(self, audio: np.ndarray):
        segs, info = self.pipeline.transcribe(audio, batch_size=8, beam_size=5, vad_filter=True, word_timestamps=True,
                                              temperature=[0.0, 0.2, 0.4, 0.6, 0.8, 1.0],
                                              condition_on_previous_text=False)
        return " ".join(s.text.strip() for s in segs), info

    def text(self, audio: np.ndarray) -> str:
        return self.transcribe(audio)[0]


class Plain(Previous):
    """Plain faster-whisper: unbatched, beam 5, no VAD, no word timestamps."""

    def text(self, audio: np.ndarray) -> str:
        segs, _ = self.model.transcribe(audio, beam_size=5, vad_filter=False, word_timestamps=False,
                                        temperature=[0.0, 0.2, 0.4, 0.6, 0.8, 1.0], condition_on_previous_text=False)
        return " ".join(s.text.strip() for s in segs)


class Ours:
    def __init__(self, options: AsrOptions):
        self.tr = Transcriber(options)

    def text(self, audio: np.ndarray) -> str:
        return self.tr.transcribe(audio, languages=("en",)).text


def timed(fn, *args):
    """((wall seconds, CPU seconds of this process's threads), output)."""
    w0, c0 = time.perf_counter(), time.process_time()
    out = fn(*args)
    return (time.perf_counter() - w0, time.process_time() - c0), out


def speed(repeats: int) -> None:
    data = lessons()
    joined = np.concatenate([a for a, _ in data])
    joined_ref = " ".join(r for _, r in data)
    seconds = sum(len(a) for a, _ in data) / SR
    print(f"1. speed and WER: {len(data)} narrated lessons, {seconds:.0f} s of audio; RTF = seconds per second of "
          f"audio, wall and CPU (best of {repeats}); speed-ups against the previous default in this run")
    configs = [("plain faster-whisper: unbatched, beam 5, no VAD", Plain()),
               ("previous default: batched pipeline, language pass, 30 s pad", Previous()),
               ("textbook default: per-chunk language, 30 s pad", Ours(AsrOptions())),
               ("  variant: chunks padded to 10 s steps", Ours(AsrOptions(pad_seconds=10))),
               ("  variant: beam 2", Ours(AsrOptions(beam_size=2))),
               ("  variant: batch 1", Ours(AsrOptions(batch_size=1)))]
    for _, c in configs:
        c.text(data[0][0][: SR * 5])  # warm-up
    best: dict[str, list[float]] = {label: [1e9] * 4 for label, _ in configs}  # per video wall, CPU; joined
    texts: dict[str, tuple[list[str], str]] = {}
    for _ in range(repeats):
        for label, c in configs:
            per_video = [timed(c.text, a) for a, _ in data]
            (long_w, long_c), long_text = timed(c.text, joined)
            now = [sum(t[0] for t, _ in per_video), sum(t[1] for t, _ in per_video), long_w, long_c]
            best[label] = [min(a, b) for a, b in zip(best[label], now, strict=True)]
            texts[label] = ([x for _, x in per_video], long_text)
    base = best[configs[1][0]]
    for label, _ in configs:
        b, (per_texts, long_text) = best[label], texts[label]
        print(f"  {label:<62} per video: RTF {b[0] / seconds:.3f} wall ({base[0] / b[0]:.2f}x), "
              f"{b[1] / seconds:.3f} CPU ({base[1] / b[1]:.2f}x), WER {wer(joined_ref, ' '.join(per_texts)):.3f}"
              f" | joined: RTF {b[2] / seconds:.3f} wall ({base[2] / b[2]:.2f}x), {b[3] / seconds:.3f} CPU "
              f"({base[3] / b[3]:.2f}x), WER {wer(joined_ref, long_text):.3f}")


def german_words(text: str, german: str) -> int:
    said = re.findall(r"\w+", text.lower())
    return sum(1 for w in said if w in set(re.findall(r"\w+", german.lower())) and len(w) > 3)


def language(repeats: int) -> None:
    parts = json.loads((CONDITIONS / "en_de.mp4.truth.json").read_text())["parts"]
    en_text, de_text = parts[0]["text"], parts[1]["text"]
    fixture = media.extract_audio(CONDITIONS / "en_de.mp4")
    german = fixture[int(parts[1]["start"] * SR) - SR // 4:]
    lesson, lesson_ref = lessons()[0]
    mixed = np.concatenate([lesson, german])  # the switch falls inside the second 30 s chunk
    print("2. language windows: English then German; English kept, German dropped (languages=en)")
    ours = Transcriber(AsrOptions())
    forced = Transcriber(AsrOptions(language="en"))
    previous = Previous()
    for name, audio, ref in (("en_de.mp4 (one chunk)", fixture, en_text),
                             ("physics lesson + German (two chunks)", mixed, lesson_ref),
                             ("physics lesson alone (control)", lesson, lesson_ref)):
        best_t, best_f = 1e9, 1e9
        for _ in range(repeats):
            (_, t), result = timed(ours.transcribe, audio, ("en",))
            (_, f), _ = timed(forced.transcribe, audio, ("en",))
            best_t, best_f = min(best_t, t), min(best_f, f)
        before, info = previous.transcribe(audio)
        windows = ", ".join(f"{w.start:.1f}-{w.end:.1f} {w.language}{'' if w.decoded else ' (dropped)'}"
                            for w in result.windows)
        print(f"  {name}: WER of the English part {wer(ref, result.text):.3f}, German words in it "
              f"{german_words(result.text, de_text)}; CPU cost vs the language forced {best_t / best_f:.2f}x")
        print(f"    windows: {windows}")
        print(f"    previous default: language {info.language} ({info.language_probability:.2f}) for all of it, "
              f"German words {german_words(before, de_text)}, text: {before[-110:]!r}")


# ../shared/cases beside the project (a checkout in /work/main; a worktree one level deeper)
CASE_QUIET = [d / "shared/cases/media/quiet_speech.mp4" for d in (ROOT.parent, ROOT.parent.parent)]


def quiet(repeats: int) -> None:
    """3: the quiet narrations with normalization off, gain only and denoise + gain; and, to tell the level
    from the noise, the four lessons as recorded and made quiet with no noise added (normalization off)."""
    rng = np.random.default_rng(0)
    data, controls = [], {"lessons as recorded": [], "lessons at -34 dBFS, no noise": []}
    for audio, ref in lessons():
        q = audio * np.float32(10 ** (-34 / 20) / np.abs(audio).max())
        controls["lessons as recorded"].append((audio, ref))
        controls["lessons at -34 dBFS, no noise"].append((q.astype(np.float32), ref))
        q = q + rng.normal(0, 10 ** (-66 / 20), q.size).astype(np.float32)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "q.m4a"
            subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-f", "f32le", "-ar", str(SR), "-ac", "1", "-i", "-",
                            "-c:a", "aac", "-b:a", "32k", str(path)], input=q.astype(np.float32).tobytes(), check=True)
            data.append((media.extract_audio(path), ref))
    data.append((media.extract_audio(CONDITIONS / "quiet.mp4"),
                 json.loads((CONDITIONS / "quiet.mp4.truth.json").read_text())["parts"][0]["text"]))
    case = next((c for c in CASE_QUIET if c.is_file()), None)
    if case:  # ../shared/cases: the same condition, another espeak-ng narration (the case's truth)
        truth = json.loads(case.with_name(case.name + ".truth.json").read_text())
        data.append((media.extract_audio(case), " ".join(s["narration"] for s in truth["slides"])))
    print(f"3. normalization: {len(data)} quiet narrations (4 lessons at -34 dBFS over -66 dBFS noise, "
          f"conditions_audio/quiet.mp4{', cases/media/quiet_speech.mp4' if case else ''}); kept = language en at "
          "p >= 0.5; WER per narration in that order")
    tr = Transcriber(AsrOptions())
    off = media.AudioOptions(normalize="off")
    for label, items in controls.items():
        wers = [wer(ref, tr.transcribe(media.normalize_audio(a, off)[0], languages=("en",)).text) for a, ref in items]
        print(f"  {label:<30} (normalization off)  WER {np.mean(wers):.3f}  ({' '.join(f'{w:.3f}' for w in wers)})")
    for label, opts in (("off", off), ("gain only", media.AudioOptions(denoise=False)),
                        ("denoise + gain (default)", media.AudioOptions())):
        rows, cost = [], 0.0
        for audio, ref in data:
            (t, _), (louder, _) = timed(media.normalize_audio, audio, opts)
            cost += t
            r = tr.transcribe(louder, languages=("en",))
            rows.append((r.language == "en" and r.language_probability >= 0.5, r.language_probability,
                         wer(ref, r.text)))
        secs = sum(len(a) for a, _ in data) / SR
        kept = sum(k for k, _, _ in rows)
        probs, wers = [p for _, p, _ in rows], [w for _, _, w in rows]
        print(f"  {label:<26} kept {kept}/{len(rows)}  mean p {np.mean(probs):.2f}  min p {min(probs):.2f}"
              f"  WER {np.mean(wers):.3f} ({' '.join(f'{w:.3f}' for w in wers)})"
              f"  normalization RTF {cost / secs:.4f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--only", default="speed,language,quiet")
    args = ap.parse_args()
    for name in args.only.split(","):
        {"speed": speed, "language": language, "quiet": quiet}[name](args.repeats)


if __name__ == "__main__":
    main()
