"""``hf``: a folder ``datasets.load_dataset`` reads, images embedded, with a dataset card.

    README.md                                     the dataset card (YAML header + figures of the run)
    data/train-00000-of-00003.parquet, ...        ``--shard-size`` samples per file

Columns: ``images`` (a list with an Image, bytes embedded, at each image position and None at each text
position), ``texts``, ``text_ocr_list``, ``metadata`` (JSON text: one entry per position, as in our
layout), ``image_num``, ``text_num``, ``token_num``, ``video_ids``, ``difficulty`` (the sample's, for
curriculum filtering). The Parquet schema carries the ``datasets`` features, so ``load_dataset(FOLDER)``
decodes images to PIL. Each image's ``path`` is its name in our layout (never a path of this machine).

The card reports the run's Table 1 and Table 7 (pipeline.stats.corpus_stats), its config (absolute paths
cut to their last part, secrets and URL credentials removed) and the license field of every source.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from pipeline.curriculum import sample_difficulty
from pipeline.export.common import (
    DatasetCard,
    ExportOptions,
    ExportResult,
    ImagePlacer,
    atomic_file,
    image_refs,
    owned_or_absent,
    public_meta,
)
from pipeline.figures import TABLE7_COLUMNS, table7_cell

CARD = "README.md"
DATA = "data"
ROW_GROUP = 64  # samples per Parquet row group (their images are held in memory until written)
_SECRET_KEY = re.compile(r"key|token|secret|password|passwd|credential|auth", re.IGNORECASE)
_ABS = re.compile(r"^(?:/|~|[A-Za-z]:[\\/]|\\\\)")


def features():
    """The ``datasets.Features`` of the hf layout: images embedded, texts and counts, metadata as JSON text."""
    import datasets

    strings = datasets.List(datasets.Value("string"))
    return datasets.Features({
        "images": datasets.List(datasets.Image()), "texts": strings, "text_ocr_list": strings,
        "metadata": datasets.Value("string"), "image_num": datasets.Value("int32"),
        "text_num": datasets.Value("int32"), "token_num": datasets.Value("int32"),
        "video_ids": strings, "difficulty": datasets.Value("float64")})


def hf_row(sample: dict, placer: ImagePlacer) -> dict:
    """One row: images embedded as ``{"bytes", "path"}``, metadata as JSON text."""
    images: list = [None] * len(sample["images"])
    for ref in image_refs(sample):
        images[ref.position] = {"bytes": placer.source(ref.src_rel).read_bytes(), "path": ref.ours}
    metas = [public_meta(m) for m in sample.get("metadata") or [None] * len(images)]
    vids = list(dict.fromkeys(m["video_id"] for m in metas if isinstance(m, dict) and m.get("video_id")))
    d = sample_difficulty(sample)
    return {"images": images, "texts": sample["texts"],
            "text_ocr_list": sample.get("text_ocr_list") or list(sample["texts"]),
            "metadata": json.dumps(metas, ensure_ascii=False), "image_num": sample["image_num"],
            "text_num": sample["text_num"], "token_num": sample["token_num"], "video_ids": vids,
            "difficulty": float(d) if d is not None else None}


def write(samples: Iterable[dict], out_dir: Path, placer: ImagePlacer, opts: ExportOptions,
          result: ExportResult) -> None:
    """Write the samples that have an image as Parquet shards of ``opts.shard_size`` samples (``ROW_GROUP`` per row
    group, so memory holds at most that many samples' images), then the dataset card. Raises ExportError when the
    folder holds files an earlier export did not write."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    owned_or_absent(out_dir, "hf", CARD)
    feats = features()
    schema = feats.arrow_schema
    tmp = out_dir / DATA / f".tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        parts: list[Path] = []
        rows: list[dict] = []
        writer = None
        in_part = 0

        def write_rows() -> None:  # one row group: at most ROW_GROUP samples' images in memory
            nonlocal writer
            if not rows:
                return
            if writer is None:
                parts.append(tmp / f"part-{len(parts):05d}.parquet")
                writer = pq.ParquetWriter(parts[-1], schema)
            writer.write_table(pa.Table.from_pylist([feats.encode_example(r) for r in rows], schema=schema))
            rows.clear()

        def close_part() -> None:
            nonlocal writer, in_part
            write_rows()
            if writer is not None:
                writer.close()
                writer, in_part = None, 0

        for s in samples:
            if not any(img is not None for img in s["images"]):
                result.skipped += 1
                continue
            rows.append(hf_row(s, placer))
            result.samples += 1
            result.images += s["image_num"]
            in_part += 1
            if len(rows) >= ROW_GROUP:
                write_rows()
            if in_part >= opts.shard_size:
                close_part()
        close_part()
        if not parts:  # an empty dataset still loads: one file with the schema and no rows
            parts.append(tmp / "part-00000.parquet")
            pq.write_table(pa.Table.from_pylist([], schema=schema), parts[-1])
        names = [f"train-{i:05d}-of-{len(parts):05d}.parquet" for i in range(len(parts))]
        for part, name in zip(parts, names, strict=True):
            os.replace(part, out_dir / DATA / name)
        result.files = [f"{DATA}/{n}" for n in names]
    finally:
        with contextlib.suppress(OSError):
            shutil.rmtree(tmp)
    with atomic_file(out_dir / CARD) as fh:
        fh.write(card_text(opts.card, result, opts))
    result.files.append(CARD)
    result.target = out_dir


# -- the dataset card ------------------------------------------------------------------------------------------
def scrub(value, key: str = ""):
    """A config value safe to publish: secrets redacted, absolute paths cut to their last part, URL
    credentials and queries removed."""
    from pipeline.provenance import public_url

    if isinstance(value, dict):
        return {k: scrub(v, k) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [scrub(v, key) for v in value]
    if isinstance(value, str):
        if value and _SECRET_KEY.search(key) and not key.endswith(("_tokens", "tokens", "tokenizer")):
            return "<redacted>"
        url = public_url(value)
        if url:
            return url.split("?", 1)[0]
        if _ABS.match(value):
            return "…/" + re.split(r"[\\/]", value.rstrip("/\\"))[-1]
    return value


def _cell(value) -> str:
    """Untrusted text in a Markdown table cell: no HTML, no column break, no line break."""
    text = "" if value is None else str(value)
    text = text.replace("\\", "\\\\").replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")
    return re.sub(r"\s+", " ", text).strip().replace("`", "\\`")


def _table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def card_text(card: DatasetCard | None, result: ExportResult, opts: ExportOptions) -> str:
    """README.md of the hf folder: YAML header (license, the data files) and the run's figures."""
    import yaml

    licenses = Counter((s.get("license") or "unknown") for s in (card.sources if card else []))
    values = [v for v in licenses if v != "unknown"]
    header = {"license": values[0] if len(values) == 1 and not licenses.get("unknown") and
              re.fullmatch(r"[a-z0-9.-]+", values[0]) else "other",
              "tags": ["image-text-interleaved", "multimodal-textbook", "pretraining"],
              "configs": [{"config_name": "default", "data_files": [{"split": "train", "path": f"{DATA}/train-*"}]}]}
    out = ["---", yaml.safe_dump(header, sort_keys=False, allow_unicode=True).strip(), "---", ""]
    title = f"run {card.run_id}" if card else "an export"
    out += [f"# A multimodal textbook ({_cell(title)})", "",
            "An image-text interleaved pretraining corpus built from instructional videos by `textbook`, "
            "the method of \"2.5 Years in Class\" (ICCV 2025): keyframes (SSIM), ASR and OCR of each clip, "
            "interleaved in time order and packed into samples.", "",
            f"{result.samples} samples, {result.images} images, order: {opts.order}"
            + (f"; {result.skipped} samples without an image left out" if result.skipped else "") + ".", "",
            "```python", "import datasets", 'ds = datasets.load_dataset("PATH/TO/THIS/FOLDER", split="train")',
            "```", "",
            "Columns: `images` (an image at each image position, None at each text position), `texts` (ASR), "
            "`text_ocr_list` (OCR then ASR), `metadata` (JSON: per position the video id, source, subject, "
            "course, sub-course, knowledge point, difficulty, clip bounds in seconds, keyframe time), "
            "`image_num`, `text_num` (ASR tokens), `token_num` (the estimated sequence length: `text_num` + "
            "tokens per image x `image_num`, 576 per image (LLaVA-1.5) unless the run set "
            "`pipeline.pack.image_tokens`), `video_ids`, `difficulty` (the sample's: the hardest of its videos; "
            "lower is easier).", ""]
    if card is None:
        out += ["(No store was given to this export: the run's statistics and sources are not reported.)", ""]
        return "\n".join(out)
    t1 = card.stats.get("table1") or {}
    spreads = [("images/sample", "images_per_sample"), ("text tokens/sample (ASR + OCR)", "tokens_per_sample"),
               ("ASR tokens/sample (text_num)", "asr_tokens_per_sample"),
               ("OCR tokens/sample", "ocr_tokens_per_sample")]
    out += ["## Per dataset (paper Table 1)", "", f"{t1.get('samples')} samples.", "",
            _table(["per sample", "min", "max", "avg"],
                   [[label, *((t1.get(key) or {}).get(k) for k in ("min", "max", "avg"))]
                    for label, key in spreads if key in t1]), ""]
    out += ["## Per subject (paper Table 7)", "",
            "Hours are the kept videos' durations; topics the knowledge points with a kept video; ASR and OCR "
            "tokens those of the samples' texts.", "",
            _table(TABLE7_COLUMNS, [[table7_cell(r, c) for c in TABLE7_COLUMNS]
                                    for r in card.stats.get("table7") or []]), ""]
    out += ["## Sources and their licenses", "",
            "The license field of each source video as its source reported it (YouTube: `youtube` is the "
            "Standard YouTube License, `creativeCommon` CC BY; a local file: its sidecar's `license`). "
            "Check them before you share or train on this dataset.", "",
            _table(["license", "videos"], [[k, v] for k, v in licenses.most_common()]), ""]
    if card.sources and len(card.sources) <= 500:
        out += [_table(["video", "source", "title", "license"],
                       [[s.get("video_id"), s.get("source"), s.get("title"), s.get("license") or "unknown"]
                        for s in card.sources]), ""]
    out += ["## Config of the run", "", "```json",
            json.dumps(scrub(card.config), indent=1, ensure_ascii=False, default=str).replace("```", "'''"),
            "```", ""]
    return "\n".join(out)

