"""The deterministic pipeline of `textbook process`: video files in, interleaved samples out.

runner      ``Runner(store, PipelineConfig, out_dir, reporter).run(paths)``: the driver; per video probe -> rules ->
            ASR -> rules -> keyframes -> OCR -> clips, then interleave -> pack -> export, each step recorded in the
            store and skipped on a rerun with the same config
stages      the heavy stages as pure functions over files (run by ``executors``: local, process pool, Ray)
assemble    sentences, paragraph clips, keyframe placement, OCR filter, interleave and pack (pure functions)
config      ``PipelineConfig`` (the paper's defaults) and ``config_hash``
export      the trainer layouts (``export.export``); stats: Table 7 / Table 1 and the drop funnel
curriculum, provenance, tokens, textnorm   easy-to-difficult order, public sources, token counts, WER
"""
