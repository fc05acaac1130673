import pytest

from pipeline.textnorm import wer
from tests.conftest import truth
from tools import asr, media


@pytest.fixture(scope="module")
def transcriber():
    return asr.Transcriber()


def test_offline_model_is_verified():
    path = asr.offline_model_path()
    assert (path / "model.bin").stat().st_size == asr.OFFLINE_SIZE
    assert asr.sha256_file(path / "model.bin") == asr.OFFLINE_SHA256
    assert (path / "tokenizer.json").is_file()


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


def test_unbatched_beam_path(lessons):
    tr = asr.Transcriber(asr.AsrOptions(batch_size=1, beam_size=5, word_timestamps=False))
    result = tr.transcribe(lessons / "chemistry_atoms.mp4")
    assert wer(truth("chemistry_atoms")["narration"], result.text) <= 0.15
    assert all(not s.words for s in result.segments)


def test_wer_normalizes_numbers():
    assert wer("a mass of two kilograms and ninety", "A mass of 2 kilograms and 90.") == 0.0
    assert wer("one two three four", "one two four") == 0.25
