"""The released Multimodal Textbook's two formats, as its own training code reads them.

Source: DAMO-NLP-SG/multimodal_textbook (GitHub) and its dataset card (huggingface.co/datasets/DAMO-NLP-SG/
multimodal_textbook, README "Using Multimodal Textbook").

``released`` (multimodal_textbook.json): the OBELICS-style JSON list that LLaVA-1.5 pretraining reads
(llava/train/datasets.py, ``ObelicsFormatDataset``, chosen by ``--data_type obelisc`` in
scripts/run_training.sh). What that loader does, and so what this writes:
- ``load_image`` joins every image path onto one fixed folder with ``os.path.join``: only an absolute path
  survives, so image paths are absolute: ``--image-root`` (the folder the images will be in on the machine
  that trains), else this export's own ``images/`` folder. The card tells users to rewrite the prefix
  ``/mnt/workspace/zwq_data/interleaved_dataset/``; ``textbook train --image-prefix OLD=NEW`` does that.
- ``parse_sample`` asserts ``len(images) == len(texts)`` and that the images equal the null texts in number;
  ``getitem`` asserts at least one image: a sample without one is not written.
- it reads ``texts`` only (ASR), puts ``<image>`` at each null text, joins with spaces: texts are escaped
  (pipeline.assemble.escape_special_tokens), so no text adds an image token.
- ``metadata``: a list, or a JSON string of one; OBELICS puts a dict at each image and null at each text.
- ``text_ocr_list``: ours (the clip's OCR lines, then its ASR); the card says only "asr1+ocr1" and neither
  released loader reads it.
- keyframe names ``VIDEOID@START_END#K.jpg`` (card, "Naming Rule of keyframe"): K from 1, times as Python
  prints them (pipeline.assemble.released_image_name).
- counts (card: "the number of images, the number of asr text tokens, and the estimated total number of
  tokens"): ``text_num`` = tokens of ``texts``; ``token_num`` = ``text_num + image_num * image_tokens``
  (576 for LLaVA-1.5, ``--image-tokens``); the card's example holds: 425 + 15 * 576 = 9065.
- end of a video: the OBELICS file has no marker (only the video-format file does, below); concat packing's
  marker position is left out and the next video's images carry its ``video_id``.

``idefics2`` (textbook_video_clip_format.json): the "video format" Idefics2 pretraining reads
(training_idefics/training/training.py, ``LazySupervisedDataset``; run.sh passes
``ours_textbook_video_clip_format.json``): a JSON list of ``{"token_num", "conversations": [clip, ...]}``.
A clip: ``vid``, ``clip_path``, ``asr``, ``refined_asr`` (the rewrite; the trainer prefers it),
``keyframe_ssim`` (the SSIM keyframes' absolute paths; the trainer opens each), ``ocr_qwen2_vl_72b`` (the
OCR the trainer adds with ``--add_ocr``), ``image_tokens``, ``asr_token_num``, ``token_num``; a video's end
is the clip ``{"vid": "End of a Video", "clip_path": VIDEOID, "image_tokens": 0, "token_num": 0}``
(card: "When a long video ends, it will store as `End of a Video`"). ``clip_path`` is a clip id
(``VIDEOID@START_END``): no clip video files are cut.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from pipeline.assemble import is_eov
from pipeline.export.common import (
    ExportError,
    ExportOptions,
    ExportResult,
    ImagePlacer,
    JsonListWriter,
    atomic_file,
    image_refs,
    public_meta,
    strip_eov,
)
from pipeline.tokens import count_tokens_many

TARGETS = {"released": "multimodal_textbook.json", "idefics2": "textbook_video_clip_format.json"}
END_OF_VIDEO = "End of a Video"


def _root(out_dir: Path, opts: ExportOptions) -> str:
    return opts.image_root or (out_dir / "images").resolve().as_posix()


def _place(sample: dict, placer: ImagePlacer, root: str) -> list[str | None]:
    images: list[str | None] = [None] * len(sample["images"])
    for ref in image_refs(sample):
        rel = placer.place(ref.src_rel, f"images/{ref.released}")
        images[ref.position] = f"{root}/{rel.removeprefix('images/')}"
    return images


def released_sample(sample: dict, images: list[str | None], text_num: int, image_tokens: int) -> dict:
    """One sample of multimodal_textbook.json from one of ours (end-of-video positions already removed)."""
    texts = sample["texts"]
    if sum(i is not None for i in images) != sum(t is None for t in texts):
        raise ExportError("a sample's images and null texts differ in number (not a sample of ours)")
    metas = sample.get("metadata") or [None] * len(images)
    image_num = sum(i is not None for i in images)
    return {"images": images, "texts": texts, "text_ocr_list": sample.get("text_ocr_list") or list(texts),
            "metadata": [public_meta(m) if img is not None else None for img, m in zip(images, metas, strict=True)],
            "image_num": image_num, "text_num": text_num, "token_num": text_num + image_num * image_tokens}


def asr_tokens(sample: dict, tokenizer: str) -> int:
    """``text_num`` as released: tokens of the ASR texts. A sample packed by this version (its metadata names
    a ``subcourse`` key) already counts so; an older one (text positions counted) is counted again."""
    metas = sample.get("metadata") or []
    if metas and all(isinstance(m, dict) and ("subcourse" in m or is_eov(m)) for m in metas):
        return sample["text_num"]
    return sum(count_tokens_many([t for t in sample["texts"] if t], tokenizer))


def write_released(samples: Iterable[dict], out_dir: Path, placer: ImagePlacer, opts: ExportOptions,
                   result: ExportResult) -> None:
    """Write ``multimodal_textbook.json``: the samples that have an image, end-of-video markers stripped, as the
    released LLaVA loader reads them (absolute image paths under ``opts.image_root``, else this export's images)."""
    target = out_dir / TARGETS["released"]
    result.target, result.files = target, [TARGETS["released"]]
    root = _root(out_dir, opts)
    with atomic_file(target) as fh:
        writer = JsonListWriter(fh)
        for s in samples:
            s = strip_eov(s)
            if not any(i is not None for i in s["images"]):
                result.skipped += 1
                continue
            writer.add(released_sample(s, _place(s, placer, root), asr_tokens(s, opts.tokenizer), opts.image_tokens))
            result.samples += 1
        writer.close()


def idefics2_entry(sample: dict, images: list[str | None], opts: ExportOptions) -> dict:
    """One entry of the video-format file: the sample's clips in order, End of a Video between videos."""
    conversations: list[dict] = []
    metas = sample.get("metadata") or [None] * len(images)
    ocrs = sample.get("text_ocr_list") or [None] * len(images)
    frames: list[str] = []
    last_vid = None
    todo = [t for t, m in zip(sample["texts"], metas, strict=True)
            if t is not None and not is_eov(m) and not isinstance((m or {}).get("tokens"), int)]
    counts = iter(count_tokens_many(todo, opts.tokenizer))  # only texts packed without their count
    for i, (img, text, meta) in enumerate(zip(images, sample["texts"], metas, strict=True)):
        meta = meta if isinstance(meta, dict) else {}
        if meta.get("type") == "eov":
            conversations.append({"vid": END_OF_VIDEO, "clip_path": last_vid, "image_tokens": 0, "token_num": 0})
            continue
        if img is not None:
            frames.append(img)
            continue
        vid = meta.get("video_id")
        last_vid = vid
        start, end = meta.get("clip_start"), meta.get("clip_end")
        raw = meta.get("raw_asr")
        ocr_full = ocrs[i] if ocrs[i] is not None else text
        ocr = ocr_full[: len(ocr_full) - len(text)].rstrip("\n") if meta.get("has_ocr") and text else ""
        n_tokens = meta["tokens"] if isinstance(meta.get("tokens"), int) else next(counts)
        image_tokens = len(frames) * opts.image_tokens
        conversations.append({
            "vid": vid,
            "clip_path": f"{vid}@{float(start)!r}_{float(end)!r}" if start is not None and end is not None else vid,
            "asr": raw if raw is not None else text, "refined_asr": text if raw is not None else None,
            "keyframe_ssim": frames, "ocr_qwen2_vl_72b": ocr or None,
            "image_tokens": image_tokens, "asr_token_num": n_tokens, "token_num": n_tokens + image_tokens})
        frames = []
    return {"token_num": sum(c["token_num"] for c in conversations), "conversations": conversations}


def write_idefics2(samples: Iterable[dict], out_dir: Path, placer: ImagePlacer, opts: ExportOptions,
                   result: ExportResult) -> None:
    """Write ``textbook_video_clip_format.json``: the samples that have an image as the released Idefics2 loader's
    video-clip conversations."""
    target = out_dir / TARGETS["idefics2"]
    result.target, result.files = target, [TARGETS["idefics2"]]
    root = _root(out_dir, opts)
    with atomic_file(target) as fh:
        writer = JsonListWriter(fh)
        for s in samples:
            if not any(i is not None for i in s["images"]):
                result.skipped += 1
                continue
            writer.add(idefics2_entry(s, _place(s, placer, root), opts))
            result.samples += 1
        writer.close()
