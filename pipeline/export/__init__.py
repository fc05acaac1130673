"""Export samples in the released Multimodal Textbook layout: JSONL, one JSON list, or Parquet.

Image paths in samples are relative to the export folder (``images/VID/VID@S_E#K.jpg``);
the files are hard-linked (or copied) from the store's media folder.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

FORMATS = ("jsonl", "json", "parquet")


class ExportError(Exception):
    pass


def export_samples(samples: list[dict], out_dir: Path, fmt: str, media_dir: Path) -> Path:
    if fmt not in FORMATS:
        raise ExportError(f"unknown format {fmt!r} (one of {', '.join(FORMATS)})")
    out_dir.mkdir(parents=True, exist_ok=True)
    for s in samples:
        for rel in s["images"]:
            if rel is None:
                continue
            src, dst = media_dir / rel, out_dir / rel
            if not src.is_file():
                raise ExportError(f"keyframe file missing from the store's media folder: {src}")
            if dst.is_file() and dst.stat().st_size == src.stat().st_size:
                continue
            dst.parent.mkdir(parents=True, exist_ok=True)
            try:
                if dst.exists():
                    dst.unlink()
                os.link(src, dst)
            except OSError:
                shutil.copyfile(src, dst)
    target = out_dir / {"jsonl": "samples.jsonl", "json": "samples.json", "parquet": "samples.parquet"}[fmt]
    tmp = target.with_name(target.name + ".tmp")
    if fmt == "jsonl":
        with open(tmp, "w", encoding="utf-8") as fh:
            for s in samples:
                fh.write(json.dumps(s, ensure_ascii=False) + "\n")
    elif fmt == "json":
        tmp.write_text(json.dumps(samples, ensure_ascii=False), encoding="utf-8")
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.table({
            "images": [s["images"] for s in samples],
            "texts": [s["texts"] for s in samples],
            "text_ocr_list": [s["text_ocr_list"] for s in samples],
            "metadata": [json.dumps(s["metadata"], ensure_ascii=False) for s in samples],
            "image_num": pa.array([s["image_num"] for s in samples], pa.int32()),
            "text_num": pa.array([s["text_num"] for s in samples], pa.int32()),
            "token_num": pa.array([s["token_num"] for s in samples], pa.int32()),
        })
        pq.write_table(table, tmp)
    os.replace(tmp, target)
    return target
