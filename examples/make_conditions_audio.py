"""Render small videos that show audio and probing conditions of real media, with ground truth.

Each is one slide (Pillow) and a few seconds of espeak-ng speech, muxed by ffmpeg:

- ``two_tracks.mkv``: two audio tracks, a Spanish dub first (tagged spa, not default) and the
  English original second (tagged eng, default): the English track must be transcribed;
- ``quiet.mp4``: English narration peaking at -34 dBFS over white noise at -66 dBFS RMS (a
  low-gain lecture microphone): kept as English after level normalization;
- ``en_de.mp4``: English narration, then German: English text for the English part only;
- ``nodur.webm``: a WebM written to a pipe, as browsers record, so its header has no duration;
- ``loop.mp4``: a sentence, then one phrase said over and over: the loop is dropped as
  "repetition", and so is the video, being mostly loop;
- ``empty.mp4``: 0 bytes.

Beside each it writes ``NAME.truth.json`` (the condition, what a user should get, the spoken
parts with their language, times in seconds, and text).

    python examples/make_conditions_audio.py tests/data/conditions_audio
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import wave
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_lessons import SAMPLE_RATE, Slide, render_slide  # noqa: E402

FPS = 5
PAUSE = 0.8

EN = ("Welcome to this lesson on electricity. Ohm's law says that the voltage across a resistor "
      "equals the current times the resistance.")
ES = ("Bienvenidos a esta lección sobre electricidad. La ley de Ohm dice que el voltaje en una "
      "resistencia es igual a la corriente por la resistencia.")
DE = ("Willkommen zu dieser Lektion über Elektrizität. Das ohmsche Gesetz sagt, dass die Spannung "
      "an einem Widerstand gleich dem Strom mal dem Widerstand ist.")
LONG = EN + " For example, a current of two amperes through five ohms gives a voltage of ten volts."
LOOP_INTRO = "Welcome to this short lesson about loops in speech recognition."
LOOP_PHRASE = ", ".join(["and so on"] * 14)


def speak(text: str, voice: str, tmp: Path, speed: int = 150) -> np.ndarray:
    """espeak-ng speech as float32 PCM at SAMPLE_RATE."""
    path = tmp / f"speech-{voice}-{abs(hash(text)) % 10**8}.wav"
    subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-w", str(path), text], check=True)
    with wave.open(str(path)) as w:
        if w.getframerate() != SAMPLE_RATE:
            raise RuntimeError(f"espeak-ng wrote {w.getframerate()} Hz, expected {SAMPLE_RATE}")
        return np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16).astype(np.float32) / 32768.0


def silence(seconds: float) -> np.ndarray:
    return np.zeros(int(seconds * SAMPLE_RATE), np.float32)


def write_wav(audio: np.ndarray, path: Path) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SAMPLE_RATE)
        w.writeframes((np.clip(audio, -1, 1) * 32767).astype(np.int16).tobytes())


def joined(parts: list[tuple[str, str, np.ndarray]]) -> tuple[np.ndarray, list[dict]]:
    """Speech parts with a lead-in and pauses between them: (audio, truth of each part)."""
    audio, truth, t = [silence(0.5)], [], 0.5
    for lang, text, pcm in parts:
        truth.append({"language": lang, "start": round(t, 3), "end": round(t + len(pcm) / SAMPLE_RATE, 3),
                      "text": text})
        audio += [pcm, silence(PAUSE)]
        t += len(pcm) / SAMPLE_RATE + PAUSE
    return np.concatenate(audio), truth


def slide_video(title: str, lines: list[str], tmp: Path) -> list[str]:
    """ffmpeg input arguments of a still slide."""
    png = tmp / f"slide-{abs(hash(title)) % 10**8}.png"
    render_slide(Slide(title, lines), png)
    return ["-loop", "1", "-framerate", str(FPS), "-i", str(png)]


def x264(seconds: float) -> list[str]:
    return ["-t", f"{seconds:.3f}", "-vf", "format=yuv420p", "-c:v", "libx264", "-crf", "35", "-preset", "medium",
            "-g", str(FPS * 10)]


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", *args], check=True)


def truth_file(path: Path, condition: str, expect: dict, parts: list[dict], **extra) -> None:
    data = {"name": path.name, "condition": condition, "expect": expect, "parts": parts, **extra}
    path.with_name(path.name + ".truth.json").write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def two_tracks(out: Path, tmp: Path) -> Path:
    en, en_truth = joined([("en", EN, speak(EN, "en", tmp))])
    es, es_truth = joined([("es", ES, speak(ES, "es", tmp))])
    n = max(len(en), len(es))
    en, es = np.pad(en, (0, n - len(en))), np.pad(es, (0, n - len(es)))
    write_wav(en, tmp / "en.wav")
    write_wav(es, tmp / "es.wav")
    path = out / "two_tracks.mkv"
    ffmpeg(*slide_video("Ohm's Law", ["Two audio tracks"], tmp), "-i", str(tmp / "es.wav"), "-i", str(tmp / "en.wav"),
           "-map", "0:v", "-map", "1:a", "-map", "2:a", *x264(n / SAMPLE_RATE), "-c:a", "libopus", "-b:a", "24k",
           "-metadata:s:a:0", "language=spa", "-metadata:s:a:0", "title=Spanish (dubbed)",
           "-metadata:s:a:1", "language=eng", "-metadata:s:a:1", "title=English (original)",
           "-disposition:a:0", "0", "-disposition:a:1", "default", str(path))
    truth_file(path, "two audio tracks: a:0 Spanish dub (not default), a:1 English original (default)",
               {"track_position": 1, "language": "en", "status": "kept"}, en_truth, other_tracks={"0": es_truth})
    return path


def quiet(out: Path, tmp: Path) -> Path:
    audio, parts = joined([("en", LONG, speak(LONG, "en", tmp))])
    audio = audio * np.float32(10 ** (-34 / 20) / np.abs(audio).max())
    audio += np.random.default_rng(0).normal(0, 10 ** (-66 / 20), audio.size).astype(np.float32)
    write_wav(audio, tmp / "quiet.wav")
    path = out / "quiet.mp4"
    ffmpeg(*slide_video("Ohm's Law", ["A quiet microphone"], tmp), "-i", str(tmp / "quiet.wav"),
           *x264(len(audio) / SAMPLE_RATE), "-c:a", "aac", "-b:a", "32k", "-ac", "1", str(path))
    truth_file(path, "narration peaking at -34 dBFS over white noise at -66 dBFS RMS (low-gain microphone)",
               {"language": "en", "status": "kept", "normalized": True}, parts)
    return path


def en_de(out: Path, tmp: Path) -> Path:
    audio, parts = joined([("en", EN, speak(EN, "en", tmp)), ("de", DE, speak(DE, "de", tmp))])
    write_wav(audio, tmp / "en_de.wav")
    path = out / "en_de.mp4"
    ffmpeg(*slide_video("Ohm's Law", ["English, then German"], tmp), "-i", str(tmp / "en_de.wav"),
           *x264(len(audio) / SAMPLE_RATE), "-c:a", "aac", "-b:a", "32k", "-ac", "1", str(path))
    truth_file(path, "English narration, then German", {"language": "en", "status": "kept",
               "kept_text": "the English part only; the German part dropped (or kept as German when wanted)"}, parts)
    return path


def nodur(out: Path, tmp: Path) -> Path:
    audio, parts = joined([("en", LONG, speak(LONG, "en", tmp))])
    write_wav(audio, tmp / "nodur.wav")
    path = out / "nodur.webm"
    seconds = len(audio) / SAMPLE_RATE
    # live WebM into a pipe, as a browser's MediaRecorder writes it: no Duration element, no cues
    video = slide_video("Ohm's Law", ["Recorded in a browser"], tmp)
    proc = subprocess.run(["ffmpeg", "-nostdin", "-v", "error", *video, "-i", str(tmp / "nodur.wav"),
                           "-t", f"{seconds:.3f}", "-vf", "format=yuv420p", "-c:v", "libvpx", "-crf", "40",
                           "-b:v", "0", "-c:a", "libopus", "-b:a", "24k", "-live", "1", "-f", "webm", "pipe:1"],
                          stdout=subprocess.PIPE, check=True)
    path.write_bytes(proc.stdout)
    truth_file(path, "WebM without a Duration element in its header (written to a pipe, as browsers record)",
               {"duration": round(seconds, 2), "status": "kept"}, parts, duration=round(seconds, 3))
    return path


def loop(out: Path, tmp: Path) -> Path:
    audio, parts = joined([("en", LOOP_INTRO, speak(LOOP_INTRO, "en", tmp)),
                           ("en", LOOP_PHRASE, speak(LOOP_PHRASE, "en", tmp, speed=160))])
    write_wav(audio, tmp / "loop.wav")
    path = out / "loop.mp4"
    ffmpeg(*slide_video("Loops", ["A phrase said over and over"], tmp), "-i", str(tmp / "loop.wav"),
           *x264(len(audio) / SAMPLE_RATE), "-c:a", "aac", "-b:a", "32k", "-ac", "1", str(path))
    truth_file(path, "a sentence, then one phrase repeated back to back (a transcript loop)",
               {"status": "rejected", "reason": "repetition", "kept_text": LOOP_INTRO,
                "dropped": "the repeated phrase, reason repetition"}, parts)
    return path


def empty(out: Path, tmp: Path) -> Path:
    path = out / "empty.mp4"
    path.write_bytes(b"")
    truth_file(path, "a 0-byte file (a failed download)", {"status": "error", "reason": "empty"}, [])
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    args = ap.parse_args()
    for tool in ("espeak-ng", "ffmpeg"):
        if not shutil.which(tool):
            raise SystemExit(f"error: {tool} is not installed (apt-get install {tool})")
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp_s:
        for make in (two_tracks, quiet, en_de, nodur, loop, empty):
            print(make(args.out, Path(tmp_s)))


if __name__ == "__main__":
    main()
