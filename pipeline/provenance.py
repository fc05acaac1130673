"""What an export may say about where a video came from: its URL, or a path relative to the input root.

The store keeps the full lineage (``videos.source`` is the path the file was read from, the candidate row
keeps the search result); exports carry only ``public_source``, so no path of the build machine leaves it.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

# yt-dlp writes webpage_url (the page) and url (often a signed media URL, which expires): the page comes first
URL_KEYS = ("webpage_url", "original_url", "url")


def public_url(value: object) -> str | None:
    """``value`` as an http(s) URL without user:password, or None when it is not one."""
    if not isinstance(value, str):
        return None
    parts = urlsplit(value.strip())
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        return None
    netloc = parts.hostname + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme.lower(), netloc, parts.path, parts.query, ""))


def _is_uri(path: object) -> bool:
    """An object-store URI (``s3://``, ``gs://``), not a local path nor ``file://``."""
    scheme = urlsplit(str(path)).scheme.lower()
    return "://" in str(path) and len(scheme) > 1 and scheme != "file"


def public_source(path: str | Path, meta: dict, roots: Iterable[str | Path] = ()) -> str:
    """The video's URL (``meta``'s webpage_url, original_url or url), else ``path`` relative to the input root.

    The input root of a file is the folder it was found in when a folder was given (``textbook process
    lessons/`` gives ``physics/newton.mp4``), else the file's own folder (its name). ``meta["input_root"]``
    names a root explicitly (a source that lists a folder). An object's is its key under the input prefix
    (``s3://bucket/in/`` gives ``physics/newton.mp4``), else its name. Never an absolute path or a URI.
    """
    for key in URL_KEYS:
        url = public_url(meta.get(key))
        if url:
            return url
    if _is_uri(path):  # an object (s3://bucket/in/physics/a.mp4): its key under the longest input prefix given
        text = str(path)
        prefixes = [str(r).rstrip("/") + "/" for r in [meta.get("input_root"), *roots] if r and _is_uri(r)]
        best = max((r for r in prefixes if text.startswith(r) and len(text) > len(r)), key=len, default=None)
        return text[len(best):] if best else text.rstrip("/").rsplit("/", 1)[-1]
    p = Path(path).expanduser()
    try:
        p = p.resolve()
    except OSError:
        pass
    candidates = [meta.get("input_root"), *roots]
    best: Path | None = None
    for root in candidates:
        if not root:
            continue
        r = Path(root).expanduser().resolve()
        if r.is_dir() and p.is_relative_to(r) and (best is None or len(r.parts) > len(best.parts)):
            best = r
    if best is not None and p != best:
        return p.relative_to(best).as_posix()
    return p.name
