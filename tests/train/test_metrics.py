"""SIM^L (PAPER.md section 6) and Table 1 columns of an exported corpus, and `textbook stats --data`."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image, ImageFilter
from skimage import data as skdata
from skimage.metrics import structural_similarity

from tests.train._inproc import one_line_error, textbook
from train.clip import tiny_clip, tiny_clip_encoder
from train.metrics import MetricsError, pair_matrix, read_samples, sample_sim, sim_l, ssim_gray, table1


def _gray(seed: int, shape=(48, 64)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = np.zeros(shape, np.uint8)
    img[:] = np.linspace(0, 255, shape[1]).astype(np.uint8)  # a gradient
    img[10:30, 12:40] = rng.integers(0, 256)  # a block
    return np.clip(img.astype(int) + rng.integers(-20, 21, shape), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def encoder():
    return tiny_clip_encoder(seed=0)


# --- SSIM half -----------------------------------------------------------------------------------


def test_ssim_agrees_with_skimage_on_known_images():
    cam = skdata.camera()[::4, ::4]  # 128 x 128
    pairs = [(cam, np.clip(cam.astype(int) + 30, 0, 255).astype(np.uint8)),
             (cam, np.ascontiguousarray(cam[:, ::-1])),
             (cam, Image.fromarray(cam).filter(ImageFilter.GaussianBlur(2))),
             (_gray(1), _gray(2)), (_gray(3), _gray(3)[::-1].copy())]
    for a, b in pairs:
        a, b = np.asarray(a), np.asarray(b)
        ref = structural_similarity(a, b, data_range=255)
        assert ssim_gray(a, b) == pytest.approx(ref, abs=1e-4)
    assert ssim_gray(cam, cam) == pytest.approx(1.0)


def test_ssim_is_on_grayscale_at_a_common_size():
    rng = np.random.default_rng(0)
    rgb_a = (rng.random((40, 50, 3)) * 255).astype(np.uint8)
    rgb_b = np.clip(rgb_a.astype(int) + rng.integers(-40, 41, rgb_a.shape), 0, 255).astype(np.uint8)
    ga, gb = Image.fromarray(rgb_a).convert("L"), Image.fromarray(rgb_b).convert("L")
    ref = structural_similarity(np.asarray(ga), np.asarray(gb), data_range=255)
    assert ssim_gray(Image.fromarray(rgb_a), Image.fromarray(rgb_b)) == pytest.approx(ref, abs=1e-4)
    big = Image.fromarray(rgb_b).resize((100, 80))  # resized to the smaller image's 50 x 40 first
    small_ref = structural_similarity(np.asarray(ga), np.asarray(big.convert("L").resize((50, 40), Image.BICUBIC)),
                                      data_range=255)
    assert ssim_gray(Image.fromarray(rgb_a), big) == pytest.approx(small_ref, abs=1e-4)
    assert ssim_gray(Image.new("RGB", (3, 3), "red"), Image.new("RGB", (5, 4), "red")) == pytest.approx(1.0)


# --- CLIP half and SIM^L -------------------------------------------------------------------------


def _images(n: int, seed: int = 0) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    return [Image.fromarray((rng.random((36, 44, 3)) * 255).astype(np.uint8)) for _ in range(n)]


def test_clip_half_is_in_range_and_identical_images_give_one(encoder):
    clip01, ssim = pair_matrix(_images(5), encoder)
    assert clip01.shape == ssim.shape == (5, 5)
    assert np.all((clip01 >= 0) & (clip01 <= 1)) and np.allclose(clip01, clip01.T)
    assert np.allclose(np.diag(clip01), 1.0, atol=1e-5)
    same = [_images(1, seed=7)[0]] * 8
    sims = sample_sim(same, encoder)
    assert sorted(sims) == [4, 5, 6, 7, 8]
    for clip_mean, ssim_mean in sims.values():
        assert clip_mean == pytest.approx(1.0, abs=1e-5) and ssim_mean == pytest.approx(1.0)


def test_sim_l_averages_pairs_of_the_first_l_images_over_samples_with_l_images(tmp_path, encoder):
    imgs = _images(9, seed=1)
    for i, im in enumerate(imgs):
        im.save(tmp_path / f"{i}.png")

    def sample(n):
        return {"images": [f"{i}.png" for i in range(n)] + [None], "texts": [None] * n + ["t"]}

    samples = [sample(3), sample(4), sample(6), sample(9)]
    result = sim_l(samples, encoder, root=tmp_path)
    assert result["skipped"] == 0
    assert [result[L]["samples"] for L in (4, 5, 6, 7, 8)] == [3, 2, 2, 1, 1]  # the 3-image sample never counts
    clip01, ssim = pair_matrix(imgs[:8], encoder)
    for L in (4, 5, 6, 7, 8):
        iu = np.triu_indices(L, k=1)
        want = (clip01[iu].mean() + ssim[iu].mean()) / 2  # every sample shares its first images here
        assert result[L]["sim"] == pytest.approx(want, abs=1e-4)
        assert 0 <= result[L]["clip"] <= 1 and -1 <= result[L]["ssim"] <= 1
    only_small = sim_l([sample(3)], encoder, root=tmp_path)
    assert only_small[4] == {"sim": None, "clip": None, "ssim": None, "samples": 0}
    (tmp_path / "5.png").unlink()
    assert sim_l(samples, encoder, root=tmp_path)["skipped"] == 2  # the 6- and 9-image samples miss 5.png


def test_table1_and_reading(tmp_path):
    rows = [{"images": ["a.jpg", None, "b.jpg"], "texts": [None, "x", None], "token_num": 12},
            {"images": [None, "c.jpg"], "texts": ["y", None], "token_num": 30}]
    (tmp_path / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + "\n")
    samples = list(read_samples(tmp_path))
    assert table1(samples) == {"samples": 2, "images_per_sample": {"min": 1, "max": 2, "avg": 1.5},
                               "tokens_per_sample": {"min": 1, "max": 1, "avg": 1.0},  # text tokens, counted
                               "token_num_per_sample": {"min": 12, "max": 30, "avg": 21.0}}  # as the file says
    (tmp_path / "bad.jsonl").write_text(json.dumps(rows[0]) + "\n{truncated\n")
    with pytest.raises(MetricsError, match=r"bad.jsonl:2: malformed JSON line"):
        list(read_samples(tmp_path / "bad.jsonl"))
    (tmp_path / "notsample.jsonl").write_text('{"images": "a.jpg"}\n')
    with pytest.raises(MetricsError, match=r"notsample.jsonl:1: not a sample"):
        list(read_samples(tmp_path / "notsample.jsonl"))
    with pytest.raises(MetricsError, match="no such file or folder"):
        list(read_samples(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(MetricsError, match="holds no samples.jsonl"):
        list(read_samples(tmp_path / "empty"))


# --- textbook stats --data [--sim] -----------------------------------------------------------------


@pytest.fixture(scope="module")
def export(tmp_path_factory) -> dict:
    """A small export folder (samples.jsonl + images/) and a tiny random CLIP saved as a folder."""
    root = tmp_path_factory.mktemp("export")
    (root / "images").mkdir()
    rows = []
    for s, n in enumerate([2, 4, 5, 8]):
        paths = []
        for k, im in enumerate(_images(n, seed=10 + s)):
            paths.append(f"images/s{s}_{k}.png")
            im.save(root / paths[-1])
        rows.append({"images": paths + [None] * n,
                     "texts": [None] * n + ["text"] * n, "image_num": n, "text_num": n, "token_num": 10 * n,
                     "metadata": [{}] * (2 * n), "text_ocr_list": [None] * n + ["text"] * n})
    (root / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    clip_dir = tmp_path_factory.mktemp("clip")
    model, processor = tiny_clip(seed=0)
    model.save_pretrained(clip_dir)
    processor.save_pretrained(clip_dir)
    return {"root": root, "clip": clip_dir}


def test_stats_data_sim_json(capsys, monkeypatch, export):
    r = textbook(capsys, monkeypatch, "stats", "--data", str(export["root"]), "--sim", "--clip-model",
                 str(export["clip"]), "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["table1"] == {"samples": 4, "images_per_sample": {"min": 2, "max": 8, "avg": 4.75},
                             "tokens_per_sample": {"min": 2, "max": 8, "avg": 4.75},
                             "token_num_per_sample": {"min": 20, "max": 80, "avg": 47.5}}
    sim = out["sim"]["L"]
    assert [sim[str(L)]["samples"] for L in (4, 5, 6, 7, 8)] == [3, 2, 1, 1, 1]
    assert all(0 <= sim[str(L)]["clip"] <= 1 and sim[str(L)]["sim"] <= 1 for L in (4, 5, 6, 7, 8))
    human = textbook(capsys, monkeypatch, "stats", "--data", str(export["root"] / "samples.jsonl"), "--sim",
                     "--clip-model", str(export["clip"]))
    assert human.returncode == 0, human.stderr
    assert "images/sample min 2 max 8 avg 4.75" in human.stdout and "SIM^L" in human.stdout
    assert "L=8" in human.stdout
    plain = textbook(capsys, monkeypatch, "stats", "--data", str(export["root"]), "--json")
    assert "sim" not in json.loads(plain.stdout)


def test_stats_data_bad_input_is_one_line(capsys, monkeypatch, tmp_path, export):
    line = one_line_error(textbook(capsys, monkeypatch, "stats", "--data", str(tmp_path / "none")))
    assert "no such file or folder" in line
    (tmp_path / "samples.jsonl").write_text('{"images": []}\nnot json\n')
    line = one_line_error(textbook(capsys, monkeypatch, "stats", "--data", str(tmp_path)))
    assert "samples.jsonl:2: malformed JSON line" in line
    line = one_line_error(textbook(capsys, monkeypatch, "stats", "--sim"))
    assert "--data" in line
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # the paper's CLIP cannot download: say how to pass one
    line = one_line_error(textbook(capsys, monkeypatch, "stats", "--data", str(export["root"]), "--sim"))
    assert "openai/clip-vit-large-patch14-336" in line and "--clip-model PATH" in line


def test_reading_streams_any_file_name(tmp_path):
    """A JSON list (the released layout) is parsed item by item with ijson; names do not matter; the kind
    (JSON list, JSON lines, Parquet) is read from the content."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{"images": ["/mnt/a.jpg", None], "texts": [None, "one two"], "text_ocr_list": [None, "ocr one two"],
             "metadata": [{"video_id": "v"}, None], "image_num": 1, "text_num": 2, "token_num": 578},
            {"images": [None, "b.jpg"], "texts": ["three", None], "metadata": [None, {}], "token_num": 577}]
    (tmp_path / "released.data").write_text(json.dumps(rows, indent=2))
    (tmp_path / "lines.txt").write_text("".join(json.dumps(r) + "\n" for r in rows))
    pq.write_table(pa.Table.from_pylist([{**r, "metadata": json.dumps(r["metadata"])} for r in rows]),
                   tmp_path / "table.bin")
    for name in ("released.data", "lines.txt", "table.bin"):
        got = list(read_samples(tmp_path / name))
        assert [g["images"] for g in got] == [r["images"] for r in rows]
        assert [g["metadata"] for g in got] == [r["metadata"] for r in rows]
    t1 = table1(read_samples(tmp_path / "released.data"))  # a generator: one streamed pass
    assert t1["samples"] == 2 and t1["tokens_per_sample"]["max"] > t1["tokens_per_sample"]["min"]
    (tmp_path / "cut.json").write_text(json.dumps(rows)[:-40])
    with pytest.raises(MetricsError, match="cut.json: malformed JSON after item 1"):
        list(read_samples(tmp_path / "cut.json"))


def test_stats_data_reads_the_released_layout_with_a_prefix(capsys, monkeypatch, tmp_path, export):
    rows = [json.loads(x) for x in (export["root"] / "samples.jsonl").read_text().splitlines()]
    released = [{**r, "images": [i and f"/mnt/workspace/zwq_data/interleaved_dataset/{i}" for i in r["images"]]}
                for r in rows]
    data = tmp_path / "multimodal_textbook.json"
    data.write_text(json.dumps(released))
    args = ["stats", "--data", str(data), "--sim", "--clip-model", str(export["clip"]), "--json"]
    skipped = json.loads(textbook(capsys, monkeypatch, *args).stdout)["sim"]["skipped"]
    assert skipped == 3  # every sample with 4+ images: its images are not at /mnt/workspace
    fixed = textbook(capsys, monkeypatch, *args, "--image-prefix",
                     f"/mnt/workspace/zwq_data/interleaved_dataset/={export['root']}/")
    assert fixed.returncode == 0, fixed.stderr
    out = json.loads(fixed.stdout)
    assert out["sim"]["skipped"] == 0 and out["table1"]["samples"] == 4
    line = one_line_error(textbook(capsys, monkeypatch, "stats", "--data", str(data), "--image-prefix", "nope"))
    assert "OLD=NEW" in line
