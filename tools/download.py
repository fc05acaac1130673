"""Download videos with yt-dlp, at most 480p with audio, and check the file is readable.

``download(url, dest_dir)`` returns a ``Downloaded`` record or raises ``DownloadError`` with a kind
(private, removed, bot-check, geo, age, not-found, http-5xx, rate-limit, network, timeout, corrupt,
unavailable, ...) and a one-line message. Transient kinds are retried with exponential backoff;
permanent ones fail at once. A file already in ``dest_dir`` is returned without a request, and a
local path is returned as is after probing. yt-dlp prints nothing: its messages go to a collector.

``download_task(url, dest, video_id, max_height, retries)`` is the build's download stage as a pure task
(an executor may run it on a Ray actor on another node): ``dest`` is a folder or an object-store URI
(tools.storage), the file ends up there, and the ``Stored`` record it returns names it by URI with its
sha256 and size, so the driver registers the video without reading a file only the worker wrote.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from tools import storage
from tools.errors import ToolError
from tools.media import VIDEO_EXTENSIONS, file_sha256, probe

log = logging.getLogger(__name__)

DEFAULT_FORMAT = "bv*[height<={h}]+ba/b[height<={h}]/b"
TRANSIENT_KINDS = frozenset({"network", "timeout", "http-5xx", "rate-limit"})

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_PARTIAL = (".part", ".ytdl", ".temp")

# (kind, lowercase fragments), checked in order: specific phrases before the generic "not available".
_RULES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("private", ("private video", "this video is private", "members-only", "join this channel to get access")),
    ("bot-check", ("not a bot", "confirm you are not a robot", "captcha")),
    ("age", ("confirm your age", "age-restricted", "age restricted", "inappropriate for some users")),
    ("geo", ("available in your country", "blocked it in your country", "geo restrict", "geo-restrict",
             "not available from your location")),
    ("unsupported", ("unsupported url", "requested format is not available", "no video formats found")),
    ("not-found", ("http error 404",)),
    ("removed", ("http error 410",)),
    ("rate-limit", ("http error 429", "too many requests")),
    ("http-5xx", ("http error 5",)),
    ("forbidden", ("http error 403",)),
    ("removed", ("has been removed", "removed by the uploader", "terminated", "no longer available",
                 "copyright claim", "copyright grounds", "not available")),
    ("timeout", ("timed out", "timeout")),
    ("network", ("connection refused", "connection reset", "connection aborted", "remote end closed",
                 "name or service not known", "temporary failure in name resolution", "nodename nor servname",
                 "getaddrinfo failed", "network is unreachable", "no route to host", "incompleteread",
                 "unable to download webpage", "unable to download video data", "unable to download api page",
                 "ssl:", "sslerror", "eof occurred", "transporterror")),
)


@dataclass
class Downloaded:
    """A video file on disk and a little of what yt-dlp knew about it."""

    video_id: str
    path: Path
    url: str
    info: dict = field(default_factory=dict)  # title, duration, ext, width, height, filesize, extractor
    bytes: int = 0
    attempts: int = 0  # 0: nothing was downloaded (a local file, or already present)


class DownloadError(ToolError):
    """A failed download with its kind; ``attempts`` says how many tries were made."""

    def __init__(self, kind: str, message: str, attempts: int = 0):
        super().__init__(kind, message)
        self.attempts = attempts

    def __reduce__(self):
        return (DownloadError, (self.kind, self.message, self.attempts))


def clean_message(message: str, limit: int = 300) -> str:
    """One line of yt-dlp error text: no ANSI codes, no ``ERROR:`` prefix, no traceback, no report-bug plea."""
    text = _ANSI.sub("", str(message)).strip()
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.startswith(("Traceback", "  "))]
    text = lines[0] if lines else text
    text = re.sub(r"^(ERROR:\s*)+", "", text.strip())
    text = re.sub(r";?\s*please report this issue on .*$", "", text, flags=re.IGNORECASE)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def classify(message: str) -> str:
    """The kind of a yt-dlp error message (private, removed, bot-check, geo, age, not-found, ...)."""
    lowered = _ANSI.sub("", str(message)).lower()
    for kind, fragments in _RULES:
        if any(fragment in lowered for fragment in fragments):
            return kind
    return "unavailable"


class YtDlpLogger:
    """A yt-dlp logger that keeps messages instead of printing them."""

    def __init__(self):
        self.messages: list[str] = []

    def debug(self, msg: str) -> None:
        """Dropped: yt-dlp's debug lines (progress, extractor steps)."""
        pass

    def info(self, msg: str) -> None:
        """Dropped: yt-dlp's info lines."""
        pass

    def warning(self, msg: str) -> None:
        """Kept in ``messages`` (a failure's one line may need it)."""
        self.messages.append(msg)

    def error(self, msg: str) -> None:
        """Kept in ``messages``."""
        self.messages.append(msg)


def _local_id(path: Path) -> str:
    # the pipeline's rule for files without a sidecar id: stem + 8 hex of the content sha256
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 22):
            digest.update(block)
    stem = re.sub(r"[^A-Za-z0-9_-]+", "_", path.stem).strip("_")[:40] or "video"
    return f"{stem}-{digest.hexdigest()[:8]}"


def _existing(dest_dir: Path, video_id: str) -> Path | None:
    if not video_id:
        return None
    for path in sorted(dest_dir.glob(f"{glob_escape(video_id)}.*")):
        if path.is_file() and path.suffix.lower() in VIDEO_EXTENSIONS and not path.name.endswith(_PARTIAL):
            # yt-dlp names merge inputs ID.f137.mp4; only ID.EXT is a finished download
            if path.name == f"{video_id}{path.suffix}":
                return path
    return None


def glob_escape(text: str) -> str:
    """``text`` with the glob metacharacters ``*``, ``?`` and ``[`` bracketed, so a video id matches only itself in
    ``Path.glob``."""
    return re.sub(r"([*?\[])", r"[\1]", text)


def _remove(path: Path, video_id: str | None) -> None:
    """Delete a broken download and yt-dlp's leftovers for it."""
    targets = {path}
    if video_id:
        targets.update(path.parent.glob(f"{glob_escape(video_id)}.*"))
    for target in targets:
        try:
            target.unlink()
        except FileNotFoundError:
            pass


def _info_subset(info: dict, media) -> dict:
    return {
        "title": info.get("title"),
        "duration": info.get("duration") or (media.duration if media else None),
        "ext": info.get("ext"),
        "width": info.get("width") or (media.width if media else None),
        "height": info.get("height") or (media.height if media else None),
        "filesize": info.get("filesize") or info.get("filesize_approx") or (media.size_bytes if media else None),
        "extractor": info.get("extractor_key") or info.get("extractor"),
    }


def download(url: str, dest_dir: Path, *, video_id: str | None = None, max_height: int = 480, retries: int = 3,
             backoff_s: float = 1.0, timeout_s: float = 60, ydl_opts: dict | None = None) -> Downloaded:
    """Download ``url`` into ``dest_dir/VIDEO_ID.EXT`` (video at most ``max_height`` plus audio).

    ``retries``: further tries after the first for transient failures (network, timeout, http-5xx,
    rate-limit), waiting ``backoff_s`` * 2**n between them. ``timeout_s``: socket timeout.
    A local path (not a URL) is probed and returned where it is.
    """
    dest_dir = Path(dest_dir)
    if not _URL.match(url) or url.startswith("file://"):
        path = Path(url[len("file://"):] if url.startswith("file://") else url).expanduser()
        if not path.is_file():
            raise DownloadError("missing", f"no such file: {path}")
        try:
            media = probe(path, timeout=timeout_s)
        except ToolError as exc:  # the user's file: report it, never delete it
            raise DownloadError(exc.kind, exc.message) from None
        info = _info_subset({"title": path.stem, "ext": path.suffix.lstrip("."), "extractor": "local"}, media)
        return Downloaded(video_id or _local_id(path), path, url, info, media.size_bytes, 0)

    if video_id:
        present = _existing(dest_dir, video_id)
        if present is not None:
            try:
                media = probe(present, timeout=timeout_s)
            except ToolError:
                log.warning("re-downloading unreadable %s", present)
                _remove(present, video_id)
            else:
                if not media.truncated:
                    info = _info_subset({"ext": present.suffix.lstrip(".")}, media)
                    return Downloaded(video_id, present, url, info, media.size_bytes, 0)
                # an earlier download cut short: fetch it again (a new download that is short too is
                # returned as it is: the pipeline flags it and its policy decides)
                log.warning("re-downloading %s: %.1fs of the %.1fs its header claims decode", present,
                            media.duration, media.header_duration)
                _remove(present, video_id)

    dest_dir.mkdir(parents=True, exist_ok=True)
    name = video_id.replace("%", "%%") if video_id else "%(id)s"
    collector = YtDlpLogger()
    opts = {
        "format": DEFAULT_FORMAT.format(h=int(max_height)),
        "outtmpl": str(dest_dir / f"{name}.%(ext)s"),
        "merge_output_format": "mp4/mkv",
        "noplaylist": True,
        "restrictfilenames": True,
        "socket_timeout": timeout_s,
        "retries": 1,
        "fragment_retries": 3,
        "quiet": True,
        "no_warnings": True,
        "noprogress": True,
        "logger": collector,
        **(ydl_opts or {}),
    }
    import yt_dlp

    attempt = 0
    while True:
        attempt += 1
        try:
            with yt_dlp.YoutubeDL(opts) as ydl:
                info = ydl.extract_info(url, download=True)
            break
        except yt_dlp.utils.DownloadError as exc:
            message = clean_message(str(exc) or (collector.messages or ["download failed"])[-1])
        except OSError as exc:  # disk full, permission denied while writing
            raise DownloadError("io", clean_message(f"{type(exc).__name__}: {exc}"), attempt) from None
        kind = classify(message)
        if kind not in TRANSIENT_KINDS or attempt > retries:
            raise DownloadError(kind, message, attempt)
        wait = backoff_s * 2 ** (attempt - 1)
        log.info("download of %s failed (%s), try %d of %d in %.1fs", url, kind, attempt + 1, retries + 1, wait)
        time.sleep(wait)

    info = info or {}
    path = None
    for item in info.get("requested_downloads") or []:
        if item.get("filepath") and Path(item["filepath"]).is_file():
            path = Path(item["filepath"])
    if path is None:
        path = _existing(dest_dir, video_id or str(info.get("id") or ""))
    if path is None:
        raise DownloadError("unavailable", f"yt-dlp reported success but wrote no file for {url}", attempt)
    final_id = video_id or str(info.get("id") or path.stem)
    try:
        media = probe(path, timeout=timeout_s)
    except ToolError as exc:
        _remove(path, final_id)
        raise DownloadError("corrupt", f"downloaded file is unreadable: {exc.message}", attempt) from None
    info_small = _info_subset(info, media)
    info_small["ext"] = path.suffix.lstrip(".")
    return Downloaded(final_id, path, url, info_small, path.stat().st_size, attempt)


@dataclass(frozen=True)
class Stored:
    """A downloaded video where the run keeps it: ``source`` its path or object-store URI (under the
    ``dest`` the task was given; a local input: its own path), ``sha256`` and ``bytes`` of its content
    (computed where it was written), ``info`` what yt-dlp knew (``Downloaded.info``), ``attempts`` the tries
    made (0: it was there already)."""

    video_id: str
    source: str
    url: str
    sha256: str
    bytes: int
    info: dict = field(default_factory=dict)
    attempts: int = 0


def download_task(url: str, dest: str, video_id: str, max_height: int = 480, retries: int = 3) -> Stored:
    """Download ``url`` as ``VIDEO_ID.EXT`` into ``dest`` (a local folder, or an object-store URI such as
    ``s3://bucket/media/downloads``: the file is fetched into a temporary folder here, probed, hashed, and
    uploaded whole; a video already there is returned without a request). A local input (not a URL) stays
    where it is. Runs wherever the executor puts it (a Ray actor of the ``download`` pool); the result
    pickles. Raises DownloadError with its kind (see ``download``), ToolError (storage, permission) when
    ``dest`` cannot be written."""
    local_input = not _URL.match(url) or url.startswith("file://")
    if local_input or not storage.is_remote(dest):
        folder = Path(".") if local_input else storage.local_path(dest)  # a local input is not copied
        got = download(url, folder, video_id=video_id, max_height=max_height, retries=retries)
        return Stored(got.video_id, str(got.path), url, file_sha256(got.path), got.bytes, got.info, got.attempts)
    present = _existing_object(dest, video_id)
    if present is not None:  # an object is whole or absent (one upload of a probed file): no request
        digest, n = storage.sha256(present)
        ext = present.rsplit(".", 1)[-1]
        return Stored(video_id, present, url, digest, n, {"ext": ext}, 0)
    import tempfile

    with tempfile.TemporaryDirectory(prefix="textbook-download-") as tmp:
        got = download(url, Path(tmp), video_id=video_id, max_height=max_height, retries=retries)
        target = storage.join(dest, got.path.name)
        storage.put_file(got.path, target)
        return Stored(got.video_id, target, url, file_sha256(got.path), got.bytes, got.info, got.attempts)


def _existing_object(dest: str, video_id: str) -> str | None:
    """The object ``dest/VIDEO_ID.EXT`` of a finished download (a video extension), or None."""
    try:
        found = storage.listdir(dest, VIDEO_EXTENSIONS, recursive=False)
    except ToolError as exc:
        if exc.kind == "not_found":
            return None
        raise
    for uri in found:
        name = uri.rsplit("/", 1)[-1]
        if name.rsplit(".", 1)[0] == video_id:
            return uri
    return None


