"""The stages of the pipeline, one module each, in flow order (pipeline.stage is their contract).

probe -> (probe rules) -> asr -> (transcript rules) -> keyframes -> ocr -> clips; then, per run, pack.
The pure tasks (``*_task``) run on an executor; the rules are in ``rules``.
"""

from pipeline.stages.asr import AsrStage, asr_task
from pipeline.stages.clips import ClipsStage, images_dir, link_images
from pipeline.stages.keyframes import KeyframesStage, keyframes_task
from pipeline.stages.ocr import OcrStage, ocr_task
from pipeline.stages.pack import PackStage
from pipeline.stages.probe import ProbeStage, probe_task
from pipeline.stages.rules import Drop, language_seconds, probe_rules, repetition_share, transcript_rules

VIDEO_STAGES = (ProbeStage, AsrStage, KeyframesStage, OcrStage, ClipsStage)

__all__ = ["VIDEO_STAGES", "AsrStage", "ClipsStage", "Drop", "KeyframesStage", "OcrStage", "PackStage", "ProbeStage",
           "asr_task", "images_dir", "keyframes_task", "language_seconds", "link_images", "ocr_task", "probe_rules",
           "probe_task", "repetition_share", "transcript_rules"]
