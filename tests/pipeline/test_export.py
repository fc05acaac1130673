"""Exports read back the way their consumers read them: the released LLaVA loader and Idefics2 trainer
(re-enacted from DAMO-NLP-SG/multimodal_textbook), webdataset.WebDataset and datasets.load_dataset."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.assemble import LLAVA_IMAGE_TOKENS
from pipeline.curriculum import sample_difficulty
from pipeline.export import FORMATS, ExportError, ExportOptions, export
from pipeline.export.common import previous_files
from pipeline.tokens import count_tokens
from tests.pipeline._corpus import make_corpus

RELEASED_NAME = re.compile(r"^(?P<vid>[A-Za-z0-9_-]+)/(?P=vid)@(?P<start>\d+\.\d+)_(?P<end>\d+\.\d+)#(?P<k>\d+)\.jpg$")
OUR_NAME = re.compile(r"^images/(?P<vid>[A-Za-z0-9_-]+)/(?P=vid)_(?P<start>\d+)-(?P<end>\d+)_(?P<k>[1-9]\d*)\.jpg$")


@pytest.fixture(scope="module")
def concat(tmp_path_factory):
    """Six videos packed with concat (several videos per sample, end-of-video markers between them)."""
    return make_corpus(tmp_path_factory.mktemp("concat"), videos=6, mode="concat", max_tokens=400)


# -- the released LLaVA loader, re-enacted -----------------------------------------------------------------------
def llava_obelics_getitem(sample: dict, image_folder: str = "/mnt/workspace/multimodal_textbook/example_data",
                          max_num_images: int = 12) -> tuple[list[Image.Image], str]:
    """What ObelicsFormatDataset.parse_sample and .getitem do (llava/train/datasets.py of
    DAMO-NLP-SG/multimodal_textbook), up to the tokenizer: (the images it loads, the text it tokenizes)."""
    images, texts = sample["images"], list(sample["texts"])
    metadata = sample.get("metadata", [None] * len(images))
    if isinstance(metadata, str):
        metadata = json.loads(metadata)
    assert isinstance(metadata, list), metadata
    valid_image = sample.get("valid_image", [True] * sum(img is not None for img in images))
    assert len(images) == len(texts)
    assert sum(img is not None for img in images) == sum(txt is None for txt in texts) == len(valid_image)
    images = [img for img in images if img is not None]
    if sum(valid_image) > max_num_images:
        count = 0
        for i in range(len(valid_image)):
            if valid_image[i] is True:
                count += 1
                if count > max_num_images:
                    valid_image[i] = False
    # load_image: os.path.join('/mnt/workspace/multimodal_textbook/example_data', image_path_or_url)
    loaded = [Image.open(os.path.join(image_folder, img)).convert("RGB")
              for img, valid in zip(images, valid_image, strict=True) if valid]
    assert len(loaded) > 0
    image_idx = 0
    for i in range(len(texts)):
        if texts[i] is None:
            if valid_image[image_idx]:
                texts[i] = "<image>"
            image_idx += 1
    texts = [t for t in texts if t]
    text = " ".join(texts) + "</s>"
    text = text.replace("<image> ", "<image>").replace(" <image>", "<image>")
    text = re.sub(r"(<image>)+", lambda m: " ".join("<image>" for _ in range(m.group(0).count("<image>"))), text)
    return loaded, text


def _pixels(path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def test_released_passes_what_their_llava_loader_does(concat, tmp_path):
    out = tmp_path / "released"
    result = export(concat.samples, out, "released", concat.media)
    assert result.target == out / "multimodal_textbook.json" and result.samples == len(concat.samples) > 1
    data = json.loads(result.target.read_text())
    ours = {}
    for s in concat.samples:
        for img, meta in zip(s["images"], s["metadata"], strict=True):
            if img:
                ours[(meta["video_id"], meta["clip_index"], meta["keyframe_index"])] = (img, meta)
    assert len(data) == len(concat.samples)
    for sample, mine in zip(data, concat.samples, strict=True):
        images, text = llava_obelics_getitem(sample)
        assert set(sample) == {"images", "texts", "text_ocr_list", "metadata", "image_num", "text_num", "token_num"}
        assert sample["image_num"] == mine["image_num"] == sum(i is not None for i in sample["images"])
        assert len(images) == min(12, sample["image_num"]) == text.count("<image>")  # they keep the first 12
        # counts as the released corpus defines them: ASR tokens; + 576 per image
        asr = [t for t in sample["texts"] if t]
        assert sample["text_num"] == sum(count_tokens(t) for t in asr)
        assert sample["token_num"] == sample["text_num"] + LLAVA_IMAGE_TOKENS * sample["image_num"]
        assert "<|endofvideo|>" not in text and all(t != "<|endofvideo|>" for t in asr)  # no marker position
        for img, txt, meta in zip(sample["images"], sample["texts"], sample["metadata"], strict=True):
            assert (img is None) != (txt is None)
            if img is None:
                assert meta is None  # OBELICS: null metadata at text positions
                continue
            assert os.path.isabs(img) and img.startswith(str((out / "images").resolve()) + "/")
            m = RELEASED_NAME.match(img.removeprefix(str((out / "images").resolve()) + "/"))
            assert m, img
            assert float(m["start"]) == meta["clip_start"] and float(m["end"]) == meta["clip_end"]
            assert m["start"] == repr(float(meta["clip_start"]))  # full precision, not rounded
            assert int(m["k"]) == meta["keyframe_index"] >= 1
            src, _ = ours[(meta["video_id"], meta["clip_index"], meta["keyframe_index"])]
            assert np.array_equal(_pixels(img), _pixels(concat.media / src))
        ks = [(m["video_id"], m["clip_index"], m["keyframe_index"]) for m in sample["metadata"] if m]
        for key in {k[:2] for k in ks}:  # K counts each clip's keyframes from 1
            assert sorted(k[2] for k in ks if k[:2] == key) == list(range(1, 1 + sum(k[:2] == key for k in ks)))
    # the "<image>" a speaker said and a slide showed does not become an image token
    assert "Look at the image tag and /s here." in data[0]["texts"][next(i for i, t in enumerate(data[0]["texts"])
                                                                          if t)]
    assert all("<image>" not in (t or "") for s in data for t in s["texts"] + s["text_ocr_list"])

    other = export(concat.samples, tmp_path / "r64", "released", concat.media,
                   ExportOptions(image_root="/data/textbook/images", image_tokens=64))
    first = json.loads(other.target.read_text())[0]
    assert first["token_num"] == first["text_num"] + 64 * first["image_num"]
    assert all(i is None or i.startswith("/data/textbook/images/") for i in first["images"])


def test_released_counts_a_sample_packed_before_the_released_semantics(concat, tmp_path):
    s0 = concat.samples[0]
    old = {**s0, "text_num": sum(t is not None for t in s0["texts"]),  # text positions, as packed before
           "metadata": [{k: v for k, v in m.items() if k not in ("subcourse", "tokens")} for m in s0["metadata"]]}
    (got,) = json.loads(export([old], tmp_path, "released", concat.media).target.read_text())
    assert got["text_num"] == sum(count_tokens(t) for t in got["texts"] if t) == s0["text_num"]
    (entry,) = json.loads(export([old], tmp_path, "idefics2", concat.media).target.read_text())
    clips = [c for c in entry["conversations"] if c["vid"] != "End of a Video"]
    assert [c["asr_token_num"] for c in clips] == [m["tokens"] for m in s0["metadata"] if "tokens" in m]


def idefics2_getitem(entry: dict, add_ocr: bool) -> tuple[list[str], str]:
    """What training_idefics/training/training.py's LazySupervisedDataset.__getitem__ builds from one entry
    (image_token '<image>', bos '<s>'): the image files it opens and the text it hands the processor."""
    image_token, bos, end_video_token = "<image>", "<s>", "\n"
    text, files = bos, []
    for clip in entry["conversations"]:
        prompt = ""
        if clip["vid"] == "End of a Video":
            prompt = prompt + end_video_token + bos
            continue
        for image_file in clip.get("keyframe_ssim") or []:
            Image.open(image_file).load()
            files.append(image_file)
            prompt = prompt + "Image:" + image_token
        ocr = "\nWe can see these words from the image by OCR: " + clip["ocr_qwen2_vl_72b"] \
            if clip.get("ocr_qwen2_vl_72b") else ""
        asr = "\n" + clip["refined_asr"] if clip.get("refined_asr") else "\n" + clip["asr"] if clip.get("asr") else ""
        ocr, asr = ocr.replace(image_token, "image"), asr.replace(image_token, "image")
        text += prompt + (ocr + asr if add_ocr else asr)
    return files, text


def test_idefics2_is_the_video_clip_format_their_trainer_reads(concat, tmp_path):
    result = export(concat.samples, tmp_path / "i2", "idefics2", concat.media)
    entries = json.loads((tmp_path / "i2" / "textbook_video_clip_format.json").read_text())
    assert len(entries) == len(concat.samples)
    for entry, sample in zip(entries, concat.samples, strict=True):
        files, text = idefics2_getitem(entry, add_ocr=True)
        assert len(files) == text.count("<image>") == sample["image_num"]
        assert all(RELEASED_NAME.match(f.split("/images/", 1)[1]) for f in files)
        vids = [m["video_id"] for m in sample["metadata"] if m.get("type") == "text"]
        ends = [c for c in entry["conversations"] if c["vid"] == "End of a Video"]
        assert len(ends) == len(dict.fromkeys(vids)) - 1  # one between each two videos
        assert all(c == {"vid": "End of a Video", "clip_path": c["clip_path"], "image_tokens": 0, "token_num": 0}
                   for c in ends)
        clips = [c for c in entry["conversations"] if c["vid"] != "End of a Video"]
        assert [c["asr"] for c in clips] == [t for t, m in zip(sample["texts"], sample["metadata"], strict=True)
                                             if t and m.get("type") == "text"]
        assert all(c["asr_token_num"] == count_tokens(c["asr"]) for c in clips)
        assert entry["token_num"] == sum(c["token_num"] for c in entry["conversations"])
        assert all(c["image_tokens"] == LLAVA_IMAGE_TOKENS * len(c["keyframe_ssim"]) for c in clips)
        assert all(c["ocr_qwen2_vl_72b"] and c["ocr_qwen2_vl_72b"] not in c["asr"] for c in clips)
    assert result.samples == len(entries)


# -- webdataset and Hugging Face datasets ------------------------------------------------------------------------
def _ours(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]


def test_webdataset_and_hf_read_back_the_same_samples(concat, tmp_path, monkeypatch):
    import datasets
    import pyarrow.parquet as pq
    import webdataset as wds

    from pipeline.export import hf as hf_module

    monkeypatch.setattr(hf_module, "ROW_GROUP", 1)  # images are held one row group at a time

    out = tmp_path / "x"
    export(concat.samples, out, "jsonl", concat.media)
    ref = _ours(out)
    wd = export(concat.samples, out, "webdataset", concat.media, ExportOptions(shard_size=2))
    shards = sorted((out / "webdataset").glob("*.tar"))
    assert [f"webdataset/{p.name}" for p in shards] == wd.files and len(shards) == -(-len(ref) // 2)
    got = list(wds.WebDataset([str(p) for p in shards], shardshuffle=False).decode("pil"))
    assert len(got) == len(ref)
    for rec, want in zip(got, ref, strict=True):
        s = rec["json"]
        for key in ("texts", "text_ocr_list", "image_num", "text_num", "token_num"):
            assert s[key] == want[key]
        assert [{k: v for k, v in m.items() if k != "image_file"} for m in s["metadata"]] == want["metadata"]
        for member, path, meta in zip(s["images"], want["images"], s["metadata"], strict=True):
            assert (member is None) == (path is None)
            if member:
                assert meta["image_file"] == path
                assert np.array_equal(np.asarray(rec[member].convert("RGB")), _pixels(out / path))

    hf = export(concat.samples, out, "hf", concat.media, ExportOptions(shard_size=2, run_id="run-x"))
    assert sorted(hf.files) == sorted(["README.md"] + [f"data/train-{i:05d}-of-{len(shards):05d}.parquet"
                                                       for i in range(len(shards))])
    assert [pq.ParquetFile(out / f).num_row_groups for f in sorted(hf.files) if f.endswith(".parquet")] == \
        [min(2, len(ref) - 2 * i) for i in range(len(shards))]
    ds = datasets.load_dataset(str(out), split="train", cache_dir=str(tmp_path / "hf-cache"))
    assert isinstance(ds.features["images"].feature, datasets.Image)
    assert len(ds) == len(ref)
    for row, want in zip(ds, ref, strict=True):
        for key in ("texts", "text_ocr_list", "image_num", "text_num", "token_num"):
            assert row[key] == want[key]
        assert json.loads(row["metadata"]) == want["metadata"]
        assert row["difficulty"] == sample_difficulty(want)
        for im, path in zip(row["images"], want["images"], strict=True):
            assert (im is None) == (path is None)
            if im is not None:
                assert np.array_equal(np.asarray(im.convert("RGB")), _pixels(out / path))


# -- order, paths, escaping ------------------------------------------------------------------------------------
def test_curriculum_export_is_easy_to_difficult(tmp_path):
    corpus = make_corpus(tmp_path / "c", videos=8, mode="video", difficulties=(3, 1, None, 2))
    out = tmp_path / "o"
    for fmt in ("jsonl", "released"):
        export(corpus.samples, out, fmt, corpus.media, ExportOptions(order="curriculum"))
    rows = _ours(out)
    diffs = [sample_difficulty(s) for s in rows]
    assert diffs == [1, 1, 2, 2, 3, 3, None, None]
    by_vid = [s["metadata"][0]["video_id"] for s in rows]
    pack_order = [s["metadata"][0]["video_id"] for s in corpus.samples]
    assert by_vid[:2] == [v for v in pack_order if v in by_vid[:2]]  # ties keep the pack order
    released = json.loads((out / "multimodal_textbook.json").read_text())
    assert [next(m["video_id"] for m in s["metadata"] if m) for s in released] == by_vid
    assert all(s["metadata"][0]["subcourse"] and "knowledge_point" in s["metadata"][0] for s in rows)


def test_no_path_of_this_machine_in_any_export(concat, tmp_path):
    legacy = [dict(s) for s in concat.samples]  # a store from before migration 006 kept absolute sources
    legacy[0] = {**legacy[0], "metadata": [{**m, "source": str(tmp_path / "in" / "x.mp4")} if m.get("video_id")
                                           else m for m in legacy[0]["metadata"]]}
    out = tmp_path / "all"
    for fmt in FORMATS:
        export(legacy, out, fmt, concat.media, ExportOptions(image_root="/data/textbook/images"))
    roots = {str(tmp_path).encode(), str(concat.media).encode(), str(concat.media.parent).encode()}
    checked = 0
    for path in out.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            checked += 1
            assert not any(r in data for r in roots), path
    assert checked > 10
    for s in _ours(out):
        assert all(OUR_NAME.match(i) for i in s["images"] if i)  # URL-safe: no '#', '@' or spaces


def test_our_names_are_url_safe_and_the_released_ones_as_released(concat, tmp_path):
    from urllib.parse import quote

    export(concat.samples, tmp_path, "jsonl", concat.media)
    for s in _ours(tmp_path):
        for img in s["images"]:
            if img:
                assert quote(img) == img and (tmp_path / img).is_file()


def test_texts_are_escaped_everywhere(concat, tmp_path):
    special = re.compile(r"<image>|</s>|<\|endoftext\|>")
    for s in concat.samples:
        for t in s["texts"] + s["text_ocr_list"]:
            assert not special.search(t or "")
    first = next(t for t in concat.samples[0]["text_ocr_list"] if t)
    assert "image |endoftext|" in first and "Look at the image tag and /s here." in first


# -- never delete or overwrite what another export wrote ---------------------------------------------------------
def test_export_keeps_files_it_did_not_write(concat, tmp_path):
    out = tmp_path / "shared"
    first_img = next(i for i in concat.samples[0]["images"] if i)
    foreign = out / first_img
    foreign.parent.mkdir(parents=True)
    Image.new("RGB", (8, 8), (1, 2, 3)).save(foreign)  # another run's image under the same name
    before = foreign.read_bytes()
    result = export(concat.samples, out, "jsonl", concat.media)
    assert foreign.read_bytes() == before and result.renamed == 1
    placed = _ours(out)[0]["images"][concat.samples[0]["images"].index(first_img)]
    assert placed != first_img and re.search(r"~[0-9a-f]{8}\.jpg$", placed)
    assert np.array_equal(_pixels(out / placed), _pixels(concat.media / first_img))
    again = export(concat.samples, out, "jsonl", concat.media)  # the same export again: nothing new
    assert again.renamed == 1 and _ours(out)[0]["images"] == _ours(out)[0]["images"]

    (out / "webdataset").mkdir()
    (out / "webdataset" / "mine.tar").write_bytes(b"someone's")
    many = export(concat.samples, out, "webdataset", concat.media, ExportOptions(shard_size=1))
    few = export(concat.samples, out, "webdataset", concat.media, ExportOptions(shard_size=100))
    assert len(many.files) == len(concat.samples) > 1 and len(few.files) == 1
    assert sorted(p.name for p in (out / "webdataset").iterdir()) == sorted(["mine.tar", few.files[0].split("/")[1]])
    assert previous_files(out, "webdataset") == set(few.files)

    (out / "README.md").write_text("my notes")
    with pytest.raises(ExportError, match="README.md exists and was not written"):
        export(concat.samples, out, "hf", concat.media)
    assert (out / "README.md").read_text() == "my notes" and not (out / "data").exists()


def test_bad_options_and_missing_media(concat, tmp_path):
    with pytest.raises(ExportError, match="unknown format"):
        export(concat.samples, tmp_path, "csv", concat.media)
    with pytest.raises(ExportError, match="not an absolute path"):
        ExportOptions(image_root="relative/images")
    with pytest.raises(ExportError, match="unknown order"):
        ExportOptions(order="random")
    with pytest.raises(ExportError, match="keyframe file missing"):
        export(concat.samples, tmp_path / "o", "jsonl", tmp_path / "no-media")
    assert not (tmp_path / "o" / "samples.jsonl").exists()


# -- where a video came from, and how hard it is ---------------------------------------------------------------
def test_public_source_is_a_url_or_a_relative_path(tmp_path):
    from pipeline.provenance import public_source

    f = tmp_path / "in" / "physics" / "newton.mp4"
    f.parent.mkdir(parents=True)
    f.write_bytes(b"x")
    assert public_source(f, {}, [tmp_path / "in"]) == "physics/newton.mp4"
    assert public_source(f, {}, [f]) == "newton.mp4"  # a file given by itself: its name
    assert public_source(f, {}, []) == "newton.mp4"
    assert public_source(f, {"input_root": str(tmp_path)}, []) == "in/physics/newton.mp4"
    meta = {"webpage_url": "https://user:pw@www.youtube.com/watch?v=abc#t=3",
            "url": "https://rr1---sn.googlevideo.com/videoplayback?sig=1"}
    assert public_source(f, meta, []) == "https://www.youtube.com/watch?v=abc"
    assert public_source(f, {"url": str(f)}, []) == "newton.mp4"  # a local source's "url" is a path


def test_difficulty_parsing():
    from pipeline.curriculum import parse_difficulty

    assert [parse_difficulty(v) for v in (3, 2.5, "7", "Grade 10", "level 2", "Easy", "advanced", None, "", True,
                                          float("nan"), "very tricky")] == \
        [3.0, 2.5, 7.0, 10.0, 2.0, 1.0, 3.0, None, None, None, None, None]


def test_register_stores_subcourse_difficulty_and_public_source(tmp_path):
    from pipeline.config import PipelineConfig
    from pipeline.runner import Runner
    from store import open_store

    lessons = tmp_path / "lessons" / "physics"
    lessons.mkdir(parents=True)
    (lessons / "newton.mp4").write_bytes(b"not really a video")
    (lessons / "newton.json").write_text(json.dumps({"title": "Newton", "subject": "physics", "course": "mechanics",
                                                     "subcourse": "dynamics", "knowledge_point": "second law",
                                                     "difficulty": "grade 9"}))
    store = open_store(tmp_path / "runs.duckdb")
    try:
        runner = Runner(store, PipelineConfig(), tmp_path / "out")
        (v,) = runner.register("run-1", [(lessons / "newton.mp4", {"input_root": str(tmp_path / "lessons")})])
        row = store.video(v["video_id"])
        assert (row["subcourse"], row["difficulty"], row["public_source"]) == ("dynamics", 9.0, "physics/newton.mp4")
        assert row["source"] == str(lessons / "newton.mp4")  # the full lineage stays in the store
        (v,) = runner.register("run-1", [(lessons / "newton.mp4", {"difficulty": 2, "url": "https://e.org/v/1"})])
        row = store.video(v["video_id"])
        assert (row["difficulty"], row["public_source"]) == (2.0, "https://e.org/v/1")
    finally:
        store.close()


def test_card_lists_every_source_license_and_escapes_titles(concat, tmp_path):
    from pipeline.export import DatasetCard
    from pipeline.stats import sources
    from store import open_store

    store = open_store(tmp_path / "runs.duckdb")
    try:
        store.upsert_video({"video_id": "a", "source": str(tmp_path / "a.mp4"), "public_source": "a.mp4",
                            "title": "Ohm | <script>alert(1)</script>", "metadata": {"license": "CC-BY-4.0"}})
        store.upsert_video({"video_id": "b", "source": "https://www.youtube.com/watch?v=b", "title": "B",
                            "metadata": {}})
        store.upsert_video({"video_id": "c", "source": str(tmp_path / "c.mp4"), "title": "C", "metadata": {}})
        for vid in ("a", "b", "c"):
            store.update_video(vid, status="kept")
        store.set_run_videos("run-1", ["a", "b", "c"])
        store.add_candidate("run-1", "b", "p1", "youtube", "https://www.youtube.com/watch?v=b", "q", 1,
                            {"license": "creativeCommon"})
        found = sources(store, "run-1")
    finally:
        store.close()
    assert [(s["video_id"], s["source"], s["license"]) for s in found] == [
        ("a", "a.mp4", "CC-BY-4.0"), ("b", "https://www.youtube.com/watch?v=b", "creativeCommon"), ("c", "c.mp4", None)]
    card = DatasetCard(run_id="run-1", stats={"table1": {}, "table7": []},
                       config={"asr": {"model": str(tmp_path / "models" / "large-v3")},
                               "llm": {"api_key": "sk-secret", "base_url": "http://u:p@host:8000/v1?key=1"}},
                       sources=found)
    export(concat.samples, tmp_path / "hf", "hf", concat.media, ExportOptions(card=card))
    text = (tmp_path / "hf" / "README.md").read_text()
    for want in ("| CC-BY-4.0 | 1 |", "| creativeCommon | 1 |", "| unknown | 1 |", "license: other",
                 "Ohm \\| &lt;script&gt;alert(1)&lt;/script&gt;", '"model": "…/large-v3"', '"api_key": "<redacted>"',
                 '"base_url": "http://host:8000/v1"'):
        assert want in text, want
    assert "<script>" not in text and "sk-secret" not in text and str(tmp_path) not in text


def test_pack_names_keyframes_again_for_a_store_from_the_old_naming(tmp_path):
    """A store whose media folder holds the old names (VID@S_E#K.jpg): pack links the new names, then exports."""
    from pipeline.config import PipelineConfig
    from pipeline.runner import Runner, media_dir_for
    from store import open_store

    store = open_store(tmp_path / "runs.duckdb")
    try:
        runner = Runner(store, PipelineConfig(), tmp_path / "out")
        frames = []
        for i, t in enumerate((1.0, 6.0)):
            path = media_dir_for(store.path) / "frames" / "v1" / f"{i}.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (32, 18), (40 * i, 90, 200)).save(path)
            frames.append({"index": i, "time": t, "path": str(path), "ssim": 0.5, "min_tile_ssim": 0.4,
                           "sharpness": 30.0})
        store.upsert_video({"video_id": "v1", "source": str(tmp_path / "v1.mp4"), "title": "V",
                            "public_source": "v1.mp4", "difficulty": 1.0})
        store.save_keyframes("v1", "h", frames, 0.1)
        store.save_ocr("v1", "h", [{"index": i, "text": "", "confidence": 0.0, "engine": "t", "kept": False,
                                    "drop_reason": "ocr_empty"} for i in range(2)], 0.1)
        store.save_clips("v1", "h", [{"idx": 0, "start_s": 0.0, "end_s": 10.0, "text": "Two slides.", "n_tokens": 3,
                                      "keyframes": [0, 1], "decision": "keep"}])
        old = media_dir_for(store.path) / "images" / "v1"
        old.mkdir(parents=True)
        for k in range(2):
            (old / f"v1@0.0_10.0#{k}.jpg").hardlink_to(frames[k]["path"])
        store.set_run_videos("run-1", ["v1"])
        (sample,) = runner.pack("run-1", [{"video_id": "v1"}], [{"video_id": "v1"}])
    finally:
        store.close()
    # the store keeps the clip images per clips hash (images/VID/HASH/); the export names them by the rule
    assert sample["images"][:2] == ["images/v1/h/v1_0-10000_1.jpg", "images/v1/h/v1_0-10000_2.jpg"]
    exported = json.loads((tmp_path / "out" / "samples.jsonl").read_text())
    assert exported["images"][:2] == ["images/v1/v1_0-10000_1.jpg", "images/v1/v1_0-10000_2.jpg"]
    for k, img in enumerate(exported["images"][:2]):
        assert np.array_equal(_pixels(tmp_path / "out" / img), _pixels(frames[k]["path"]))
