"""Media by URI: the one seam every read and write of media goes through (local paths, ``file://``,
``s3://``, ``gs://``), so that a worker on another node writes its frames where the driver reads them.

    from tools import storage
    storage.put_file("frames/0001.jpg", "s3://bucket/media/images/VID/0001.jpg")
    with storage.local_copy("s3://bucket/in/lesson.mp4") as path:   # ffmpeg, tesseract want a file
        probe(path)
    storage.listdir("s3://bucket/in/", VIDEO_EXTENSIONS)            # ["s3://bucket/in/a.mp4", ...]

A URI is a plain path (``/data/media``, ``media/``), ``file:///data/media``, or ``SCHEME://BUCKET/KEY``
of an object store that fsspec knows: ``s3://`` (s3fs, in the lock) and ``gs://``/``gcs://`` (gcsfs, not
installed: one line naming the package). Remote URIs are returned as ``str``; local ones as ``str`` too
(``join``, ``listdir``) or ``Path`` where a file is handed over (``local_copy``).

Credentials come only from the environment, as the object store's own client reads them
(``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``, ``AWS_ENDPOINT_URL``,
``AWS_DEFAULT_REGION``, ``AWS_PROFILE``; ``GOOGLE_APPLICATION_CREDENTIALS``): nothing here takes, stores or
prints one: a URI with a ``user:secret@`` part is refused (ToolError storage) before any client sees it,
and ``redact`` removes that part wherever such a URI is shown (error messages; a caller storing or
exporting a URI it was given should pass it through ``redact`` too).

Writes are whole or nothing: a local file is written to a temporary name and renamed into place; an
object is uploaded from a finished local file in one request (an object store never shows half an
object), so a failed write leaves the previous content.

Errors are ``tools.errors.ToolError`` with one-line messages naming the URI and a kind:
``not_found`` (no such file, object or bucket), ``permission`` (the credentials may not read or write
it), ``storage`` (anything else: an unknown scheme, a missing package, a path that is not a folder, the
store unreachable).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO

from tools.errors import ToolError

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_USERINFO = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://)[^/@]*@")
#: scheme -> the package fsspec needs for it (named in the error when it is not installed)
_PACKAGES = {"s3": "s3fs", "s3a": "s3fs", "gs": "gcsfs", "gcs": "gcsfs", "az": "adlfs", "abfs": "adlfs"}
_PROBE = ".textbook-probe"


def scheme(uri: str | os.PathLike) -> str:
    """The URI's scheme in lower case: ``"s3"``, ``"gs"``, ``"file"``; ``""`` for a plain path."""
    m = _SCHEME.match(str(uri))
    return m.group(1).lower() if m else ""


def is_remote(uri: str | os.PathLike) -> bool:
    """True for a URI of an object store or another non-local file system (``s3://``, ``gs://``); False for
    a plain path or ``file://``."""
    return scheme(uri) not in ("", "file")


def redact(uri: str | os.PathLike) -> str:
    """The URI without a ``user:secret@`` part (``s3://KEY:SECRET@bucket/x`` -> ``s3://***@bucket/x``): what
    error messages, logs, stores and exports may show."""
    return _USERINFO.sub(r"\1***@", str(uri))


def local_path(uri: str | os.PathLike) -> Path:
    """The local path of a plain path or ``file://`` URI. Raises ToolError(storage) for a remote URI."""
    text = str(uri)
    if is_remote(text):
        raise ToolError("storage", f"{redact(text)} is not a local path")
    if scheme(text) == "file":
        text = text[len("file://"):]
    return Path(text).expanduser()


def join(uri: str | os.PathLike, *parts: str) -> str:
    """``uri`` with ``parts`` appended, ``/``-separated for a remote URI (no doubled or trailing ``/``), as the
    OS joins for a local one. ``join("s3://b/media/", "images", "v1/0001.jpg")`` -> ``s3://b/media/images/v1/0001.jpg``."""
    text = str(uri)
    if not is_remote(text):
        return str(local_path(text).joinpath(*parts))
    out = text.rstrip("/")
    for part in parts:
        part = str(part).strip("/")
        if part:
            out = f"{out}/{part}"
    return out


def _error(uri: str, action: str, exc: BaseException) -> ToolError:
    """A one-line ToolError for an exception of the file system (never the credentials in the URI)."""
    if isinstance(exc, ToolError):
        return exc
    if isinstance(exc, FileNotFoundError):
        kind, what = "not_found", ("no such bucket" if "bucket" in str(exc).lower() else "no such file or object")
    elif isinstance(exc, PermissionError):
        kind, what = "permission", "permission denied"
    else:
        kind, what = "storage", (getattr(exc, "strerror", None) or str(exc) or type(exc).__name__)
    what = (str(what).splitlines() or [type(exc).__name__])[0][:300]
    return ToolError(kind, f"cannot {action} {redact(uri)}: {what}")


@contextlib.contextmanager
def _mapped(uri: str, action: str) -> Iterator[None]:
    try:
        yield
    except ToolError:
        raise
    except (OSError, ValueError) as exc:
        raise _error(uri, action, exc) from None
    except Exception as exc:  # a client's own error type (botocore's ClientError, NoCredentialsError, ...)
        if type(exc).__module__.split(".")[0] in ("botocore", "aiobotocore", "s3fs", "fsspec", "gcsfs",
                                                   "google", "aiohttp"):
            raise _error(uri, action, exc) from None
        raise


#: clients whose DEBUG request logs print signed headers (the session token: ``x-amz-security-token``)
_SECRET_LOGGERS = ("botocore", "aiobotocore", "boto3", "s3transfer", "urllib3", "google.auth", "gcsfs")


def _quiet_client_logs() -> None:
    """Cap the object-store clients' loggers at INFO (their DEBUG lines carry request headers with the
    session token), whatever level the root logger is given; a level set higher (by the user, or inherited:
    ``textbook -q`` logs errors only) is kept. Checked again at every ``filesystem`` call."""
    import logging

    for name in _SECRET_LOGGERS:
        logger = logging.getLogger(name)
        if logger.getEffectiveLevel() < logging.INFO:
            logger.setLevel(logging.INFO)


def filesystem(uri: str | os.PathLike):
    """``(fsspec file system, path inside it)`` of a URI. For ``s3://`` the endpoint is
    ``AWS_ENDPOINT_URL_S3`` or ``AWS_ENDPOINT_URL`` when set (MinIO, Ceph, moto); every credential is left
    to the client's own lookup in the environment.

    Raises ToolError(storage) for a scheme fsspec does not know or whose package is not installed."""
    import fsspec

    text = str(uri)
    sch = scheme(text)
    if not is_remote(text):
        return fsspec.filesystem("file"), str(local_path(text).absolute())
    if _USERINFO.match(text):  # never sent on: the client would log it
        raise ToolError("storage", f"{redact(text)}: credentials in a URI are refused; set them in the "
                                   "environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, ...)")
    package = _PACKAGES.get(sch)
    if package is not None:
        import importlib.util

        if importlib.util.find_spec(package) is None:
            raise ToolError("storage", f"{sch}:// needs the {package} package, which is not installed "
                                       f"(pip install {package})")
    kwargs = {}
    _quiet_client_logs()
    if sch in ("s3", "s3a"):
        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        if endpoint:
            kwargs["endpoint_url"] = endpoint
        kwargs["use_listings_cache"] = False  # another node's writes show at once
    try:
        fs, path = fsspec.core.url_to_fs(text, **kwargs)
    except (ValueError, ImportError) as exc:
        if "Protocol not known" in str(exc) or isinstance(exc, ImportError):
            raise ToolError("storage", f"unknown storage scheme {sch}:// in {redact(text)}") from None
        raise _error(text, "open", exc) from None
    return fs, path


def sha256(uri: str | os.PathLike, chunk: int = 1 << 22) -> tuple[str, int]:
    """``(sha256 hex digest, bytes)`` of a file or an object's content, streamed in ``chunk``-byte blocks (an
    object's ETag is no content hash for a multipart upload). Raises ToolError as ``open_uri`` does."""
    digest, n = hashlib.sha256(), 0
    with open_uri(uri, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
            n += len(block)
    return digest.hexdigest(), n


@contextlib.contextmanager
def open_uri(uri: str | os.PathLike, mode: str = "rb") -> Iterator[IO]:
    """A file object of ``uri`` for ``mode`` (``rb``, ``r``, ``wb``, ``w``; text in UTF-8).

    Reads stream from the store. A write goes to a local temporary file that replaces the target (a rename,
    or one upload) only when the block ends without an error; the target's folders are made (local).
    Raises ToolError: not_found (no such file; a missing bucket), permission, storage."""
    text = str(uri)
    if mode not in ("rb", "r", "wb", "w"):
        raise ValueError(f"open_uri mode must be rb, r, wb or w, not {mode!r}")
    enc = {} if "b" in mode else {"encoding": "utf-8"}
    if mode.startswith("r"):
        if is_remote(text):
            fs, path = filesystem(text)
            with _mapped(text, "read"):
                fh = fs.open(path, mode, **enc)
        else:
            with _mapped(text, "read"):
                fh = open(local_path(text), mode, **enc)
        with fh:
            yield fh
        return
    # write: a finished local file, then a rename or one upload
    target = None if is_remote(text) else local_path(text)
    if target is not None:
        with _mapped(text, "write"):
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    else:
        fd, tmp = tempfile.mkstemp(prefix="textbook-upload-", suffix=".tmp")
    try:
        with os.fdopen(fd, mode, **enc) as fh:
            yield fh
        if target is not None:
            with _mapped(text, "write"):
                os.replace(tmp, target)
        else:
            put_file(tmp, text)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def read_bytes(uri: str | os.PathLike) -> bytes:
    """The whole content of ``uri``. Raises ToolError: not_found, permission, storage."""
    with open_uri(uri, "rb") as fh:
        return fh.read()


def write_bytes(uri: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``uri`` whole or not at all (``open_uri`` ``wb``). Raises ToolError."""
    with open_uri(uri, "wb") as fh:
        fh.write(data)


def put_file(local: str | os.PathLike, uri: str | os.PathLike) -> None:
    """Copy the local file ``local`` to ``uri`` (an upload, or a copy renamed into place; folders made).

    Raises ToolError: not_found (``local`` missing, or the bucket), permission, storage."""
    text = str(uri)
    src = Path(local)
    if not src.is_file():
        raise ToolError("not_found", f"cannot upload {src}: no such file")
    if not is_remote(text):
        target = local_path(text)
        with _mapped(text, "write"):
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
            os.close(fd)
            try:
                shutil.copyfile(src, tmp)
                os.replace(tmp, target)
            finally:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)
        return
    fs, path = filesystem(text)
    with _mapped(text, "write"):
        fs.put_file(str(src), path)


def get_file(uri: str | os.PathLike, local: str | os.PathLike) -> Path:
    """Copy ``uri`` to the local file ``local`` (its folder made; replaced whole). Returns ``Path(local)``.

    Raises ToolError: not_found, permission, storage."""
    text = str(uri)
    dst = Path(local)
    if not is_remote(text):
        src = local_path(text)
        with _mapped(text, "read"):
            if not src.is_file():
                raise FileNotFoundError(src)
        put_file(src, dst)
        return dst
    fs, path = filesystem(text)
    dst.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dst.name}.", suffix=".tmp", dir=dst.parent)
    os.close(fd)
    try:
        with _mapped(text, "read"):
            if not fs.isfile(path):
                raise FileNotFoundError(path)
            fs.get_file(path, tmp)
        os.replace(tmp, dst)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    return dst


def put_dir(local_dir: str | os.PathLike, uri: str | os.PathLike, exts: Iterable[str] | None = None) -> list[str]:
    """Copy every file under the local folder ``local_dir`` (only those whose extension is in ``exts`` when
    given) to the same relative names under ``uri``: what a worker does with the frames it wrote into a
    temporary folder. Returns the URIs written, sorted. Raises ToolError like ``put_file``."""
    root = Path(local_dir)
    if not root.is_dir():
        raise ToolError("not_found", f"cannot upload {root}: no such folder")
    wanted = {e.lower() if e.startswith(".") else f".{e.lower()}" for e in exts} if exts is not None else None
    out = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        if wanted is None or path.suffix.lower() in wanted:
            target = join(uri, *path.relative_to(root).parts)
            put_file(path, target)
            out.append(target)
    return out


def copy(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """Copy the file or object ``src`` to ``dst`` (a server-side copy within one object store; a hard link
    or a copy between local paths; download and upload between the two). ``dst`` is replaced whole.

    Raises ToolError: not_found (``src``), permission, storage."""
    s, d = str(src), str(dst)
    if is_remote(s) and is_remote(d) and scheme(s) == scheme(d):
        fs, spath = filesystem(s)
        _, dpath = filesystem(d)
        with _mapped(s, "copy"):
            if not fs.isfile(spath):
                raise FileNotFoundError(spath)
            fs.copy(spath, dpath)
        return
    if not is_remote(s) and not is_remote(d):
        source, target = local_path(s), local_path(d)
        if not source.is_file():
            raise ToolError("not_found", f"cannot copy {redact(s)}: no such file")
        with _mapped(d, "write"):
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f".{target.name}.{os.getpid()}.{os.urandom(3).hex()}.tmp")
            try:
                try:
                    os.link(source, tmp)
                except OSError:
                    shutil.copyfile(source, tmp)
                os.replace(tmp, target)
            finally:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)
        return
    with local_copy(s) as path:
        put_file(path, d)


def exists(uri: str | os.PathLike) -> bool:
    """True when ``uri`` names an existing file, object or folder (prefix). Raises ToolError(permission,
    storage) when the store cannot say (never for a plain absence)."""
    text = str(uri)
    if not is_remote(text):
        return local_path(text).exists()
    fs, path = filesystem(text)
    with _mapped(text, "read"):
        return bool(fs.exists(path))


def is_file(uri: str | os.PathLike) -> bool:
    """True when ``uri`` names an existing file or object (not a folder/prefix). Raises ToolError like ``exists``."""
    text = str(uri)
    if not is_remote(text):
        return local_path(text).is_file()
    fs, path = filesystem(text)
    with _mapped(text, "read"):
        return bool(fs.isfile(path))


def size(uri: str | os.PathLike) -> int:
    """Bytes of the file or object ``uri``. Raises ToolError: not_found, permission, storage."""
    text = str(uri)
    if not is_remote(text):
        with _mapped(text, "read"):
            return local_path(text).stat().st_size
    fs, path = filesystem(text)
    with _mapped(text, "read"):
        return int(fs.size(path))


def remove(uri: str | os.PathLike) -> bool:
    """Delete the file or object ``uri``; False when it was not there. Raises ToolError(permission, storage)."""
    text = str(uri)
    if not is_remote(text):
        with _mapped(text, "delete"):
            try:
                local_path(text).unlink()
            except FileNotFoundError:
                return False
        return True
    fs, path = filesystem(text)
    with _mapped(text, "delete"):
        if not fs.isfile(path):
            return False
        fs.rm_file(path)
    return True


def makedirs(uri: str | os.PathLike) -> None:
    """Make the folder ``uri`` and its parents (a local path); nothing for an object store, whose folders are
    key prefixes. Raises ToolError(permission, storage)."""
    text = str(uri)
    if not is_remote(text):
        with _mapped(text, "make the folder"):
            local_path(text).mkdir(parents=True, exist_ok=True)


def listdir(uri: str | os.PathLike, exts: Iterable[str] | None = None, recursive: bool = True) -> list[str]:
    """The files under the folder or prefix ``uri`` (all levels unless ``recursive`` is False), sorted, as
    URIs in the form given (``s3://b/in/a.mp4``; local: paths); only those whose extension, lower-cased, is
    in ``exts`` (``{".mp4", ".mkv"}``) when given. Hidden names (``.x``) of the export's own bookkeeping are
    kept; a missing folder gives ToolError(not_found).

    Raises ToolError: not_found, permission, storage."""
    text = str(uri)
    wanted = {e.lower() if e.startswith(".") else f".{e.lower()}" for e in exts} if exts is not None else None

    def keep(name: str) -> bool:
        return wanted is None or os.path.splitext(name)[1].lower() in wanted

    if not is_remote(text):
        root = local_path(text)
        with _mapped(text, "list"):
            if not root.is_dir():
                raise FileNotFoundError(root) if not root.exists() else NotADirectoryError(20, "not a folder")
            files = root.rglob("*") if recursive else root.iterdir()
            return sorted(str(f) for f in files if f.is_file() and keep(f.name))
    fs, path = filesystem(text)
    prefix = text.rstrip("/")
    base = path.rstrip("/")
    with _mapped(text, "list"):
        if not fs.isdir(base):
            raise FileNotFoundError(base) if not fs.exists(base) else NotADirectoryError(20, "not a folder")
        if recursive:
            found = fs.find(base)
        else:
            found = [e["name"] for e in fs.ls(base, detail=True) if e.get("type") == "file"]
    out = []
    for p in found:
        rel = p[len(base):].lstrip("/") if p.startswith(base) else p.rsplit("/", 1)[-1]
        if rel and keep(rel):
            out.append(f"{prefix}/{rel}")
    return sorted(out)


@contextlib.contextmanager
def local_copy(uri: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """A local file with the content of ``uri`` for the block (ffmpeg, tesseract and PyAV read files): the
    file itself for a local path (checked to exist), else a download into a temporary folder, deleted when
    the block ends. The copy keeps the URI's file name (and so its extension; ``suffix`` overrides it).

    Raises ToolError: not_found, permission, storage."""
    text = str(uri)
    if not is_remote(text):
        path = local_path(text)
        if not path.is_file():
            raise ToolError("not_found", f"cannot read {redact(text)}: no such file")
        yield path
        return
    name = text.rstrip("/").rsplit("/", 1)[-1] or "object"
    if suffix is not None:
        name = os.path.splitext(name)[0] + suffix
    with tempfile.TemporaryDirectory(prefix="textbook-copy-") as tmp:
        yield get_file(text, Path(tmp) / name)


def check_read_write(uri: str | os.PathLike) -> None:
    """The preflight of a media root or an output: write a small probe object under ``uri``, read it back and
    delete it. Returns None when all three work; raises ToolError (permission, not_found: a missing bucket,
    storage) with one line naming the URI otherwise. Call it once per node before the first task."""
    probe = join(uri, f"{_PROBE}-{os.getpid()}-{os.urandom(4).hex()}")
    payload = os.urandom(16)
    write_bytes(probe, payload)
    try:
        if read_bytes(probe) != payload:
            raise ToolError("storage", f"{redact(uri)}: a probe written there read back different bytes")
    finally:
        remove(probe)
