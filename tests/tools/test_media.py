import numpy as np
import pytest

from tools import media
from tools.errors import ToolError


def test_probe_reads_streams(lessons):
    info = media.probe(lessons / "physics_newton.mp4")
    assert info.has_video and info.has_audio
    assert (info.width, info.height) == (854, 480)
    assert abs(info.fps - 25) < 0.01
    assert 40 < info.duration < 60


def test_probe_video_without_audio(lessons):
    info = media.probe(lessons / "earth_no_audio.mp4")
    assert info.has_video and not info.has_audio


def test_truncated_file_is_corrupt(lessons):
    with pytest.raises(ToolError) as err:
        media.probe(lessons / "physics_truncated.mp4")
    assert err.value.kind == "corrupt"


def test_text_file_named_mp4_is_corrupt(tmp_path):
    fake = tmp_path / "notes.mp4"
    fake.write_text("not a video\n")
    with pytest.raises(ToolError) as err:
        media.probe(fake)
    assert err.value.kind == "corrupt"


def test_extract_audio_16k_mono(lessons):
    audio = media.extract_audio(lessons / "chemistry_atoms.mp4")
    assert audio.dtype == np.float32
    assert abs(len(audio) / 16000 - media.probe(lessons / "chemistry_atoms.mp4").duration) < 0.2
    assert np.abs(audio).max() > 0.05


def test_extract_audio_without_track(lessons):
    with pytest.raises(ToolError) as err:
        media.extract_audio(lessons / "earth_no_audio.mp4")
    assert err.value.kind == "no-audio"


def test_read_frames_at_rate(lessons):
    frames = list(media.read_frames(lessons / "earth_no_audio.mp4", rate=1.0, width=160, fmt="gray"))
    assert 13 <= len(frames) <= 15
    assert frames[0][1].shape == (90, 160)
