"""The deterministic pipeline of `textbook process`: video files in, interleaved samples out.

runner      ``Runner(store, PipelineConfig, out_dir, reporter).run(paths)``: `process` as a list of stages (probe ->
            ASR -> keyframes -> OCR -> clips -> pack, then export); its public steps are what the build calls per video
stage       the stage contract (name, version, config hash; skip-if-done, errors with a kind, progress, per-reason
            counts in the base); stages/: one file per stage, outputs keyed by (video, stage, config hash)
records     the typed records (Video, Keyframe, Clip, Sample; the ASR records) and ``Status``, in funnel order
assemble    sentences, paragraph clips, keyframe placement, OCR filter, interleave and pack (pure functions)
config      ``PipelineConfig`` (the paper's defaults) and ``config_hash``
export      the trainer layouts (``export.export``); stats: Table 7 / Table 1 and the drop funnel
curriculum, provenance, tokens, textnorm   easy-to-difficult order, public sources, token counts, WER
"""
