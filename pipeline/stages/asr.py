"""asr: the audio track chosen and normalized, faster-whisper with per-window languages, then the
transcript rules (silent, language:XX, language_uncertain, repetition, too_few_asr_tokens)."""

from __future__ import annotations

from dataclasses import asdict
from functools import lru_cache

from pipeline.config import config_hash
from pipeline.records import Status, Video
from pipeline.stage import Needs, Stage
from pipeline.stages.rules import transcript_rules
from pipeline.tokens import count_tokens
from tools import media, storage
from tools.asr import AsrOptions, Transcriber


@lru_cache(maxsize=2)
def _transcriber(options: AsrOptions) -> Transcriber:
    return Transcriber(options)  # loaded once per process, reused across tasks

def asr_task(path: str, options: AsrOptions, languages: tuple[str, ...], min_speech: float) -> dict:
    """The audio track to transcribe (``options.audio.track``: a track in a wanted language, else
    the default-flagged one), its level normalized when low, then ASR with per-window languages.
    The transcript (tools.asr.Transcript as a dict) records the track and the normalization.
    ``path``: a local path or a URI (tools.storage: copied to this worker's disk for ffmpeg)."""
    if not storage.is_remote(path):
        return _asr_file(path, options, languages, min_speech)
    with storage.local_copy(path) as local:
        return _asr_file(str(local), options, languages, min_speech)


def _asr_file(path: str, options: AsrOptions, languages: tuple[str, ...], min_speech: float) -> dict:
    info = media.probe(path)
    choice = media.choose_audio_track(info.audio_streams, options.audio.track, options.audio.languages or languages)
    audio = media.extract_audio(path, stream=choice.stream.index)
    audio, normalization = media.normalize_audio(audio, options.audio)
    tr = _transcriber(options).transcribe(audio, languages=languages, min_speech_seconds=min_speech)
    tr.track, tr.normalization = choice, normalization
    return asdict(tr)

class AsrStage(Stage):
    """faster-whisper on the chosen audio track (the ``asr`` lane, one model per worker), then the
    transcript rules."""

    name = "asr"
    hash_field = "asr_hash"
    needs = Needs(lane="asr", cpus=2, model="whisper")
    passed = Status.TRANSCRIBED

    def config_hash(self, video: Video | None) -> str:
        """ASR options, the wanted languages and the minimum speech."""
        c = self.cfg
        return config_hash("asr", self.version, c.asr, c.filters.languages, c.filters.min_speech_seconds)

    def task(self, video: Video, h: str):
        """asr_task over the video file."""
        c = self.cfg
        return asr_task, (video.source, c.asr, tuple(c.filters.languages), c.filters.min_speech_seconds)

    def save(self, video: Video, h: str, tr: dict, seconds: float) -> None:
        """The transcript with its token count."""
        text = " ".join(s["text"] for s in tr["segments"])
        self.store.save_transcript(video.video_id, h, tr, count_tokens(text, self.cfg.tokenizer))

    def keep(self, video: Video, h: str) -> str | None:
        """The transcript rules (pipeline.stages.rules.transcript_rules)."""
        tr = self.store.transcript(video.video_id, h)
        return transcript_rules(tr, tr["n_tokens"], self.cfg.filters)
