"""OCR of keyframes: tesseract by default, or a VLM behind an OpenAI-compatible endpoint.

Both backends have one verb, ``read(image_path) -> OcrResult``, and say which
engine and options produced the text. The VLM backend is how the paper read
formulas (InternVL2); point it at vLLM, Ollama or any OpenAI-compatible server.
"""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np

from tools.errors import ToolError

VLM_PROMPT = (
    "Transcribe all text, symbols and formulas visible in this video frame, line by line. "
    "Write formulas in LaTeX. If the frame is blurred, occluded or has no readable content, "
    "answer exactly NONE. Output only the transcription."
)


@dataclass(frozen=True)
class OcrOptions:
    """How keyframes are read. ``psm``: tesseract's page-segmentation passes over the whole frame,
    merged; ``title_psm``: the mode of one more pass over the frame's title region alone (a title
    bar, else the first text line in the top third; ``title_band``): 7 reads it as one line, 8 as
    one word, 0 turns the pass off. Page layout analysis drops a lone short word on a coloured
    bar ("Gases"); read by itself it is found."""

    backend: str = "tesseract"  # tesseract | vlm
    language: str = "eng"  # tesseract language(s), e.g. eng+equ
    psm: tuple[int, ...] = (3, 6)  # tesseract page segmentation passes, merged
    title_psm: int = 7  # the title region's pass (7: one line, 8: one word; 0: none)
    min_height: int = 960  # frames are upscaled to at least this height before tesseract
    min_confidence: float = 0.0  # tesseract words below this confidence are dropped (0: keep all; the
    # pipeline judges whole lines: a correct word can score 9 inside a line of 96s)
    vlm_base_url: str = ""  # e.g. http://127.0.0.1:8000/v1
    vlm_model: str = ""
    vlm_api_key_env: str = "OPENAI_API_KEY"  # the key is read from this variable, never stored
    vlm_max_tokens: int = 512
    # VLM requests in flight at once for one video's frames (each its own call, answers in frame order);
    # not part of a config hash: it changes how fast, never what is read
    vlm_concurrency: int = field(default=8, metadata={"hash": False})
    timeout: float = 120.0

    def __post_init__(self):
        if self.vlm_concurrency < 1:
            raise ValueError(f"vlm_concurrency must be at least 1, not {self.vlm_concurrency}")


#: OcrOptions fields that change how a read runs, not what it reads: out of config hashes and stored options
_UNHASHED = frozenset(f.name for f in fields(OcrOptions) if not f.metadata.get("hash", True))


@dataclass
class OcrLine:
    """One line of text read from a frame.

    ``confidence`` is tesseract's mean word confidence, 0..100, or None when the engine
    gives none (a VLM); ``word_confidences`` one value per word of ``text`` (empty for a VLM);
    ``top`` the line's top edge in pixels of the image as read (0 for a VLM).
    """

    text: str
    confidence: float | None = None
    word_confidences: list[float] = field(default_factory=list)
    top: int = 0


@dataclass
class LlmCall:
    """A model call made by a tool, for the caller to log (tools never touch the store).

    Mirrors the gateway's ``llm_calls`` row: the prompt's text and sha256, the model, the
    endpoint's answer, tokens (estimated when the endpoint reports none), latency in seconds,
    and the error if the call failed. Never holds a key.
    """

    prompt_name: str
    prompt_sha256: str
    model: str
    messages: list[dict]
    response: str | None
    input_tokens: int
    output_tokens: int
    tokens_estimated: bool
    latency_s: float
    error: str | None = None


@dataclass
class OcrResult:
    """What one frame's OCR gave: ``text`` is the lines joined by newlines, top to bottom."""

    text: str
    confidence: float  # 0..100 (tesseract mean word confidence; VLM: 100 when it answered)
    engine: str
    seconds: float
    options: dict = field(default_factory=dict)
    lines: list[OcrLine] = field(default_factory=list)
    llm_call: LlmCall | None = None  # the VLM backend's call, for the caller to log
    height: int = 0  # pixels of the image as read (the scale of OcrLine.top; 0 when the engine gives no position)


def _parse_tsv(tsv: str, min_conf: float) -> dict[int, list[tuple[int, str, list[float]]]]:
    """Tesseract TSV -> {page: [(top, line text, word confidences)]}."""
    lines: dict[tuple[int, int, int, int], list] = {}
    for row in tsv.splitlines()[1:]:
        cols = row.split("\t")
        if len(cols) < 12 or not cols[11].strip():
            continue
        conf = float(cols[10])
        if conf < min_conf:
            continue
        key = (int(cols[1]), int(cols[2]), int(cols[3]), int(cols[4]))  # page, block, par, line
        entry = lines.setdefault(key, [10**9, [], []])
        entry[0] = min(entry[0], int(cols[7]))
        entry[1].append(cols[11].strip())
        entry[2].append(conf)
    pages: dict[int, list] = {}
    for (page, *_), (top, words, confs) in sorted(lines.items()):
        pages.setdefault(page, []).append((top, " ".join(words), confs))
    return pages


def title_band(rgb: np.ndarray) -> tuple[int, int, bool] | None:
    """The rows (top, bottom: pixels, bottom exclusive) of a slide's title region in an RGB frame
    (H x W x 3, uint8), and whether its background is dark; None when it has none.

    Each row's dominant colour (colours quantized to 3 bits a channel) and its share of the row
    are taken on a frame subsampled to about 240 columns. A title bar is the first run of rows
    from the top (starting in the top 15% of the frame) whose dominant colour covers at least half
    of each row, differs from the slide's body colour (the colour dominating most rows) and spans
    5% to 35% of the height. Without a bar, the first run of rows holding ink on the body colour
    (under 98.5% body colour) that starts in the top third, spans 2% to 20% of the height and is
    followed by a blank row is taken, widened by half its height each way.
    """
    h, w = rgb.shape[:2]
    step = max(1, w // 240)
    small = rgb[::step, ::step].astype(np.int32) >> 5
    codes = (small[..., 0] << 6) | (small[..., 1] << 3) | small[..., 2]
    rows, cols = codes.shape
    if rows < 20:
        return None
    counts = np.bincount((codes + (np.arange(rows) * 512)[:, None]).ravel(), minlength=rows * 512).reshape(rows, 512)
    mode, share = counts.argmax(axis=1), counts.max(axis=1) / cols
    body = int(np.bincount(mode, minlength=512).argmax())

    def lum(code: int) -> float:  # the luminance (0..255) of a quantized colour
        return (((code >> 6) & 7) * 0.299 + ((code >> 3) & 7) * 0.587 + (code & 7) * 0.114) * 32

    top = 0
    while top < rows and mode[top] == body and share[top] > 0.985:  # a white margin above a bar
        top += 1
    if top <= 0.15 * rows and top < rows and mode[top] != body and share[top] >= 0.5:
        end = top
        while end < rows and mode[end] == mode[top] and share[end] >= 0.5:
            end += 1
        if 0.05 * rows <= end - top <= 0.35 * rows:
            return top * step, min(h, end * step), bool(lum(int(mode[top])) < 128)
    ink = (mode != body) | (share < 0.985)
    start = int(np.argmax(ink)) if ink.any() else rows
    if start > rows / 3:
        return None
    end = start
    while end < rows and ink[end]:
        end += 1
    if end >= rows or not 0.02 * rows <= end - start <= 0.2 * rows:
        return None
    pad = (end - start) // 2 + 1
    return max(0, start - pad) * step, min(h, (end + pad) * step), bool(lum(body) < 128)


_TITLE_READ_CONF = 60.0  # a line the layouts read in the title region at this mean confidence: it was read


def _words(text: str) -> str:
    return " ".join("".join(ch for ch in word if ch.isalnum()) for word in text.lower().split())


def _merge_title(have: list[tuple[int, str, list[float]]], line: tuple[int, str, list[float]]) -> None:
    """Merge a line read from the title region into a frame's lines (top, text, word confidences):
    a line the page passes read alike (``_similar``) is kept, or replaced by the title pass's read
    when that one is more confident; a title the page passes read inside a longer line is not
    added again; anything else is added."""
    words = _words(line[1])
    if not words:
        return
    for k, old in enumerate(have):
        if _similar(line[1], old[1]):
            if sum(line[2]) / len(line[2]) > sum(old[2]) / max(1, len(old[2])):
                have[k] = (old[0], line[1], line[2])
            return
        if f" {words} " in f" {_words(old[1])} ":
            return
    have.append(line)


def _similar(a: str, b: str) -> bool:
    import difflib

    return difflib.SequenceMatcher(None, a.lower(), b.lower()).ratio() > 0.75


class TesseractOCR:
    """Tesseract through its command line.

    Frames are converted to grayscale and upscaled to at least ``min_height``
    pixels, then read in one tesseract process per page-segmentation pass (no
    per-image start-up cost). Lines found by a later pass that no earlier pass
    found are merged in by position: automatic layout (psm 3) reads formulas in
    boxes, single-block layout (psm 6) reads titles on coloured bands. The
    title region (``title_band``) of each frame where neither layout read a line
    in it (at mean confidence 60), cut out, made dark-on-light and read as one
    line (``title_psm``) in one more process, gives the short titles both
    layouts drop (``_merge_title`` adds it without repeating a line).
    """

    def __init__(self, options: OcrOptions | None = None):
        self.options = options or OcrOptions()
        self.binary = shutil.which("tesseract")
        if not self.binary:
            raise ToolError("missing-tool", "tesseract is not installed (apt-get install tesseract-ocr)")

    def read(self, image: str | Path) -> OcrResult:
        """The OCR of one image file (``read_many`` of one)."""
        return self.read_many([image])[0]

    def read_many(self, images: list[str | Path]) -> list[OcrResult]:
        """The OCR of each image file, in order: one ``OcrResult`` per image (lines top to bottom, mean confidence).

        All images go through one tesseract process per pass (automatic and single-block layout, then the title
        bands). Raises ToolError: ``corrupt`` (an image that cannot be read), ``timeout`` (a pass over
        ``options.timeout`` seconds), ``ocr-failed`` (tesseract exited with an error)."""
        import tempfile

        from PIL import Image, ImageOps

        opts = self.options
        if not images:
            return []
        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="textbook-ocr-") as tmp:
            listing, titles_listing = Path(tmp) / "images.txt", Path(tmp) / "titles.txt"
            prepared, heights, crops = [], [], []  # crops: (image index, top, bottom of the title region as read)
            for i, src in enumerate(images):
                try:
                    with Image.open(src) as im:
                        rgb = im.convert("RGB")
                except OSError as exc:
                    raise ToolError("corrupt", f"cannot read image {src}: {exc}") from exc
                gray = rgb.convert("L")
                scale = max(1.0, opts.min_height / gray.height)
                if scale > 1.0:
                    gray = gray.resize((round(gray.width * scale), opts.min_height), Image.BICUBIC)
                dst = Path(tmp) / f"{i:06d}.png"
                gray.save(dst)
                heights.append(gray.height)
                prepared.append(str(dst))
                band = title_band(np.asarray(rgb)) if opts.title_psm else None
                if band is not None:
                    top, bottom, dark = round(band[0] * scale), round(band[1] * scale), band[2]
                    crop = gray.crop((0, top, gray.width, bottom))
                    crop = ImageOps.invert(crop) if dark else crop
                    crop = ImageOps.expand(crop, border=16, fill=int(np.median(np.asarray(crop))))
                    crop.save(Path(tmp) / f"title-{i:06d}.png")
                    crops.append((i, top, bottom))
            listing.write_text("\n".join(prepared) + "\n")
            merged: list[list[tuple[int, str, list[float]]]] = [[] for _ in images]
            # the layouts' passes are independent tesseract processes: run them side by side
            with ThreadPoolExecutor(max_workers=len(opts.psm)) as pool:
                passes = list(pool.map(lambda psm: self._run(listing, psm), opts.psm))
            for pages in passes:
                for page, lines in pages.items():
                    if not 1 <= page <= len(images):
                        continue
                    have = merged[page - 1]
                    for line in lines:
                        if not any(_similar(line[1], old[1]) for old in have):
                            have.append(line)
            # the title pass only for frames whose title region the layouts left unread (no confident
            # line starts in it): most slides cost nothing more
            unread = [(i, top) for i, top, bottom in crops if not any(
                top <= line[0] < bottom and sum(line[2]) / len(line[2]) >= _TITLE_READ_CONF for line in merged[i])]
            if unread:
                titles_listing.write_text("".join(f"{tmp}/title-{i:06d}.png\n" for i, _ in unread))
                for page, lines in self._run(titles_listing, opts.title_psm).items():
                    if 1 <= page <= len(unread):
                        i, top = unread[page - 1]
                        for line_top, text, confs in lines:
                            _merge_title(merged[i], (line_top + top - 16, text, confs))
        seconds = round((time.perf_counter() - t0) / len(images), 3)
        results = []
        for lines, height in zip(merged, heights, strict=True):
            lines.sort(key=lambda item: item[0])
            confs = [c for _, _, cs in lines for c in cs]
            results.append(OcrResult(text="\n".join(text for _, text, _ in lines),
                                     confidence=round(sum(confs) / len(confs), 1) if confs else 0.0,
                                     engine=f"tesseract {self.version()}", seconds=seconds, options=asdict(opts),
                                     lines=[OcrLine(text, round(sum(cs) / len(cs), 1), [round(c, 1) for c in cs], top)
                                            for top, text, cs in lines], height=height))
        return results

    def _run(self, listing: Path, psm: int) -> dict[int, list]:
        opts = self.options
        cmd = [self.binary, str(listing), "stdout", "-l", opts.language, "--psm", str(psm), "tsv"]
        env = {**os.environ, "OMP_THREAD_LIMIT": "1"}
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=opts.timeout, env=env)
        except subprocess.TimeoutExpired as exc:
            raise ToolError("timeout", f"tesseract took over {opts.timeout:.0f}s") from exc
        if proc.returncode != 0:
            raise ToolError("ocr-failed", f"tesseract: {(proc.stderr.strip().splitlines() or ['failed'])[-1]}")
        return _parse_tsv(proc.stdout, opts.min_confidence)

    _version: str | None = None

    def version(self) -> str:
        """The installed tesseract's version string (asked once per process; each result's ``engine`` names it)."""
        if TesseractOCR._version is None:
            out = subprocess.run([self.binary, "--version"], capture_output=True, text=True)
            TesseractOCR._version = (out.stdout or out.stderr).split("\n", 1)[0].split()[-1]
        return TesseractOCR._version


class VlmOCR:
    """A vision LLM behind an OpenAI-compatible chat endpoint reads the frame.

    Each result carries the call (``OcrResult.llm_call``: prompt name and sha256, model,
    messages with the image elided, answer, tokens, latency, error) so the pipeline logs it as
    an ``llm_calls`` row like every other model call. A frame whose call fails gives an empty
    result with the error in its call; ``read_many`` raises ToolError("ocr-failed") only when
    every frame failed (an endpoint that is down), after the calls were made. ``read_many`` keeps up to
    ``options.vlm_concurrency`` requests in flight (a vLLM server batches them; one at a time leaves it idle
    between frames). Thread-safe: the OpenAI client pools its connections.
    """

    PROMPT_NAME = "ocr_vlm"
    PROMPT_SHA256 = hashlib.sha256(VLM_PROMPT.encode()).hexdigest()

    def __init__(self, options: OcrOptions):
        if not options.vlm_base_url or not options.vlm_model:
            raise ToolError("config", "the vlm OCR backend needs vlm_base_url and vlm_model")
        from openai import OpenAI

        self.options = options
        key = os.environ.get(options.vlm_api_key_env) or "not-needed"
        self.client = OpenAI(base_url=options.vlm_base_url, api_key=key, timeout=options.timeout, max_retries=2)

    def read_many(self, images: list[str | Path]) -> list[OcrResult]:
        """The OCR of each image, in order, one chat call each, up to ``options.vlm_concurrency`` at once. Raises
        ToolError("ocr-failed") only when every call failed."""
        workers = min(self.options.vlm_concurrency, len(images))
        if workers <= 1:
            results = [self.read(image) for image in images]
        else:
            with ThreadPoolExecutor(workers, thread_name_prefix="vlm-ocr") as pool:
                results = list(pool.map(self.read, images))  # map keeps the frames' order
        failed = [r.llm_call.error for r in results if r.llm_call and r.llm_call.error]
        if results and len(failed) == len(results):
            raise ToolError("ocr-failed", f"VLM OCR at {self.options.vlm_base_url}: {failed[0]}")
        return results

    def read(self, image: str | Path) -> OcrResult:
        """The OCR of one image by the VLM (the JPEG sent inline as a data URL, with ``VLM_PROMPT``).

        A failed call gives an empty result whose ``llm_call.error`` says why; it does not raise."""
        opts = self.options
        t0 = time.perf_counter()
        data = base64.b64encode(Path(image).read_bytes()).decode()
        messages = [{"role": "user", "content": [
            {"type": "text", "text": VLM_PROMPT},
            {"type": "image_url", "image_url": {"url": f"data:image/jpeg;base64,{data}"}}]}]
        logged = [{"role": "user", "content": [
            {"type": "text", "text": VLM_PROMPT},
            {"type": "image_url", "image_url": {"url": f"(jpeg, {len(data) * 3 // 4} bytes: {Path(image).name})"}}]}]
        text, error, usage = "", None, None
        try:
            reply = self.client.chat.completions.create(model=opts.vlm_model, max_tokens=opts.vlm_max_tokens,
                                                        temperature=0.0, messages=messages)
            text = (reply.choices[0].message.content or "").strip()
            usage = reply.usage
        except Exception as exc:  # openai raises one class per HTTP failure
            error = f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"
        latency = round(time.perf_counter() - t0, 3)
        answer = text
        if text.upper() == "NONE":
            text = ""
        safe = {k: v for k, v in asdict(opts).items() if k != "vlm_api_key_env" and k not in _UNHASHED}
        call = LlmCall(prompt_name=self.PROMPT_NAME, prompt_sha256=self.PROMPT_SHA256, model=opts.vlm_model,
                       messages=logged, response=answer if error is None else None,
                       input_tokens=int(getattr(usage, "prompt_tokens", 0) or 0) if usage else len(VLM_PROMPT) // 4,
                       output_tokens=int(getattr(usage, "completion_tokens", 0) or 0) if usage else len(answer) // 4,
                       tokens_estimated=usage is None, latency_s=latency, error=error)
        return OcrResult(text=text, confidence=100.0 if text else 0.0, engine=f"vlm {opts.vlm_model}",
                         seconds=latency, options=safe,
                         lines=[OcrLine(line.strip()) for line in text.splitlines() if line.strip()], llm_call=call)


def make_reader(options: OcrOptions | None = None) -> TesseractOCR | VlmOCR:
    """The OCR engine ``options.backend`` names: ``TesseractOCR`` or ``VlmOCR``. Raises ToolError("config") for another
    name, or ("missing-tool") when tesseract is not installed."""
    options = options or OcrOptions()
    if options.backend == "tesseract":
        return TesseractOCR(options)
    if options.backend == "vlm":
        return VlmOCR(options)
    raise ToolError("config", f"unknown OCR backend {options.backend!r} (tesseract or vlm)")
