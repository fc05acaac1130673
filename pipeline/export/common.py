"""What every export format shares: options, the result, image files, atomic writes, and the manifest.

An export writes only into its target folder and never deletes or overwrites a file it did not write:
- images are hard links (or copies) of the store's keyframe files; an existing file with the same bytes is
  kept, one with other bytes (another run's export) stays and ours is written beside it as
  ``NAME~HASH8.jpg`` (HASH8: 8 hex of the image's sha256), the sample pointing at ours;
- data files are written to a temporary name and renamed into place;
- ``.textbook-export/FORMAT.json`` lists the data files an export of FORMAT wrote, and the run it came from;
  the next export of that format and run into the folder removes those it does not write again (fewer shards
  than last time) and nothing else;
- one folder, several runs: the first run's export of a format has the plain names (samples.jsonl); another
  run's export of that format into the same folder, while the first one's files are there, carries its run
  id (samples.RUN.jsonl, manifest ``FORMAT.RUN.json``; ``run_suffix``), so neither loses anything.
"""

from __future__ import annotations

import contextlib
import filecmp
import hashlib
import json
import os
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.assemble import LLAVA_IMAGE_TOKENS, image_name, is_eov, released_image_name
from tools import storage
from tools.errors import ToolError

MANIFEST_DIR = ".textbook-export"
_ABS_PATH = re.compile(r"^(?:/|~|[A-Za-z]:[\\/]|\\\\)")


class ExportError(Exception):
    """An export that cannot be written (one line for the user; nothing already exported is lost)."""


@dataclass
class DatasetCard:
    """What the ``hf`` format's README.md reports: pipeline.stats.corpus_stats of the run, its config, sources.

    ``sources``: one dict per video: ``video_id``, ``source`` (public), ``title``, ``license`` (None: unknown).
    """

    run_id: str
    stats: dict
    config: dict
    sources: list[dict] = field(default_factory=list)


@dataclass
class ExportOptions:
    """Options of ``export``; each names the formats that read it."""

    order: str = "file"  # all: file (pack order) or curriculum (easy to difficult, pipeline.curriculum)
    image_root: str | None = None  # released, idefics2: absolute folder written in image paths (default OUT/images)
    image_tokens: int = LLAVA_IMAGE_TOKENS  # released, idefics2: tokens per image in token_num (576: LLaVA-1.5)
    tokenizer: str = "whisper"  # idefics2: counts asr_token_num (pipeline.tokens)
    shard_size: int = 1000  # webdataset, hf: samples per shard
    shard_max_bytes: int = 1 << 30  # webdataset: bytes per shard (a shard closes at whichever comes first)
    run_id: str | None = None  # all: recorded in the manifest
    card: DatasetCard | None = None  # hf: the dataset card's figures

    def __post_init__(self):
        from pipeline.curriculum import ORDERS

        if self.order not in ORDERS:
            raise ExportError(f"unknown order {self.order!r} (one of {', '.join(ORDERS)})")
        if self.image_tokens < 0:
            raise ExportError("image tokens must be >= 0")
        if self.shard_size < 1 or self.shard_max_bytes < 1:
            raise ExportError("shard size must be at least 1 sample and 1 byte")
        if self.image_root is not None:
            root = str(self.image_root).rstrip("/\\")
            if not _ABS_PATH.match(root + "/") and not re.match(r"^[a-z][a-z0-9+.-]*://", root):
                raise ExportError(f"image root {self.image_root!r} is not an absolute path or a URL "
                                  "(their loader joins every image path onto its own folder)")
            self.image_root = root


@dataclass
class ExportResult:
    """What one export wrote."""

    format: str
    target: Path | str  # the main file, or the folder of shards (a URI str for an object-store --out)
    samples: int = 0  # samples written
    skipped: int = 0  # samples not written: no image (the released loader asserts one)
    images: int = 0  # image files placed or embedded
    renamed: int = 0  # images written beside another export's different file of the same name
    files: list[str] = field(default_factory=list)  # data files written, relative to the folder

    def to_json(self) -> dict:
        """The result as JSON-ready values (the target path as a string), as printed by ``export --json``."""
        return {**self.__dict__, "target": str(self.target)}


# -- samples ---------------------------------------------------------------------------------------------------
def public_meta(meta: object) -> object:
    """A metadata dict without a machine path: an absolute ``source`` (a store from before migration 006)
    becomes its file name."""
    if isinstance(meta, dict):
        src = meta.get("source")
        if isinstance(src, str) and _ABS_PATH.match(src):
            return {**meta, "source": re.split(r"[\\/]", src)[-1]}
    return meta


@dataclass
class ImageRef:
    """One image of a sample: where it is in the store's media folder and the names exports give it."""

    position: int  # index in the sample's lists
    src_rel: str  # path in the store's media folder (images/VID/...)
    ours: str  # our URL-safe name, relative to the export folder
    released: str  # the released name (VID@S_E#K.jpg), relative to the images folder


def image_refs(sample: dict) -> list[ImageRef]:
    """The sample's images with their names; K counts the images of each clip from 1, in order."""
    out = []
    seen: dict[tuple, int] = {}
    metas = sample.get("metadata") or []
    for i, rel in enumerate(sample["images"]):
        if rel is None:
            continue
        m = metas[i] if i < len(metas) and isinstance(metas[i], dict) else {}
        vid, start, end = m.get("video_id"), m.get("clip_start"), m.get("clip_end")
        if isinstance(vid, str) and isinstance(start, int | float) and isinstance(end, int | float):
            key = (vid, m.get("clip_index"), start, end)
            k = seen[key] = seen.get(key, -1) + 1
            ours, released = f"images/{image_name(vid, start, end, k)}", released_image_name(vid, start, end, k)
        else:  # a sample without our metadata: keep its own name
            name = Path(rel).name
            ours, released = rel, f"{Path(rel).parent.name}/{name}" if Path(rel).parent.name else name
        out.append(ImageRef(i, rel, ours, released))
    return out


def strip_eov(sample: dict) -> dict:
    """The sample without its end-of-video marker positions (concat packing's text between videos)."""
    metas = sample.get("metadata") or [None] * len(sample["images"])
    keep = [i for i, m in enumerate(metas) if not is_eov(m)]
    if len(keep) == len(sample["images"]):
        return sample
    out = dict(sample)
    for key in ("images", "texts", "text_ocr_list", "metadata"):
        if isinstance(sample.get(key), list):
            out[key] = [sample[key][i] for i in keep]
    return out


# -- files -----------------------------------------------------------------------------------------------------
def sha256_file(path: Path) -> str:
    """The sha256 hex digest of a file, read 1 MiB at a time."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class ImagePlacer:
    """Puts the store's keyframe files into an export folder without ever replacing a different file.

    ``media_dir``: the store's media folder, a local path or a URI (``s3://bucket/media``: each keyframe is
    downloaded once into ``cache_dir``, a local folder the caller owns and removes, before it is placed)."""

    def __init__(self, out_dir: Path, media_dir: Path | str, cache_dir: Path | None = None):
        self.out_dir, self.media_dir, self.cache_dir = out_dir, media_dir, cache_dir
        if storage.is_remote(media_dir) and cache_dir is None:
            raise ValueError("a remote media folder needs a cache_dir")
        self.placed = self.renamed = 0
        self._done: dict[tuple[str, str], str] = {}

    def source(self, src_rel: str) -> Path:
        """The local file of media/src_rel (downloaded into the cache for a remote media folder).

        Raises ExportError when it is missing (or cannot be read: one line)."""
        if not storage.is_remote(self.media_dir):
            src = Path(self.media_dir) / src_rel
            if not src.is_file():
                raise ExportError(f"keyframe file missing from the store's media folder: {src} "
                                  "(rerun `textbook process` with the same inputs to restore it)")
            return src
        local = self.cache_dir / src_rel
        if not local.is_file():
            uri = storage.join(self.media_dir, src_rel)
            try:
                storage.get_file(uri, local)
            except ToolError as exc:
                if exc.kind == "not_found":
                    raise ExportError(f"keyframe file missing from the store's media folder: {storage.redact(uri)} "
                                      "(rerun `textbook process` with the same inputs to restore it)") from None
                raise ExportError(str(exc)) from None
        return local

    def state(self, src: Path, dst_rel: str) -> str:
        """``absent`` (nothing at out/dst_rel), ``same`` (a file with src's bytes) or ``other``."""
        dst = self.out_dir / dst_rel
        if not dst.exists():
            return "absent"
        return "same" if _same(src, dst) else "other"

    def place(self, src_rel: str, dst_rel: str) -> str:
        """Link (or copy) media/src_rel to out/dst_rel; the relative path actually written."""
        key = (src_rel, dst_rel)
        if key in self._done:
            return self._done[key]
        src = self.source(src_rel)
        state = self.state(src, dst_rel)
        if state == "other":
            stem, suffix = os.path.splitext(dst_rel)
            dst_rel = f"{stem}~{sha256_file(src)[:8]}{suffix}"
            state = self.state(src, dst_rel)
            self.renamed += 1
        dst = self.out_dir / dst_rel
        if state == "absent":
            dst.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(src, dst)  # never replaces: fails if the file appeared meanwhile
            except FileExistsError:
                pass
            except OSError:  # another file system, or no hard links: a copy, renamed into place
                tmp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp")
                try:
                    shutil.copyfile(src, tmp)
                    os.link(tmp, dst)
                except FileExistsError:
                    pass
                except OSError:
                    os.replace(tmp, dst)
                finally:
                    with contextlib.suppress(FileNotFoundError):
                        tmp.unlink()
        self.placed += 1
        self._done[key] = dst_rel
        return dst_rel


def _same(a: Path, b: Path) -> bool:
    try:
        if os.path.samefile(a, b):
            return True
        return a.stat().st_size == b.stat().st_size and filecmp.cmp(a, b, shallow=False)
    except OSError:
        return False


@contextlib.contextmanager
def atomic_file(target: Path, mode: str = "w") -> Iterator:
    """A file handle whose content replaces ``target`` only when the block ends without an error."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, mode, **({"encoding": "utf-8"} if "b" not in mode else {})) as fh:
            yield fh
        os.replace(tmp, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


class JsonListWriter:
    """Writes a JSON list one item at a time (the list is never held whole as text)."""

    def __init__(self, fh):
        self.fh, self.n = fh, 0
        fh.write("[")

    def add(self, item) -> None:
        """Write one item (JSON, non-ASCII kept) as the list's next element."""
        self.fh.write(("\n" if not self.n else ",\n") + json.dumps(item, ensure_ascii=False))
        self.n += 1

    def close(self) -> None:
        """Close the list (the file itself stays open: its owner closes it)."""
        self.fh.write("\n]\n")


# -- manifest --------------------------------------------------------------------------------------------------
def _manifest_path(out_dir: Path, fmt: str) -> Path:
    return out_dir / MANIFEST_DIR / f"{fmt}.json"


def manifest(out_dir: Path, key: str) -> dict | None:
    """The manifest an export wrote under ``key`` (FORMAT, or FORMAT.RUN), None if none."""
    try:
        data = json.loads(_manifest_path(out_dir, key).read_text())
        return data if isinstance(data, dict) else None
    except (OSError, ValueError):
        return None


def run_suffix(out_dir: Path, fmt: str, run_id: str | None, plain: list[str]) -> str | None:
    """None when this run's export of ``fmt`` takes the plain names ``plain`` in ``out_dir``, else the suffix
    (the run id) its names carry: another run's export of ``fmt`` (or a file no export wrote) holds them."""
    if run_id is None:
        return None
    if manifest(out_dir, f"{fmt}.{run_id}") is not None:
        return run_id  # this run exported here beside another before: keep to its own names
    owner = manifest(out_dir, fmt)
    there = [rel for rel in plain if (out_dir / rel).exists()]
    if owner is None:
        return run_id if there else None
    if owner.get("run_id") in (None, run_id):
        return None
    owned = [rel for rel in owner.get("files", []) if isinstance(rel, str) and (out_dir / rel).exists()]
    return run_id if owned else None


def previous_files(out_dir: Path, fmt: str) -> set[str]:
    """Data files the last export of ``fmt`` into ``out_dir`` wrote (relative paths)."""
    try:
        data = json.loads(_manifest_path(out_dir, fmt).read_text())
        return {f for f in data.get("files", []) if isinstance(f, str)}
    except (OSError, ValueError):
        return set()


def finish(out_dir: Path, fmt: str, result: ExportResult, run_id: str | None) -> None:
    """Record what this export wrote; remove what the previous export of ``fmt`` wrote and this one did not."""
    old = previous_files(out_dir, fmt)
    for rel in sorted(old - set(result.files)):
        path = out_dir / rel
        if path.resolve().is_relative_to(out_dir.resolve()):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
    with atomic_file(_manifest_path(out_dir, fmt)) as fh:
        json.dump({"format": fmt, "run_id": run_id, "files": result.files, "samples": result.samples}, fh, indent=1)


def owned_or_absent(out_dir: Path, fmt: str, rel: str) -> None:
    """Raise unless out/rel is absent or was written by an earlier export of ``fmt``."""
    if (out_dir / rel).exists() and rel not in previous_files(out_dir, fmt):
        raise ExportError(f"{out_dir / rel} exists and was not written by `textbook export --format {fmt}`: "
                          "choose another --out (nothing was written)")
