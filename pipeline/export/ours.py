"""Our own layouts: ``jsonl`` (samples.jsonl), ``json`` (samples.json), ``parquet`` (samples.parquet), and
``obelics`` (obelics.parquet, OBELICS's four columns).

Our layout is the released one (``images``, ``texts``, ``text_ocr_list``, ``metadata``, ``image_num``,
``text_num``, ``token_num``) with: image paths relative to the export folder under our URL-safe names
(pipeline.assemble.image_name), a metadata dict at every position (text positions too: video, curriculum,
clip), and concat packing's end-of-video marker kept as a text position of its own (``{"type": "eov"}``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path

from pipeline.curriculum import sample_difficulty
from pipeline.export.common import (
    ExportResult,
    ImagePlacer,
    JsonListWriter,
    atomic_file,
    image_refs,
    public_meta,
    strip_eov,
)

TARGETS = {"jsonl": "samples.jsonl", "json": "samples.json", "parquet": "samples.parquet",
           "obelics": "obelics.parquet"}
_BATCH = 512


def ours(sample: dict, placer: ImagePlacer) -> dict:
    """The sample with its images placed under our names and its metadata free of machine paths."""
    images = list(sample["images"])
    for ref in image_refs(sample):
        images[ref.position] = placer.place(ref.src_rel, ref.ours)
    return {**sample, "images": images, "metadata": [public_meta(m) for m in sample.get("metadata") or []]}


def _placed(samples: Iterable[dict], placer: ImagePlacer, result: ExportResult) -> Iterator[dict]:
    for s in samples:
        out = ours(s, placer)
        result.samples += 1
        yield out


def target_name(fmt: str, suffix: str | None = None) -> str:
    """samples.jsonl, or samples.SUFFIX.jsonl beside another run's export (pipeline.export.common.run_suffix)."""
    stem, ext = TARGETS[fmt].rsplit(".", 1)
    return TARGETS[fmt] if suffix is None else f"{stem}.{suffix}.{ext}"


def write(fmt: str, samples: Iterable[dict], out_dir: Path, placer: ImagePlacer, result: ExportResult,
          suffix: str | None = None) -> None:
    """Write ``samples`` in our layout as ``fmt`` (jsonl, json, parquet or obelics) to one file (``target_name``),
    replaced atomically, their keyframes placed in the export folder; counts go into ``result``. Raises ExportError
    when a keyframe file is missing."""
    name = target_name(fmt, suffix)
    target = out_dir / name
    result.target, result.files = target, [name]
    placed = _placed(samples, placer, result)
    if fmt == "jsonl":
        with atomic_file(target) as fh:
            for s in placed:
                fh.write(json.dumps(s, ensure_ascii=False) + "\n")
    elif fmt == "json":
        with atomic_file(target) as fh:
            writer = JsonListWriter(fh)
            for s in placed:
                writer.add(s)
            writer.close()
    elif fmt == "parquet":
        _parquet(target, placed, _ours_row, "ours")
    else:
        _parquet(target, placed, _obelics_row, "obelics")


def _ours_row(s: dict) -> dict:
    return {"images": s["images"], "texts": s["texts"], "text_ocr_list": s.get("text_ocr_list"),
            "metadata": json.dumps(s["metadata"], ensure_ascii=False), "image_num": s["image_num"],
            "text_num": s["text_num"], "token_num": s["token_num"]}


def _obelics_row(s: dict) -> dict:
    """OBELICS (HuggingFaceM4/OBELICS): images, metadata (JSON: a dict at each image, null at each text),
    general_metadata (JSON, the document's), texts. End-of-video markers are left out (the boundary is in
    the next image's video_id)."""
    s = strip_eov(s)
    metadata = [m if img is not None else None for img, m in zip(s["images"], s["metadata"], strict=True)]
    general = {"video_ids": list(dict.fromkeys(m["video_id"] for m in s["metadata"]
                                               if isinstance(m, dict) and m.get("video_id"))),
               "sources": list(dict.fromkeys(m["source"] for m in s["metadata"]
                                             if isinstance(m, dict) and m.get("source"))),
               "difficulty": sample_difficulty(s), "image_num": s["image_num"], "text_num": s["text_num"],
               "token_num": s["token_num"]}
    return {"images": s["images"], "metadata": json.dumps(metadata, ensure_ascii=False),
            "general_metadata": json.dumps(general, ensure_ascii=False), "texts": s["texts"]}


def _schema(kind: str):
    import pyarrow as pa

    strings = pa.list_(pa.string())
    if kind == "ours":
        return pa.schema([("images", strings), ("texts", strings), ("text_ocr_list", strings),
                          ("metadata", pa.string()), ("image_num", pa.int32()), ("text_num", pa.int32()),
                          ("token_num", pa.int32())])
    return pa.schema([("images", strings), ("metadata", pa.string()), ("general_metadata", pa.string()),
                      ("texts", strings)])


def _parquet(target: Path, samples: Iterable[dict], row, schema_kind: str) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = _schema(schema_kind)
    with atomic_file(target, "wb") as fh:
        writer = pq.ParquetWriter(fh, schema)
        batch: list[dict] = []
        for s in samples:
            batch.append(row(s))
            if len(batch) == _BATCH:
                writer.write_table(pa.Table.from_pylist(batch, schema=schema))
                batch = []
        if batch:
            writer.write_table(pa.Table.from_pylist(batch, schema=schema))
        writer.close()
