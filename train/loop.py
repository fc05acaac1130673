"""Continual pretraining of a vision-language model on interleaved samples (PAPER.md section 7).

    result = train(TrainConfig(data=Path("out/samples.jsonl"), out=Path("ckpt"), model="tiny", max_steps=30))

A plain torch loop: AdamW, warmup then constant (the released setting, ``constant_with_warmup``), cosine
or linear decay; gradient accumulation with token-weighted loss (each loss token counts the same whatever
the micro-batch); gradient clipping at 1.0; fp32 weights with bf16 autocast on CUDA, fp32 on the CPU.

Defaults are the released ones: lr 2e-5, 1 epoch, warmup 0.03, weight decay 0, max 12 images per sample.

Output folder:
    train_config.json        the full config of the run
    train_log.jsonl          one line per optimizer step: loss, lr, grad norm, tokens, throughput
    checkpoint-STEP/         every ``save_every`` steps: model, processor, trainer_state.pt (optimizer,
                             scheduler, RNG states, reader position); the newest ``keep`` are kept
    config.json, model.safetensors, processor files   the final model (``load_model(out)`` reads it)
    train_summary.json       steps, losses, reader statistics
``resume=True`` continues from the newest checkpoint: the next step sees the same data, learning rate and
random state as an uninterrupted run would.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import queue
import random
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from tools import storage
from train.data import (
    Example,
    InterleavedDataset,
    ReaderConfig,
    batches,
    check_images,
    collate,
    find_data_file,
)
from train.model import ensure_tokens, load_model, save

log = logging.getLogger(__name__)

SCHEDULES = ("constant", "cosine", "linear")
STATE_FILE = "trainer_state.pt"
LOG_FILE = "train_log.jsonl"


class TrainError(Exception):
    """A run that cannot start or continue (the message is one line)."""


@dataclass
class TrainConfig:
    """One training run: the data, the output folder, the model and the optimisation (the released training's defaults
    where it has one). Raises TrainError (one line) for a value out of range."""

    data: Path | str  # a file or folder, or an object-store URI (s3://bucket/out)
    out: Path
    model: str = "tiny"  # "tiny", a folder, or a hub id
    max_images: int = 12
    max_length: int | None = None  # None: the text model's max_position_embeddings
    text_field: str = "texts"  # the released trainings read ASR only (train/data.py)
    pack: bool = False
    shuffle: bool = True
    curriculum: bool = False  # keep the file's easy-to-difficult order; shuffle only within a difficulty
    image_root: Path | str | None = None  # a folder or an object-store URI
    image_prefixes: tuple[tuple[str, str], ...] = ()  # (OLD, NEW) path prefix rewrites
    max_missing_images: float = 0.05  # share of images that may fail to load before the run stops
    mask_before_first_image: bool = True  # no loss before a sample's first image (the released collator)
    separator: str = " "  # between adjacent texts (the released loader's " ".join)
    skip_bad_lines: bool = False
    lr: float = 2e-5
    epochs: int = 1
    warmup: float = 0.03  # fraction of the steps
    schedule: str = "constant"  # after warmup: constant (released), cosine or linear to 0
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    batch_size: int = 1
    grad_accum: int = 1
    max_steps: int | None = None  # overrides epochs (as in HF Trainer); None: epochs x steps per epoch
    save_every: int = 500  # optimizer steps between checkpoints; 0: only the final model
    keep: int = 3  # checkpoints kept
    resume: bool = False
    seed: int = 0
    device: str = "auto"  # auto, cpu, cuda, cuda:1, ...
    cpu_threads: int = 0  # torch intra-op threads; 0: torch's default (one per core)
    gradient_checkpointing: bool = False
    prefetch: int = 16  # examples prepared ahead by a reader thread; 0: read inline

    def __post_init__(self):
        # the data and its images may be in an object store (s3://bucket/out): a URI stays a str
        self.data = str(self.data) if storage.is_remote(self.data) else Path(self.data)
        self.out = Path(self.out)
        if self.image_root is not None and not storage.is_remote(self.image_root):
            self.image_root = Path(self.image_root)
        if self.schedule not in SCHEDULES:
            raise TrainError(f"unknown schedule {self.schedule!r} (one of {', '.join(SCHEDULES)})")
        for name in ("batch_size", "grad_accum", "epochs"):
            if getattr(self, name) < 1:
                raise TrainError(f"{name.replace('_', '-')} must be at least 1")
        if not 0 <= self.warmup < 1:
            raise TrainError("warmup is a fraction of the steps: 0 <= warmup < 1")
        if self.lr <= 0:
            raise TrainError("lr must be positive")
        if self.max_steps is not None and self.max_steps < 1:
            raise TrainError("max-steps must be at least 1")

    def reader_config(self, max_length: int | None) -> ReaderConfig:
        """The reader's config for this run, with ``max_length`` tokens per sequence (None: no cut)."""
        return ReaderConfig(
            max_images=self.max_images, max_length=max_length, text_field=self.text_field, pack=self.pack,
            shuffle=self.shuffle, curriculum=self.curriculum, seed=self.seed, skip_bad_lines=self.skip_bad_lines,
            image_root=self.image_root, image_prefixes=self.image_prefixes,
            max_missing_images=self.max_missing_images, mask_before_first_image=self.mask_before_first_image,
            separator=self.separator)

    def to_json(self) -> dict:
        """The config as JSON-ready values (paths as strings), as saved in ``train_config.json`` and each checkpoint."""
        return {k: str(v) if isinstance(v, Path) else v for k, v in asdict(self).items()}


@dataclass
class TrainResult:
    """What a run did: optimizer steps (this call's losses), epochs finished, the step it resumed from, seconds, and the
    reader's counters (``ReaderStats.as_dict``)."""

    out: Path
    steps: int
    total_steps: int
    epochs_done: int
    resumed_from: int | None
    losses: list[float] = field(default_factory=list)  # of the steps run in this call
    seconds: float = 0.0
    reader: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        """The result as JSON-ready values (what ``train_summary.json`` holds)."""
        return {**asdict(self), "out": str(self.out)}


def lr_factor(step: int, total: int, warmup_steps: int, schedule: str) -> float:
    """Multiplier of the base learning rate before optimizer step ``step`` (0-based)."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    progress = min(1.0, (step - warmup_steps) / max(1, total - warmup_steps))
    if schedule == "linear":
        return 1.0 - progress
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def pick_device(name: str) -> torch.device:
    """The torch device ``name`` asks for; ``auto``: CUDA when torch sees a GPU, else the CPU. Raises TrainError for an
    unknown name or CUDA asked for without a GPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise TrainError(f"unknown device {name!r}") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise TrainError("device cuda asked for, but torch sees no CUDA GPU")
    return device


def latest_checkpoint(out: Path) -> Path | None:
    """The newest complete checkpoint-STEP folder (a crash while saving leaves none half-written)."""
    found = [(int(p.name.split("-", 1)[1]), p) for p in out.glob("checkpoint-*")
             if p.name.split("-", 1)[1].isdigit() and (p / STATE_FILE).is_file()]
    return max(found)[1] if found else None


def _rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class _Prefetch:
    """Reads examples on a thread (JPEG decoding, resizing and tokenizing release the GIL) in order."""

    _END = object()

    def __init__(self, it: Iterator[Example], size: int):
        self.q: queue.Queue = queue.Queue(size)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._work, args=(it,), daemon=True, name="reader")
        self.thread.start()

    def _put(self, item) -> bool:
        while not self.stop.is_set():
            try:
                self.q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _work(self, it) -> None:
        try:
            for item in it:
                if not self._put(item):
                    return
        except BaseException as exc:  # handed to the consumer, raised there
            self._put(exc)
            return
        self._put(self._END)

    def __iter__(self):
        while True:
            item = self.q.get()
            if item is self._END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=5)


class Trainer:
    """One training run; ``run()`` trains to the end (or to max_steps) and writes the final model."""

    def __init__(self, cfg: TrainConfig, on_log: Callable[[dict], None] | None = None):
        self.cfg, self.on_log = cfg, on_log or (lambda entry: None)
        self.device = pick_device(cfg.device)
        if cfg.cpu_threads > 0:  # on a busy machine fewer threads beat OpenMP's spinning on shared cores
            torch.set_num_threads(cfg.cpu_threads)
        self.autocast = (torch.autocast("cuda", dtype=torch.bfloat16)
                         if self.device.type == "cuda" and torch.cuda.is_bf16_supported() else None)
        find_data_file(cfg.data)  # before the (slow) model load
        self.images_checked = check_images(cfg.data, ReaderConfig(  # missing images: fail now
            image_root=cfg.image_root, image_prefixes=cfg.image_prefixes, max_missing_images=cfg.max_missing_images))
        cfg.out.mkdir(parents=True, exist_ok=True)
        self.ckpt = latest_checkpoint(cfg.out)
        if self.ckpt is not None and not cfg.resume:
            raise TrainError(f"{cfg.out} already holds {self.ckpt.name}: pass --resume to continue it, "
                             "or choose another --out")
        _seed_all(cfg.seed)
        self.model, self.processor = load_model(self.ckpt or cfg.model, device=self.device)
        if self.ckpt is None:
            ensure_tokens(self.model, self.processor, [ReaderConfig.eov_marker])
        if cfg.gradient_checkpointing:
            self.model.gradient_checkpointing_enable()
        text_cfg = getattr(self.model.config, "text_config", self.model.config)
        self.max_length = cfg.max_length or int(getattr(text_cfg, "max_position_embeddings", 4096) or 4096)
        self.dataset = InterleavedDataset(cfg.data, self.processor, cfg.reader_config(self.max_length))
        if cfg.max_steps:
            self.total = cfg.max_steps
        else:  # a pass without parsing for JSONL and Parquet (a JSON list is parsed)
            records = self.dataset.count_records()
            if records == 0:
                raise TrainError(f"{self.dataset.path} holds no samples")
            self.total = math.ceil(records / (cfg.batch_size * cfg.grad_accum)) * cfg.epochs
        self.warmup_steps = math.ceil(cfg.warmup * self.total)
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: lr_factor(s, self.total, self.warmup_steps, cfg.schedule))
        self.step, self.epoch, self.position = 0, 0, 0
        if self.ckpt is not None:
            self._load_state(self.ckpt)
        elif cfg.resume:
            log.warning("no checkpoint in %s: starting from the beginning", cfg.out)

    # state
    def _load_state(self, ckpt: Path) -> None:
        state = torch.load(ckpt / STATE_FILE, map_location="cpu", weights_only=False)
        if state["total_steps"] != self.total:
            log.warning("the schedule had %d steps; now %d (max-steps or data changed)", state["total_steps"],
                        self.total)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.step, self.epoch, self.position = state["step"], state["epoch"], state["position"]
        _set_rng_state(state["rng"])
        log_path = self.cfg.out / LOG_FILE
        if log_path.is_file():  # drop what a crashed run logged after the checkpoint
            kept = [line for line in log_path.read_text().splitlines()
                    if line.strip() and json.loads(line).get("step", 0) <= self.step]
            log_path.write_text("".join(line + "\n" for line in kept))

    def save_checkpoint(self) -> Path:
        """Write ``checkpoint-<step>`` in the output folder (model, processor, optimizer, scheduler, position, RNG)
        through a temporary folder renamed at the end, then delete all but the newest ``keep``. Returns its path."""
        final = self.cfg.out / f"checkpoint-{self.step}"
        tmp = self.cfg.out / f".tmp-checkpoint-{self.step}"
        shutil.rmtree(tmp, ignore_errors=True)
        save(self.model, self.processor, tmp)
        torch.save({"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                    "step": self.step, "epoch": self.epoch, "position": self.position, "total_steps": self.total,
                    "rng": _rng_state(), "config": self.cfg.to_json(), "reader": self.dataset.stats.as_dict()},
                   tmp / STATE_FILE)
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
        ckpts = sorted((int(p.name.split("-", 1)[1]), p) for p in self.cfg.out.glob("checkpoint-*")
                       if p.name.split("-", 1)[1].isdigit())
        for _, old in ckpts[: max(0, len(ckpts) - self.cfg.keep)]:
            shutil.rmtree(old, ignore_errors=True)
        return final

    # steps
    def _forward_loss_sum(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        labels = batch.pop("labels").to(self.device)
        inputs = {k: v.to(self.device) for k, v in batch.items()}
        with self.autocast or contextlib.nullcontext():
            logits = self.model(**inputs, use_cache=False).logits
        logits = logits[:, :-1].float()
        return F.cross_entropy(logits.reshape(-1, logits.size(-1)), labels[:, 1:].reshape(-1),
                               ignore_index=-100, reduction="sum")

    def train_step(self, window: list[list[Example]]) -> dict:
        """One optimizer step over ``grad_accum`` micro-batches; the loss is the mean over loss tokens."""
        started = time.perf_counter()
        counted = [sum(sum(1 for x in e.labels[1:] if x != -100) for e in mb) for mb in window]
        n_tokens = max(1, sum(counted))
        self.model.train()
        total = 0.0
        for mb in window:
            loss = self._forward_loss_sum(collate(mb, self.dataset.pad_id, self.dataset.layout)) / n_tokens
            loss.backward()
            total += loss.item()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.max_grad_norm)
        lr = self.scheduler.get_last_lr()[0]
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        self.position = window[-1][-1].position
        seconds = time.perf_counter() - started
        tokens = sum(len(e.input_ids) for mb in window for e in mb)
        return {"step": self.step, "epoch": self.epoch, "loss": round(total, 6), "lr": lr,
                "grad_norm": round(float(grad_norm), 6), "tokens": tokens, "loss_tokens": n_tokens,
                "samples": sum(e.samples for mb in window for e in mb),
                "images": sum(e.num_images for mb in window for e in mb),
                "seconds": round(seconds, 4), "tokens_per_s": round(tokens / seconds, 1) if seconds else None}

    def _windows(self) -> Iterator[list[list[Example]]]:
        self.dataset.set_position(self.epoch, self.position)
        examples: Iterator[Example] = iter(self.dataset)
        prefetch = _Prefetch(examples, self.cfg.prefetch) if self.cfg.prefetch > 0 else None
        try:
            window: list[list[Example]] = []
            for mb in batches(iter(prefetch) if prefetch else examples, self.cfg.batch_size):
                window.append(mb)
                if len(window) == self.cfg.grad_accum:
                    yield window
                    window = []
            if window:
                yield window
        finally:
            if prefetch:
                prefetch.close()

    def run(self) -> TrainResult:
        """Train until ``total`` optimizer steps (or the epochs run out), logging each step to ``LOG_FILE`` and saving
        every ``save_every`` steps; then save the model and ``train_summary.json``.

        Raises TrainError when no sample was trainable, ReaderError when too many images failed to load."""
        cfg = self.cfg
        (cfg.out / "train_config.json").write_text(json.dumps(
            {**cfg.to_json(), "max_length": self.max_length, "total_steps": self.total,
             "warmup_steps": self.warmup_steps, "device": str(self.device),
             "precision": "bf16-autocast" if self.autocast else "fp32"}, indent=2))
        resumed = self.step if self.ckpt is not None else None
        started, losses = time.perf_counter(), []
        with open(cfg.out / LOG_FILE, "a", encoding="utf-8") as log_fh:
            while self.step < self.total and (cfg.max_steps or self.epoch < cfg.epochs):
                from_start, ran = self.position == 0, False
                for window in self._windows():
                    ran = True
                    entry = self.train_step(window)
                    losses.append(entry["loss"])
                    log_fh.write(json.dumps(entry) + "\n")
                    log_fh.flush()
                    self.on_log({**entry, "total_steps": self.total})
                    if cfg.save_every and self.step % cfg.save_every == 0 and self.step < self.total:
                        self.save_checkpoint()
                    if self.step >= self.total:
                        break
                else:  # the epoch's data ran out
                    self.epoch, self.position = self.epoch + 1, 0
                    if from_start and not ran:  # a whole epoch without one trainable sample
                        break
        self.dataset.check_missing(final=True)  # an early stop (max_steps) still fails on missing images
        if self.step == 0:
            raise TrainError(f"no trainable sample in {self.dataset.path} (reader: "
                             f"{json.dumps(self.dataset.stats.as_dict())})")
        if cfg.save_every:
            self.save_checkpoint()
        save(self.model, self.processor, cfg.out)
        result = TrainResult(out=cfg.out, steps=self.step, total_steps=self.total, epochs_done=self.epoch,
                             resumed_from=resumed, losses=losses, seconds=round(time.perf_counter() - started, 3),
                             reader=self.dataset.stats.as_dict())
        (cfg.out / "train_summary.json").write_text(json.dumps(result.to_json(), indent=2))
        return result


def train(cfg: TrainConfig, on_log: Callable[[dict], None] | None = None) -> TrainResult:
    """Train (or resume) as ``cfg`` says; see the module docstring for what lands in ``cfg.out``."""
    threads = torch.get_num_threads()
    try:
        return Trainer(cfg, on_log).run()
    finally:
        torch.set_num_threads(threads)
