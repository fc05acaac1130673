import numpy as np
import pytest
from skimage.metrics import structural_similarity

from tests.conftest import truth
from tools import keyframes
from tools.errors import ToolError

LESSONS_WITH_VIDEO = ["physics_newton", "chemistry_atoms", "math_quiet_tone", "math_primos_es", "earth_no_audio"]


def _slide_of(t: float, slides: list[dict]) -> int:
    return next(i for i, s in enumerate(slides) if s["start"] - 1e-6 <= t < s["end"] - 1e-6)


@pytest.mark.parametrize("mode", ["auto", "all"])
@pytest.mark.parametrize("name", LESSONS_WITH_VIDEO)
def test_one_keyframe_per_slide(lessons, tmp_path, name, mode):
    slides = truth(name)["slides"]
    result = keyframes.detect(lessons / f"{name}.mp4", tmp_path, keyframes.KeyframeOptions(decode=mode))
    found = [_slide_of(k.time, slides) for k in result.keyframes]
    assert found == list(range(len(slides))), f"keyframes at {[k.time for k in result.keyframes]}"
    for k in result.keyframes:
        assert (tmp_path / f"t{int(round(k.time * 1000)):09d}.jpg").is_file()
        assert k.path.endswith(".jpg")
    assert result.options["decode"] == mode


def test_near_identical_slides_both_found(lessons, tmp_path):
    slides = truth("physics_newton")["slides"]
    assert slides[3]["lines"] == slides[4]["lines"][:-1]  # the fixture: one added line only
    result = keyframes.detect(lessons / "physics_newton.mp4", tmp_path)
    times = [k.time for k in result.keyframes]
    assert any(slides[3]["start"] <= t < slides[3]["end"] for t in times)
    changed = [k for k in result.keyframes if slides[4]["start"] <= k.time < slides[4]["end"]]
    assert len(changed) == 1
    assert changed[0].ssim > 0.9  # globally similar: found by the local (tile) test


def test_short_gops_decode_only_codec_keyframes(lessons, tmp_path):
    """With a keyframe every second (as streaming encoders place them), auto decodes only those."""
    import subprocess

    video = tmp_path / "short_gop.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-i", str(lessons / "chemistry_atoms.mp4"), "-an", "-c:v", "libx264",
                    "-g", "25", "-keyint_min", "25", str(video)], check=True)
    auto = keyframes.detect(video, None)
    full = keyframes.detect(video, None, keyframes.KeyframeOptions(decode="all"))
    slides = truth("chemistry_atoms")["slides"]
    assert [_slide_of(k.time, slides) for k in auto.keyframes] == list(range(len(slides)))
    assert auto.frames_decoded <= 40  # ~1 per second, not 25
    assert auto.frames_decoded * 10 < full.frames_decoded


def test_ssim_matches_skimage():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 255, (90, 160)).astype(np.float32)
    b = np.clip(a + rng.normal(0, 20, a.shape), 0, 255).astype(np.float32)
    ours = keyframes.ssim(a, b)
    ref = structural_similarity(a, b, data_range=255, win_size=7)
    assert abs(ours - ref) < 1e-3
    assert keyframes.ssim(a, a) == pytest.approx(1.0)


def test_blank_and_duplicate_frames_dropped(tmp_path):
    """A -> blank -> B -> A: the blank frame and the return to A are dropped."""
    import subprocess

    from PIL import Image, ImageDraw

    paths = []
    slides = (("a", "Slide A: vectors"), ("blank", None), ("b", "Slide B: matrices"), ("a2", "Slide A: vectors"))
    for name, text in slides:
        img = Image.new("RGB", (640, 360), (255, 255, 255))
        if text:
            ImageDraw.Draw(img).text((40, 120), text, fill=(0, 0, 0), font_size=40)
        img.save(tmp_path / f"{name}.png")
        paths.append(tmp_path / f"{name}.png")
    listing = "".join(f"file '{p}'\nduration 3\n" for p in paths) + f"file '{paths[-1]}'\n"
    (tmp_path / "list.txt").write_text(listing)
    video = tmp_path / "v.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-f", "concat", "-safe", "0", "-i", str(tmp_path / "list.txt"),
                    "-vf", "fps=10,format=yuv420p", "-c:v", "libx264", str(video)], check=True)
    result = keyframes.detect(video, None)
    assert [round(k.time) for k in result.keyframes] == [0, 6]
    assert result.dropped == {"blank": 1, "duplicate": 1}


def test_corrupt_video_raises(lessons):
    with pytest.raises(ToolError) as err:
        keyframes.detect(lessons / "physics_truncated.mp4", None)
    assert err.value.kind == "corrupt"
