"""Training and evaluation on exported corpora (PAPER.md section 7).

data       the interleaved reader (our export and the released Multimodal Textbook / OBELICS JSON)
model      tiny offline Idefics3 for tests, hub/checkpoint loading for real runs
loop       continual pretraining with checkpoints and resume
benchmarks, eval, scoring   few-shot eval: adapters, random/RICES demonstrations, the cheat test
metrics, clip               SIM^L and Table 1 columns
"""
