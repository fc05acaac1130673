"""`textbook eval`: the paper's few-shot and cheat tests (train/eval.py) on any benchmark.

    textbook eval --model ckpt/|HF_ID|tiny --bench okvqa,textvqa|PATH --shots 0,1,2,4
                  [--demos random|rices] [--cheat] [--limit N] [--json]

Registered on the main Typer app by ``register``; errors are raised as the app's UserError
(one line on stderr, exit 2).
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from textbook.console import err_console

ModelOpt = Annotated[str, typer.Option("--model", help="checkpoint folder, hub id, or 'tiny' (random, for smoke runs)")]
BenchOpt = Annotated[str, typer.Option("--bench", help="scienceqa-img, okvqa, textvqa, mathvista, mathvision, "
                                                       "mathverse (HF hub), or a local folder; comma-separated")]
ShotsOpt = Annotated[str, typer.Option("--shots", help="shot counts, e.g. 0,1,2,4 (8 for larger models)")]
DemosOpt = Annotated[str, typer.Option("--demos", help="random (seeded) or rices (nearest by CLIP image features)")]
CheatOpt = Annotated[bool, typer.Option("--cheat", help="also run the cheat test: the item itself is a demonstration")]
LimitOpt = Annotated[Optional[int], typer.Option("--limit", min=1, help="first N items of each benchmark")]
LayoutOpt = Annotated[Optional[str], typer.Option("--layout", help="field layout of a local folder (default: "
                                                                   "detected): okvqa, textvqa, scienceqa-img, ...")]
SeedOpt = Annotated[int, typer.Option("--seed", help="seed of the random demonstrations")]
ClipOpt = Annotated[Optional[str], typer.Option("--clip-model", help="image encoder for rices (hub id or folder; "
                                                                     "default the paper's CLIP ViT-L/14-336)")]
PoolOpt = Annotated[Optional[int], typer.Option("--pool", min=1, help="cap the demonstration pool at N items")]
TokensOpt = Annotated[int, typer.Option("--max-new-tokens", min=1, help="generated tokens per answer")]
DeviceOpt = Annotated[str, typer.Option("--device", help="cpu, cuda or auto")]
PredOpt = Annotated[Optional[Path], typer.Option("--predictions", help="write every prompt's answer and score "
                                                                       "here (JSONL)")]
JsonOpt = Annotated[bool, typer.Option("--json", help="print JSON on stdout")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="no progress lines")]


def _device(device: str) -> str:
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def register(app: typer.Typer, user_error: type[Exception], setup_logging) -> None:
    """Add ``eval`` (few-shot accuracy of a model on the paper's benchmarks, train.eval) to ``app``."""
    @app.command("eval")
    def eval_cmd(model: ModelOpt, bench: BenchOpt, shots: ShotsOpt = "0,1,2,4", demos: DemosOpt = "random",
                 cheat: CheatOpt = False, limit: LimitOpt = None, layout: LayoutOpt = None, seed: SeedOpt = 0,
                 clip_model: ClipOpt = None, pool: PoolOpt = None, max_new_tokens: TokensOpt = 16,
                 device: DeviceOpt = "cpu", predictions: PredOpt = None, as_json: JsonOpt = False,
                 quiet: QuietOpt = False) -> None:
        """Few-shot accuracy (paper Table 2) and the cheat test (Table 4) of a vision-language model."""
        setup_logging(quiet)
        from train.benchmarks import BenchmarkError, load_benchmark
        from train.clip import DEFAULT_CLIP, EncoderError, load_image_encoder
        from train.eval import DEMOS, EvalError, VLMPredictor, evaluate, format_tables, parse_shots
        from train.model import ModelError, model_source

        try:
            shot_list = parse_shots(shots)
            if demos not in DEMOS:
                raise EvalError(f"unknown --demos {demos!r} (one of {', '.join(DEMOS)})")
            try:
                model_source(model)  # a missing --model fails before any benchmark is fetched
            except ModelError as exc:
                raise user_error(str(exc)) from exc
            names = [b.strip() for b in bench.split(",") if b.strip()]
            if not names:
                raise EvalError("--bench names no benchmark")
            benches = [load_benchmark(n, layout, pool) for n in names]
            dev = _device(device)
            encoder = load_image_encoder(clip_model or DEFAULT_CLIP, dev) if demos == "rices" else None
            loaded_model, processor = _load_model(model, dev, user_error)
            show = None if quiet or as_json else (lambda msg: err_console.print(msg, highlight=False))
            result = evaluate(benches, VLMPredictor(loaded_model, processor, max_new_tokens, dev), shot_list,
                              demos, seed, cheat, encoder, limit, show)
        except (BenchmarkError, EvalError, EncoderError) as exc:
            raise user_error(str(exc)) from exc
        result.options.update({"model": model, "bench": names, "max_new_tokens": max_new_tokens})
        if predictions:
            try:
                predictions.parent.mkdir(parents=True, exist_ok=True)
                with open(predictions, "w", encoding="utf-8") as fh:
                    for rec in result.records:
                        fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
            except OSError as exc:
                raise user_error(f"cannot write {predictions}: {exc.strerror or exc}") from exc
        if as_json:
            print(json.dumps(result.to_json(), indent=2))
        else:
            sys.stdout.write(format_tables(result))


def _load_model(name: str, device: str, user_error):
    from transformers.utils import logging as hf_logging

    from train.model import ModelError, load_model

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    if not Path(name).expanduser().exists() and re.fullmatch(r"[A-Za-z0-9][\w.-]*/[\w.-]+", name):
        from train.hub import hub_problem

        why = hub_problem(name)
        if why:
            raise user_error(f"cannot load model {name}: {why}; pass a checkpoint folder as --model")
    try:
        return load_model(name, device)
    except ModelError as exc:
        raise user_error(str(exc)) from exc


def data_stats(data: Path, sim: bool, clip_model: str | None, device: str, as_json: bool, user_error,
               console, image_prefixes: list[str] | None = None) -> None:
    """`textbook stats --data FILE_OR_FOLDER [--sim]`: Table 1 columns and SIM^L of an export, in one streamed
    pass (a JSON list is parsed item by item: the released 12 GB file is never held whole)."""
    from rich.table import Table

    from train.clip import DEFAULT_CLIP, EncoderError, load_image_encoder
    from train.data import ReaderError, parse_prefixes
    from train.metrics import LS, MetricsError, Table1, read_samples, samples_file, sim_l

    try:
        prefixes = parse_prefixes(image_prefixes or [])
        file = samples_file(data)
        acc = Table1()
        samples = (acc.add(s) for s in read_samples(file))
        out: dict = {"data": str(file)}
        if sim:
            encoder = load_image_encoder(clip_model or DEFAULT_CLIP, _device(device))
            result = sim_l(samples, encoder, root=file.parent, prefixes=prefixes)
            out["sim"] = {"clip_model": encoder.name, "skipped": result.pop("skipped"),
                          "L": {str(k): v for k, v in result.items()}}
        else:
            for _ in samples:
                pass
        out["table1"] = acc.result()
    except (MetricsError, EncoderError, ReaderError) as exc:
        raise user_error(str(exc)) from exc
    if as_json:
        print(json.dumps(out, indent=2))
        return
    t1 = out["table1"]
    ips, tps = t1["images_per_sample"], t1["tokens_per_sample"]
    console.print(f"{file}: {t1['samples']} samples   images/sample min {ips['min']} max {ips['max']} avg "
                  f"{ips['avg']}   text tokens/sample min {tps['min']} max {tps['max']} avg {tps['avg']}",
                  highlight=False)
    if sim:
        table = Table(title=f"in-sample image similarity SIM^L ({out['sim']['clip_model']} + SSIM)")
        for col in ("", *(f"L={L}" for L in LS)):
            table.add_column(col, justify="left" if not col else "right")
        rows = out["sim"]["L"]
        for key, label in (("sim", "SIM^L"), ("clip", "CLIP cos01"), ("ssim", "SSIM"), ("samples", "samples")):
            table.add_row(label, *("-" if rows[str(L)][key] is None else str(rows[str(L)][key]) for L in LS))
        console.print(table)
        if out["sim"]["skipped"]:
            console.print(f"{out['sim']['skipped']} samples skipped: an image could not be read", highlight=False)
