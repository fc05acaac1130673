"""Interleaved image-text samples -> inputs of a vision-language model that takes interleaved images.

Reads what ``textbook export`` writes (``samples.jsonl``, ``samples.json`` or ``samples.parquet``, images
relative to the file's folder) and the released Multimodal Textbook / OBELICS JSON, which share the layout:
``images`` [path | null], ``texts`` [null | text], optional ``text_ocr_list``, ``metadata``, ``image_num``,
``text_num``, ``token_num``; image paths absolute or relative.

    dataset = InterleavedDataset("out/samples.jsonl", processor, ReaderConfig(max_images=12, max_length=2048))
    for example in dataset:             # streams: the file is never loaded whole
        batch = collate([example], pad_id)
    dataset.stats.as_dict()             # why images, samples and tokens were lost

One sample becomes ``BOS body EOS``: each image is the processor's own expansion of its image token
(Idefics3/SmolVLM: ``<fake_token_around_image><global-img><image>*N<fake_token_around_image>``; LLaVA:
``<image>*N``); adjacent texts are joined with ``separator``. Image spans carry no loss (labels -100), nor
does padding. Packing concatenates samples up to ``max_length`` with the end-of-video marker between them.

The defaults reproduce the released LLaVA-1.5 pretraining (DAMO-NLP-SG/multimodal_textbook,
llava/train/datasets.py ``ObelicsFormatDataset`` and ``DataCollatorOpenflamingo`` in
llava/train/train_interleaved.py):
- text: ``texts`` (ASR) only: their loader reads ``sample["texts"]``; their Idefics2 run passes
  ``--add_ocr False`` (training_idefics/run.sh). ``text_field="text_ocr_list"`` adds the OCR.
- adjacent texts joined with one space (their ``" ".join(texts)``), nothing between a text and an image
  (they strip the spaces around ``<image>``).
- no loss before the first image of a sample (their collator sets the labels of every token before the
  first ``<image>`` to -100: "only text is seen and there is no picture at all"); off with
  ``mask_before_first_image=False``. A sample none of whose images loads then has nothing to learn.
- images beyond ``max_images`` (12: ``mmc4_max_num_images``) are ignored, their text kept.

Image paths: absolute, or relative to ``image_root`` (default: the data file's folder); ``image_prefixes``
rewrite a prefix first (the released JSON holds ``/mnt/workspace/zwq_data/interleaved_dataset/...``, which
its card tells users to replace). When more than ``max_missing_images`` of the images tried cannot be
loaded, reading stops with a one-line ReaderError (``check_images`` tests the first ones before a model is
loaded), instead of training on text alone.

Order: file order; ``shuffle``: a seeded permutation per epoch (JSON lines, or a JSON list: its items are
indexed by byte offset in one pass); ``curriculum``: file order kept
(an easy-to-difficult export, pipeline.curriculum), with ``shuffle`` permuting only within each run of
samples of equal difficulty.
"""

from __future__ import annotations

import json
import logging
import math
import threading
from array import array
from collections.abc import Iterator
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import IterableDataset

from tools import storage
from tools.errors import ToolError
from train.model import EOV_MARKER

log = logging.getLogger(__name__)

DATA_FILES = ("samples.jsonl", "samples.json", "samples.parquet", "multimodal_textbook.json")
TEXT_FIELDS = ("texts", "text_ocr_list", "auto")
MIN_IMAGES_CHECKED = 32  # images tried before the missing share can stop a pass (the end of a pass always checks)
_PIPELINE_EOV = EOV_MARKER  # what pipeline.assemble.pack writes between videos
_JSON_CHUNK = 1 << 20
_JSON_MAX_ITEM = 256 << 20  # a JSON-list item that does not parse within this many characters is malformed
_NOT_PIXELS = {"input_ids", "attention_mask", "token_type_ids", "mm_token_type_ids", "text_replacement_offsets"}


class ReaderError(Exception):
    """Unreadable data: a missing file or a malformed record (the message names file and line)."""


def parse_prefixes(specs: list[str] | tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    """``["OLD=NEW", ...]`` -> ((OLD, NEW), ...); raises ReaderError on a spec without ``=`` or an empty OLD."""
    out = []
    for spec in specs:
        old, sep, new = spec.partition("=")
        if not sep or not old:
            raise ReaderError(f"--image-prefix wants OLD=NEW (a path prefix and its replacement), got {spec!r}")
        out.append((old, new))
    return tuple(out)


@dataclass
class ReaderConfig:
    """How ``InterleavedDataset`` turns samples into model inputs; the defaults follow the released training code
    (``max_images`` 12, texts joined by a space, no loss before a sample's first image)."""

    max_images: int = 12  # images per sample (the released training's mmc4_max_num_images)
    max_length: int | None = None  # tokens per sequence, BOS/EOS and image tokens included; None: no cut
    text_field: str = "texts"  # texts (ASR, as released) | text_ocr_list (ASR + OCR) | auto (the OCR when present)
    pack: bool = False  # concatenate samples up to max_length with eov_marker between them
    eov_marker: str = EOV_MARKER
    separator: str = " "  # between adjacent texts (the released loader's " ".join)
    mask_before_first_image: bool = True  # no loss before a sample's first image (the released collator)
    shuffle: bool = False  # a seeded permutation per epoch (JSON lines or list; Parquet is read in order)
    curriculum: bool = False  # keep the file's easy-to-difficult order; shuffle only within a difficulty
    seed: int = 0
    skip_bad_lines: bool = False  # count malformed records instead of stopping
    image_root: Path | str | None = None  # where relative image paths live (default: the data file's folder); a URI
    image_prefixes: tuple[tuple[str, str], ...] = ()  # (OLD, NEW): a path starting with OLD starts with NEW
    max_missing_images: float = 0.05  # share of images tried that may fail to load before reading stops

    def __post_init__(self):
        if self.text_field not in TEXT_FIELDS:
            raise ReaderError(f"unknown text field {self.text_field!r} (one of {', '.join(TEXT_FIELDS)})")
        if self.max_images < 0:
            raise ReaderError("max_images must be >= 0")
        if self.max_length is not None and self.max_length < 4:
            raise ReaderError("max_length must be at least 4 tokens")
        if self.pack and self.max_length is None:
            raise ReaderError("packing needs a max_length")
        if not 0 <= self.max_missing_images <= 1:
            raise ReaderError("max-missing-images is a share: 0 <= share <= 1")
        self.image_prefixes = tuple(sorted((tuple(p) for p in self.image_prefixes), key=lambda p: -len(p[0])))

    def resolve(self, ref: str, base: Path | str) -> Path | str:
        """The file an image reference names: prefix rewritten (the longest OLD first), then relative paths
        taken from ``image_root`` (default ``base``, the data file's folder). An object-store reference
        (``s3://...``), or a relative one under an object-store root, is returned as a URI ``str``."""
        for old, new in self.image_prefixes:
            if ref.startswith(old):
                ref = new + ref[len(old):]
                break
        if storage.is_remote(ref):
            return ref
        if storage.scheme(ref) == "file":
            return storage.local_path(ref)
        path = Path(ref).expanduser()
        if path.is_absolute():
            return path
        root = self.image_root if self.image_root is not None else base
        return storage.join(root, ref) if storage.is_remote(root) else Path(root) / path


@dataclass
class ReaderStats:
    """Counts of what was read and of what was lost, and why (reset when a dataset is created)."""

    records: int = 0  # records taken from the file (bad ones included)
    bad_records: int = 0  # malformed and skipped (skip_bad_lines)
    samples: int = 0  # samples encoded
    empty_samples: int = 0  # no text left to learn from: skipped
    truncated_samples: int = 0
    sequences: int = 0  # model inputs yielded (fewer than samples when packing)
    images_loaded: int = 0
    images_missing: int = 0
    images_unreadable: int = 0
    images_remote: int = 0  # URLs (OBELICS): not fetched
    images_over_cap: int = 0  # beyond max_images
    images_truncated: int = 0  # beyond max_length
    masked_tokens: int = 0  # text tokens before a sample's first image: no loss (mask_before_first_image)
    texts_ocr: int = 0  # texts taken from text_ocr_list
    texts_asr: int = 0  # texts taken from texts
    tokens: int = 0  # tokens yielded (image spans included)
    loss_tokens: int = 0  # tokens that carry loss
    order: str = "file"  # file | shuffled | curriculum | curriculum, shuffled within difficulty
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, **counts: int) -> None:
        """Add ``counts`` to the named counters (under a lock, so threads may count at once)."""
        with self._lock:
            for k, v in counts.items():
                setattr(self, k, getattr(self, k) + v)

    def as_dict(self) -> dict:
        """The public counters as a dict (what ``train`` writes in its result and logs)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if not f.name.startswith("_")}

    @property
    def images_failed(self) -> int:
        """Images tried that did not load: missing, unreadable or remote."""
        return self.images_missing + self.images_unreadable + self.images_remote

    def check_missing(self, share: float, final: bool, first: str | None) -> None:
        """Raise ReaderError when more than ``share`` of the images tried failed to load (after
        MIN_IMAGES_CHECKED images, or at the end of a pass)."""
        tried = self.images_loaded + self.images_failed
        if not tried or (not final and tried < MIN_IMAGES_CHECKED) or self.images_failed <= share * tried:
            return
        raise ReaderError(missing_message(self.images_failed, tried, share, first))


@dataclass
class Example:
    """One model input before batching; ``position`` is how many records of the epoch it has consumed."""

    input_ids: list[int]
    labels: list[int]
    pixels: list[dict[str, torch.Tensor]]  # one dict per image, as the processor returned it
    position: int = 0
    epoch: int = 0
    samples: int = 1

    @property
    def num_images(self) -> int:
        """The number of images of this input (one pixel dict each)."""
        return len(self.pixels)


@dataclass
class _Piece:
    ids: list[int]
    labels: list[int]
    pixels: list[dict[str, torch.Tensor]]
    truncated: bool
    position: int


def missing_message(failed: int, tried: int, share: float, first: str | None) -> str:
    """The one-line error when ``failed`` of ``tried`` images did not load, over the ``share`` allowed; names the first
    missing path when known and the flags that point the reader at the images."""
    where = f"; first: {first}" if first else ""
    return (f"{failed} of {tried} images could not be loaded ({failed / tried:.0%}, more than the {share:.0%} "
            f"--max-missing-images allows){where}; rewrite a path prefix with --image-prefix OLD=NEW or set "
            "--image-root")


# ---------------------------------------------------------------------------------------------- files


def find_data_file(path: str | Path) -> Path | str:
    """The samples file itself (any name), or in a folder the first of DATA_FILES. ``path`` may be an
    object-store URI (``s3://bucket/out``: the URI of the file found is returned, a ``str``); raises
    ReaderError (one line) when there is none or the store cannot be read."""
    if storage.is_remote(path):
        uri = str(path).rstrip("/")
        try:
            if storage.is_file(uri):
                return uri
            for name in DATA_FILES:
                if storage.is_file(storage.join(uri, name)):
                    return storage.join(uri, name)
            there = storage.exists(uri)
        except ToolError as exc:
            raise ReaderError(exc.message) from None
        if there:
            raise ReaderError(f"{storage.redact(uri)} holds none of {', '.join(DATA_FILES)} (run `textbook export` "
                              "first)")
        raise ReaderError(f"no data file at {storage.redact(uri)}")
    p = storage.local_path(path) if storage.scheme(path) == "file" else Path(path).expanduser()
    if p.is_dir():
        for name in DATA_FILES:
            if (p / name).is_file():
                return p / name
        raise ReaderError(f"{p} holds none of {', '.join(DATA_FILES)} (run `textbook export` first)")
    if not p.exists():
        raise ReaderError(f"no data file at {p}")
    if not p.is_file():
        raise ReaderError(f"{p} is not a file")
    return p


_LOCAL_COPIES: dict[tuple[str, int], Path] = {}
_COPIES_DIR: list[Path] = []


def local_data_file(uri: str) -> Path:
    """A local copy of an object-store data file, downloaded once per process (per URI and size) into a
    temporary folder removed at exit: the reader seeks in it (shuffling reads records by byte offset), which
    an object store would answer one request a record. Raises ReaderError (one line)."""
    try:
        key = (uri, storage.size(uri))
        if key in _LOCAL_COPIES and _LOCAL_COPIES[key].is_file():
            return _LOCAL_COPIES[key]
        if not _COPIES_DIR:
            import atexit
            import shutil
            import tempfile

            _COPIES_DIR.append(Path(tempfile.mkdtemp(prefix="textbook-data-")))
            atexit.register(shutil.rmtree, _COPIES_DIR[0], True)
        local = _COPIES_DIR[0] / f"{len(_LOCAL_COPIES):04d}" / uri.rsplit("/", 1)[-1]
        _LOCAL_COPIES[key] = storage.get_file(uri, local)
        return local
    except ToolError as exc:
        raise ReaderError(exc.message) from None


def _folder(path: Path | str) -> Path | str:
    """The folder of a data file: a Path, or the URI prefix of an object-store one."""
    return str(path).rsplit("/", 1)[0] if storage.is_remote(path) else Path(path).parent


def _kind(path: Path) -> str:
    """parquet (by its magic bytes), json (a list: the first character is '[') or jsonl, whatever the name."""
    try:
        with open(path, "rb") as fh:
            raw = fh.read(4096)
    except OSError as exc:
        raise ReaderError(f"cannot read {path}: {exc.strerror or exc}") from exc
    if raw.startswith(b"PAR1"):
        return "parquet"
    try:
        head = raw.decode("utf-8", errors="strict" if len(raw) < 4096 else "ignore").lstrip("\ufeff \t\r\n")
    except UnicodeDecodeError as exc:
        raise ReaderError(f"cannot read {path}: not UTF-8 text nor Parquet") from exc
    return "json" if head.startswith("[") else "jsonl"


def check_images(path: str | Path, config: ReaderConfig, limit: int = 256) -> dict:
    """Before training: how many of the first ``limit`` image references of a data file exist (after the
    prefix rewrite); raises ReaderError when more than ``config.max_missing_images`` of them do not.

    Only existence is tested (no decoding); malformed records are left to the reader. Returns
    ``{"tried", "missing", "first_missing"}``.
    """
    file = find_data_file(path)
    source = _Source(file, False, 0, ReaderStats())
    base = _folder(file)
    tried = missing = 0
    first = None
    for _, record, _ in source.iter(0, 0):
        if isinstance(record, Exception) or _check(record):
            continue
        for ref in record["images"]:
            if ref is None:
                continue
            tried += 1
            if ref.startswith(("http://", "https://")) or not _is_file(config.resolve(ref, base)):
                missing += 1
                first = first or (ref if ref.startswith(("http://", "https://"))
                                  else storage.redact(config.resolve(ref, base)))
            if tried >= limit:
                break
        if tried >= limit:
            break
    if tried and missing > config.max_missing_images * tried:
        raise ReaderError(missing_message(missing, tried, config.max_missing_images, first))
    return {"tried": tried, "missing": missing, "first_missing": first}


def _is_file(path: Path | str) -> bool:
    if not storage.is_remote(path):
        return Path(path).is_file()
    try:
        return storage.is_file(path)
    except ToolError as exc:
        raise ReaderError(exc.message) from None


def _check(sample) -> str | None:
    """Why a record is not a sample in the OBELICS layout, or None."""
    if not isinstance(sample, dict):
        return f"expected a JSON object, got {type(sample).__name__}"
    images, texts = sample.get("images"), sample.get("texts")
    if not isinstance(images, list) or not isinstance(texts, list):
        return "'images' and 'texts' must be lists"
    if len(images) != len(texts):
        return f"'images' has {len(images)} positions and 'texts' {len(texts)}"
    ocr = sample.get("text_ocr_list")
    if ocr is not None and (not isinstance(ocr, list) or len(ocr) != len(texts)):
        return "'text_ocr_list' must be a list as long as 'texts'"
    for name, values in (("images", images), ("texts", texts), ("text_ocr_list", ocr or [])):
        if any(v is not None and not isinstance(v, str) for v in values):
            return f"'{name}' may hold only strings and nulls"
    return None


class _Source:
    """Records of one file, in file order or a seeded permutation, from any position (for resume)."""

    def __init__(self, path: Path | str, shuffle: bool, seed: int, stats: ReaderStats, curriculum: bool = False):
        self.path, self.seed, self.stats, self.curriculum = path, seed, stats, curriculum
        # what is read: the file, or a local copy of an object-store one (``path`` stays what messages name)
        self.local = local_data_file(path) if storage.is_remote(path) else Path(path)
        self.kind = _kind(self.local)
        self.shuffle = shuffle and self.kind in ("jsonl", "json")
        if shuffle and not self.shuffle:
            log.warning("%s is read in file order: shuffling needs JSON lines or a JSON list", path)
        stats.order = ("curriculum" + (", shuffled within difficulty" if self.shuffle else "") if curriculum
                       else "shuffled" if self.shuffle else "file")
        self._offsets: array | None = None
        self._lengths: array | None = None  # JSON list: each item's bytes
        self._lines: array | None = None
        self._bands: list[tuple[int, int]] | None = None

    def __len__(self) -> int:
        if self.kind == "jsonl" or (self.kind == "json" and self.shuffle):
            return len(self._index()[0])
        if self.kind == "parquet":
            import pyarrow.parquet as pq

            return pq.ParquetFile(self.local).metadata.num_rows
        return sum(1 for _ in self._json_list(0))

    def iter(self, epoch: int, start: int) -> Iterator[tuple[int, object, str]]:
        """(position after the record, record or an exception, where) from record ``start`` on."""
        if self.kind == "parquet":
            yield from self._parquet(start)
        elif self.shuffle:
            yield from self._shuffled(epoch, start)
        elif self.kind == "json":
            yield from self._json_list(start)
        else:
            yield from self._jsonl(start)

    def _open(self, mode="rb"):
        try:
            return open(self.local, mode) if "b" in mode else open(self.local, mode, encoding="utf-8", newline="")
        except OSError as exc:
            raise ReaderError(f"cannot read {self.path}: {exc.strerror}") from exc

    @staticmethod
    def _parse(raw: bytes):
        try:
            return json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            return exc

    def _jsonl(self, start: int):
        k = 0
        with self._open() as fh:
            for lineno, raw in enumerate(fh, 1):
                if not raw.strip():
                    continue
                k += 1
                if k > start:
                    yield k, self._parse(raw), f"line {lineno}"

    def _index(self) -> tuple[array, array]:
        """Byte offsets and line numbers of the records (JSON lines: non-blank lines, nothing parsed; a JSON
        list: its items, parsed once, with their byte lengths in ``_lengths``)."""
        if self._offsets is None:
            offsets, lines = array("q"), array("q")
            if self.kind == "json":
                lengths = array("q")
                for _, _, line, off, size in self._json_items():
                    offsets.append(off)
                    lengths.append(size)
                    lines.append(line)
                self._lengths = lengths
            else:
                pos = 0
                with self._open() as fh:
                    for lineno, raw in enumerate(fh, 1):
                        if raw.strip():
                            offsets.append(pos)
                            lines.append(lineno)
                        pos += len(raw)
            self._offsets, self._lines = offsets, lines
        return self._offsets, self._lines

    def _read_at(self, fh, i: int):
        fh.seek(self._offsets[i])
        return self._parse(fh.read(self._lengths[i]) if self._lengths is not None else fh.readline())

    def bands(self) -> list[tuple[int, int]]:
        """[start, end) record ranges of equal difficulty in file order (each record parsed once)."""
        if self._bands is None:
            from pipeline.curriculum import sample_difficulty

            offsets, _ = self._index()
            bands: list[tuple[int, int]] = []
            prev, last_d = object(), None
            with self._open() as fh:
                for i in range(len(offsets)):
                    rec = self._read_at(fh, i)
                    d = sample_difficulty(rec) if isinstance(rec, dict) else None
                    if d != prev:
                        bands.append((i, i + 1))
                        if d is not None and last_d is not None and d < last_d:
                            log.warning("%s: difficulty falls from %s to %s at record %d: not in curriculum order "
                                        "(textbook export --order curriculum)", self.path, last_d, d, i + 1)
                        last_d = d if d is not None else last_d
                        prev = d
                    else:
                        bands[-1] = (bands[-1][0], i + 1)
            self._bands = bands
        return self._bands

    def _order(self, epoch: int, n: int) -> np.ndarray:
        rng = np.random.default_rng([self.seed, epoch])
        if not self.curriculum:
            return rng.permutation(n)
        return np.concatenate([a + rng.permutation(b - a) for a, b in self.bands()] or [np.zeros(0, np.int64)])

    def _shuffled(self, epoch: int, start: int):
        offsets, lines = self._index()
        order = self._order(epoch, len(offsets))
        what = "line {}" if self.kind == "jsonl" else "line {} (item {})"
        with self._open() as fh:
            for k in range(start, len(order)):
                i = int(order[k])
                yield k + 1, self._read_at(fh, i), what.format(lines[i], i + 1)

    def _json_list(self, start: int):
        """Items of one JSON list, decoded one at a time (the list is never held whole)."""
        for k, item, line, _, _ in self._json_items():
            if k > start:
                yield k, item, f"line {line} (item {k})"

    def _json_items(self):
        """(k, item, line, byte offset, byte length) of each item of a JSON list, decoded one at a time."""
        dec = json.JSONDecoder()
        with self._open("r") as fh:
            buf, pos, line, eof, k = "", 0, 1, False, 0
            at = 0  # byte offset of buf[pos] in the file

            def fill() -> bool:
                nonlocal buf, pos, eof
                if eof:
                    return False
                try:
                    chunk = fh.read(_JSON_CHUNK)
                except UnicodeDecodeError as exc:
                    raise ReaderError(f"{self.path}: not UTF-8 text near line {line}") from exc
                eof = not chunk
                buf, pos = buf[pos:] + chunk, 0
                return not eof

            def skip_ws() -> str:
                nonlocal pos, line, at
                while True:
                    while pos < len(buf) and buf[pos] in " \t\r\n\ufeff":
                        line += buf[pos] == "\n"
                        at += 3 if buf[pos] == "\ufeff" else 1
                        pos += 1
                    if pos < len(buf) or not fill():
                        return buf[pos] if pos < len(buf) else ""

            if skip_ws() != "[":
                raise ReaderError(f"{self.path}: line {line}: expected a JSON list of samples")
            pos += 1
            at += 1
            if skip_ws() == "]":
                return
            while True:
                try:
                    item, end = dec.raw_decode(buf, pos)
                except json.JSONDecodeError as exc:
                    where = line + buf.count("\n", pos, exc.pos)  # before fill() moves the buffer
                    if len(buf) - pos < _JSON_MAX_ITEM and fill():
                        continue
                    raise ReaderError(f"{self.path}: line {where}: malformed JSON (item {k + 1}): {exc.msg}"
                                      ) from exc
                k += 1
                size = len(buf[pos:end].encode("utf-8"))
                yield k, item, line, at, size
                line += buf.count("\n", pos, end)
                at += size
                pos = end
                nxt = skip_ws()
                if nxt == "]":
                    return
                if nxt != ",":
                    raise ReaderError(f"{self.path}: line {line}: expected ',' or ']' after item {k}")
                pos += 1
                at += 1
                skip_ws()

    def _parquet(self, start: int):
        import pyarrow.parquet as pq

        try:
            pf = pq.ParquetFile(self.local)
        except Exception as exc:
            raise ReaderError(f"cannot read {self.path} as Parquet: {exc}") from exc
        k = 0
        for batch in pf.iter_batches(batch_size=256):
            if k + batch.num_rows <= start:
                k += batch.num_rows
                continue
            for row in batch.to_pylist():
                k += 1
                if k <= start:
                    continue
                if isinstance(row.get("metadata"), str):
                    try:
                        row["metadata"] = json.loads(row["metadata"])
                    except json.JSONDecodeError:
                        pass
                yield k, row, f"row {k}"


# ---------------------------------------------------------------------------------------------- encoding


class SampleEncoder:
    """One sample (a dict in the OBELICS layout) -> token ids, labels and per-image pixel tensors."""

    def __init__(self, processor, config: ReaderConfig, stats: ReaderStats | None = None):
        self.processor, self.cfg = processor, config
        self.stats = stats or ReaderStats()
        self.tokenizer = processor.tokenizer
        self.image_token = getattr(processor, "image_token", None) or "<image>"
        tok = self.tokenizer
        self.bos = [tok.bos_token_id] if tok.bos_token_id is not None else []
        self.eos = [tok.eos_token_id] if tok.eos_token_id is not None else []
        self.eov = tok(config.eov_marker, add_special_tokens=False)["input_ids"] if config.eov_marker else []
        self.pad_id = tok.pad_token_id if tok.pad_token_id is not None else (self.eos or [0])[0]
        self.layout: str | None = None  # "stacked" (B, N, C, H, W: Idefics) or "flat" (N, C, H, W: LLaVA)
        self.first_missing: str | None = None  # the first image that did not load (for the error message)

    # images
    def load_image(self, ref: str, base: Path | str):
        """A PIL RGB image, or None (counted) when it is on the web (http), missing or unreadable. Images in an
        object store (an ``s3://`` reference, or a relative one beside an ``s3://`` data file) are read
        through tools.storage (one request each)."""
        from PIL import Image, UnidentifiedImageError

        if ref.startswith(("http://", "https://")):
            self.stats.add(images_remote=1)
            self.first_missing = self.first_missing or ref
            return None
        path = self.cfg.resolve(ref, base)
        try:
            if storage.is_remote(path):
                import io

                try:
                    fh = io.BytesIO(storage.read_bytes(path))
                except ToolError as exc:
                    if exc.kind == "not_found":
                        raise FileNotFoundError(path) from None
                    raise OSError(exc.message) from None
            else:
                fh = path
            with Image.open(fh) as im:
                scale = self.draft_scale(*im.size)
                if scale < 1.0:  # JPEG: decode at a reduced DCT scale, still at least the resize target
                    im.draft("RGB", (math.ceil(im.size[0] * scale), math.ceil(im.size[1] * scale)))
                im.load()
                return im.convert("RGB")
        except FileNotFoundError:
            self.stats.add(images_missing=1)
            log.debug("missing image %s", path)
        except (OSError, UnidentifiedImageError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
            self.stats.add(images_unreadable=1)
            log.debug("unreadable image %s: %s", path, exc)
        self.first_missing = self.first_missing or storage.redact(path)
        return None

    def draft_scale(self, width: int, height: int) -> float:
        """The factor the image processor will first shrink a width x height image by (1.0: none known)."""
        size = getattr(self.processor.image_processor, "size", None) or {}
        get = size.get if isinstance(size, dict) else lambda k: getattr(size, k, None)
        if get("longest_edge"):
            return get("longest_edge") / max(width, height)
        if get("shortest_edge"):
            return get("shortest_edge") / min(width, height)
        if get("height") and get("width"):
            return max(get("height") / height, get("width") / width)
        return 1.0

    def encode_image(self, image) -> tuple[list[int], dict[str, torch.Tensor]]:
        """The processor's own token span for one image, and its pixel tensors."""
        out = self.processor(text=[self.image_token], images=[[image]], add_special_tokens=False,
                             return_tensors="pt")
        ids = out["input_ids"][0].tolist()
        pixels = {k: v for k, v in out.items() if k not in _NOT_PIXELS and isinstance(v, torch.Tensor)}
        pv = pixels["pixel_values"]
        if self.layout is None:
            self.layout = "stacked" if pv.ndim == 5 else "flat"
        if self.layout == "stacked":  # drop the batch dim: (crops, C, H, W)
            pixels = {k: v[0] for k, v in pixels.items()}
        return ids, pixels

    # samples
    def segments(self, sample: dict, base: Path | str) -> list[tuple[str, object]]:
        """[("image", PIL) | ("text", str)] in order, after the image cap and the text-field choice."""
        cfg, st = self.cfg, self.stats
        images, texts = sample["images"], sample["texts"]
        ocr = sample.get("text_ocr_list") if cfg.text_field != "texts" else None
        if cfg.text_field == "text_ocr_list" and not isinstance(ocr, list):
            ocr = None  # a sample without OCR (OBELICS, the released LLaVA layout): its texts
        meta = sample.get("metadata")
        meta = meta if isinstance(meta, list) and len(meta) == len(texts) else None
        out: list[tuple[str, object]] = []
        n_images = 0
        for i, ref in enumerate(images):
            if ref is not None:
                if n_images >= cfg.max_images:
                    st.add(images_over_cap=1)
                else:
                    image = self.load_image(ref, base)
                    if image is not None:
                        out.append(("image", image))
                        n_images += 1
            text = texts[i]
            if ocr is not None and ocr[i] is not None:
                text = ocr[i]
                st.add(texts_ocr=1)
            elif text is not None:
                st.add(texts_asr=1)
            if text is None:
                continue
            is_eov = text == _PIPELINE_EOV or (meta and isinstance(meta[i], dict) and meta[i].get("type") == "eov")
            if is_eov:
                if self.eov:
                    out.append(("eov", None))
            elif text.strip():
                out.append(("text", text))
        st.add(images_loaded=n_images)
        return out

    def encode(self, sample: dict, base: Path | str, position: int = 0) -> _Piece | None:
        """Token ids (without BOS/EOS) and labels of one sample, cut to fit max_length; None if nothing to learn.

        Adjacent texts are joined with ``separator`` and tokenized as one; with ``mask_before_first_image``
        the text before the first image carries no loss.
        """
        cfg = self.cfg
        segs: list[tuple[str, object]] = []
        for kind, payload in self.segments(sample, base):
            if kind == "text" and segs and segs[-1][0] == "text":
                segs[-1] = ("text", f"{segs[-1][1]}{cfg.separator}{payload}")
            else:
                segs.append((kind, payload))
        texts = [s[1] for s in segs if s[0] == "text"]
        text_ids = iter(self.tokenizer(texts, add_special_tokens=False, split_special_tokens=True)["input_ids"]
                        if texts else [])
        budget = None if cfg.max_length is None else cfg.max_length - len(self.bos) - len(self.eos)
        ids: list[int] = []
        labels: list[int] = []
        pixels: list[dict] = []
        truncated = False
        seen_image = not cfg.mask_before_first_image
        masked = 0
        for i, (kind, payload) in enumerate(segs):
            if kind == "image":
                span, px = self.encode_image(payload)
                if budget is not None and len(ids) + len(span) > budget:
                    truncated = True
                else:
                    ids += span
                    labels += [-100] * len(span)
                    pixels.append(px)
                    seen_image = True
            else:
                span = self.eov if kind == "eov" else next(text_ids)
                if budget is not None and len(ids) + len(span) > budget:
                    span, truncated = span[: budget - len(ids)], True
                ids += span
                if seen_image:
                    labels += span
                else:
                    labels += [-100] * len(span)
                    masked += len(span)
            if truncated:
                self.stats.add(truncated_samples=1,
                               images_truncated=sum(1 for s in segs[i:] if s[0] == "image"))
                break
        self.stats.add(masked_tokens=masked)
        if not any(label != -100 for label in labels):
            self.stats.add(empty_samples=1)
            return None
        self.stats.add(samples=1)
        return _Piece(ids, labels, pixels, truncated, position)

    def join(self, pieces: list[_Piece], epoch: int = 0) -> Example:
        """BOS piece (EOV piece)* EOS; no EOS after a truncated piece."""
        ids, labels, pixels = list(self.bos), list(self.bos), []
        for j, p in enumerate(pieces):
            if j:
                ids += self.eov
                labels += self.eov
            ids += p.ids
            labels += p.labels
            pixels += p.pixels
        if not pieces[-1].truncated:
            ids += self.eos
            labels += self.eos
        self.stats.add(sequences=1, tokens=len(ids), loss_tokens=sum(1 for x in labels[1:] if x != -100))
        return Example(ids, labels, pixels, position=pieces[-1].position, epoch=epoch, samples=len(pieces))

    def packed_length(self, pieces: list[_Piece]) -> int:
        """Tokens of ``pieces`` packed into one sequence: BOS, each piece, an end-of-video marker between pieces and EOS
        unless the last piece was cut at max_length."""
        return (len(self.bos) + sum(len(p.ids) for p in pieces) + len(self.eov) * (len(pieces) - 1)
                + (0 if pieces[-1].truncated else len(self.eos)))


# ---------------------------------------------------------------------------------------------- dataset


class InterleavedDataset(IterableDataset):
    """Streams model inputs (``Example``) from one samples file; one pass is one epoch.

    ``set_position(epoch, consumed)`` makes the next pass start after ``consumed`` records of that epoch
    (what a checkpoint stores as the reader position: ``Example.position`` of the last trained example).
    """

    def __init__(self, path: str | Path, processor, config: ReaderConfig | None = None):
        self.cfg = config or ReaderConfig()
        self.path = find_data_file(path)
        self.stats = ReaderStats()
        self.encoder = SampleEncoder(processor, self.cfg, self.stats)
        self.source = _Source(self.path, self.cfg.shuffle, self.cfg.seed, self.stats, self.cfg.curriculum)
        self.base = _folder(self.path)
        self.epoch, self.start = 0, 0

    @property
    def pad_id(self) -> int:
        """The tokenizer's padding id (what ``collate`` pads ``input_ids`` with)."""
        return self.encoder.pad_id

    @property
    def layout(self) -> str:
        """How the processor returns pixels: ``stacked`` (B, N, C, H, W: Idefics) or ``flat`` (N, C, H, W: LLaVA);
        stacked until the first image is encoded."""
        return self.encoder.layout or "stacked"

    def set_position(self, epoch: int, consumed: int) -> None:
        """Start the next pass in ``epoch`` after its first ``consumed`` records (resume from a checkpoint)."""
        self.epoch, self.start = epoch, consumed

    def count_records(self) -> int:
        """Records in the file (a cheap pass for JSONL and Parquet; JSON lists are parsed)."""
        return len(self.source)

    def samples(self) -> Iterator[tuple[int, dict]]:
        """(position, sample) of valid records from the current position; malformed ones raise or count."""
        for position, record, where in self.source.iter(self.epoch, self.start):
            self.stats.add(records=1)
            reason = f"malformed JSON: {record}" if isinstance(record, Exception) else _check(record)
            if reason:
                if not self.cfg.skip_bad_lines:
                    raise ReaderError(f"{self.path}: {where}: {reason}")
                self.stats.add(bad_records=1)
                log.warning("%s: %s: skipped: %s", self.path, where, reason)
                continue
            yield position, record

    def check_missing(self, final: bool = False) -> None:
        """Raise ReaderError when too large a share of the images tried so far failed to load."""
        self.stats.check_missing(self.cfg.max_missing_images, final, self.encoder.first_missing)

    def _pieces(self) -> Iterator[_Piece | None]:
        for pos, s in self.samples():
            piece = self.encoder.encode(s, self.base, pos)
            self.check_missing()
            yield piece
        self.check_missing(final=True)

    def __iter__(self) -> Iterator[Example]:
        enc, epoch = self.encoder, self.epoch
        pieces = self._pieces()
        if not self.cfg.pack:
            for p in pieces:
                if p is not None:
                    yield enc.join([p], epoch)
            return
        group: list[_Piece] = []
        for p in pieces:
            if p is None:
                continue
            if group and (enc.packed_length([*group, p]) > self.cfg.max_length
                          or sum(len(g.pixels) for g in group) + len(p.pixels) > self.cfg.max_images):
                yield enc.join(group, epoch)
                group = []
            group.append(p)
            if p.truncated:  # a cut sample fills its sequence
                yield enc.join(group, epoch)
                group = []
        if group:
            yield enc.join(group, epoch)


def collate(examples: list[Example], pad_id: int, layout: str = "stacked") -> dict[str, torch.Tensor]:
    """Right-padded ``input_ids``, ``attention_mask``, ``labels`` (-100 on padding) and the pixel tensors.

    ``stacked`` (Idefics3/SmolVLM): ``pixel_values`` (B, max_images, C, H, W) with all-zero padding images,
    which the model drops, and ``pixel_attention_mask``. ``flat`` (LLaVA): images concatenated on dim 0.
    """
    length = max(len(e.input_ids) for e in examples)
    ids = torch.full((len(examples), length), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), length), -100, dtype=torch.long)
    mask = torch.zeros((len(examples), length), dtype=torch.long)
    for i, e in enumerate(examples):
        n = len(e.input_ids)
        ids[i, :n] = torch.tensor(e.input_ids)
        labels[i, :n] = torch.tensor(e.labels)
        mask[i, :n] = 1
    batch: dict[str, torch.Tensor] = {"input_ids": ids, "attention_mask": mask, "labels": labels}
    if not any(e.pixels for e in examples):
        return batch
    if layout == "flat":
        for key in examples[next(i for i, e in enumerate(examples) if e.pixels)].pixels[0]:
            batch[key] = torch.cat([px[key] for e in examples for px in e.pixels])
        return batch
    per_sample = [torch.cat([px["pixel_values"] for px in e.pixels]) if e.pixels else None for e in examples]
    shapes = [p.shape for p in per_sample if p is not None]
    n = max(s[0] for s in shapes)
    c, h, w = shapes[0][1], max(s[2] for s in shapes), max(s[3] for s in shapes)
    pv = torch.zeros((len(examples), n, c, h, w), dtype=per_sample[next(i for i, p in enumerate(per_sample)
                                                                         if p is not None)].dtype)
    pm = torch.zeros((len(examples), n, h, w), dtype=torch.long)
    has_mask = all("pixel_attention_mask" in px for e in examples for px in e.pixels)
    for i, (e, p) in enumerate(zip(examples, per_sample, strict=True)):
        if p is None:
            continue
        pv[i, : p.shape[0], :, : p.shape[2], : p.shape[3]] = p
        if has_mask:
            m = torch.cat([px["pixel_attention_mask"] for px in e.pixels])
            pm[i, : m.shape[0], : m.shape[1], : m.shape[2]] = m
        else:
            pm[i, : p.shape[0], : p.shape[2], : p.shape[3]] = 1
    batch["pixel_values"] = pv
    batch["pixel_attention_mask"] = pm
    return batch


def batches(examples: Iterator[Example], batch_size: int) -> Iterator[list[Example]]:
    """Consecutive groups of ``batch_size`` examples (the last one may be smaller)."""
    group: list[Example] = []
    for e in examples:
        group.append(e)
        if len(group) == batch_size:
            yield group
            group = []
    if group:
        yield group

