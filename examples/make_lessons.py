"""Render small narrated lesson videos with known ground truth.

Each lesson is a list of slides (title, bullet lines, optional formula or diagram)
and a narration per slide. Slides are drawn with Pillow, narration is spoken by
espeak-ng, and ffmpeg muxes both with libx264's default settings (scene-cut
keyframes, 10 s maximum GOP), as a screen recording of slides would be.

Beside each ``NAME.mp4`` it writes ``NAME.json`` (sidecar metadata the pipeline
reads: subject, knowledge point, title) and ``NAME.truth.json`` (slide times,
slide text, narration) for tests and benchmarks.

    python examples/make_lessons.py tests/data/lessons --set tests
    python examples/make_lessons.py examples/lessons --set examples
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import tempfile
import wave
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

WIDTH, HEIGHT, FPS = 854, 480, 25
SAMPLE_RATE = 22050
LEAD_IN, PAUSE = 0.6, 0.8


@dataclass
class Slide:
    title: str
    lines: list[str] = field(default_factory=list)
    formula: str | None = None
    diagram: str | None = None  # "forces" | "atom" | "cycle"
    narration: str = ""
    seconds: float | None = None  # fixed length for lessons without speech


@dataclass
class Lesson:
    name: str
    subject: str
    knowledge_point: str
    title: str
    slides: list[Slide]
    voice: str = "en"
    audio: str = "speech"  # "speech" | "tone" | "none"
    truncate: float | None = None  # keep this fraction of the file's bytes


def _font(size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=size)


def render_slide(slide: Slide, path: Path) -> None:
    img = Image.new("RGB", (WIDTH, HEIGHT), (250, 250, 245))
    d = ImageDraw.Draw(img)
    d.rectangle([0, 0, WIDTH, 78], fill=(32, 64, 128))
    d.text((36, 16), slide.title, font=_font(44), fill=(255, 255, 255))
    y = 112
    for line in slide.lines:
        d.ellipse([40, y + 12, 52, y + 24], fill=(32, 64, 128))
        d.text((68, y), line, font=_font(32), fill=(20, 20, 20))
        y += 52
    if slide.formula:
        d.rectangle([60, y + 10, WIDTH - 60, y + 86], outline=(180, 40, 40), width=3)
        d.text((96, y + 26), slide.formula, font=_font(40), fill=(180, 40, 40))
        y += 100
    if slide.diagram == "forces":
        cx, cy = WIDTH // 2, max(y + 70, 360)
        d.rectangle([cx - 60, cy - 40, cx + 60, cy + 40], fill=(90, 160, 90))
        d.line([cx + 60, cy, cx + 220, cy], fill=(200, 0, 0), width=6)
        d.polygon([(cx + 220, cy - 14), (cx + 250, cy), (cx + 220, cy + 14)], fill=(200, 0, 0))
        d.line([cx - 60, cy, cx - 220, cy], fill=(0, 0, 200), width=6)
        d.polygon([(cx - 220, cy - 14), (cx - 250, cy), (cx - 220, cy + 14)], fill=(0, 0, 200))
    elif slide.diagram == "atom":
        cx, cy = WIDTH - 180, 300
        d.ellipse([cx - 130, cy - 70, cx + 130, cy + 70], outline=(60, 60, 160), width=3)
        d.ellipse([cx - 22, cy - 22, cx + 22, cy + 22], fill=(200, 60, 60))
        for ex, ey in ((cx + 130, cy), (cx - 130, cy)):
            d.ellipse([ex - 9, ey - 9, ex + 9, ey + 9], fill=(40, 40, 200))
    elif slide.diagram == "cycle":
        cx, cy = WIDTH - 200, 330
        d.ellipse([cx - 110, cy - 110, cx + 110, cy + 110], outline=(30, 120, 200), width=8)
        d.polygon([(cx + 96, cy - 20), (cx + 126, cy - 20), (cx + 111, cy + 8)], fill=(30, 120, 200))
    img.save(path)


def speak(text: str, voice: str, path: Path) -> np.ndarray:
    subprocess.run(["espeak-ng", "-v", voice, "-s", "150", "-w", str(path), text], check=True)
    with wave.open(str(path)) as w:
        if w.getframerate() != SAMPLE_RATE:
            raise RuntimeError(f"espeak-ng wrote {w.getframerate()} Hz, expected {SAMPLE_RATE}")
        return np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16)


def build(lesson: Lesson, out_dir: Path) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        audio_parts: list[np.ndarray] = [np.zeros(int(LEAD_IN * SAMPLE_RATE), np.int16)]
        t = 0.0
        truth = []
        concat = []
        for i, slide in enumerate(lesson.slides):
            png = tmp / f"slide{i}.png"
            render_slide(slide, png)
            if lesson.audio == "speech":
                speech = speak(slide.narration, lesson.voice, tmp / f"n{i}.wav")
                dur = len(speech) / SAMPLE_RATE + PAUSE + (LEAD_IN if i == 0 else 0.0)
                audio_parts += [speech, np.zeros(int(PAUSE * SAMPLE_RATE), np.int16)]
            else:
                dur = slide.seconds or 5.0
            # slides change on frame boundaries
            dur = round(dur * FPS) / FPS
            truth.append({"index": i, "start": round(t, 3), "end": round(t + dur, 3),
                          "title": slide.title, "lines": slide.lines, "formula": slide.formula,
                          "narration": slide.narration})
            concat.append(f"file '{png}'\nduration {dur:.3f}\n")
            t += dur
        concat.append(f"file '{tmp / f'slide{len(lesson.slides) - 1}.png'}'\n")
        (tmp / "list.txt").write_text("".join(concat))
        total = t
        cmd = ["ffmpeg", "-v", "error", "-y", "-f", "concat", "-safe", "0", "-i", str(tmp / "list.txt")]
        if lesson.audio == "speech":
            audio = np.concatenate(audio_parts)
            audio = np.pad(audio, (0, max(0, int(total * SAMPLE_RATE) - len(audio))))
            with wave.open(str(tmp / "audio.wav"), "wb") as w:
                w.setnchannels(1)
                w.setsampwidth(2)
                w.setframerate(SAMPLE_RATE)
                w.writeframes(audio.tobytes())
            cmd += ["-i", str(tmp / "audio.wav")]
        elif lesson.audio == "tone":
            cmd += ["-f", "lavfi", "-i", f"sine=frequency=220:sample_rate={SAMPLE_RATE}:duration={total}"]
        cmd += ["-t", f"{total:.3f}", "-vf", f"fps={FPS},format=yuv420p", "-c:v", "libx264",
                "-crf", "30", "-preset", "medium"]
        if lesson.audio == "tone":
            cmd += ["-af", "volume=0.01", "-c:a", "aac", "-b:a", "24k", "-ac", "1"]
        elif lesson.audio == "speech":
            cmd += ["-c:a", "aac", "-b:a", "32k", "-ac", "1"]
        video = out_dir / f"{lesson.name}.mp4"
        subprocess.run([*cmd, str(video)], check=True)
    if lesson.truncate:
        data = video.read_bytes()
        video.write_bytes(data[: int(len(data) * lesson.truncate)])
    meta = {"title": lesson.title, "subject": lesson.subject, "knowledge_point": lesson.knowledge_point,
            "language": lesson.voice.split("-")[0]}
    (out_dir / f"{lesson.name}.json").write_text(json.dumps(meta, indent=2) + "\n")
    narration = " ".join(s.narration for s in lesson.slides if s.narration)
    (out_dir / f"{lesson.name}.truth.json").write_text(json.dumps(
        {"name": lesson.name, "duration": round(total, 3), "audio": lesson.audio, "voice": lesson.voice,
         "truncated": bool(lesson.truncate), "slides": truth, "narration": narration,
         "spec": asdict(lesson)}, indent=2) + "\n")
    return video


S = Slide
TEST_LESSONS = [
    Lesson("physics_newton", "physics", "Newton's laws of motion", "Newton's Laws of Motion", [
        S("Newton's Laws of Motion", ["Physics for middle school", "Force, mass and acceleration"],
          narration="Welcome to this physics lesson. Today we study the three laws of motion "
                    "that Isaac Newton described."),
        S("The First Law", ["An object at rest stays at rest", "A moving object keeps moving"],
          narration="The first law says that an object at rest stays at rest, and a moving object "
                    "keeps moving in a straight line, unless a force acts on it."),
        S("The Second Law", ["Force depends on mass and acceleration"], formula="F = m x a",
          narration="The second law says that force equals mass times acceleration. "
                    "A heavier object needs a larger force to speed up."),
        S("Worked Example", ["A cart has a mass of 2 kg", "It speeds up at 3 m/s2"],
          narration="Let us try an example. A cart has a mass of two kilograms, and it speeds up "
                    "at three meters per second squared."),
        S("Worked Example", ["A cart has a mass of 2 kg", "It speeds up at 3 m/s2", "Force = 6 newtons"],
          narration="We multiply the mass by the acceleration. Two times three gives a force of "
                    "six newtons."),
        S("The Third Law", ["Every action has an equal", "and opposite reaction"], diagram="forces",
          narration="The third law says that for every action there is an equal and opposite "
                    "reaction. When you push a wall, the wall pushes back on you."),
    ]),
    Lesson("chemistry_atoms", "chemistry", "structure of the atom", "Atoms and Molecules", [
        S("Atoms and Elements", ["All matter is made of atoms", "An element has one kind of atom"],
          narration="In chemistry, all matter is made of tiny particles called atoms. An element "
                    "contains only one kind of atom."),
        S("Inside the Atom", ["Protons and neutrons in the nucleus", "Electrons move around it"],
          diagram="atom",
          narration="Every atom has a nucleus with protons and neutrons. Electrons move around "
                    "the nucleus in shells."),
        S("Chemical Formulas", ["Atoms join to form molecules"], formula="2 H2 + O2 -> 2 H2O",
          narration="Atoms join together to form molecules. Two molecules of hydrogen react "
                    "with one molecule of oxygen to make two molecules of water."),
        S("Summary", ["Atoms build elements", "Molecules are groups of atoms"],
          narration="To summarize, atoms build elements, and molecules are groups of atoms held "
                    "together by chemical bonds."),
    ]),
    Lesson("math_quiet_tone", "mathematics", "counting", "Counting Quietly", [
        S("Counting to Ten", ["One, two, three"], seconds=6.0),
        S("Counting Backwards", ["Ten, nine, eight"], seconds=6.0),
        S("Practice", ["Count the apples"], seconds=6.0),
    ], audio="tone"),
    Lesson("math_primos_es", "mathematics", "prime numbers", "Los numeros primos", [
        S("Los numeros primos", ["Un primo tiene dos divisores"],
          narration="Hola a todos. Hoy vamos a estudiar los numeros primos. Un numero primo solo "
                    "se puede dividir entre uno y entre si mismo."),
        S("Ejemplos", ["Dos, tres, cinco y siete"],
          narration="Por ejemplo, dos, tres, cinco y siete son numeros primos. El numero nueve no "
                    "es primo, porque se puede dividir entre tres."),
    ], voice="es"),
    Lesson("earth_no_audio", "earth science", "rocks", "Types of Rocks", [
        S("Types of Rocks", ["Igneous, sedimentary, metamorphic"], seconds=7.0),
        S("Igneous Rocks", ["Formed from cooled magma"], seconds=7.0),
    ], audio="none"),
    Lesson("physics_truncated", "physics", "energy", "Energy", [
        S("Kinetic Energy", ["Energy of motion"], seconds=8.0),
        S("Potential Energy", ["Stored energy"], seconds=8.0),
    ], audio="tone", truncate=0.4),
]

EXAMPLE_LESSONS = [
    Lesson("earth_water_cycle", "earth science", "the water cycle", "The Water Cycle", [
        S("The Water Cycle", ["Water moves between land, sea and sky"], diagram="cycle",
          narration="Welcome to earth science. In this lesson we follow water as it moves between "
                    "the land, the sea, and the sky."),
        S("Evaporation", ["The sun heats water", "Water turns into vapor"],
          narration="First comes evaporation. The sun heats water in oceans and lakes, and the "
                    "water turns into an invisible gas called water vapor."),
        S("Condensation", ["Vapor cools in the air", "Tiny droplets form clouds"],
          narration="Next, the vapor rises and cools. It condenses into tiny droplets, and the "
                    "droplets gather into clouds."),
        S("Precipitation", ["Droplets join and fall", "Rain, snow, sleet and hail"],
          narration="When the droplets grow heavy, they fall as precipitation: rain, snow, sleet "
                    "or hail. Then the cycle starts again."),
    ]),
    Lesson("math_fractions", "mathematics", "adding fractions", "Adding Fractions", [
        S("Adding Fractions", ["Same denominator: add the numerators"],
          narration="In this mathematics lesson we learn how to add fractions. When two fractions "
                    "have the same denominator, we add the numerators."),
        S("Example", ["One quarter plus two quarters"], formula="1/4 + 2/4 = 3/4",
          narration="For example, one quarter plus two quarters equals three quarters. The "
                    "denominator stays the same."),
        S("Different Denominators", ["Find a common denominator first"], formula="1/2 + 1/3 = 5/6",
          narration="If the denominators are different, first find a common denominator. One half "
                    "is three sixths, one third is two sixths, so the sum is five sixths."),
    ]),
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--set", choices=["tests", "examples"], default="tests")
    args = ap.parse_args()
    for tool in ("espeak-ng", "ffmpeg"):
        if not shutil.which(tool):
            raise SystemExit(f"error: {tool} is not installed (apt-get install {tool})")
    lessons = TEST_LESSONS if args.set == "tests" else EXAMPLE_LESSONS
    for lesson in lessons:
        print(build(lesson, args.out))


if __name__ == "__main__":
    main()
