"""Training and evaluation on exported corpora (PAPER.md section 7): `textbook train` and `textbook eval`.

loop        ``train(TrainConfig(data=..., out=..., model=...))``: continual pretraining with checkpoints and resume
data        the interleaved reader (our export and the released Multimodal Textbook / OBELICS JSON)
model       ``load_model``: a tiny offline Idefics3 for tests, a hub id or checkpoint folder for real runs
benchmarks, eval, scoring   ``evaluate([load_benchmark(...)], VLMPredictor(...), shots)``: few-shot eval with
            random/RICES demonstrations and the cheat test
metrics, clip               SIM^L and Table 1 columns of an export (`textbook stats --data`)
hub         a quick check before reaching the HF hub (no network: one clear line)
"""
