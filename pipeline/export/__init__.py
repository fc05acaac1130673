"""Export a run's samples (and their keyframes) in the layout a trainer reads.

    export(samples, Path("out"), "released", media_dir, ExportOptions(image_root="/data/textbook/images"))

    jsonl (default), json, parquet   samples.jsonl / .json / .parquet + images/   our layout (export.ours)
    obelics                          obelics.parquet + images/                    tools made for OBELICS
    released                         multimodal_textbook.json + images/           the released LLaVA-1.5 code
    idefics2                         textbook_video_clip_format.json + images/    the released Idefics2 code
    webdataset                       webdataset/textbook-NNNNNN.tar               webdataset.WebDataset
    hf                               README.md + data/train-*.parquet             datasets.load_dataset

``samples`` are a run's samples as the store keeps them (pipeline.assemble.pack's output; image paths are
relative to ``media_dir``, the store's media folder). ``options.order = "curriculum"`` writes them easy to
difficult (pipeline.curriculum). No export holds a path of this machine, except the image paths of
``released``/``idefics2`` when no ``image_root`` is given (their loaders need absolute paths: the export's
own images/ folder is written then). An export never deletes or overwrites a file it did not write
(pipeline.export.common): in a folder that holds another run's export of the format, ``jsonl``, ``json``,
``parquet`` and ``obelics`` write NAME.RUN.EXT (samples.run-1a2b3c4d5e6f.jsonl); the other formats
refuse with one line (choose another --out).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from pipeline.curriculum import curriculum_order
from pipeline.export import hf, ours, released, wds
from pipeline.export.common import (
    DatasetCard,
    ExportError,
    ExportOptions,
    ExportResult,
    ImagePlacer,
    finish,
    run_suffix,
)
from tools import storage

FORMATS = ("jsonl", "json", "parquet", "obelics", "released", "idefics2", "webdataset", "hf")

__all__ = ["FORMATS", "DatasetCard", "ExportError", "ExportOptions", "ExportResult", "export", "export_samples"]


def export(samples: list[dict], out_dir: Path | str, fmt: str, media_dir: Path | str,
           options: ExportOptions | None = None) -> ExportResult:
    """Write ``samples`` as ``fmt`` into ``out_dir``; what was written (files relative to ``out_dir``).

    ``out_dir`` and ``media_dir`` may be local paths or URIs (tools.storage): an object-store ``out_dir``
    (``s3://bucket/out``) is written through a local staging folder and uploaded (pipeline.export.remote;
    the result's ``target`` is then a URI str); keyframes of an object-store ``media_dir`` are downloaded
    once each into a temporary folder.

    Raises ExportError for an unknown format, a keyframe file missing from ``media_dir``, a file in the
    way that an earlier export did not write (nothing is replaced then), or storage that cannot be read or
    written (one line).
    """
    if fmt not in FORMATS:
        raise ExportError(f"unknown format {fmt!r} (one of {', '.join(FORMATS)})")
    opts = options or ExportOptions()
    if opts.order == "curriculum":
        samples = curriculum_order(samples)
    if storage.is_remote(out_dir):
        from pipeline.export.remote import export_remote

        return export_remote(samples, str(out_dir), fmt, media_dir, opts, _write)
    out_dir = storage.local_path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if not storage.is_remote(media_dir):
        return _write(samples, out_dir, fmt, ImagePlacer(out_dir, storage.local_path(media_dir)), opts)
    with tempfile.TemporaryDirectory(prefix="textbook-media-") as cache:
        return _write(samples, out_dir, fmt, ImagePlacer(out_dir, str(media_dir), Path(cache)), opts)


def _write(samples: list[dict], out_dir: Path, fmt: str, placer: ImagePlacer, opts: ExportOptions) -> ExportResult:
    """``export`` into the local folder ``out_dir`` (samples already in their order)."""
    result = ExportResult(format=fmt, target=out_dir)
    plain = [ours.TARGETS[fmt]] if fmt in ours.TARGETS else []
    suffix = run_suffix(out_dir, fmt, opts.run_id, plain)
    if suffix is not None and fmt not in ours.TARGETS:
        raise ExportError(f"{out_dir} holds another run's {fmt} export: choose another --out (nothing was written)")
    if fmt in ours.TARGETS:
        ours.write(fmt, samples, out_dir, placer, result, suffix)
    elif fmt == "released":
        released.write_released(samples, out_dir, placer, opts, result)
    elif fmt == "idefics2":
        released.write_idefics2(samples, out_dir, placer, opts, result)
    elif fmt == "webdataset":
        wds.write(samples, out_dir, placer, opts, result)
    else:
        hf.write(samples, out_dir, placer, opts, result)
    if fmt not in ("webdataset", "hf"):
        result.images = placer.placed
    result.renamed = placer.renamed
    finish(out_dir, fmt if suffix is None else f"{fmt}.{suffix}", result, opts.run_id)
    return result


def export_samples(samples: list[dict], out_dir: Path | str, fmt: str, media_dir: Path | str,
                   options: ExportOptions | None = None) -> Path | str:
    """``export`` returning only the main file written (the folder for webdataset and hf)."""
    return export(samples, out_dir, fmt, media_dir, options).target
