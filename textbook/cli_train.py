"""`textbook train`: continual pretraining of a vision-language model on exported samples (train/loop.py).

Registered on the main Typer app by ``register``; bad input (a missing data file, a malformed line, a model
that is not there) is raised as the app's UserError: one line on stderr, exit 2, no traceback.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from textbook.console import err_console

DataOpt = Annotated[str, typer.Option("--data", help="samples.jsonl / .json / .parquet, or the export folder; "
                                                    "a local path or an object-store URI (s3://bucket/out)")]
ModelOpt = Annotated[str, typer.Option("--model", help="hub id (HuggingFaceTB/SmolVLM-256M-Instruct), a folder, "
                                                       "or 'tiny' (random, offline)")]
OutOpt = Annotated[Path, typer.Option("--out", help="folder for checkpoints, the log and the final model")]
IntOpt = Optional[int]


def register(app: typer.Typer, user_error: type[Exception], setup_logging) -> None:
    """Add ``train`` (continual pretraining on an export, train.loop) to ``app``."""
    @app.command()
    def train(
        data: DataOpt,
        model: ModelOpt,
        out: OutOpt,
        max_images: Annotated[int, typer.Option(help="images per sample; later ones are ignored")] = 12,
        max_length: Annotated[IntOpt, typer.Option(help="tokens per sequence (default: the model's limit)")] = None,
        lr: Annotated[float, typer.Option(help="peak learning rate")] = 2e-5,
        epochs: Annotated[int, typer.Option(help="passes over the data")] = 1,
        warmup: Annotated[float, typer.Option(help="warmup, as a fraction of the steps")] = 0.03,
        schedule: Annotated[str, typer.Option(help="after warmup: constant (released), cosine or linear")] = (
            "constant"),
        batch_size: Annotated[int, typer.Option(help="sequences per micro-batch")] = 1,
        grad_accum: Annotated[int, typer.Option(help="micro-batches per optimizer step")] = 1,
        max_steps: Annotated[IntOpt, typer.Option(help="stop after this many optimizer steps (overrides "
                                                       "--epochs)")] = None,
        save_every: Annotated[int, typer.Option(help="checkpoint every N steps (0: final model only)")] = 500,
        keep: Annotated[int, typer.Option(help="checkpoints kept")] = 3,
        resume: Annotated[bool, typer.Option("--resume", help="continue from the newest checkpoint in --out")] = (
            False),
        text_field: Annotated[str, typer.Option(help="texts (ASR only, as the released LLaVA and Idefics2 "
                                                     "trainings), text_ocr_list (ASR + OCR), or auto (the OCR "
                                                     "where a sample has it)")] = "texts",
        pack: Annotated[bool, typer.Option("--pack", help="pack samples up to --max-length, end-of-video "
                                                          "marker between them")] = False,
        shuffle: Annotated[bool, typer.Option(help="seeded shuffle per epoch (JSONL)")] = True,
        curriculum: Annotated[bool, typer.Option("--curriculum", help="keep the file's easy-to-difficult order "
                                                                      "(textbook export --order curriculum); "
                                                                      "--shuffle then shuffles only within a "
                                                                      "difficulty")] = False,
        image_root: Annotated[Optional[str], typer.Option(help="folder of relative image paths (default: the "
                                                                "data file's folder)")] = None,
        image_prefix: Annotated[Optional[list[str]], typer.Option(
            "--image-prefix", help="OLD=NEW: image paths starting with OLD start with NEW instead (repeatable; "
                                   "the released JSON's /mnt/workspace/zwq_data/interleaved_dataset/)")] = None,
        max_missing_images: Annotated[float, typer.Option(
            min=0.0, max=1.0, help="stop when more than this share of the images tried cannot be loaded")] = 0.05,
        mask_before_first_image: Annotated[bool, typer.Option(
            help="no loss on the text before a sample's first image (the released training)")] = True,
        separator: Annotated[str, typer.Option(help="between adjacent texts (the released loader: a space)")] = " ",
        skip_bad_lines: Annotated[bool, typer.Option("--skip-bad-lines", help="count malformed records "
                                                                              "instead of stopping")] = False,
        seed: Annotated[int, typer.Option(help="seed of shuffling and initialisation")] = 0,
        device: Annotated[str, typer.Option(help="auto, cpu or cuda")] = "auto",
        cpu_threads: Annotated[int, typer.Option(help="torch threads on the CPU (0: one per core)")] = 0,
        gradient_checkpointing: Annotated[bool, typer.Option("--gradient-checkpointing",
                                                             help="trade compute for memory")] = False,
        as_json: Annotated[bool, typer.Option("--json", help="print the result as JSON on stdout")] = False,
        quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no progress display")] = False,
    ) -> None:
        """Continual pretraining on interleaved samples (the released settings are the defaults)."""
        setup_logging(quiet)
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # weight loading/saving bars: our own display says what happens
        from train.data import ReaderError, find_data_file, parse_prefixes
        from train.loop import TrainConfig, TrainError
        from train.loop import train as run_training
        from train.model import ModelError

        try:
            find_data_file(data)  # fail before a model is loaded
            cfg = TrainConfig(data=data, out=out, model=model, max_images=max_images, max_length=max_length,
                              text_field=text_field, pack=pack, shuffle=shuffle, curriculum=curriculum,
                              image_root=image_root, image_prefixes=parse_prefixes(image_prefix or []),
                              max_missing_images=max_missing_images, mask_before_first_image=mask_before_first_image,
                              separator=separator,
                              skip_bad_lines=skip_bad_lines, lr=lr, epochs=epochs, warmup=warmup,
                              schedule=schedule, batch_size=batch_size, grad_accum=grad_accum, max_steps=max_steps,
                              save_every=save_every, keep=keep, resume=resume, seed=seed, device=device,
                              cpu_threads=cpu_threads,
                              gradient_checkpointing=gradient_checkpointing)
            with _Progress(enabled=not quiet and not as_json) as progress:
                result = run_training(cfg, on_log=progress.update)
        except (ReaderError, TrainError, ModelError) as exc:
            raise user_error(str(exc)) from exc
        if as_json:
            print(json.dumps(result.to_json(), indent=2))
            return
        first, last = (result.losses[0], result.losses[-1]) if result.losses else (None, None)
        start = f" (resumed at step {result.resumed_from})" if result.resumed_from is not None else ""
        loss = f", loss {first:.4f} -> {last:.4f}" if first is not None else ""
        print(f"{result.steps} of {result.total_steps} steps{start}{loss} in {result.seconds}s; model in {out}")
        lost = {k: v for k, v in result.reader.items()
                if v and k in ("bad_records", "empty_samples", "truncated_samples", "images_missing",
                               "images_unreadable", "images_remote", "images_over_cap", "images_truncated",
                               "masked_tokens")}
        if lost:
            print("reader: " + ", ".join(f"{k} {v}" for k, v in lost.items()))


class _Progress:
    """A rich bar with the running loss on stderr (only on a terminal)."""

    def __init__(self, enabled: bool):
        self.enabled = enabled and sys.stderr.isatty()
        self.bar = self.task = None

    def __enter__(self):
        if self.enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self.bar = Progress(TextColumn("train"), BarColumn(), MofNCompleteColumn(),
                                TextColumn("{task.fields[info]}"), TimeElapsedColumn(), console=err_console)
            self.bar.start()
        return self

    def update(self, entry: dict) -> None:
        if not self.bar:
            return
        info = f"loss {entry['loss']:.4f}  lr {entry['lr']:.2e}  {entry['tokens_per_s'] or 0:.0f} tok/s"
        if self.task is None:
            self.task = self.bar.add_task("train", total=entry["total_steps"], completed=entry["step"], info=info)
        else:
            self.bar.update(self.task, completed=entry["step"], info=info)

    def __exit__(self, *exc):
        if self.bar:
            self.bar.stop()
