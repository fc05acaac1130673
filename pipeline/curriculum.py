"""Easy-to-difficult order (PAPER.md: continual pretraining organised by the difficulty of knowledge points).

A video's difficulty is its knowledge point's: a grade level or a rank, lower is easier, stored on the video
(``videos.difficulty``) and carried in each sample position's metadata. A sample's difficulty is the largest
of its videos' (a concatenated sample is no easier than its hardest part), so an export in curriculum order
never shows a sample harder than the ones after it. Samples of unknown difficulty come last.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Iterable

log = logging.getLogger(__name__)

ORDERS = ("file", "curriculum")
_WORDS = {"easy": 1.0, "beginner": 1.0, "introductory": 1.0, "elementary": 1.0, "basic": 1.0,
          "medium": 2.0, "intermediate": 2.0,
          "hard": 3.0, "difficult": 3.0, "advanced": 3.0}
_NUMBER = re.compile(r"[-+]?\d+(?:\.\d+)?")


def parse_difficulty(value: object) -> float | None:
    """A difficulty as a number (lower is easier), or None.

    Accepts a number (a rank or grade level), a string holding one ("7", "grade 7", "level 2"), or one word of
    a three-step scale (easy/beginner/introductory/elementary/basic = 1, medium/intermediate = 2,
    hard/difficult/advanced = 3). Anything else (and NaN) is None, with a warning.
    """
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, str):
        text = value.strip().lower()
        if not text:
            return None
        if text in _WORDS:
            return _WORDS[text]
        m = _NUMBER.search(text)
        if m:
            return float(m.group(0))
    log.warning("difficulty %r is neither a number nor easy/medium/hard: left unknown", value)
    return None


def sample_difficulty(sample: dict) -> float | None:
    """The largest difficulty named in a sample's metadata (any position), or None."""
    found = [m.get("difficulty") for m in sample.get("metadata") or [] if isinstance(m, dict)]
    numbers = [d for d in found if isinstance(d, int | float) and not isinstance(d, bool)]
    return max(numbers) if numbers else None


def curriculum_order(samples: Iterable[dict]) -> list[dict]:
    """Samples easy to difficult; a stable sort, so equal difficulties keep their pack order; unknown last."""
    def key(item: tuple[int, dict]) -> tuple[bool, float, int]:
        d = sample_difficulty(item[1])
        return d is None, d if d is not None else 0.0, item[0]

    return [s for _, s in sorted(enumerate(samples), key=key)]
