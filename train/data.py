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
``<image>*N``), each text is followed by ``separator``. Image spans carry no loss (labels -100), nor does
padding. Packing concatenates samples up to ``max_length`` with the end-of-video marker between them.

Text: ``text_field="auto"`` uses ``text_ocr_list`` (ASR with the keyframes' OCR) when a sample has it, as
the released corpus is described (PAPER.md section 5: "text_ocr_list (ASR + OCR)"), else ``texts``.
Images beyond ``max_images`` are ignored (their text stays), as in the released training
(``mmc4_max_num_images 12``: "images exceeding this number will be ignored").
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

from train.model import EOV_MARKER

log = logging.getLogger(__name__)

DATA_FILES = ("samples.jsonl", "samples.json", "samples.parquet")
TEXT_FIELDS = ("auto", "text_ocr_list", "texts")
_PIPELINE_EOV = EOV_MARKER  # what pipeline.assemble.pack writes between videos
_JSON_CHUNK = 1 << 20
_JSON_MAX_ITEM = 256 << 20  # a JSON-list item that does not parse within this many characters is malformed
_NOT_PIXELS = {"input_ids", "attention_mask", "token_type_ids", "mm_token_type_ids", "text_replacement_offsets"}


class ReaderError(Exception):
    """Unreadable data: a missing file or a malformed record (the message names file and line)."""


@dataclass
class ReaderConfig:
    max_images: int = 12  # images per sample (the released training's mmc4_max_num_images)
    max_length: int | None = None  # tokens per sequence, BOS/EOS and image tokens included; None: no cut
    text_field: str = "auto"  # auto (text_ocr_list when present) | text_ocr_list | texts
    pack: bool = False  # concatenate samples up to max_length with eov_marker between them
    eov_marker: str = EOV_MARKER
    separator: str = "\n"  # after each text
    shuffle: bool = False  # a seeded permutation per epoch (JSONL; other files are read in order)
    seed: int = 0
    skip_bad_lines: bool = False  # count malformed records instead of stopping
    image_root: Path | None = None  # where relative image paths live (default: the data file's folder)

    def __post_init__(self):
        if self.text_field not in TEXT_FIELDS:
            raise ReaderError(f"unknown text field {self.text_field!r} (one of {', '.join(TEXT_FIELDS)})")
        if self.max_images < 0:
            raise ReaderError("max_images must be >= 0")
        if self.max_length is not None and self.max_length < 4:
            raise ReaderError("max_length must be at least 4 tokens")
        if self.pack and self.max_length is None:
            raise ReaderError("packing needs a max_length")


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
    texts_ocr: int = 0  # texts taken from text_ocr_list
    texts_asr: int = 0  # texts taken from texts
    tokens: int = 0  # tokens yielded (image spans included)
    loss_tokens: int = 0  # tokens that carry loss
    order: str = "file"  # file | shuffled
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, **counts: int) -> None:
        with self._lock:
            for k, v in counts.items():
                setattr(self, k, getattr(self, k) + v)

    def as_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self) if not f.name.startswith("_")}


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
        return len(self.pixels)


@dataclass
class _Piece:
    ids: list[int]
    labels: list[int]
    pixels: list[dict[str, torch.Tensor]]
    truncated: bool
    position: int


# ---------------------------------------------------------------------------------------------- files


def find_data_file(path: str | Path) -> Path:
    """The samples file itself, or the first of samples.jsonl / .json / .parquet in a folder."""
    p = Path(path).expanduser()
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


def _kind(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        return "parquet"
    if suffix == ".jsonl":
        return "jsonl"
    try:  # .json (or anything else): a JSON list when it starts with '[', else JSON lines
        with open(path, encoding="utf-8") as fh:
            head = fh.read(4096).lstrip("\ufeff \t\r\n")
    except (OSError, UnicodeDecodeError) as exc:
        raise ReaderError(f"cannot read {path}: {exc}") from exc
    return "json" if head.startswith("[") else "jsonl"


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

    def __init__(self, path: Path, shuffle: bool, seed: int, stats: ReaderStats):
        self.path, self.seed, self.stats = path, seed, stats
        self.kind = _kind(path)
        self.shuffle = shuffle and self.kind == "jsonl"
        if shuffle and not self.shuffle:
            log.warning("%s is read in file order: shuffling needs JSONL (textbook export --format jsonl)", path)
        stats.order = "shuffled" if self.shuffle else "file"
        self._offsets: array | None = None
        self._lines: array | None = None

    def __len__(self) -> int:
        if self.kind == "jsonl":
            return len(self._index()[0])
        if self.kind == "parquet":
            import pyarrow.parquet as pq

            return pq.ParquetFile(self.path).metadata.num_rows
        return sum(1 for _ in self._json_list(0))

    def iter(self, epoch: int, start: int) -> Iterator[tuple[int, object, str]]:
        """(position after the record, record or an exception, where) from record ``start`` on."""
        if self.kind == "parquet":
            yield from self._parquet(start)
        elif self.kind == "json":
            yield from self._json_list(start)
        elif self.shuffle:
            yield from self._jsonl_shuffled(epoch, start)
        else:
            yield from self._jsonl(start)

    def _open(self, mode="rb"):
        try:
            return open(self.path, mode)
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
        """Byte offsets and line numbers of the non-blank lines (one pass, nothing parsed)."""
        if self._offsets is None:
            offsets, lines = array("q"), array("q")
            pos = 0
            with self._open() as fh:
                for lineno, raw in enumerate(fh, 1):
                    if raw.strip():
                        offsets.append(pos)
                        lines.append(lineno)
                    pos += len(raw)
            self._offsets, self._lines = offsets, lines
        return self._offsets, self._lines

    def _jsonl_shuffled(self, epoch: int, start: int):
        offsets, lines = self._index()
        order = np.random.default_rng([self.seed, epoch]).permutation(len(offsets))
        with self._open() as fh:
            for k in range(start, len(order)):
                i = int(order[k])
                fh.seek(offsets[i])
                yield k + 1, self._parse(fh.readline()), f"line {lines[i]}"

    def _json_list(self, start: int):
        """Items of one JSON list, decoded one at a time (the list is never held whole)."""
        dec = json.JSONDecoder()
        with self._open("r") as fh:
            buf, pos, line, eof, k = "", 0, 1, False, 0

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
                nonlocal pos, line
                while True:
                    while pos < len(buf) and buf[pos] in " \t\r\n\ufeff":
                        line += buf[pos] == "\n"
                        pos += 1
                    if pos < len(buf) or not fill():
                        return buf[pos] if pos < len(buf) else ""

            if skip_ws() != "[":
                raise ReaderError(f"{self.path}: line {line}: expected a JSON list of samples")
            pos += 1
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
                if k > start:
                    yield k, item, f"line {line} (item {k})"
                line += buf.count("\n", pos, end)
                pos = end
                nxt = skip_ws()
                if nxt == "]":
                    return
                if nxt != ",":
                    raise ReaderError(f"{self.path}: line {line}: expected ',' or ']' after item {k}")
                pos += 1
                skip_ws()

    def _parquet(self, start: int):
        import pyarrow.parquet as pq

        try:
            pf = pq.ParquetFile(self.path)
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

    # images
    def load_image(self, ref: str, base: Path):
        """A PIL RGB image, or None (counted) when it is remote, missing or unreadable."""
        from PIL import Image, UnidentifiedImageError

        if ref.startswith(("http://", "https://")):
            self.stats.add(images_remote=1)
            return None
        path = Path(ref).expanduser()
        if not path.is_absolute():
            path = (self.cfg.image_root or base) / path
        try:
            with Image.open(path) as im:
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
    def segments(self, sample: dict, base: Path) -> list[tuple[str, object]]:
        """[("image", PIL) | ("text", str)] in order, after the image cap and the text-field choice."""
        cfg, st = self.cfg, self.stats
        images, texts = sample["images"], sample["texts"]
        ocr = sample.get("text_ocr_list") if cfg.text_field != "texts" else None
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

    def encode(self, sample: dict, base: Path, position: int = 0) -> _Piece | None:
        """Token ids (without BOS/EOS) and labels of one sample, cut to fit max_length; None if no text."""
        cfg = self.cfg
        segs = self.segments(sample, base)
        texts = [s[1] + cfg.separator for s in segs if s[0] == "text"]
        text_ids = iter(self.tokenizer(texts, add_special_tokens=False, split_special_tokens=True)["input_ids"]
                        if texts else [])
        budget = None if cfg.max_length is None else cfg.max_length - len(self.bos) - len(self.eos)
        ids: list[int] = []
        labels: list[int] = []
        pixels: list[dict] = []
        truncated = False
        for i, (kind, payload) in enumerate(segs):
            if kind == "image":
                span, px = self.encode_image(payload)
                if budget is not None and len(ids) + len(span) > budget:
                    truncated = True
                else:
                    ids += span
                    labels += [-100] * len(span)
                    pixels.append(px)
            else:
                span = self.eov if kind == "eov" else next(text_ids)
                if budget is not None and len(ids) + len(span) > budget:
                    span, truncated = span[: budget - len(ids)], True
                ids += span
                labels += span
            if truncated:
                self.stats.add(truncated_samples=1,
                               images_truncated=sum(1 for s in segs[i:] if s[0] == "image"))
                break
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
        self.source = _Source(self.path, self.cfg.shuffle, self.cfg.seed, self.stats)
        self.base = self.path.parent
        self.epoch, self.start = 0, 0

    @property
    def pad_id(self) -> int:
        return self.encoder.pad_id

    @property
    def layout(self) -> str:
        return self.encoder.layout or "stacked"

    def set_position(self, epoch: int, consumed: int) -> None:
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

    def __iter__(self) -> Iterator[Example]:
        enc, epoch = self.encoder, self.epoch
        pieces = (enc.encode(s, self.base, pos) for pos, s in self.samples())
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

