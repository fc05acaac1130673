"""Corpus metrics of an exported textbook (PAPER.md section 6): Table 1 columns and SIM^L.

    samples = read_samples("out/")                        # a folder or any samples file, streamed
    table1(samples)                                       # images and text tokens per sample: min / max / avg
    sim_l(samples, load_image_encoder(), root="out/")     # {4: {...}, ..., 8: {...}}

SIM^L = mean over samples with >= L images of the mean over image pairs (i < j) among the
sample's first L images of [CLIP_cos01(i, j) + SSIM(i, j)] / 2, where CLIP_cos01 = (cosine of the
image features + 1) / 2 (CLIP ViT-L/14-336 by default) and SSIM is on grayscale.

SSIM here: both images go to 8-bit grayscale (PIL's "L", ITU-R 601-2 luma), the pair is resized
(bicubic) to a common size, the smaller width and the smaller height of the two, so a same-size
pair is compared as is; then skimage's ``structural_similarity`` defaults (7x7 uniform window,
data_range 255, sample covariance), computed by tools.keyframes.ssim. Pairs smaller than 7 pixels
on a side are first enlarged to 7.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from tools.keyframes import ssim as _ssim

log = logging.getLogger(__name__)

LS = (4, 5, 6, 7, 8)
SAMPLE_FILES = ("samples.jsonl", "samples.json", "samples.parquet", "multimodal_textbook.json")
_MIN_SIDE = 7  # skimage's default window


class MetricsError(Exception):
    """Unreadable corpus input; the message is one line for the user."""


# --- reading ---------------------------------------------------------------------------------

def samples_file(path: str | Path) -> Path:
    """The samples file of an export folder (the first of SAMPLE_FILES), or the file itself (any name)."""
    path = Path(path)
    if not path.exists():
        raise MetricsError(f"no such file or folder: {path}")
    if path.is_dir():
        for name in SAMPLE_FILES:
            if (path / name).is_file():
                return path / name
        raise MetricsError(f"{path} holds no {', '.join(SAMPLE_FILES)} (run `textbook export` first)")
    return path


def _kind(file: Path) -> str:
    """parquet (magic bytes), json (a list) or jsonl, from the content: any file name works."""
    try:
        with open(file, "rb") as fh:
            head = fh.read(4096)
    except OSError as exc:
        raise MetricsError(f"cannot read {file}: {exc.strerror or exc}") from exc
    if head.startswith(b"PAR1"):
        return "parquet"
    text = head.decode("utf-8", errors="ignore").lstrip("\ufeff \t\r\n")
    return "json" if text.startswith("[") else "jsonl"


def read_samples(path: str | Path) -> Iterator[dict]:
    """Samples of an export (ours, the released Multimodal Textbook / OBELICS layout), streamed.

    A JSON list is parsed item by item with ijson (the released multimodal_textbook.json is ~12 GB), JSON
    lines line by line, Parquet by record batch; the kind is read from the content, not the name.
    """
    file = samples_file(path)
    kind = _kind(file)
    if kind == "parquet":
        yield from _read_parquet(file)
        return
    if kind == "json":
        import ijson

        n = 0
        try:
            with open(file, "rb") as fh:
                for n, s in enumerate(ijson.items(fh, "item", use_float=True), 1):
                    yield _check(s, file, n)
        except ijson.JSONError as exc:
            raise MetricsError(f"{file}: malformed JSON after item {n} ({exc})") from exc
        return
    try:
        fh = open(file, encoding="utf-8")
    except OSError as exc:
        raise MetricsError(f"cannot read {file}: {exc.strerror or exc}") from exc
    with fh:
        try:
            for n, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    s = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise MetricsError(f"{file}:{n}: malformed JSON line ({exc.msg})") from exc
                yield _check(s, file, n)
        except UnicodeDecodeError as exc:
            raise MetricsError(f"{file}: not UTF-8 text, JSON or Parquet") from exc


def _check(sample, file: Path, n: int) -> dict:
    if not isinstance(sample, dict) or not isinstance(sample.get("images"), list):
        raise MetricsError(f"{file}:{n}: not a sample (a JSON object with an 'images' list)")
    if isinstance(sample.get("metadata"), str):  # OBELICS keeps it as JSON text
        try:
            sample["metadata"] = json.loads(sample["metadata"])
        except json.JSONDecodeError:
            pass
    return sample


def _read_parquet(file: Path) -> Iterator[dict]:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(file)
    except Exception as exc:  # noqa: BLE001 - pyarrow raises several kinds for a bad file
        raise MetricsError(f"{file}: not a readable Parquet file ({exc})") from exc
    for batch in pf.iter_batches():
        for n, row in enumerate(batch.to_pylist(), 1):
            yield _check(row, file, n)


def image_paths(sample: dict, root: Path, prefixes: Sequence[tuple[str, str]] = ()) -> list[Path]:
    """The sample's image files in order: a prefix rewritten first (``(OLD, NEW)``, the longest OLD first),
    then relative paths taken from the export folder."""
    out = []
    ordered = sorted(prefixes, key=lambda p: -len(p[0]))
    for p in sample.get("images") or []:
        if p is None:
            continue
        for old, new in ordered:
            if p.startswith(old):
                p = new + p[len(old):]
                break
        path = Path(p)
        if not path.is_absolute():
            path = root / path if (root / path).exists() or not Path(p).exists() else Path(p)
        out.append(path)
    return out


# --- Table 1 ---------------------------------------------------------------------------------


def _minmaxavg(values: list[int]) -> dict:
    if not values:
        return {"min": 0, "max": 0, "avg": 0.0}
    return {"min": min(values), "max": max(values), "avg": round(sum(values) / len(values), 2)}


class Table1:
    """Table 1 columns accumulated one sample at a time: images and text tokens per sample (min / max / avg).

    Text tokens are counted as the paper's ("avg 1,297 text tokens"): ASR and OCR, ``text_ocr_list`` where a
    position has it, else ``texts``, end-of-video markers left out (pipeline.stats.text_tokens), with
    ``tokenizer`` (pipeline.tokens). ``token_num`` is reported as the file states it, where present (the
    released corpus's is ASR tokens + 576 per image).
    """

    def __init__(self, tokenizer: str = "whisper"):
        self.tokenizer = tokenizer
        self.images: list[int] = []
        self.tokens: list[int] = []
        self.token_num: list[int] = []

    def add(self, sample: dict) -> dict:
        """Count one sample (images, text tokens, its stated ``token_num``); returns it unchanged, so ``add`` can sit in
        a stream."""
        from pipeline.stats import text_tokens

        self.images.append(sum(p is not None for p in sample.get("images") or []))
        texts = sample.get("texts") or []
        self.tokens.append(text_tokens({**sample, "texts": texts}, self.tokenizer))
        if isinstance(sample.get("token_num"), int):
            self.token_num.append(sample["token_num"])
        return sample

    def result(self) -> dict:
        """The counts so far: ``samples`` and min / max / avg of images and text tokens per sample (and of ``token_num``
        where the samples state it)."""
        out = {"samples": len(self.images), "images_per_sample": _minmaxavg(self.images),
               "tokens_per_sample": _minmaxavg(self.tokens)}
        if self.token_num:
            out["token_num_per_sample"] = _minmaxavg(self.token_num)
        return out


def table1(samples: Iterable[dict], tokenizer: str = "whisper") -> dict:
    """Images and text tokens per sample (min / max / avg) of any iterable of samples (see Table1)."""
    acc = Table1(tokenizer)
    for s in samples:
        acc.add(s)
    return acc.result()


# --- SIM^L -----------------------------------------------------------------------------------


def _gray(image: Image.Image | np.ndarray) -> Image.Image:
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    return image if image.mode == "L" else image.convert("L")


def ssim_gray(a: Image.Image | np.ndarray, b: Image.Image | np.ndarray) -> float:
    """SSIM of two images on grayscale, resized to a common size (see the module docstring)."""
    ga, gb = _gray(a), _gray(b)
    w, h = max(min(ga.width, gb.width), _MIN_SIDE), max(min(ga.height, gb.height), _MIN_SIDE)
    if ga.size != (w, h):
        ga = ga.resize((w, h), Image.BICUBIC)
    if gb.size != (w, h):
        gb = gb.resize((w, h), Image.BICUBIC)
    return float(_ssim(np.asarray(ga, np.float32), np.asarray(gb, np.float32)))


def pair_matrix(images: Sequence[Image.Image], encoder) -> tuple[np.ndarray, np.ndarray]:
    """(CLIP_cos01, SSIM) matrices of every pair of ``images`` (diagonals are 1)."""
    n = len(images)
    feats = encoder.encode(list(images))
    clip01 = (np.clip(feats @ feats.T, -1.0, 1.0) + 1.0) / 2.0
    ssim = np.ones((n, n), dtype=np.float64)
    grays = [_gray(im) for im in images]
    for i in range(n):
        for j in range(i + 1, n):
            ssim[i, j] = ssim[j, i] = ssim_gray(grays[i], grays[j])
    return clip01.astype(np.float64), ssim


def sample_sim(images: Sequence[Image.Image], encoder, ls: Sequence[int] = LS) -> dict[int, tuple[float, float]]:
    """For each L <= len(images): (mean CLIP_cos01, mean SSIM) over pairs i < j < L."""
    top = min(len(images), max(ls))
    clip01, ssim = pair_matrix(images[:top], encoder)
    out = {}
    for L in ls:
        if len(images) < L:
            continue
        iu = np.triu_indices(L, k=1)
        out[L] = (float(clip01[iu].mean()), float(ssim[iu].mean()))
    return out


def sim_l(samples: Iterable[dict], encoder, root: str | Path = ".", ls: Sequence[int] = LS,
          progress: Callable[[int], None] | None = None, prefixes: Sequence[tuple[str, str]] = ()) -> dict:
    """SIM^L of a corpus, for each L: ``{"sim", "clip", "ssim", "samples"}`` (None where no sample
    has L images), plus ``"skipped"``: samples left out because an image could not be read."""
    root = Path(root)
    sums = {L: [0.0, 0.0, 0] for L in ls}
    skipped = 0
    for n, sample in enumerate(samples, 1):
        paths = image_paths(sample, root, prefixes)
        if len(paths) < min(ls):
            continue
        images = []
        try:
            for p in paths[: max(ls)]:
                with Image.open(p) as im:
                    images.append(im.convert("RGB"))
        except OSError as exc:
            skipped += 1
            log.warning("sample %d skipped: cannot read %s (%s)", n, p, exc)
            continue
        for L, (c, s) in sample_sim(images, encoder, ls).items():
            sums[L][0] += c
            sums[L][1] += s
            sums[L][2] += 1
        if progress:
            progress(n)
    out: dict = {}
    for L, (c, s, k) in sums.items():
        out[L] = ({"sim": round((c + s) / 2 / k, 4), "clip": round(c / k, 4), "ssim": round(s / k, 4), "samples": k}
                  if k else {"sim": None, "clip": None, "ssim": None, "samples": 0})
    out["skipped"] = skipped
    return out
