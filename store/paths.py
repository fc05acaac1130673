"""The files a store names: where its media folder is, and how a file's path is recorded and read back.

A store ``DIR/NAME.duckdb`` keeps its files (keyframes, clip images, the build's downloads) in
``DIR/NAME_media/``. A path is recorded relative to the store's folder ``DIR`` when the file lies under
it (``NAME_media/frames/VID/HASH/t000001000.jpg``), else absolute; never relative to the working
directory of the command that wrote it, so any command run from any folder finds the file, and a store
moved or copied together with its media folder still does.

Reading resolves a recorded path (``resolve_path``). Stores written before (issue 17) hold paths
relative to the working directory of the run that made them (``demo/runs_media/frames/...``), or
absolute paths of a folder the store has since left; those resolve at read time, no migration: the
part after the last ``NAME_media`` component is looked up in this store's media folder, then a relative
path is tried against the current working directory. A path found nowhere resolves to where it would be
now (absolute), so a check such as ``is_file()`` fails and the stage that made it runs again.

A media root in an object store (``process --media s3://bucket/media``) has its files recorded as their URIs
(``s3://bucket/media/frames/VID/HASH/t000001000.jpg``), kept and read back as they are: the store and the
bucket move independently, so the URI is the one name that stays true. (tools.storage refuses a URI carrying
credentials before any file is written, so none reaches the store.)
"""

from __future__ import annotations

import os
import re
from pathlib import Path

_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def is_uri(path: str | Path) -> bool:
    """True for an object-store URI (``s3://``, ``gs://``; not ``file://``), recorded and read back as is."""
    text = str(path)
    return bool(_URI.match(text)) and not text.lower().startswith("file://")


def _abs(path: str | Path) -> Path:
    """Absolute against the current working directory, with '.' and '..' folded (links are kept)."""
    return Path(os.path.abspath(path))


def media_dir(db_path: str | Path) -> Path:
    """The store's media folder, absolute: ``NAME_media/`` beside the DuckDB file ``NAME.duckdb``."""
    db = _abs(db_path)
    return db.parent / f"{db.stem}_media"


def record_path(db_path: str | Path, path: str | Path) -> str:
    """How ``path`` is written into the store ``db_path``: relative to the store's folder when the file
    is under it (POSIX separators), else absolute. A relative ``path`` is taken relative to the current
    working directory (as the process that made the file meant it). An object-store URI is recorded as is."""
    if is_uri(path):
        return str(path)
    p = _abs(path)
    root = _abs(db_path).parent
    try:
        return p.relative_to(root).as_posix()
    except ValueError:
        return str(p)


def _in_media(db_path: str | Path, recorded: Path) -> Path | None:
    """The recorded path's part after its last ``NAME_media`` component, in this store's media folder."""
    media = media_dir(db_path)
    parts = recorded.parts
    if media.name not in parts:
        return None
    tail = parts[len(parts) - parts[::-1].index(media.name):]
    return media.joinpath(*tail) if tail else media


def resolve_path(db_path: str | Path, recorded: str | Path | None) -> Path | str | None:
    """The absolute path of a file the store ``db_path`` recorded (``record_path``), None for None/''.

    In order, the first that exists: absolute -> the same file in this store's media folder (store moved
    with its media), the path itself; relative -> the store's folder joined with it, the same file in
    this store's media folder (a path relative to an old run's working directory), the current working
    directory joined with it. None existing: the first candidate. An object-store URI: itself (a str)."""
    if not recorded:
        return None
    if is_uri(recorded):
        return str(recorded)
    p = Path(recorded)
    in_media = _in_media(db_path, p)
    if p.is_absolute():
        tries = [in_media, _abs(p)]
    else:
        tries = [_abs(_abs(db_path).parent / p), in_media, _abs(p)]
    found = [t for t in tries if t is not None]
    return next((t for t in found if t.exists()), found[0])
