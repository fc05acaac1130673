import json
import re

import numpy as np
import pytest

from pipeline.textnorm import wer
from tests.conftest import ROOT, truth
from tools import asr, media


@pytest.fixture(scope="module")
def transcriber():
    return asr.Transcriber()


def test_offline_model_is_verified():
    path = asr.offline_model_path()
    assert (path / "model.bin").stat().st_size == asr.OFFLINE_SIZE
    assert asr.sha256_file(path / "model.bin") == asr.OFFLINE_SHA256
    assert (path / "tokenizer.json").is_file()


@pytest.mark.slow
@pytest.mark.parametrize("name", ["physics_newton", "chemistry_atoms"])
def test_transcript_wer(lessons, transcriber, name):
    result = transcriber.transcribe(media.extract_audio(lessons / f"{name}.mp4"), languages=("en",))
    assert result.language == "en" and result.language_probability > 0.5
    error = wer(truth(name)["narration"], result.text)
    assert error <= 0.15, f"WER {error:.3f}: {result.text}"
    words = [w for s in result.segments for w in s.words]
    assert words and all(0 <= w.start <= w.end <= result.duration + 0.5 for w in words)
    assert result.model == asr.OFFLINE_MODEL
    assert result.options["beam_size"] == transcriber.options.beam_size
    assert result.options["compute_type"] == "int8"


def test_foreign_language_stops_after_detection(lessons, transcriber):
    result = transcriber.transcribe(media.extract_audio(lessons / "math_primos_es.mp4"), languages=("en",))
    assert result.language == "es"
    assert result.stopped == "language" and result.segments == []


def test_quiet_tone_is_silent(lessons, transcriber):
    result = transcriber.transcribe(media.extract_audio(lessons / "math_quiet_tone.mp4"), min_speech_seconds=1.0)
    assert result.stopped == "silent"
    assert result.speech_duration < 1.0


@pytest.mark.slow
def test_unbatched_beam_path(lessons):
    tr = asr.Transcriber(asr.AsrOptions(batch_size=1, beam_size=5, word_timestamps=False))
    result = tr.transcribe(lessons / "chemistry_atoms.mp4")
    assert wer(truth("chemistry_atoms")["narration"], result.text) <= 0.15
    assert all(not s.words for s in result.segments)


def test_wer_normalizes_numbers():
    assert wer("a mass of two kilograms and ninety", "A mass of 2 kilograms and 90.") == 0.0
    assert wer("one two three four", "one two four") == 0.25


# -- real media conditions (tests/data/conditions_audio, examples/make_conditions_audio.py) ----------
CONDITIONS = ROOT / "tests" / "data" / "conditions_audio"
GERMAN = {"willkommen", "lektion", "elektrizität", "ohmsche", "gesetz", "spannung", "widerstand", "strom"}


def _parts(name: str) -> list[dict]:
    return json.loads((CONDITIONS / f"{name}.truth.json").read_text())["parts"]


@pytest.mark.slow
def test_english_then_german_gives_english_text_for_the_english_part_only(transcriber):
    en, de = _parts("en_de.mp4")
    result = transcriber.transcribe(media.extract_audio(CONDITIONS / "en_de.mp4"), languages=("en",))
    assert result.stopped is None and result.language == "en"
    assert result.segments and all(s.language == "en" for s in result.segments)
    assert en["start"] - 1.0 <= result.segments[0].start and result.segments[-1].end <= en["end"] + 1.0
    text = result.text.lower()
    # the German part says the same as the English one: decoded as English, it would say it twice
    assert text.count("welcome") == 1 and text.count("voltage") == 1, text
    assert not set(re.findall(r"\w+", text)) & GERMAN
    assert wer(en["text"], result.text) <= 0.3, result.text
    german = [w for w in result.windows if w.start >= de["start"] - 1.0]
    assert german and not any(w.decoded for w in german) and all(w.language != "en" for w in german)
    assert sum(w.speech for w in german) >= 0.8 * (de["end"] - de["start"])
    assert any(w.level == 1 for w in result.windows)  # the switch lies inside the one 30 s chunk
    assert result.language_seconds()["en"] == pytest.approx(en["end"] - en["start"], abs=1.5)


@pytest.fixture(scope="module")
def keeping_transcriber():
    return asr.Transcriber(asr.AsrOptions(foreign="keep"))


@pytest.mark.slow
@pytest.mark.parametrize("wanted, keep", [(("en", "de"), False), (("en",), True)])
def test_german_is_kept_as_german_when_wanted(transcriber, keeping_transcriber, wanted, keep):
    en, de = _parts("en_de.mp4")
    model = keeping_transcriber if keep else transcriber
    result = model.transcribe(media.extract_audio(CONDITIONS / "en_de.mp4"), languages=wanted)
    english = [s for s in result.segments if s.language == "en"]
    german = [s for s in result.segments if s.language == "de"]
    assert english and german and len(english) + len(german) == len(result.segments)
    assert english[-1].end <= en["end"] + 1.0 and german[0].start >= de["start"] - 1.0
    said = set(re.findall(r"\w+", " ".join(s.text for s in german).lower()))
    assert len(said & set(re.findall(r"\w+", de["text"].lower()))) >= 5, said  # German words, as German
    assert not said & {"welcome", "lesson", "voltage", "current", "resistance", "equals"}, said


@pytest.mark.slow
def test_quiet_narration_is_kept_as_english_once_normalized(transcriber):
    (part,) = _parts("quiet.mp4")
    raw = media.extract_audio(CONDITIONS / "quiet.mp4")
    louder, applied = media.normalize_audio(raw)
    assert applied.method == "denoise+gain"
    before = transcriber.transcribe(raw, languages=("en",))
    after = transcriber.transcribe(louder, languages=("en",))
    assert not (before.language == "en" and before.language_probability >= 0.5)  # the condition: lost as is
    assert after.stopped is None and after.language == "en" and after.language_probability >= 0.5
    assert wer(part["text"], after.text) <= 0.5, after.text


@pytest.mark.slow
def test_a_spoken_loop_is_dropped_with_its_reason(transcriber):
    intro, loop = _parts("loop.mp4")
    result = transcriber.transcribe(media.extract_audio(CONDITIONS / "loop.mp4"), languages=("en",))
    assert result.dropped and all(s.drop_reason == "repetition" for s in result.dropped)
    looped = sum(s.end - s.start for s in result.dropped)
    assert looped >= 0.6 * (loop["end"] - loop["start"])
    assert all(s.start >= intro["end"] - 1.0 for s in result.dropped)
    assert "and so on and so on" not in result.text.lower().replace(",", "")
    assert wer(intro["text"], result.segments[0].text) <= 0.3


def _seg(text: str, start: float = 0.0, words: list[str] | None = None) -> asr.Segment:
    ws = [asr.Word(start + i, start + i + 0.9, w, 0.9) for i, w in enumerate(words or [])]
    return asr.Segment(start, start + max(1, len(ws)), text, words=ws, language="en")


@pytest.mark.parametrize("text, loops", [
    ("1.1.1.1.1.1.1.1.1.1.1.1.1", True),
    ("Thank you. Thank you. Thank you. Thank you. Thank you.", True),
    ("and so on, and so on, and so on, and so on", True),
    ("I'm going to go ahead and do that. " * 4, True),
    ("ha ha ha ha", False),  # short: laughter, not a loop
    ("one, two, three, four, five, six, seven", False),
    ("no, no, no", False),
    ("The force equals mass times acceleration, and the mass is two kilograms.", False),
])
def test_find_loops(text, loops):
    assert bool(asr.find_loops(text)) == loops


def test_split_loops_cuts_the_looping_words_out():
    words = [" Welcome", " to", " the", " lesson."] + [" and", " so", " on,"] * 6 + [" Bye."]
    seg = _seg("".join(words).strip(), 0.0, words)
    kept, dropped = asr.split_loops(seg)
    assert [s.text for s in kept] == ["Welcome to the lesson.", "Bye."]
    assert len(dropped) == 1 and dropped[0].drop_reason == "repetition"
    assert dropped[0].text.startswith("and so on") and dropped[0].start == 4.0 and dropped[0].end == 21.9
    whole, nothing = asr.split_loops(_seg("A plain sentence about atoms.", 0.0, [" A", " plain", " sentence."]))
    assert len(whole) == 1 and nothing == []
    no_words = asr.split_loops(_seg("1.1.1.1.1.1.1.1.1.1.1.1"))
    assert no_words[0] == [] and no_words[1][0].drop_reason == "repetition"


def test_the_same_segment_three_times_is_a_loop():
    segs = [_seg("Welcome."), _seg("Thank you.", 1), _seg("Thank you.", 2), _seg("thank you", 3), _seg("Next.", 4)]
    dropped: list = []
    kept = asr._drop_repeated_segments(segs, dropped)
    assert [s.text for s in kept] == ["Welcome.", "Thank you.", "Next."]
    assert [(s.start, s.drop_reason) for s in dropped] == [(2, "repetition"), (3, "repetition")]
    twice = [_seg("Yes.", 0), _seg("Yes.", 1)]
    assert asr._drop_repeated_segments(twice, []) == twice


def test_speech_is_cut_at_span_bounds_then_at_the_quietest_point():
    speech = np.ones(16000 * 70, np.float32)
    speech[16000 * 39 + 8000: 16000 * 39 + 8320] = 0.0  # a quiet 20 ms in the last second of the piece
    pieces = asr._pack(speech, [0, 16000 * 10, 16000 * 70], 16000 * 30)
    assert pieces[0] == (0, 16000 * 10)  # a span bound within reach
    assert pieces[1] == (16000 * 10, 16000 * 39 + 8000 + 160)  # no bound within reach: the quiet point
    assert pieces[-1][1] == 16000 * 70 and all(a[1] == b[0] for a, b in zip(pieces, pieces[1:], strict=False))


@pytest.mark.parametrize("probs, prior, expected", [
    ({"nl": 0.76, "en": 0.18, "de": 0.06}, "en", "en"),  # accented English in a recorded lecture
    ({"de": 0.999, "en": 0.001}, "en", "de"),            # a real switch to German
    ({"en": 0.51, "nl": 0.46}, "en", "en"),
    ({"nl": 0.76, "en": 0.24}, None, "nl"),              # no prior: the piece's own top language
])
def test_a_piece_changes_language_only_when_confident(probs, prior, expected):
    assert asr.assign_language(probs, prior, asr.AsrOptions().language_switch)[0] == expected


def test_cpu_threads_follow_omp_num_threads(monkeypatch):
    """A Ray actor declaring 1 CPU gets OMP_NUM_THREADS=1 from Ray: whisper runs 1 thread there, not one per
    core of the node; unset (or not a number), all cores."""
    import os

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert asr.cpu_threads() == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert asr.cpu_threads() == 3
    monkeypatch.setenv("OMP_NUM_THREADS", "")
    assert asr.cpu_threads() == os.cpu_count()
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert asr.cpu_threads() == os.cpu_count()
