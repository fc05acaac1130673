"""The `textbook` command line.

    textbook process PATH... --db runs.duckdb --out out/ [--json]
    textbook stats --db runs.duckdb [--run RUN_ID] [--json]
    textbook export --db runs.duckdb --format jsonl|json|parquet|obelics|released|idefics2|webdataset|hf --out out/
    textbook build "build a chemistry textbook" [--source ...] [--resume RUN_ID]
    textbook runs | trace RUN_ID | batch goals.yaml | llm serve | doctor
    textbook estimate GOAL|PATH...|--paper [--gpus N --cpus N --llm-rps R] [--from-run RUN_ID --db FILE]

Bad input gives one line on stderr and a non-zero exit; set TEXTBOOK_DEBUG=1 for tracebacks.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Annotated, Optional

import click
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

# Only light modules here: `textbook --help` must not pay for LangChain, LangGraph, DuckDB, torch or the
# pipeline's tools. Each command imports what it runs (tests/textbook/test_cli_startup.py checks this).
from agents.interrupts import Interrupted
from textbook.cli_agent import load_settings, open_store
from textbook.console import ProgressReporter, err_console
from tools.errors import ToolError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Build a multimodal textbook (an interleaved image-text corpus) from instructional videos.")

DbOpt = Annotated[Optional[Path], typer.Option("--db", help="DuckDB file (env TEXTBOOK_DB)")]
ConfigOpt = Annotated[Optional[Path], typer.Option("--config", help="settings file (TOML, YAML or JSON)")]
JsonOpt = Annotated[bool, typer.Option("--json", help="print JSON on stdout")]


class UserError(Exception):
    """A mistake of the user's (a bad path, option or value): printed as one ``error:`` line, exit status 2."""

    pass


def _setup_logging(quiet: bool) -> None:
    level = logging.ERROR if quiet else logging.WARNING
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)


@app.command()
def process(
    paths: Annotated[list[str], typer.Argument(help="video files or folders of videos (or s3://bucket/prefix/)")],
    db: DbOpt = None,
    out: Annotated[Optional[str], typer.Option("--out", help="export folder for samples and images, or an "
                                                          "object-store URI (s3://bucket/out)")] = None,
    media: Annotated[Optional[str], typer.Option("--media", help="where keyframes and clip images go: a folder or "
                                                              "an object-store URI every worker can write "
                                                              "(default: NAME_media/ beside the --db file)")] = None,
    config: ConfigOpt = None,
    executor: Annotated[Optional[str], typer.Option(help="local, process or ray")] = None,
    workers: Annotated[Optional[int], typer.Option(help="workers of the process executor")] = None,
    pools: Annotated[Optional[str], typer.Option(help="ray executor's actor pools: cpu, gpu1 or gpu8")] = None,
    ray_address: Annotated[Optional[str], typer.Option(help="a running Ray cluster (none: a local Ray)")] = None,
    asr_model: Annotated[Optional[str], typer.Option(help="whisper name or folder")] = None,
    device: Annotated[Optional[str], typer.Option(help="cpu, cuda or auto")] = None,
    pack: Annotated[Optional[str], typer.Option(help="split (default), video or concat")] = None,
    max_tokens: Annotated[Optional[int], typer.Option(help="token budget of a sample (split/concat)")] = None,
    as_json: JsonOpt = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no progress bars")] = False,
) -> None:
    """Turn lesson videos into interleaved samples, recording every step in DuckDB."""
    from pipeline.runner import Runner

    _setup_logging(quiet)
    pipe: dict = {}
    if executor:
        pipe["executor"] = executor
    if workers:
        pipe["workers"] = workers
    if pools:
        pipe["pools"] = pools
    if ray_address:
        pipe["ray_address"] = ray_address
    if asr_model or device:
        pipe["asr"] = {k: v for k, v in (("model", asr_model), ("device", device)) if v}
    if pack or max_tokens:
        pipe["pack"] = {k: v for k, v in (("mode", pack), ("max_tokens", max_tokens)) if v}
    overrides: dict = {"pipeline": pipe}
    from tools import storage

    remote_out = out if out and storage.is_remote(out) else None  # checked by the run's preflight (a probe object)
    for uri in (media, remote_out):  # credentials in a URI, a missing package: one line before any store is made
        if uri and storage.is_remote(uri):
            storage.filesystem(uri)
    if db:
        overrides["db"] = db
    if out and not remote_out:
        overrides["out"] = out
    settings = load_settings(config, overrides)
    from pipeline.runner import PreflightError, check_writable, discover

    discover(paths)  # a missing path or a folder without videos: one line, before any store is made
    if remote_out is None:
        check_writable(Path(settings.out))
    store = open_store(settings.db)
    try:
        from store.serve import serve_reads  # other commands read the store through this one while it runs

        with serve_reads(store, "process"), ProgressReporter(
                enabled=not quiet and not as_json, every_s=settings.progress_every_s) as reporter:
            result = Runner(store, settings.pipeline, remote_out or settings.out, reporter, media=media).run(paths)
    except PreflightError as exc:  # a node (or this machine) cannot write the media root or --out: the run stops
        err_console.print(f"error: {exc}", highlight=False, markup=False, soft_wrap=True)
        raise typer.Exit(1) from None
    finally:
        store.close()
    if as_json:
        print(json.dumps(result.to_json(), indent=2))
    else:
        _print_summary(result)
    errors = [v for v in result.videos if v.status == "error"]
    if errors and len(errors) == len(result.videos):
        first = errors[0]
        raise UserError(f"none of the {len(errors)} inputs could be processed: {Path(str(first.source)).name}: "
                        f"{first.reason}")
    if errors:
        from tools.errors import PERMANENT_KINDS

        retryable = sum(v.reason not in PERMANENT_KINDS for v in errors)
        then = ("the files themselves are at fault (a rerun gives the same): fix or remove them" if not retryable
                else "the same command retries them" if retryable == len(errors)
                else f"the same command retries {retryable} of them (the others' files are at fault)")
        err_console.print(f"failed: {len(errors)} of {len(result.videos)} videos failed ("
                          + ", ".join(f"{k} {n}" for k, n in sorted(result.failed.items()))
                          + f"); the others finished; {then}", highlight=False, markup=False, soft_wrap=True)
        raise typer.Exit(1)


def _console() -> Console:
    return Console() if sys.stdout.isatty() else Console(width=160)


def _print_summary(result) -> None:
    console = _console()
    table = Table(title=f"{result.run_id}: {result.samples} samples in {result.out_dir} ({result.seconds}s)")
    warned = [v for v in result.videos if v.warnings]
    cols = ("video", "source", "status", "reason", "clips", "keyframes", "samples") + (("warnings",) if warned else ())
    for col in cols:
        table.add_column(col, overflow="fold")
    for v in result.videos:
        row = [v.video_id, Path(v.source).name, v.status, v.reason or "", str(v.clips), str(v.keyframes),
               str(v.samples)]
        table.add_row(*map(escape, row + ([", ".join(w.split(":", 1)[0] for w in v.warnings)] if warned else [])))
    console.print(table)
    if result.retried:
        from textbook.cli_agent import retried_line

        console.print(f"{result.run_id}: {retried_line(result.retried)}", markup=False, highlight=False)
    if warned:
        kinds = ", ".join(f"{k} {n}" for k, n in (result.warnings or {}).items())
        console.print(f"warnings: {len(warned)} of {len(result.videos)} videos ({kinds})", markup=False,
                      highlight=False)
        for v in warned:
            for w in v.warnings:
                console.print(f"  {v.video_id}: {w}", markup=False, highlight=False)


def _run_id(store, run: str | None) -> str:
    run_id = run or store.latest_run()
    if not run_id:
        raise UserError(f"{store.path} has no runs yet (run `textbook process` first)")
    if not store.scalar("SELECT count(*) FROM runs WHERE run_id = ?", [run_id]):
        raise UserError(f"no run {run_id} in {store.path}")
    return run_id


@app.command()
def stats(db: DbOpt = None, run: Annotated[Optional[str], typer.Option(help="run id (default: latest)")] = None,
          config: ConfigOpt = None, as_json: JsonOpt = False,
          data: Annotated[Optional[Path], typer.Option("--data", help="an export folder or a samples file of any "
                                                                       "name: JSON lines, a JSON list (streamed) or "
                                                                       "Parquet (no database needed)")] = None,
          sim: Annotated[bool, typer.Option("--sim", help="in-sample image similarity SIM^L for L = 4..8 "
                                                          "(with --data)")] = False,
          clip_model: Annotated[Optional[str], typer.Option("--clip-model", help="image encoder of --sim: hub id or "
                                                                                 "folder (default the paper's CLIP "
                                                                                 "ViT-L/14-336)")] = None,
          device: Annotated[str, typer.Option(help="device of --sim's encoder: cpu, cuda or auto")] = "cpu",
          image_prefix: Annotated[Optional[list[str]], typer.Option(
              "--image-prefix", help="OLD=NEW: rewrite an image path prefix (with --sim; repeatable)")] = None) -> None:
    """Per-subject table (paper Table 7), images/tokens per sample (Table 1), and the drop funnel.

    With --data: Table 1 of an export (and SIM^L with --sim), no database needed."""
    from pipeline.stats import corpus_stats

    if data is not None or sim or clip_model:
        if data is None:
            raise UserError("--sim reads an export: pass --data out/ (a folder or samples.jsonl)")
        if db or run:
            raise UserError("--data reads an export, not a database: leave out --db and --run")
        from textbook.cli_eval import data_stats

        data_stats(data, sim, clip_model, device, as_json, UserError, _console(), image_prefix)
        return
    settings = load_settings(config, {"db": db} if db else {})
    from textbook.cli_agent import existing_db

    store = open_store(existing_db(settings.db, UserError), read_only=True)
    try:
        data = corpus_stats(store, _run_id(store, run), settings.pipeline.tokenizer)
    finally:
        store.close()
    if as_json:
        print(json.dumps(data, indent=2))
        return
    print_stats(data, _console())


def print_stats(data: dict, console: Console) -> None:
    """The human form of ``pipeline.stats.corpus_stats``'s dict: Table 7, Table 1, the trainer's drops, the
    search funnel (with advisory kepts), human reviews, the pipeline funnel and the clip rewrites."""
    from pipeline.figures import TABLE7_COLUMNS, table7_cell

    t7 = Table(title=f"{data['run_id']}: per subject (paper Table 7)")
    for c in TABLE7_COLUMNS:
        t7.add_column(c, justify="left" if c == "subject" else "right")
    for row in data["table7"]:
        t7.add_row(*[table7_cell(row, c) for c in TABLE7_COLUMNS])
    console.print(t7)
    t1 = data["table1"]

    def spread(key: str) -> str:
        return f"min {t1[key]['min']} max {t1[key]['max']} avg {t1[key]['avg']}"

    console.print(f"samples: {t1['samples']}   images/sample {spread('images_per_sample')}   text tokens/sample "
                  f"(ASR + OCR) {spread('tokens_per_sample')}   of which ASR (text_num) "
                  f"{spread('asr_tokens_per_sample')}", highlight=False)
    td = data.get("trainer_drops")
    if td:
        console.print(f"trainer at --max-images {td['max_images']} --max-length {td['max_length']} "
                      f"({td['image_tokens']} tokens/image): {td['samples_cut']} of {td['samples']} samples not read "
                      f"whole; drops {td['images_over_cap'] + td['images_cut']} of {td['images']} images "
                      f"({td['images_over_cap']} over the cap), {td['text_tokens_cut']} of {td['text_tokens']} "
                      "text tokens", highlight=False)
    if data.get("search_funnel"):
        sf = data["search_funnel"]
        console.print("search funnel: " + " -> ".join(f"{s['step']} {s['videos']}" for s in sf["steps"]))
        if sf["lost"]:
            console.print("lost: " + ", ".join(f"{k} {v}" for k, v in sf["lost"].items()))
        if sf.get("advisory_kept"):
            console.print(f"advisory: {sf['advisory_kept']} videos the metadata judge rejected were kept (judges "
                          "advisory)")
    for r in data.get("reviews", []):
        console.print(f"human review: {r['kind'].split(':', 1)[1]} {r['verdict']} {r['n']} "
                      f"({r['overrides']} overriding the model)", highlight=False)
    f = data["funnel"]
    console.print("funnel: " + " -> ".join(f"{s['step']} {s['videos']}" for s in f["steps"]))
    for title, key in (("dropped", "dropped"), ("errors", "errors"), ("warnings", "warnings"),
                       ("OCR dropped", "ocr_dropped"), ("clip decisions", "clip_decisions")):
        if f.get(key):
            console.print(f"{title}: " + ", ".join(f"{k} {v}" for k, v in f[key].items()))
    if f.get("rewrites"):
        rw = f["rewrites"]
        why = ", ".join(f"{k} {v}" for k, v in rw["refused_by"].items())
        kept = rw.get("kept") or {}
        console.print(f"clip rewrites: accepted {rw['accepted']}, refused {rw['refused']}"
                      + (f" ({why})" if why else "")
                      + (f", no valid answer {rw['no_answer']}" if rw.get("no_answer") else "")
                      + (f", advisory (not used) {rw['advisory']}" if rw.get("advisory") else "")
                      + f"; kept: rewrite {kept.get('rewrite', 0)}, raw with slide fixes {kept.get('slide_fixed', 0)}"
                      + f", raw {kept.get('raw', 0)}; slide-term fixes {rw['term_fixes']}, put back {rw['reverted']}")


@app.command()
def export(db: DbOpt = None,
           fmt: Annotated[str, typer.Option("--format", help="jsonl (ours), json, parquet, obelics, released (the "
                                                           "released LLaVA loader's JSON), idefics2 (the released "
                                                           "Idefics2 trainer's), webdataset, hf (datasets.load_"
                                                           "dataset, images embedded, with a dataset card)")] = "jsonl",
           out: Annotated[Optional[str], typer.Option("--out", help="export folder, or an object-store URI "
                                                                 "(s3://bucket/out: credentials from AWS_* "
                                                                 "variables)")] = None,
           run: Annotated[Optional[str], typer.Option(help="run id (default: latest)")] = None,
           media: Annotated[Optional[str], typer.Option("--media", help="the media root the run wrote its images to "
                                                                     "(default: the one the run recorded, as "
                                                                     "process --media gave it; else NAME_media/ "
                                                                     "beside --db)")] = None,
           order: Annotated[str, typer.Option("--order", help="file (pack order) or curriculum (easy to "
                                                            "difficult by the knowledge points' difficulty)")] = "file",
           image_root: Annotated[Optional[str], typer.Option(
               "--image-root", help="released/idefics2: the absolute folder written before each image path, where "
                                    "the images will be when training (default: this export's images/ folder)")] = None,
           image_tokens: Annotated[int, typer.Option(
               "--image-tokens", min=0, help="released/idefics2: tokens per image in token_num (576: "
                                             "LLaVA-1.5)")] = 576,
           shard_size: Annotated[int, typer.Option("--shard-size", min=1, help="webdataset/hf: samples per "
                                                                               "shard")] = 1000,
           shard_mb: Annotated[int, typer.Option("--shard-mb", min=1, help="webdataset: MB per shard")] = 1024,
           config: ConfigOpt = None, as_json: JsonOpt = False) -> None:
    """Write a run's samples (and their images) in the layout a trainer reads (see docs/formats.md)."""
    from pipeline.export import FORMATS, DatasetCard, ExportOptions
    from pipeline.export import export as run_export
    from pipeline.runner import check_writable, media_dir_for, recorded_media
    from pipeline.stats import corpus_stats, sources

    if fmt not in FORMATS:
        raise UserError(f"unknown format {fmt!r} (one of {', '.join(FORMATS)})")
    from tools import storage

    remote_out = out if out and storage.is_remote(out) else None  # uploaded through pipeline.export.remote
    overrides = {k: v for k, v in (("db", db), ("out", None if remote_out else out)) if v}
    settings = load_settings(config, overrides)
    tokenizer = settings.pipeline.tokenizer
    options = ExportOptions(order=order, image_root=image_root, image_tokens=image_tokens, tokenizer=tokenizer,
                            shard_size=shard_size, shard_max_bytes=shard_mb << 20)
    from textbook.cli_agent import existing_db

    store = open_store(existing_db(settings.db, UserError), read_only=True)
    try:
        run_id = _run_id(store, run)
        samples = store.samples(run_id)
        media = media or recorded_media(store, run_id)  # an explicit --media wins
        if fmt == "hf":
            row = store.run(run_id)
            options.card = DatasetCard(run_id=run_id, stats=corpus_stats(store, run_id, tokenizer),
                                       config=json.loads(row["config"] or "{}"), sources=sources(store, run_id))
    finally:
        store.close()
    options.run_id = run_id
    if remote_out is None:
        check_writable(settings.out)  # an object store is checked by the export itself (a probe object)
    result = run_export(samples, remote_out or settings.out, fmt, media or media_dir_for(settings.db), options)
    if as_json:
        print(json.dumps({"run_id": run_id, **result.to_json()}, indent=2))
        return
    notes = []
    if result.skipped:
        notes.append(f"{result.skipped} without an image left out")
    if result.renamed:
        notes.append(f"{result.renamed} images named NAME~HASH beside another export's different file")
    print(f"{result.samples} samples of {run_id} -> {result.target}" + (f" ({'; '.join(notes)})" if notes else ""))
    if fmt in ("released", "idefics2") and image_root is None and remote_out is None:
        print(f"image paths are absolute under {(settings.out / 'images').resolve()}; pass --image-root to write "
              "the folder they will be in on the machine that trains")


from textbook.cli_agent import register as _register_agent  # noqa: E402

_register_agent(app, UserError, _setup_logging)

from textbook.cli_view import register as _register_view  # noqa: E402

_register_view(app, UserError, _setup_logging)

from textbook.cli_estimate import register as _register_estimate  # noqa: E402
from textbook.cli_eval import register as _register_eval  # noqa: E402
from textbook.cli_train import register as _register_train  # noqa: E402

_register_train(app, UserError, _setup_logging)
_register_eval(app, UserError, _setup_logging)
_register_estimate(app, UserError, _setup_logging)


def _is_bad_input(exc: Exception) -> bool:
    """Whether ``exc`` means bad input (one line, exit 2). The classes are imported here, not at the top, to keep
    start-up light; a command that raised one of them has imported its module already."""
    if isinstance(exc, UserError):
        return True
    try:
        from pipeline.export import ExportError
        from pipeline.runner import InputError
        from store import StoreError
        from textbook.settings import SettingsError
    except ImportError:  # a broken install: main's last resort reports it in one line
        return False
    return isinstance(exc, (InputError, StoreError, SettingsError, ExportError))


def main() -> None:
    """The ``textbook`` command: runs the typer app and turns every failure into one line and an exit status (130 on
    Ctrl-C, 143 on SIGTERM); a traceback only with TEXTBOOK_DEBUG=1."""
    debug = os.environ.get("TEXTBOOK_DEBUG") == "1"
    # SIGTERM unwinds like Ctrl-C, so the embedded LLM server and the store are closed on the way out
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        code = app(standalone_mode=False)
        sys.exit(code if isinstance(code, int) else 0)
    except click.exceptions.Abort:
        err_console.print("aborted", highlight=False)
        sys.exit(130)
    except click.exceptions.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        print("interrupted; rerun the same command to resume", file=sys.stderr)
        sys.exit(130)
    except Interrupted as exc:  # SIGTERM under agents.interrupts (build, batch)
        print(f"{exc}; rerun the same command to resume", file=sys.stderr)
        sys.exit(exc.code)
    except Exception as exc:
        if debug:
            raise
        if _is_bad_input(exc):
            print(f"error: {exc}", file=sys.stderr)
            sys.exit(2)
        if isinstance(exc, ToolError):
            print(f"error: {exc.message}", file=sys.stderr)
            sys.exit(2)
        # the last resort: still one line, never a traceback
        if hasattr(exc, "format_message") and hasattr(exc, "exit_code"):  # usage errors of typer's own click
            print(f"error: {exc.format_message()} (see --help)", file=sys.stderr)
            sys.exit(exc.exit_code or 2)
        print(f"error: internal: {type(exc).__name__}: {exc} (TEXTBOOK_DEBUG=1 shows the traceback)",
              file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
