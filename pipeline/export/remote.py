"""An export into an object store (``--out s3://bucket/out``): written locally, then uploaded, with the rules
of every export (pipeline.export.common) kept against what the bucket already holds.

    export(samples, "s3://bucket/out", "jsonl", media_dir)     # pipeline.export.export calls export_remote

How:
1. the prefix's data files (everything but images: samples files, shards, the card and the manifests of
   ``.textbook-export/``) are downloaded into a private staging folder, so the run-suffix, ownership and
   clean-up rules see them as they see a local folder; images are listed, not downloaded
   (``RemoteImagePlacer`` compares an image of the same name by size, then by the store's MD5 ETag when it
   is one, else by downloading that one object);
2. the format writes into the staging folder as into any local folder;
3. what changed is uploaded (images first, then data files, the manifest last, so a reader never sees a data
   file whose images are not there yet), and the data files the export's own clean-up removed (fewer shards
   than last time) are deleted from the prefix; nothing else there is touched.

The cost: a prefix that holds earlier exports has their data files downloaded first (their images not);
export into a fresh prefix to avoid it. ``released``/``idefics2`` without ``--image-root`` write image paths
under ``OUT/images`` as URIs (``s3://bucket/out/images/...``), never the staging folder's path.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from pipeline.export.common import MANIFEST_DIR, ExportError, ExportOptions, ExportResult, ImagePlacer
from tools import storage
from tools.errors import ToolError

#: files compared lazily (listed, not downloaded, before the export)
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp"})


def _is_image(rel: str) -> bool:
    return os.path.splitext(rel)[1].lower() in IMAGE_EXTENSIONS


def _md5(path: Path) -> str:
    h = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class RemoteImagePlacer(ImagePlacer):
    """An ImagePlacer whose target folder is a local staging copy of ``out_uri``: an image that is in the
    bucket (``remote``: rel -> (size, etag)) but not staged is compared with the bucket's object."""

    def __init__(self, out_dir: Path, media_dir: Path | str, cache_dir: Path, out_uri: str,
                 remote: dict[str, tuple[int, str | None]]):
        super().__init__(out_dir, media_dir, cache_dir)
        self.out_uri, self.remote = out_uri, remote
        self.kept_remote = 0  # images already in the bucket with the same bytes (not uploaded again)

    def state(self, src: Path, dst_rel: str) -> str:
        if (self.out_dir / dst_rel).exists() or dst_rel not in self.remote:
            return super().state(src, dst_rel)
        size, etag = self.remote[dst_rel]
        if size != src.stat().st_size:
            return "other"
        if etag and len(etag) == 32 and "-" not in etag:  # a single-part upload's ETag is its MD5
            same = etag.lower() == _md5(src)
        else:
            with storage.local_copy(storage.join(self.out_uri, dst_rel)) as there:
                same = there.read_bytes() == src.read_bytes()
        if same:
            self.kept_remote += 1
        return "same" if same else "other"


def _listing(out_uri: str) -> dict[str, dict]:
    """rel -> the store's info of every object under ``out_uri`` (empty when the prefix holds none)."""
    fs, base = storage.filesystem(out_uri)
    base = base.rstrip("/")
    try:
        with storage._mapped(out_uri, "list"):
            if not fs.exists(base):
                return {}
            found = fs.find(base, detail=True)
    except ToolError as exc:
        raise ExportError(str(exc)) from None
    return {name[len(base):].lstrip("/"): info for name, info in found.items()
            if name.startswith(base) and name[len(base):].lstrip("/")}


def export_remote(samples: list[dict], out_uri: str, fmt: str, media_dir: Path | str, opts: ExportOptions,
                  write: Callable[[list[dict], Path, str, ImagePlacer, ExportOptions], ExportResult]) -> ExportResult:
    """Export into the object-store prefix ``out_uri`` through a local staging folder (module docstring);
    ``write`` is pipeline.export's writer of a local folder. The result's ``target`` is the URI written.

    Raises ExportError (one line) for what a local export refuses, and for a prefix that cannot be read or
    written (the storage error's line: a missing bucket, permission denied)."""
    out_uri = out_uri.rstrip("/")
    try:
        storage.check_read_write(out_uri)
    except ToolError as exc:
        raise ExportError(f"cannot export to {storage.redact(out_uri)}: {exc.message}") from None
    if fmt in ("released", "idefics2") and opts.image_root is None:
        opts.image_root = storage.join(out_uri, "images")
    listing = _listing(out_uri)
    with tempfile.TemporaryDirectory(prefix="textbook-export-") as tmp:
        stage, cache = Path(tmp) / "out", Path(tmp) / "media"
        stage.mkdir()
        mirrored: dict[str, tuple[int, int]] = {}
        remote_images: dict[str, tuple[int, str | None]] = {}
        try:
            for rel, info in listing.items():
                if _is_image(rel):
                    etag = str(info.get("ETag") or info.get("etag") or "").strip('"') or None
                    remote_images[rel] = (int(info.get("size") or 0), etag)
                    continue
                local = storage.get_file(storage.join(out_uri, rel), stage / rel)
                st = local.stat()
                mirrored[rel] = (st.st_size, st.st_mtime_ns)
        except ToolError as exc:
            raise ExportError(f"cannot read the export at {storage.redact(out_uri)}: {exc.message}") from None
        placer = RemoteImagePlacer(stage, media_dir, cache, out_uri, remote_images)
        try:
            result = write(samples, stage, fmt, placer, opts)
        except ExportError as exc:  # its line names the staging folder: name the prefix instead
            raise ExportError(str(exc).replace(str(stage), out_uri)) from None
        staged = sorted(str(p.relative_to(stage)) for p in stage.rglob("*") if p.is_file())
        changed = [rel for rel in staged
                   if rel not in mirrored or mirrored[rel] != ((st := (stage / rel).stat()).st_size, st.st_mtime_ns)]
        manifests = [rel for rel in changed if rel.startswith(f"{MANIFEST_DIR}/")]
        images = [rel for rel in changed if _is_image(rel) and rel not in manifests]
        data = [rel for rel in changed if rel not in manifests and rel not in images]
        gone = sorted(set(mirrored) - set(staged))
        try:
            for rel in images + data + manifests:
                storage.put_file(stage / rel, storage.join(out_uri, rel))
            for rel in gone:
                storage.remove(storage.join(out_uri, rel))
        except ToolError as exc:
            raise ExportError(f"export to {storage.redact(out_uri)} stopped: {exc.message}") from None
        target = result.target
        rel = Path(target).relative_to(stage).as_posix() if Path(target) != stage else ""
        result.target = storage.join(out_uri, rel) if rel not in ("", ".") else out_uri
    return result
