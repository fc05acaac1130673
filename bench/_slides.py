"""Generated lecture slides with known titles (issue 20: one-word titles on a title bar were lost
by OCR): a coloured title bar (or none) with the title, a few bullet lines below, at the size of a
480p keyframe. Used by bench/bench_ocr_titles.py and tests/tools/test_ocr.py."""

from __future__ import annotations

from pathlib import Path

ONE_WORD = ("Solids", "Gases", "Acids", "Bases", "Liquids", "Atoms", "Ions", "Metals", "Salts", "Energy",
            "Forces", "Waves", "Cells", "Genes", "Plants", "Rocks", "Fractions", "Vectors", "Matrices",
            "Circuits", "Magnets", "Light", "Sound", "Heat", "Orbits", "Fossils")
MULTI_WORD = ("States of Matter", "The Periodic Table", "Chemical Bonds", "Balancing Equations",
              "Newton's Second Law", "Kinetic Energy", "The Water Cycle", "Plate Tectonics",
              "Adding Fractions", "Prime Numbers", "Ohm's Law", "Cell Division", "Photosynthesis Basics",
              "The Solar System", "Sound Waves in Air", "Conservation of Mass", "Acids and Bases",
              "Reaction Rates", "Electric Fields", "Simple Machines", "Linear Equations",
              "Area of a Circle", "The Human Heart", "Food Chains", "Volcanoes and Earthquakes",
              "Momentum and Impulse", "Density of Solids", "Ideal Gas Law", "Light and Color",
              "The Rock Cycle", "Weather and Climate", "Speed and Velocity", "Genetic Traits",
              "Magnetic Fields", "Energy Transfer", "Fractions to Decimals", "Ratios and Rates",
              "Organic Molecules", "Nuclear Decay", "Heat Transfer", "Static Electricity",
              "Wave Properties", "Atomic Structure", "Ecosystems Today", "Probability Rules")
BODY = ("Particles are packed closely together", "They keep a fixed shape and volume",
        "Examples include ice, iron and wood")
# (bar colour, title colour): dark bars with light titles, light bars with dark titles
BARS = (((31, 56, 100), (255, 255, 255)), ((192, 80, 0), (255, 255, 255)), ((0, 112, 96), (255, 255, 255)),
        ((255, 204, 0), (20, 20, 20)), ((200, 220, 240), (10, 30, 60)), ((120, 30, 60), (250, 240, 200)))
FONTS = Path("/usr/share/fonts/truetype/dejavu")


def slide(title: str, path: Path, variant: int = 0, bar: bool = True, size: tuple[int, int] = (854, 480)) -> Path:
    """One slide as a PNG at ``path``: ``title`` on a title bar (colours and alignment by ``variant``)
    or, with ``bar=False``, in dark bold type at the top of the white slide; three bullet lines below."""
    from PIL import Image, ImageDraw, ImageFont

    w, h = size
    im = Image.new("RGB", size, (255, 255, 255))
    draw = ImageDraw.Draw(im)
    bold = ImageFont.truetype(str(FONTS / "DejaVuSans-Bold.ttf"), round(h * 0.075))
    body = ImageFont.truetype(str(FONTS / "DejaVuSans.ttf"), round(h * 0.045))
    bar_h = round(h * 0.17)
    fill, ink = BARS[variant % len(BARS)] if bar else ((255, 255, 255), (30, 30, 30))
    if bar:
        draw.rectangle((0, 0, w, bar_h), fill=fill)
    box = draw.textbbox((0, 0), title, font=bold)
    x = (w - (box[2] - box[0])) // 2 if variant % 2 else round(w * 0.06)
    draw.text((x, (bar_h - (box[3] - box[1])) // 2 - box[1]), title, font=bold, fill=ink)
    for k, line in enumerate(BODY):
        y = round(h * (0.32 + 0.13 * k))
        draw.ellipse((round(w * 0.07), y + 8, round(w * 0.07) + 10, y + 18), fill=(60, 60, 60))
        draw.text((round(w * 0.1), y), line, font=body, fill=(40, 40, 40))
    path.parent.mkdir(parents=True, exist_ok=True)
    im.save(path)
    return path


def slides(folder: Path, titles: tuple[str, ...] | list[str], bar: bool = True) -> list[tuple[Path, str]]:
    """A slide per title in ``folder`` (bar colours varying): [(png, title)]."""
    return [(slide(t, Path(folder) / f"{'bar' if bar else 'plain'}-{k:03d}.png", k, bar), t)
            for k, t in enumerate(titles)]


def read_title(text: str, title: str) -> bool:
    """Whether OCR ``text`` holds ``title`` as a line of its own or inside one (case, punctuation and
    spacing aside)."""
    norm = lambda s: " ".join("".join(c for c in w if c.isalnum()) for w in s.lower().split())  # noqa: E731
    return any(f" {norm(title)} " in f" {norm(line)} " for line in text.splitlines())
