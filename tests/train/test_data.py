"""The dataset reader: our export and the released layout -> interleaved model inputs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image

from train.data import InterleavedDataset, ReaderConfig, ReaderError, collate, parse_prefixes
from train.model import EOV_MARKER, image_token_id, tiny_idefics3, tiny_processor

ASR = ["Atoms are tiny particles.", "Electrons move around the nucleus.", "Molecules are groups of atoms."]
OCR = ["Atoms\n- all matter", "Inside the atom", "H2 + O2 -> H2O"]


@pytest.fixture(scope="module")
def processor():
    return tiny_processor()


def _image(path: Path, shade: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.new("RGB", (160, 90), (shade, 255 - shade, 128))
    for x in range(0, 160, 20):
        im.paste((0, 0, 0), (x, 0, x + 4, 90))
    im.save(path, quality=92)


def _lesson(root: Path, vid: str = "vidA", clips: int = 3, images_per_clip: int = 1) -> dict:
    """One sample in our export layout (relative image paths) with its images on disk."""
    images, texts, ocr, meta = [], [], [], []
    for c in range(clips):
        start, end = 10.0 * c, 10.0 * c + 10
        for k in range(images_per_clip):
            rel = f"images/{vid}/{vid}@{start}_{end}#{k}.jpg"
            _image(root / rel, 40 * c + 10 * k)
            images.append(rel)
            texts.append(None)
            ocr.append(None)
            meta.append({"video_id": vid, "clip_start": start, "clip_end": end, "type": "image",
                         "keyframe_index": k})
        images.append(None)
        texts.append(ASR[c % len(ASR)])
        ocr.append(f"{OCR[c % len(OCR)]}\n{ASR[c % len(ASR)]}")
        meta.append({"video_id": vid, "clip_start": start, "clip_end": end, "type": "text"})
    return {"images": images, "texts": texts, "text_ocr_list": ocr, "metadata": meta,
            "image_num": sum(i is not None for i in images), "text_num": len(ASR), "token_num": 40}


def _jsonl(path: Path, samples: list) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join((s if isinstance(s, str) else json.dumps(s)) + "\n" for s in samples))
    return path


def _read(path, processor, **cfg) -> tuple[list, InterleavedDataset]:
    ds = InterleavedDataset(path, processor, ReaderConfig(**cfg))
    return list(ds), ds


def _image_ids(processor) -> set[int]:
    tok = processor.tokenizer
    return {image_token_id(processor), *tok.convert_tokens_to_ids(["<fake_token_around_image>", "<global-img>"])}


@pytest.mark.slow
def test_export_reads_as_interleaved_inputs_without_loss_on_images(processed, processor):
    examples, ds = _read(processed["out"], processor)
    samples = [json.loads(line) for line in (processed["out"] / "samples.jsonl").read_text().splitlines()]
    assert len(examples) == len(samples) == 2
    assert ds.stats.images_loaded == sum(s["image_num"] for s in samples)
    assert ds.stats.images_missing == ds.stats.images_unreadable == 0
    img = image_token_id(processor)
    for ex, s in zip(examples, samples, strict=True):
        ids, labels = torch.tensor(ex.input_ids), torch.tensor(ex.labels)
        assert ex.num_images == s["image_num"]
        assert int((ids == img).sum()) == s["image_num"] * processor.image_seq_len
        in_image = torch.isin(ids, torch.tensor(sorted(_image_ids(processor))))
        assert (labels[in_image] == -100).all()
        assert torch.equal(labels[~in_image], ids[~in_image])  # every text token carries loss (images first)
        assert ids[0] == processor.tokenizer.bos_token_id and ids[-1] == processor.tokenizer.eos_token_id
    # ASR only by default (as both released trainings); the OCR with text_field="text_ocr_list"
    assert "Atoms and Elements" not in processor.tokenizer.decode(examples[0].input_ids)
    with_ocr, _ = _read(processed["out"], processor, text_field="text_ocr_list")
    assert "Atoms and Elements" in processor.tokenizer.decode(with_ocr[0].input_ids)

    batch = collate(examples, ds.pad_id, ds.layout)
    pad = batch["attention_mask"] == 0
    assert pad.any() and (batch["labels"][pad] == -100).all()
    assert (batch["labels"][batch["input_ids"] == img] == -100).all()
    assert batch["pixel_values"].shape[:2] == (2, max(s["image_num"] for s in samples))


def test_released_shape_reads_the_same_as_ours(tmp_path, processor):
    ours_dir = tmp_path / "ours"
    samples = [_lesson(ours_dir, "vidA", clips=3, images_per_clip=2), _lesson(ours_dir, "vidB", clips=2)]
    ours = _jsonl(ours_dir / "samples.jsonl", samples)
    # the released Multimodal Textbook: one JSON list, absolute image paths, its own metadata list
    released = []
    for s in samples:
        released.append({
            "images": [str((ours_dir / p).resolve()) if p else None for p in s["images"]],
            "texts": s["texts"], "text_ocr_list": s["text_ocr_list"],
            "metadata": [{"video_id": "yt-" + m["video_id"], "clip": f"{m['clip_start']}_{m['clip_end']}"} if
                         m["type"] == "image" else None for m in s["metadata"]],
            "image_num": s["image_num"], "text_num": 123, "token_num": 456})
    rel_file = tmp_path / "released" / "multimodal_textbook.json"
    rel_file.parent.mkdir()
    rel_file.write_text(json.dumps(released, indent=1))

    for cfg in ({}, {"text_field": "texts"}, {"max_length": 40}, {"pack": True, "max_length": 4096}):
        a, sa = _read(ours, processor, **cfg)
        b, sb = _read(rel_file, processor, **cfg)
        assert len(a) == len(b) > 0
        for x, y in zip(a, b, strict=True):
            assert x.input_ids == y.input_ids and x.labels == y.labels and x.num_images == y.num_images
            for px, py in zip(x.pixels, y.pixels, strict=True):
                assert px.keys() == py.keys() and all(torch.equal(px[k], py[k]) for k in px)
        assert sa.stats.images_loaded == sb.stats.images_loaded > 0


def test_text_field_choice(tmp_path, processor):
    data = _jsonl(tmp_path / "samples.jsonl", [_lesson(tmp_path)])
    ocr = processor.tokenizer.decode(_read(data, processor, text_field="text_ocr_list")[0][0].input_ids)
    asr = processor.tokenizer.decode(_read(data, processor)[0][0].input_ids)
    assert "Inside the atom" in ocr and "Inside the atom" not in asr
    assert ASR[1] in ocr and ASR[1] in asr
    assert _read(data, processor, text_field="auto")[0][0].input_ids == \
        _read(data, processor, text_field="text_ocr_list")[0][0].input_ids
    plain = {k: v for k, v in _lesson(tmp_path).items() if k != "text_ocr_list"}  # OBELICS: no OCR field
    data2 = _jsonl(tmp_path / "plain.jsonl", [plain])
    for field in ("texts", "text_ocr_list", "auto"):
        assert _read(data2, processor, text_field=field)[0][0].input_ids == _read(data, processor)[0][0].input_ids


def test_missing_and_unreadable_images_are_skipped_and_counted(tmp_path, processor):
    sample = _lesson(tmp_path, clips=4)
    (tmp_path / sample["images"][2]).unlink()  # missing
    (tmp_path / sample["images"][4]).write_bytes(b"not a jpeg at all")  # unreadable
    sample["images"][6] = "https://example.com/x.jpg"  # remote (OBELICS URLs): not fetched
    examples, ds = _read(_jsonl(tmp_path / "samples.jsonl", [sample]), processor, max_missing_images=1.0)
    st = ds.stats
    assert (st.images_loaded, st.images_missing, st.images_unreadable, st.images_remote) == (1, 1, 1, 1)
    (ex,) = examples
    assert ex.num_images == 1
    assert ex.input_ids.count(image_token_id(processor)) == processor.image_seq_len
    for text in ASR:  # the texts of the clips whose frames were lost are kept
        assert text in processor.tokenizer.decode(ex.input_ids)


def test_malformed_line_is_a_one_line_error_or_counted(tmp_path, processor):
    good = _lesson(tmp_path)
    data = _jsonl(tmp_path / "samples.jsonl", [good, '{"images": [null], "texts": ', good,
                                               {"images": [None, None], "texts": ["a"]}, good])
    with pytest.raises(ReaderError) as err:
        _read(data, processor)
    msg = str(err.value)
    assert "samples.jsonl" in msg and "line 2" in msg and "\n" not in msg
    examples, ds = _read(data, processor, skip_bad_lines=True)
    assert len(examples) == 3 and ds.stats.bad_records == 2 and ds.stats.records == 5

    with pytest.raises(ReaderError, match="line 4"):
        _read(_jsonl(tmp_path / "b.jsonl", [good, good, good, {"images": [None, None], "texts": ["a"]}]),
              processor)
    broken = tmp_path / "list.json"
    broken.write_text('[\n{"images": [null], "texts": ["a"]},\n{"images": [null], "texts": [oops]}\n]')
    with pytest.raises(ReaderError, match=r"list\.json: line 3"):
        _read(broken, processor)
    with pytest.raises(ReaderError, match="no data file"):
        InterleavedDataset(tmp_path / "nope.jsonl", processor)


def test_image_cap_and_truncation_never_split_an_image(tmp_path, processor):
    model, _ = tiny_idefics3()
    sample = _lesson(tmp_path, clips=3, images_per_clip=3)  # 9 images
    data = _jsonl(tmp_path / "samples.jsonl", [sample])
    (ex,), ds = _read(data, processor, max_images=4)
    assert ex.num_images == 4 and ds.stats.images_over_cap == 5
    for text in ASR:  # images over the cap are ignored, their texts stay
        assert text in processor.tokenizer.decode(ex.input_ids)

    seq = processor.image_seq_len
    examples, ds = _read(data, processor, max_length=12)  # BOS and an image fit; no text does: nothing to learn
    assert examples == [] and ds.stats.empty_samples == 1
    for max_length in (30, 37, 50, 60):
        (ex,), ds = _read(data, processor, max_length=max_length)
        assert len(ex.input_ids) <= max_length and ds.stats.truncated_samples == 1
        assert ex.input_ids.count(image_token_id(processor)) == ex.num_images * seq
        assert ds.stats.images_loaded == 9 and ds.stats.images_truncated == 9 - ex.num_images
        batch = collate([ex], ds.pad_id, ds.layout)
        labels = batch.pop("labels")
        with torch.no_grad():  # the model accepts it: image tokens and image features agree
            logits = model(**batch).logits
        assert logits.shape[1] == labels.shape[1]


def test_packing_puts_the_end_of_video_marker_between_samples(tmp_path, processor):
    data = _jsonl(tmp_path / "samples.jsonl", [_lesson(tmp_path, "vidA"), _lesson(tmp_path, "vidB", clips=2)])
    single, _ = _read(data, processor)
    (packed,), ds = _read(data, processor, pack=True, max_length=4096)
    eov = processor.tokenizer.convert_tokens_to_ids(EOV_MARKER)
    assert packed.samples == 2 and packed.input_ids.count(eov) == 1
    cut = packed.input_ids.index(eov)
    assert packed.input_ids[:cut] == single[0].input_ids[:-1]  # BOS body (no EOS) <eov> body EOS
    assert packed.input_ids[cut + 1:] == single[1].input_ids[1:]
    assert packed.num_images == single[0].num_images + single[1].num_images
    assert packed.position == 2 and ds.stats.sequences == 1
    # too long together: two sequences; an image cap of 3 also separates them
    assert len(_read(data, processor, pack=True, max_length=len(single[0].input_ids) + 5)[0]) == 2
    assert len(_read(data, processor, pack=True, max_length=4096, max_images=3)[0]) == 2

    exported = _lesson(tmp_path, "vidC")  # what `--pack concat` exports: the marker as a text position
    exported["images"].append(None)
    exported["texts"].append(EOV_MARKER)
    exported["text_ocr_list"].append(EOV_MARKER)
    exported["metadata"].append({"type": "eov"})
    (ex,), _ = _read(_jsonl(tmp_path / "c.jsonl", [exported]), processor)
    assert ex.input_ids[-2:] == [eov, processor.tokenizer.eos_token_id]


def test_untrusted_text_cannot_forge_image_tokens(tmp_path, processor):
    sample = _lesson(tmp_path, clips=1)
    sample["text_ocr_list"][-1] = "see <image><fake_token_around_image> here <|endoftext|>"
    (ex,), _ = _read(_jsonl(tmp_path / "samples.jsonl", [sample]), processor)
    assert ex.input_ids.count(image_token_id(processor)) == processor.image_seq_len
    assert ex.input_ids.count(processor.tokenizer.eos_token_id) == 2  # BOS and EOS only


def test_shuffle_is_seeded_and_resumes_mid_epoch(tmp_path, processor):
    samples = [{"images": [None], "texts": [f"sample number {i}"]} for i in range(8)]
    data = _jsonl(tmp_path / "samples.jsonl", samples)

    def order(ds):
        return [processor.tokenizer.decode(e.input_ids, skip_special_tokens=True).strip() for e in ds]

    a = InterleavedDataset(data, processor, ReaderConfig(shuffle=True, seed=3, mask_before_first_image=False))
    first = order(a)
    assert sorted(first) == sorted(s["texts"][0] for s in samples) and first != [s["texts"][0] for s in samples]
    b = InterleavedDataset(data, processor, ReaderConfig(shuffle=True, seed=3, mask_before_first_image=False))
    b.set_position(0, 5)
    assert order(b) == first[5:]
    b.set_position(1, 0)
    assert sorted(order(b)) == sorted(first) and order(b) != first  # a new permutation per epoch
    assert [e.position for e in InterleavedDataset(data, processor, ReaderConfig(mask_before_first_image=False))] \
        == list(range(1, 9))


def test_parquet_and_folder_inputs_read_the_same(tmp_path, processor):
    from pipeline.export import export_samples

    samples = [_lesson(tmp_path / "media", "vidA"), _lesson(tmp_path / "media", "vidB")]
    export_samples(samples, tmp_path / "pq", "parquet", tmp_path / "media")
    export_samples(samples, tmp_path / "jl", "jsonl", tmp_path / "media")
    a, _ = _read(tmp_path / "pq", processor)  # a folder: its samples.* file
    b, _ = _read(tmp_path / "jl" / "samples.jsonl", processor)
    assert [e.input_ids for e in a] == [e.input_ids for e in b] and len(a) == 2
    shutil.rmtree(tmp_path / "pq" / "images")
    _, ds = _read(tmp_path / "pq", processor, max_missing_images=1.0)
    assert ds.stats.images_missing == sum(s["image_num"] for s in samples)
    with pytest.raises(ReaderError, match="could not be loaded"):  # by default: no training on text alone
        _read(tmp_path / "pq", processor)


@pytest.mark.slow
def test_llava_style_processor_takes_the_flat_path(processed, processor):
    """LLaVA: one <image> expanded to N tokens per image, pixel_values (images, C, H, W) across the batch."""
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    tok = tiny_processor().tokenizer
    llava_proc = LlavaProcessor(image_processor=CLIPImageProcessorPil(size={"shortest_edge": 32},
                                                                      crop_size={"height": 32, "width": 32}),
                                tokenizer=tok, patch_size=16, vision_feature_select_strategy="default",
                                image_token="<image>", num_additional_image_tokens=1)
    config = LlavaConfig(
        vision_config=CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                       num_attention_heads=2, image_size=32, patch_size=16),
        text_config=LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                num_attention_heads=2, num_key_value_heads=1),
        image_token_id=image_token_id(llava_proc), vision_feature_select_strategy="default")
    examples, ds = _read(processed["out"], llava_proc)
    assert ds.layout == "flat"
    batch = collate(examples, ds.pad_id, ds.layout)
    labels = batch.pop("labels")
    n_images = sum(e.num_images for e in examples)
    assert batch["pixel_values"].shape == (n_images, 3, 32, 32)
    img = batch["input_ids"] == image_token_id(llava_proc)
    assert int(img.sum()) == n_images * 4 and (labels[img] == -100).all()
    with torch.no_grad():
        assert LlavaForConditionalGeneration(config)(**batch).logits.shape[:2] == labels.shape


# -- the released corpus as its dataset card documents it ---------------------------------------------------------
RELEASED_ROOT = "/mnt/workspace/zwq_data/interleaved_dataset/"  # the prefix the card says to replace


def released_fixture(tmp_path: Path) -> tuple[Path, Path, int]:
    """Two samples written by hand in the layout of huggingface.co/datasets/DAMO-NLP-SG/multimodal_textbook
    ("Learning about annotation file", "Naming Rule of keyframe"): one JSON list; absolute image paths under
    /mnt/workspace/zwq_data/interleaved_dataset/dataset_images_interval_7/VID/VID@START_END#K.jpg (K from 1);
    texts = ASR, text_ocr_list = ASR + OCR; OBELICS metadata (a dict at an image, null at a text); image_num,
    text_num (ASR tokens), token_num (text_num + 576 per image). The second sample opens with a text and has
    two texts in a row (a clip whose frames were dropped). Returns (json file, image folder, images)."""
    folder = tmp_path / "mine" / "dataset_images_interval_7"
    asr = ["Hi everyone, and welcome to another lesson in our Eureka Tips for computers series.",
           "I'm actually trying to use the number line to find the sum for each.",
           "So to start I'm going to use the paint tool to demonstrate.",
           "Let's use the number line for four plus five.",
           "We're going to start at four then we're going to count up five."]
    layout = [("-1uixJ1V-As", [("@0.0_10.0#1.jpg", None), (None, 0), ("@10.0_55.0#1.jpg", None),
                               ("@10.0_55.0#2.jpg", None), (None, 1)]),
              ("x2Fb0_7yQk8", [(None, 2), ("@3.5_17.25#1.jpg", None), (None, 3), (None, 4)])]
    samples, n_images = [], 0
    for vid, positions in layout:
        images, texts, ocr, meta = [], [], [], []
        for name, t in positions:
            if name:
                rel = f"dataset_images_interval_7/{vid}/{vid}{name}"
                _image(folder.parent / rel, 30 * n_images)
                images.append(RELEASED_ROOT + rel)
                texts.append(None)
                ocr.append(None)
                meta.append({"video_id": vid, "keyframe": name})
                n_images += 1
            else:
                images.append(None)
                texts.append(asr[t])
                ocr.append(f"{asr[t]} number line 4 + 5 = 9")
                meta.append(None)
        image_num = sum(i is not None for i in images)
        samples.append({"images": images, "texts": texts, "text_ocr_list": ocr, "metadata": meta,
                        "image_num": image_num, "text_num": 17 * len(positions),
                        "token_num": 17 * len(positions) + 576 * image_num})
    data = tmp_path / "multimodal_textbook.json"
    data.write_text(json.dumps(samples, indent=4))
    return data, folder.parent, n_images


def test_released_json_reads_with_every_image_after_a_prefix_rewrite(tmp_path, processor):
    from train.data import check_images

    data, mine, n_images = released_fixture(tmp_path)
    cfg = {"image_prefixes": ((RELEASED_ROOT, f"{mine}/"),)}
    examples, ds = _read(data, processor, **cfg)
    assert len(examples) == 2 and ds.stats.images_loaded == n_images == 4
    assert ds.stats.images_failed == 0
    assert check_images(data, ReaderConfig(**cfg)) == {"tried": 4, "missing": 0, "first_missing": None}
    tok = processor.tokenizer
    second = examples[1]
    img = image_token_id(processor)
    first_image = second.input_ids.index(tok.convert_tokens_to_ids("<fake_token_around_image>"))
    lead = tok.decode(second.input_ids[1:first_image])
    assert lead == "So to start I'm going to use the paint tool to demonstrate."
    assert all(x == -100 for x in second.labels[1:first_image])  # no loss before the first image (released)
    assert ds.stats.masked_tokens == first_image - 1
    # texts in a row joined with one space, as their loader's " ".join; ASR only
    assert "for four plus five. We're going to start" in tok.decode(second.input_ids)
    assert "number line 4 + 5" not in tok.decode(second.input_ids) and second.input_ids.count(img) > 0
    unmasked, _ = _read(data, processor, mask_before_first_image=False, **cfg)
    assert all(x != -100 for x in unmasked[1].labels[1:first_image])


def test_released_json_with_missing_images_stops_with_one_line(tmp_path, processor):
    from train.data import check_images

    data, _, _ = released_fixture(tmp_path)
    with pytest.raises(ReaderError) as err:
        _read(data, processor)
    msg = str(err.value)
    assert "4 of 4 images could not be loaded" in msg and "\n" not in msg
    assert RELEASED_ROOT in msg and "--image-prefix OLD=NEW" in msg
    with pytest.raises(ReaderError, match="4 of 4 images could not be loaded"):
        check_images(data, ReaderConfig())  # before a model is loaded
    with pytest.raises(ReaderError, match="OLD=NEW"):
        parse_prefixes(["/mnt/workspace"])


def test_missing_share_threshold(tmp_path, processor):
    samples = [_lesson(tmp_path, f"v{i}", clips=4) for i in range(5)]  # 20 images
    (tmp_path / samples[0]["images"][2]).unlink()  # 1 of 20 missing: 5%
    data = _jsonl(tmp_path / "samples.jsonl", samples)
    examples, ds = _read(data, processor)  # 5% is allowed
    assert len(examples) == 5 and ds.stats.images_missing == 1
    with pytest.raises(ReaderError, match=r"1 of 20 images could not be loaded \(5%, more than the 4%"):
        _read(data, processor, max_missing_images=0.04)
    many = [_lesson(tmp_path / "m", f"w{i}", clips=4) for i in range(12)]  # 48 images, all gone
    shutil.rmtree(tmp_path / "m" / "images")
    ds = InterleavedDataset(_jsonl(tmp_path / "m.jsonl", many), processor, ReaderConfig())
    it = iter(ds)
    with pytest.raises(ReaderError, match="could not be loaded"):
        next(it)
    assert ds.stats.records < len(many)  # stopped early, not at the end of the pass


def test_curriculum_keeps_the_order_and_shuffles_within_a_difficulty(tmp_path, processor):
    diffs = [1, 1, 1, 1, 2, 2, 2, 3, 3, 3, 3, None]
    samples = [{"images": [None], "texts": [f"sample number {i}"], "metadata": [{"difficulty": d}]}
               for i, d in enumerate(diffs)]
    data = _jsonl(tmp_path / "samples.jsonl", samples)
    tok = processor.tokenizer

    def order(ds) -> list[int]:
        return [int(tok.decode(e.input_ids, skip_special_tokens=True).split()[-1]) for e in ds]

    base = {"mask_before_first_image": False, "seed": 5}
    kept = order(InterleavedDataset(data, processor, ReaderConfig(curriculum=True, **base)))
    assert kept == list(range(len(diffs)))  # file order
    ds = InterleavedDataset(data, processor, ReaderConfig(curriculum=True, shuffle=True, **base))
    first = order(ds)
    assert [diffs[i] for i in first] == diffs and first != list(range(len(diffs)))  # shuffled within bands only
    assert ds.stats.order == "curriculum, shuffled within difficulty"
    ds.set_position(0, 5)
    assert order(ds) == first[5:]  # resumes mid-epoch
    ds.set_position(1, 0)
    second = order(ds)
    assert [diffs[i] for i in second] == diffs and second != first
    free = order(InterleavedDataset(data, processor, ReaderConfig(shuffle=True, **base)))
    assert [diffs[i] for i in free] != diffs  # a plain shuffle mixes the bands


def test_a_json_list_shuffles_like_json_lines(tmp_path, processor):
    """Items of a JSON list are indexed by byte offset (non-ASCII text, CRLF line ends): the same seeded
    permutation as the same samples in JSON lines, and the same resume position."""
    samples = [{"images": [None], "texts": [f"échantillon numéro {i} — 数 {i}"]} for i in range(9)]
    lines = _jsonl(tmp_path / "samples.jsonl", samples)
    listed = tmp_path / "list.json"
    listed.write_bytes(("\ufeff" + json.dumps(samples, indent=2, ensure_ascii=False)).replace("\n", "\r\n")
                       .encode("utf-8"))
    cfg = ReaderConfig(shuffle=True, seed=7, mask_before_first_image=False)
    a = [e.input_ids for e in InterleavedDataset(lines, processor, cfg)]
    ds = InterleavedDataset(listed, processor, cfg)
    b = [e.input_ids for e in ds]
    assert a == b and len(b) == 9 and ds.stats.order == "shuffled"
    assert a != [e.input_ids for e in InterleavedDataset(lines, processor, ReaderConfig(mask_before_first_image=False))]
    ds.set_position(0, 4)
    assert [e.input_ids for e in ds] == b[4:]
    assert ds.count_records() == 9


def test_a_curriculum_export_is_read_easy_to_difficult(tmp_path, processor):
    from pipeline.curriculum import sample_difficulty
    from pipeline.export import ExportOptions, export
    from tests.pipeline._corpus import make_corpus

    corpus = make_corpus(tmp_path / "c", videos=9, clips=1, frames=1, difficulties=(3, 1, 2), words=8)
    export(corpus.samples, tmp_path / "out", "jsonl", corpus.media, ExportOptions(order="curriculum"))
    rows = [json.loads(x) for x in (tmp_path / "out" / "samples.jsonl").read_text().splitlines()]
    want = [sample_difficulty(r) for r in rows]
    assert want == sorted(want) == [1] * 3 + [2] * 3 + [3] * 3
    by_text = {" ".join(r["texts"][-1].split()): sample_difficulty(r) for r in rows}
    assert len(by_text) == len(rows)
    ds = InterleavedDataset(tmp_path / "out", processor, ReaderConfig(curriculum=True, shuffle=True, seed=1))
    got = []
    for e in ds:
        text = processor.tokenizer.decode([t for t, lab in zip(e.input_ids, e.labels, strict=True) if lab != -100],
                                          skip_special_tokens=True).split()
        got.append(by_text[" ".join(text)])
    assert got == want and ds.stats.images_loaded == 9
