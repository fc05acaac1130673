import json
import struct
import subprocess

import numpy as np
import pytest

from tests.conftest import ROOT
from tools import media
from tools.errors import PERMANENT_KINDS, ToolError


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


# -- real media conditions (tests/data/conditions_audio, examples/make_conditions_audio.py) ----------
CONDITIONS = ROOT / "tests" / "data" / "conditions_audio"


def _truth(name: str) -> dict:
    return json.loads((CONDITIONS / f"{name}.truth.json").read_text())


def test_empty_file_is_its_own_error():
    with pytest.raises(ToolError) as err:
        media.probe(CONDITIONS / "empty.mp4")
    assert err.value.kind == "empty"
    assert "empty" in str(err.value) and "empty.mp4" in str(err.value)
    assert err.value.kind in PERMANENT_KINDS


def test_duration_measured_when_the_header_has_none():
    fmt = json.loads(subprocess.run(["ffprobe", "-v", "error", "-print_format", "json", "-show_format",
                                     str(CONDITIONS / "nodur.webm")], capture_output=True, text=True).stdout)
    assert "duration" not in fmt["format"]  # the condition: no duration in the header
    info = media.probe(CONDITIONS / "nodur.webm")
    assert info.duration_source == "measured"
    assert abs(info.duration - _truth("nodur.webm")["duration"]) < 0.3
    assert info.start_time == pytest.approx(-0.003, abs=0.01)  # Opus pre-skip: the container starts before 0


def test_duration_from_stream_tags(tmp_path):
    # Matroska keeps a DURATION tag per stream; a header without Duration falls back to it
    src = tmp_path / "tagged.mkv"
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "color=c=blue:s=64x48:d=3", "-c:v", "libx264",
                    str(src)], check=True)
    info = media.probe(src)
    assert info.duration_source == "format" and abs(info.duration - 3.0) < 0.1
    assert media._tag_seconds({"DURATION": "00:01:00.013000000"}) == pytest.approx(60.013)
    assert media._tag_seconds({"duration": "garbage"}) is None


def test_audio_streams_with_language_and_default():
    info = media.probe(CONDITIONS / "two_tracks.mkv")
    streams = info.audio_streams
    assert [(s.position, s.language, s.default) for s in streams] == [(0, "es", False), (1, "en", True)]
    assert streams[0].title == "Spanish (dubbed)" and streams[1].codec == "opus" and streams[1].channels == 1
    assert info.audio_codec == "opus"


def test_track_choice_follows_language_then_default():
    streams = media.probe(CONDITIONS / "two_tracks.mkv").audio_streams
    assert media.choose_audio_track(streams, "auto", ("en",)) == media.TrackChoice(streams[1], "language")
    assert media.choose_audio_track(streams, "auto", ("es",)) == media.TrackChoice(streams[0], "language")
    assert media.choose_audio_track(streams, "auto", ("fr",)) == media.TrackChoice(streams[1], "default")
    assert media.choose_audio_track(streams, "auto", ()) == media.TrackChoice(streams[1], "default")
    assert media.choose_audio_track(streams, "first").stream == streams[0]
    assert media.choose_audio_track(streams, "0") == media.TrackChoice(streams[0], "asked")
    for bad in ("7", "spanish"):
        with pytest.raises(ToolError) as err:
            media.choose_audio_track(streams, bad)
        assert err.value.kind == "unsupported"


def test_track_choice_avoids_commentary_and_audio_description():
    main = media.AudioStream(1, 0, language="en", dispositions=())
    comment = media.AudioStream(2, 1, language="en", dispositions=("comment", "default"))
    described = media.AudioStream(3, 2, language="en", dispositions=("visual_impaired",))
    dub = media.AudioStream(4, 3, language="en", dispositions=("dub",))
    assert media.choose_audio_track([comment, described, main], "auto", ("en",)).stream == main
    assert media.choose_audio_track([dub, main], "auto", ("en",)).stream == main
    assert media.choose_audio_track([comment, main], "auto", ()) == media.TrackChoice(main, "first")
    with pytest.raises(ToolError) as err:
        media.choose_audio_track([])
    assert err.value.kind == "no-audio"


@pytest.mark.parametrize("tag, code", [("eng", "en"), ("ger", "de"), ("deu", "de"), ("spa", "es"), ("fre", "fr"),
                                       ("pt-BR", "pt"), ("nob", "no"), ("und", ""), ("", ""), (None, ""),
                                       ("zzzz", ""), ("English", "")])
def test_language_tags_as_whisper_codes(tag, code):
    assert media.language_code(tag) == code


def _rotate_mp4(path, matrix: tuple[int, ...]) -> None:
    """Write a display matrix into an MP4's track header, as phones do (ffmpeg 5 cannot set one)."""
    data = bytearray(path.read_bytes())
    at = data.find(b"tkhd")
    version = data[at + 4]
    offset = at + 8 + (32 if version == 1 else 20) + 16  # past the times, ids, layer and volume
    data[offset:offset + 36] = struct.pack(">9i", *matrix)
    path.write_bytes(bytes(data))


def test_rotation_and_pixel_aspect_give_the_display_size(tmp_path):
    rotated = tmp_path / "phone.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "color=c=red:s=64x48:d=1", "-c:v", "libx264",
                    str(rotated)], check=True)
    _rotate_mp4(rotated, (0, 65536, 0, -65536, 0, 0, 0, 0, 1 << 30))  # stored landscape, shown turned 90 cw
    info = media.probe(rotated)
    assert (info.width, info.height, info.rotation) == (64, 48, 90)
    assert (info.display_width, info.display_height) == (48, 64)
    wide = tmp_path / "dv.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "color=c=red:s=720x576:d=1", "-vf", "setsar=64/45",
                    "-c:v", "libx264", str(wide)], check=True)
    info = media.probe(wide)
    assert info.rotation == 0 and info.sample_aspect_ratio == pytest.approx(64 / 45, abs=1e-4)
    assert (info.display_width, info.display_height) == (1024, 576)


def test_normalization_raises_a_quiet_level_without_shifting_time():
    quiet = media.extract_audio(CONDITIONS / "quiet.mp4")
    peak, floor = media.audio_levels(quiet)
    assert -37 < peak < -31 and -72 < floor < -60  # the condition: -34 dBFS peak over a -66 dBFS floor
    louder, applied = media.normalize_audio(quiet)
    assert applied.method == "denoise+gain" and applied.gain_db > 25 and "afftdn" in applied.filter
    assert len(louder) == len(quiet) and louder.dtype == np.float32
    assert media.audio_levels(louder)[0] == pytest.approx(-3.0, abs=1.0)
    a, b = quiet[16000:64000], louder[16000:64000]  # the same speech at the same samples
    lag = int(np.argmax(np.correlate(b, a, "full"))) - (len(a) - 1)
    assert lag == 0
    plain, applied = media.normalize_audio(quiet, media.AudioOptions(denoise=False))
    assert applied.method == "gain" and media.audio_levels(plain)[0] == pytest.approx(-3.0, abs=0.5)


def test_normal_level_is_left_alone(lessons):
    audio = media.extract_audio(lessons / "physics_newton.mp4")
    same, applied = media.normalize_audio(audio)
    assert applied.method == "none" and applied.gain_db == 0 and same is audio
    assert media.normalize_audio(audio, media.AudioOptions(normalize="off"))[1].method == "none"
    forced = media.normalize_audio(audio, media.AudioOptions(normalize="always"))[1]
    assert forced.method != "none"


def test_extract_audio_takes_the_asked_stream():
    streams = media.probe(CONDITIONS / "two_tracks.mkv").audio_streams
    spanish = media.extract_audio(CONDITIONS / "two_tracks.mkv", stream=streams[0].index)
    english = media.extract_audio(CONDITIONS / "two_tracks.mkv", stream=streams[1].index)
    first = media.extract_audio(CONDITIONS / "two_tracks.mkv")
    assert np.array_equal(first, spanish) and not np.array_equal(english, spanish)
    with pytest.raises(ToolError) as err:
        media.extract_audio(CONDITIONS / "two_tracks.mkv", stream=9)
    assert err.value.kind == "no-audio"


def _faststart_lesson(path, seconds: float = 60.0):
    """A generated lesson-sized MP4 with its index (moov) written first, as a streamed download has it:
    320x240 test pattern at 10 fps (a keyframe every 2 s) and a 440 Hz tone."""
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", f"testsrc=size=320x240:rate=10:duration={seconds}",
                    "-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=16000:duration={seconds}",
                    "-c:v", "libx264", "-g", "20", "-pix_fmt", "yuv420p", "-c:a", "aac", "-movflags", "+faststart",
                    str(path)], check=True)
    return path


def _cut(src, dst, share: float):
    data = src.read_bytes()
    dst.write_bytes(data[:int(len(data) * share)])
    return dst


def _last_whole_packet_end(full, size: int) -> float:
    """Where the packets of ``full`` whose bytes all lie in its first ``size`` bytes end (seconds, media
    clock): what a copy cut there holds whole (ffprobe, on the complete file's index)."""
    out = subprocess.run(["ffprobe", "-v", "quiet", "-show_entries", "packet=pts_time,duration_time,pos,size",
                          "-of", "csv=p=0", str(full)], capture_output=True, text=True).stdout
    rows = [line.split(",") for line in out.splitlines()]
    return max(float(t) + float(d) for t, d, n, pos in (r[:4] for r in rows if len(r) >= 4 and "N/A" not in r)
               if int(pos) + int(n) <= size)


def test_half_download_is_taken_at_what_decodes(tmp_path):
    full = _faststart_lesson(tmp_path / "full.mp4")
    whole = media.probe(full)
    assert (whole.duration, whole.header_duration, whole.truncated, whole.duration_source) == (60.0, 60.0, False,
                                                                                                 "format")
    cut = media.probe(_cut(full, tmp_path / "cut.mp4", 0.55))
    assert cut.truncated and cut.header_duration == 60.0 and cut.duration_source == "measured"
    assert 25 < cut.duration < 40  # about 55% of the bytes: about 55% of the minute
    assert abs(cut.duration - _last_whole_packet_end(full, cut.size_bytes)) < 0.001
    # the audio and the frames that decode end there too
    assert abs(len(media.extract_audio(tmp_path / "cut.mp4")) / 16000 - cut.duration) < 0.5
    last = max(t for t, _ in media.read_frames(tmp_path / "cut.mp4", rate=1.0, width=64))
    assert cut.duration - 1.5 < last <= cut.duration


def test_a_file_short_by_less_than_the_tolerance_is_not_truncated(tmp_path):
    full = _faststart_lesson(tmp_path / "full.mp4", 20.0)
    nearly = media.probe(_cut(full, tmp_path / "nearly.mp4", 0.995))  # the last frames' bytes, well under 1 s
    assert not nearly.truncated and nearly.duration == 20.0
    assert media.truncation_tolerance(20.0) == 1.0 and media.truncation_tolerance(3600.0) == 72.0


def test_a_header_without_its_media_data_is_corrupt(tmp_path):
    """Cut before the first sample (the index is there, no packet is): nothing decodes, so corrupt, as a file
    whose index never came (tests/data/lessons/physics_truncated.mp4, index last) is."""
    full = _faststart_lesson(tmp_path / "full.mp4", 20.0)
    data, pos = full.read_bytes(), 0
    while data[pos + 4:pos + 8] != b"mdat":  # top-level boxes: 32-bit size, 4-byte type
        pos += struct.unpack(">I", data[pos:pos + 4])[0]
    (tmp_path / "index_only.mp4").write_bytes(data[:pos + 16])
    with pytest.raises(ToolError) as err:
        media.probe(tmp_path / "index_only.mp4")
    assert err.value.kind == "corrupt" and "no audio or video packet" in err.value.message


def _clip(path, seconds: int) -> None:
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", f"testsrc=size=64x48:rate=5:duration={seconds}",
                    "-pix_fmt", "yuv420p", str(path)], check=True)


def test_an_unchanged_file_is_probed_once_and_a_rewritten_one_again(tmp_path, monkeypatch):
    """A build probes a candidate's file in its download check, then in the probe stage: the second is
    answered from memory while the file is unchanged; a file written again is probed again."""
    runs = []
    real_run = subprocess.run

    def counted(cmd, *args, **kwargs):
        if "ffprobe" in str(cmd[0]):
            runs.append(cmd[0])
        return real_run(cmd, *args, **kwargs)

    monkeypatch.setattr(media.subprocess, "run", counted)
    clip = tmp_path / "clip.mp4"
    _clip(clip, 1)
    fresh = media.probe(clip)  # changed just now: probed, not remembered
    before = len(runs)
    assert before and media.probe(clip) == fresh and len(runs) == 2 * before
    monkeypatch.setattr(media, "PROBE_MEMO_SETTLED_S", 0.0)
    runs.clear()
    first = media.probe(clip)
    assert runs and first.duration == pytest.approx(1.0, abs=0.05)
    runs.clear()
    again = media.probe(str(clip.parent / "." / clip.name))  # another spelling of the same file
    assert runs == [] and again == first
    _clip(clip, 2)  # written again in place
    second = media.probe(clip)
    assert runs and second.duration == pytest.approx(2.0, abs=0.05)
    runs.clear()
    clip.write_text("not a video\n")
    with pytest.raises(ToolError):
        media.probe(clip)
    with pytest.raises(ToolError):  # a failure is not remembered: probed again, fails again
        media.probe(clip)
    assert len(runs) == 2
