"""``webdataset``: tar shards written with the ``webdataset`` library, read back with ``webdataset.WebDataset``.

    webdataset/textbook-000000.tar, textbook-000001.tar, ...   (``--shard-size`` samples, ``--shard-mb`` MB)

One sample is one key (its index in the export, 9 digits) with members ``KEY.json`` (the sample in our
layout; each image position holds the member name of its image, e.g. ``"0.jpg"``, instead of a path) and
``KEY.0.jpg``, ``KEY.1.jpg``, ... (the keyframes' JPEG bytes, in order):

    import webdataset as wds
    for s in wds.WebDataset("out/webdataset/textbook-{000000..000003}.tar").decode("pil"):
        images = [s[name] if name else None for name in s["json"]["images"]]   # PIL images and None

The metadata's ``image_file`` keeps each image's name in our layout (pipeline.assemble.image_name).
Shards are written in a temporary folder and renamed into place when all are done.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterable
from pathlib import Path

from pipeline.export.common import ExportOptions, ExportResult, ImagePlacer, image_refs, public_meta

FOLDER = "webdataset"
PREFIX = "textbook"


def wds_record(index: int, sample: dict, placer: ImagePlacer) -> dict:
    """The webdataset record of one sample: ``__key__``, ``json`` and one ``N.jpg`` member per image."""
    record: dict = {"__key__": f"{index:09d}"}
    images = list(sample["images"])
    metas = [public_meta(m) for m in sample.get("metadata") or [None] * len(images)]
    for n, ref in enumerate(image_refs(sample)):
        member = f"{n}.jpg"
        record[member] = placer.source(ref.src_rel).read_bytes()
        images[ref.position] = member
        if isinstance(metas[ref.position], dict):
            metas[ref.position] = {**metas[ref.position], "image_file": ref.ours}
    record["json"] = {**sample, "images": images, "metadata": metas}
    return record


def write(samples: Iterable[dict], out_dir: Path, placer: ImagePlacer, opts: ExportOptions,
          result: ExportResult) -> None:
    """Write the samples that have an image as webdataset tar shards (``opts.shard_size`` samples, ``shard_max_bytes``
    at most), in a temporary folder renamed into place; samples without an image are counted as skipped."""
    import webdataset as wds

    folder = out_dir / FOLDER
    tmp = folder / f".tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        with wds.ShardWriter(str(tmp / f"{PREFIX}-%06d.tar"), maxcount=opts.shard_size,
                             maxsize=opts.shard_max_bytes, verbose=0) as sink:
            for s in samples:
                if not any(img is not None for img in s["images"]):
                    result.skipped += 1
                    continue
                record = wds_record(result.samples, s, placer)
                sink.write(record)
                result.samples += 1
                result.images += sum(1 for k in record if k.endswith(".jpg"))
        shards = sorted(tmp.glob(f"{PREFIX}-*.tar"))
        if result.samples == 0:  # ShardWriter opened an empty first shard: no data, no shard
            shards = []
        for shard in shards:
            os.replace(shard, folder / shard.name)
        result.files = [f"{FOLDER}/{s.name}" for s in shards]
        result.target = folder
    finally:
        with contextlib.suppress(OSError):
            shutil.rmtree(tmp)
