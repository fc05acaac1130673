"""The agent's commands: build, runs, trace, batch, llm serve, doctor.

Registered on the main Typer app by ``register``; errors are raised as the app's UserError
(one line on stderr, non-zero exit) and never as tracebacks.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shutil
import sys
from contextlib import ExitStack, contextmanager, nullcontext
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape
from rich.table import Table

from textbook.console import BuildProgress, err_console, literal

DbOpt = Annotated[Optional[Path], typer.Option("--db", help="DuckDB file (env TEXTBOOK_DB; default textbook.duckdb)")]
ConfigOpt = Annotated[Optional[Path], typer.Option("--config", help="settings file (TOML, YAML or JSON)")]
JsonOpt = Annotated[bool, typer.Option("--json", help="print JSON on stdout")]


def load_settings(config: Path | None, overrides: dict):
    """``textbook.settings.load_settings``, imported when a command runs: the settings models import the
    pipeline's config and its tools (SciPy, faster-whisper), too slow for ``--help``."""
    from textbook.settings import load_settings as load

    return load(config, overrides)


def open_store(*args, **kwargs):
    """``store.open_store``, imported when a command runs (DuckDB is slow to import for ``--help``)."""
    from store import open_store as open_

    return open_(*args, **kwargs)


def safe(text) -> str:
    """Untrusted text for a Rich table cell: control characters made visible, markup escaped."""
    return escape(literal(text))


def existing_db(db: Path, user_error) -> Path:
    """The database a read-only command opens; a missing one is a one-line error that says what to do."""
    if not Path(db).is_file():
        raise user_error(f"no database at {db}: pass --db FILE (`make demo` writes demo/runs.duckdb) or set "
                         "TEXTBOOK_DB; `textbook build` or `textbook process` creates one")
    return Path(db)


def _overrides(db, out, sources, max_videos, per_point, budget_usd, llm, llm_url) -> dict:
    agent: dict = {}
    if sources:
        agent["sources"] = list(sources)
    budgets = {k: v for k, v in (("max_videos", max_videos), ("max_usd", budget_usd)) if v is not None}
    if budgets:
        agent["budgets"] = budgets
    if per_point is not None:
        agent["per_point"] = per_point
    llm_cfg = {k: v for k, v in (("model", llm), ("base_url", llm_url)) if v}
    if llm_cfg:
        agent["llm"] = llm_cfg
    over: dict = {"agent": agent}
    if db:
        over["db"] = db
    if out:
        over["out"] = out
    return over


class Endpoint:
    """The LLM endpoint of a build: the configured one (checked reachable) or the embedded server."""

    def __init__(self, llm_cfg, user_error, quiet: bool):
        self.cfg, self.user_error, self.quiet = llm_cfg, user_error, quiet

    def precheck(self) -> None:
        """Fail in one line before anything is written: the endpoint unreachable, the embedded model missing."""
        from agents.local_llm import LocalLLMError, gguf_path, reachable

        if self.cfg.base_url:
            why = reachable(self.cfg.base_url, api_key=os.environ.get(self.cfg.api_key_env))
            if why:
                raise self.user_error(why)
            return
        try:
            gguf_path(self.cfg.embedded_model)
        except LocalLLMError as exc:
            raise self.user_error(str(exc)) from exc

    def __enter__(self):
        from agents.local_llm import LocalLLMError, embedded_server, model_spec

        self._stack = ExitStack()
        if self.cfg.base_url:
            return None, None
        model = model_spec(self.cfg.embedded_model)
        if not self.quiet:
            threads = self.cfg.embedded_threads or "every core but one"
            err_console.print(f"starting the embedded model: {model.judges_note} (llama.cpp; threads: {threads})",
                              markup=False, highlight=False, soft_wrap=True)
        try:
            url = self._stack.enter_context(embedded_server(self.cfg.embedded_port, self.cfg.embedded_ctx,
                                                            key=model.key, threads=self.cfg.embedded_threads))
        except LocalLLMError as exc:
            raise self.user_error(str(exc)) from exc
        return url, model.alias

    def __exit__(self, *exc):
        self._stack.close()


def register(app: typer.Typer, user_error: type[Exception], setup_logging) -> None:  # noqa: C901
    """Add the agent's commands to ``app``: build, runs, trace, batch, ``llm serve`` and doctor. ``user_error``: the
    CLI's one-line error class; ``setup_logging(quiet)`` sets the log handlers."""
    @app.command()
    def build(
        goal: Annotated[Optional[str], typer.Argument(help='what to build, e.g. "build a chemistry textbook"')] = None,
        source: Annotated[Optional[list[str]], typer.Option("--source", help="youtube, ytdlp, local:DIR, urls:FILE "
                                                                              "(repeatable)")] = None,
        max_videos: Annotated[Optional[int], typer.Option(help="accepted videos for the run")] = None,
        per_point: Annotated[Optional[int], typer.Option(help="accepted videos per knowledge point")] = None,
        budget_usd: Annotated[Optional[float], typer.Option(help="LLM spend cap in USD")] = None,
        llm: Annotated[Optional[str], typer.Option("--llm", help="model name at the endpoint")] = None,
        llm_url: Annotated[Optional[str], typer.Option("--llm-url", help="OpenAI-compatible base URL "
                                                                         "(none: the embedded local model)")] = None,
        resume: Annotated[Optional[str], typer.Option("--resume", help="continue the run RUN_ID")] = None,
        db: DbOpt = None,
        out: Annotated[Optional[Path], typer.Option("--out", help="export folder")] = None,
        config: ConfigOpt = None,
        executor: Annotated[Optional[str], typer.Option(help="local, process or ray (heavy stages)")] = None,
        workers: Annotated[Optional[int], typer.Option(help="workers of the executor")] = None,
        pools: Annotated[Optional[str], typer.Option(help="ray executor's actor pools: cpu, gpu1 or gpu8")] = None,
        ray_address: Annotated[Optional[str], typer.Option(help="a running Ray cluster (none: a local Ray)")] = None,
        media: Annotated[Optional[str], typer.Option("--media", help="where downloads, keyframes and clip images go: "
                                                                  "a folder or an object-store URI every worker "
                                                                  "can write (default: NAME_media/ beside the "
                                                                  "--db file)")] = None,
        as_json: Annotated[bool, typer.Option("--json", help="print the result as JSON")] = False,
        quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no progress, only the result")] = False,
        review: Annotated[Optional[str], typer.Option("--review", help="taxonomy and/or borderline "
                                                                       "(comma-separated): pause for a human")] = None,
        view: Annotated[bool, typer.Option("--view", help="serve `textbook view` from this build")] = False,
        view_port: Annotated[int, typer.Option("--view-port", help="port of --view on 127.0.0.1")] = 8765,
        strict: Annotated[bool, typer.Option("--strict", help="exit 1 when any video failed (an LLM call that "
                                                              "kept failing, a tool error); the textbook is "
                                                              "still written")] = False,
    ) -> None:
        """Plan a taxonomy, find and judge videos, and build a textbook from them, tracing every step."""
        from agents.build import BuildError, BuildInterrupted, BuildSpec, make_sources, run_build, spec_from_run
        from agents.interrupts import install

        setup_logging(quiet)
        install()  # Ctrl-C and SIGTERM: the answer in flight is saved, the run marked interrupted
        if resume is None and (goal is None or not goal.strip()):
            raise user_error('the goal is empty: say what textbook to build, e.g. "build a chemistry textbook"')
        over = _overrides(db, out, source, max_videos, per_point, budget_usd, llm, llm_url)
        if review:
            from agents.review import parse_review_flag

            try:
                over["agent"]["review"] = parse_review_flag(review)
            except ValueError as exc:
                raise user_error(str(exc)) from exc
        if executor or workers or pools or ray_address:
            over["pipeline"] = {k: v for k, v in (("executor", executor), ("workers", workers), ("pools", pools),
                                                  ("ray_address", ray_address)) if v}
        settings = load_settings(config, over)
        if resume:
            existing_db(settings.db, user_error)
            store = open_store(settings.db)
            try:
                spec = spec_from_run(store, resume)
            except BuildError as exc:
                store.close()
                raise user_error(str(exc)) from exc
            store.close()
            if pools or ray_address:  # where the work runs is not the run's: a resumed build may move
                spec.pipeline = spec.pipeline.model_copy(update={"pools": settings.pipeline.pools,
                                                                 "ray_address": settings.pipeline.ray_address})
        else:
            spec = BuildSpec(goal=goal, agent=settings.agent, pipeline=settings.pipeline, out=settings.out,
                             media=media)
        if spec.media is not None:  # credentials in the URI, a missing gcsfs: one line before anything starts
            from tools import storage

            storage.filesystem(spec.media)
        # bad sources and an unreachable endpoint fail here, before any database is created
        try:
            from agents.assign import embed_texts

            sources = make_sources(spec.agent.sources, None, comments=spec.agent.comments,
                                   min_relevance=spec.agent.min_relevance, embed=embed_texts)
        except BuildError as exc:
            raise user_error(str(exc)) from exc
        endpoint = Endpoint(spec.agent.llm, user_error, quiet or as_json)
        endpoint.precheck()
        store = open_store(settings.db)
        show = BuildProgress(enabled=not (quiet or as_json), every_s=settings.progress_every_s)
        try:
            from store.serve import serve_reads  # runs, trace, stats, view read through this build meanwhile

            with serve_reads(store, "build"), endpoint as (url, alias), show, \
                    _viewer(store, view, view_port, user_error) as wait:
                result = run_build(store, spec, run_id=resume, resume=bool(resume), base_url=url, model_name=alias,
                                   on_event=show, sources=sources, reporter=show, on_progress=show.on_tokens,
                                   wait_for_review=wait)
        except BuildInterrupted as exc:
            where = f" --db {settings.db}" if db or str(settings.db) != "textbook.duckdb" else ""
            err_console.print(f"interrupted: {exc.run_id} is saved (answers paid so far are cached); resume with: "
                              f"textbook build --resume {exc.run_id}{where}", markup=False, highlight=False)
            code = getattr(exc.cause, "code", 130)
            raise typer.Exit(code if isinstance(code, int) else 130) from None
        except BuildError as exc:
            raise user_error(str(exc)) from exc
        finally:
            store.close()
        if as_json:
            print(json.dumps(result, indent=2, default=str))
            if strict and result.get("failed"):
                raise typer.Exit(1)
            return
        if result.get("waiting_for_review"):
            where = f" --db {db}" if db else ""
            print(f"{result['run_id']} waits for your review ({result['waiting_for_review']}): "
                  f"textbook review {result['run_id']}{where} (terminal), or textbook view{where} (browser) "
                  f"then textbook build --resume {result['run_id']}{where}")
            return
        _print_build(result, db)
        if strict and result.get("failed"):
            raise typer.Exit(1)

    @app.command()
    def runs(db: DbOpt = None, config: ConfigOpt = None, as_json: JsonOpt = False) -> None:
        """List the runs in the store."""
        settings = load_settings(config, {"db": db} if db else {})
        store = open_store(existing_db(settings.db, user_error), read_only=True)
        try:
            rows = store.runs()
        finally:
            store.close()
        for r in rows:
            r["inputs"] = json.loads(r["inputs"])
            r["summary"] = json.loads(r["summary"]) if r["summary"] else None
        if as_json:
            print(json.dumps(rows, indent=2, default=str))
            return
        table = Table(title=f"runs in {settings.db}")
        for c in ("run", "command", "status", "goal / inputs", "updated", "videos", "samples"):
            table.add_column(c, overflow="fold")
        for r in rows:
            s = r["summary"] or {}
            videos = s.get("accepted_videos", len(s.get("videos", [])) if "videos" in s else "")
            table.add_row(r["run_id"], r["command"], r["status"], safe(", ".join(r["inputs"])[:80]),
                          str(r["updated_at"])[:19], str(videos), str(s.get("samples", "")))
        _stdout().print(table)

    @app.command()
    def trace(run_id: Annotated[str, typer.Argument(help="the run to show (see `textbook runs`)")], db: DbOpt = None,
              node: Annotated[Optional[str], typer.Option(help="only this node (e.g. judge_metadata)")] = None,
              video: Annotated[Optional[str], typer.Option(help="only this video id")] = None,
              config: ConfigOpt = None, as_json: JsonOpt = False) -> None:
        """What the agent did and why: every node run, decision and LLM call of a run, in order."""
        settings = load_settings(config, {"db": db} if db else {})
        store = open_store(existing_db(settings.db, user_error), read_only=True)
        try:
            run = store.run(run_id)
            if run is None:
                raise user_error(f"no run {run_id} in {settings.db} (see `textbook runs`)")
            if node is not None:
                known = sorted({e["node"] for e in store.events(run_id)})
                if node not in known:
                    raise user_error(f"no node {node!r} in {run_id} (its nodes: {', '.join(known) or 'none'})")
            if video is not None and not store.rows(
                    "SELECT 1 FROM events WHERE run_id = ? AND video_id = ? UNION ALL SELECT 1 FROM candidates "
                    "WHERE run_id = ? AND video_id = ? LIMIT 1", [run_id, video, run_id, video]):
                raise user_error(f"no video {video!r} in {run_id} (see `textbook trace {run_id} --json`)")
            events = store.events(run_id, node, video)
            calls = store.llm_calls(run_id, node, video)
            judgments = store.judgments(run_id, video)
            taxonomy = store.taxonomy(run_id)
        finally:
            store.close()
        for e in events:
            for k in ("input", "output", "reasons"):
                e[k] = json.loads(e[k]) if e[k] else None
        for c in calls:
            c["messages"] = json.loads(c["messages"])
            c["response"] = json.loads(c["response"]) if c["response"] else None
        if as_json:
            print(json.dumps({"run_id": run_id, "status": run["status"], "goal": json.loads(run["inputs"]),
                              "taxonomy": taxonomy, "events": events, "llm_calls": calls,
                              "judgments": judgments}, indent=2, default=str))
            return
        con = _stdout()

        def say(text: str) -> None:  # never Rich markup: ids in [brackets] and untrusted text print as they are
            con.print(text, markup=False, highlight=False, soft_wrap=True)

        t0 = min([e["started_at"] for e in events] + [c["created_at"] for c in calls], default=None)
        say(f"{run_id}  {run['status']}  goal: {literal(json.loads(run['inputs'])[0])}")
        if not node and not video:
            for n in taxonomy:
                if n["level"] == "point":
                    level = f"  (difficulty {n['difficulty']})" if n.get("difficulty") is not None else ""
                    say(f"  point {n['node_id']}: {literal(n['name'])}{level}")
        items = [(e["started_at"], 0, e) for e in events] + [(c["created_at"], 1, c) for c in calls]
        for when, kind, x in sorted(items, key=lambda t: (t[0], t[1])):
            at = f"+{(when - t0).total_seconds():7.1f}s"
            if kind == 0:
                vid = f" [{literal(x['video_id'])}]" if x["video_id"] else ""
                line = f"{at}  {x['node']}{vid}"
                if x["decision"]:
                    line += f"  -> {literal(x['decision'])}"
                if x["reasons"]:
                    line += "  because " + literal("; ".join(str(r) for r in x["reasons"]))[:400]
                if x["seconds"] is not None and not x["decision"]:
                    line += f"  ({x['seconds']:.2f}s)"
                if x["error"]:
                    line += f"  ERROR {literal(x['error'])}"
                say(line)
            else:
                tag = "cached (paid by an earlier run)" if x["cached"] else f"{x['latency_s']:.2f}s"
                est = "~" if x["tokens_estimated"] else ""
                err = f"  failed: {literal(x['error'])}" if x["error"] else ""
                vid = f" [{literal(x['video_id'])}]" if x["video_id"] else ""
                say(f"{at}    llm {x['role']}{vid} {x['prompt_name']}@{x['prompt_sha256'][:8]} {literal(x['model'])}"
                    f"  tokens {est}{x['input_tokens']}+{x['output_tokens']}  {tag}  tries {x['attempts']}{err}")
        paid = [c for c in calls if not c["cached"]]
        say(f"{len(events)} node events; LLM calls: {len(paid)} paid "
            f"({sum(c['input_tokens'] + c['output_tokens'] for c in paid)} tokens, "
            f"{sum(1 for c in paid if c['error'])} failed), {len(calls) - len(paid)} cached")

    @app.command()
    def batch(goals_file: Annotated[Path, typer.Argument(help="YAML: goals: [...] and optional defaults:")],
              executor: Annotated[Optional[str], typer.Option(help="local, process or ray")] = None,
              workers: Annotated[Optional[int], typer.Option(help="workers of the executor")] = None,
              ray_address: Annotated[Optional[str], typer.Option(help="Ray cluster address (none: local)")] = None,
              db: DbOpt = None, out: Annotated[Optional[Path], typer.Option(help="export root")] = None,
              config: ConfigOpt = None) -> None:
        """Run many goals headless: JSON log lines on stdout; exit 1 if any goal failed."""
        from agents.build import BuildInterrupted, BuildSpec, run_build
        from agents.interrupts import install

        setup_logging(True)
        install()
        goals, defaults = _read_goals(goals_file, user_error)
        over: dict = {}
        if executor or workers or ray_address:
            over["pipeline"] = {k: v for k, v in (("executor", executor), ("workers", workers),
                                                  ("ray_address", ray_address)) if v}
        if db:
            over["db"] = db
        settings = load_settings(config, over)
        root = out or settings.out
        agent = settings.agent.model_copy(deep=True)
        needs_embedded = any(not g.get("llm_url") for g in goals) and not agent.llm.base_url
        if needs_embedded:
            Endpoint(agent.llm, user_error, True).precheck()
        store = open_store(settings.db)
        failed = 0

        def emit(obj: dict) -> None:
            print(json.dumps({"ts": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), **obj}), flush=True)

        try:
            from store.serve import serve_reads

            with serve_reads(store, "batch"), \
                    Endpoint(agent.llm, user_error, True) if needs_embedded else nullcontext((None, None)) as ep:
                url, alias = ep
                for i, g in enumerate(goals):
                    merged = {**defaults, **g}
                    a = settings.agent.model_dump()
                    for key, path in (("sources", ("sources",)), ("per_point", ("per_point",)),
                                      ("max_videos", ("budgets", "max_videos")), ("budget_usd", ("budgets", "max_usd")),
                                      ("max_rounds", ("max_rounds",))):
                        if key in merged:
                            tgt = a
                            for p in path[:-1]:
                                tgt = tgt[p]
                            tgt[path[-1]] = merged[key]
                    from agents.config import AgentConfig

                    try:
                        agent_cfg = AgentConfig.model_validate(a)
                    except Exception as exc:
                        emit({"event": "goal_failed", "index": i, "goal": merged.get("goal"),
                              "error": f"invalid goal settings: {str(exc).splitlines()[0]}"})
                        failed += 1
                        continue
                    goal_out = Path(merged.get("out") or root / _slug(merged.get("goal", f"goal-{i}")))
                    spec = BuildSpec(goal=merged.get("goal", ""), agent=agent_cfg, pipeline=settings.pipeline,
                                     out=goal_out)
                    emit({"event": "goal_start", "index": i, "goal": spec.goal})
                    try:
                        result = run_build(store, spec, base_url=url, model_name=alias,
                                           on_event=lambda e, i=i: e.get("event") == "progress" or emit(
                                               {"index": i, **e}))
                    except BuildInterrupted as exc:
                        emit({"event": "interrupted", "index": i, "run_id": exc.run_id,
                              "resume": f"textbook build --resume {exc.run_id}"})
                        raise typer.Exit(130) from None
                    except Exception as exc:  # one goal's failure never stops the batch
                        failed += 1
                        emit({"event": "goal_failed", "index": i, "goal": spec.goal,
                              "error": f"{type(exc).__name__}: {exc}"[:300]})
                        continue
                    emit({"event": "goal_done", "index": i, "goal": spec.goal, **result})
        finally:
            store.close()
        emit({"event": "batch_done", "goals": len(goals), "failed": failed})
        if failed:
            raise typer.Exit(1)

    llm_app = typer.Typer(no_args_is_help=True, help="The embedded local model server.")
    app.add_typer(llm_app, name="llm")

    @llm_app.command("serve")
    def llm_serve(port: Annotated[int, typer.Option(help="port on 127.0.0.1")] = 8080,
                  host: Annotated[str, typer.Option(help="bind address (127.0.0.1 unless you mean it)")] = "127.0.0.1",
                  n_ctx: Annotated[int, typer.Option(help="context length in tokens")] = 4096,
                  model: Annotated[Optional[str], typer.Option(help="embedded model: qwen2.5-coder-1.5b or "
                                                                    "smollm2-135m (default: the setting)")] = None,
                  threads: Annotated[int, typer.Option(help="threads (0: every core but one)")] = 0,
                  config: ConfigOpt = None) -> None:
        """Serve the embedded model with llama.cpp's OpenAI-compatible server (quiet: no debug output)."""
        from agents.local_llm import LocalLLMError, model_spec, server_command

        key = model or load_settings(config, {}).agent.llm.embedded_model
        try:
            spec = model_spec(key)
            cmd = server_command(port, host=host, n_ctx=n_ctx, key=key, threads=threads)
        except LocalLLMError as exc:
            raise user_error(str(exc)) from exc
        err_console.print(f"serving http://{host}:{port}/v1 (model {spec.alias}: {spec.judges_note}); Ctrl-C stops",
                          markup=False, highlight=False, soft_wrap=True)
        os.execv(cmd[0], cmd)

    @app.command()
    def doctor(config: ConfigOpt = None, as_json: JsonOpt = False) -> None:
        """What is configured, reachable and missing (never prints a secret)."""
        settings = load_settings(config, {})
        checks = _doctor_checks(settings)
        if as_json:
            print(json.dumps(checks, indent=2))
        else:
            table = Table(title="textbook doctor")
            for c in ("part", "status", "detail"):
                table.add_column(c, overflow="fold")
            for c in checks:
                table.add_row(c["part"], c["status"], safe(c["detail"]))
            _stdout().print(table)
        if any(c["status"] in ("missing", "differs") and c["required"] for c in checks):
            raise typer.Exit(1)


@contextmanager
def _viewer(store, view: bool, port: int, user_error):
    """With --view: the viewer on 127.0.0.1 in a thread of this build; yields how the build waits for
    a review answer from it (None without --view: a paused build returns and says how to answer)."""
    if not view:
        yield None
        return
    from agents.review import ReviewInbox
    from textbook.web.backend import BuildBackend
    from textbook.web.server import ServeError, Viewer

    inbox = ReviewInbox()
    try:
        viewer = Viewer(BuildBackend(store, inbox), "127.0.0.1", port).start()
    except ServeError as exc:
        raise user_error(str(exc)) from exc
    err_console.print(f"viewer: {viewer.url} (served while the build runs)", highlight=False)
    try:
        yield inbox.wait
    finally:
        viewer.stop()


def _print_build(result: dict, db) -> None:
    """The end of a build: what was made, what is short and why, what was paid."""
    con = _stdout()

    def say(text: str) -> None:
        con.print(text, markup=False, highlight=False, soft_wrap=True)

    if result.get("already_finished"):
        say(f"{result['run_id']} had already finished; its result:")
    if result.get("retried"):
        say(f"{result['run_id']}: " + retried_line(result["retried"]))
    say(f"{result['run_id']}: {result['accepted_videos']} videos accepted, {result['samples']} samples in "
        f"{result['out_dir']}" + (f" (stopped: budget {result['stop']})" if result.get("stop") else ""))
    for point, videos in (result.get("videos_by_point") or {}).items():
        say(f"  {literal(point)}: {', '.join(literal(v) for v in videos)}")
    for s in result.get("short_points") or []:
        say(f"  short: {s['point_id']} {literal(s['point'])}: {literal(s['why'])}")
    if result.get("short_points") and result.get("coverage"):
        say(f"  coverage ended: {literal(result['coverage'])}")
    modes = result.get("judge_modes") or {}
    if modes:
        say("  judges: " + ", ".join(f"{k} {v}" for k, v in modes.items()))
    llm_t = result["llm"]
    statuses = ", ".join(f"{k} {n}" for k, n in sorted((result.get("candidates") or {}).items())) or "none"
    say(f"  knowledge points {result['knowledge_points']}, candidates: {statuses}, search units "
        f"{result['search_units']}")
    now = result.get("paid_now")
    again = "" if now is None or now == llm_t["paid_calls"] else f"; {now} of them paid by this command"
    say(f"  LLM calls: {llm_t['paid_calls']} paid ({llm_t['paid_tokens']} tokens, ${llm_t['cost_usd']:.4f}, "
        f"{llm_t.get('failed_calls', 0)} failed), {llm_t.get('cached_calls', 0)} answered from the cache{again}")
    failed = result.get("failed") or []
    if failed:
        kinds: dict[str, int] = {}
        for f in failed:
            kinds[f"{f['node']} {f['kind']}"] = kinds.get(f"{f['node']} {f['kind']}", 0) + 1
        say(f"  failed: {len(failed)} video{'s' * (len(failed) != 1)} ("
            + ", ".join(f"{k} {n}" for k, n in sorted(kinds.items())) +
            "); the others went on. Each is in the trace: textbook trace " + result["run_id"] + " --node "
            + failed[0]["node"])
    warned = result.get("warnings") or []
    if warned:
        by_kind: dict[str, int] = {}
        for w in warned:
            by_kind[w["kind"]] = by_kind.get(w["kind"], 0) + 1
        say(f"  warnings: {len(warned)} (" + ", ".join(f"{k} {n}" for k, n in sorted(by_kind.items())) +
            f"); in the trace: textbook trace {result['run_id']} --node {warned[0]['stage']}")
        for w in warned:
            say(f"    {literal(w['video_id'])} ({w['status']}): {w['kind']}: {literal(w['message'])}")
    say(f"  inspect: textbook trace {result['run_id']}" + (f" --db {db}" if db else ""))


def retried_line(retried: dict[str, int]) -> str:
    """One line for the failed items a rerun retried (``{"NODE KIND": n}``, from agents.slots.retry_failed or
    pipeline.runner.RunResult.retried)."""
    n = sum(retried.values())
    return (f"retried {n} video{'s' * (n != 1)} that failed in the last run of this command ("
            + ", ".join(f"{k} {v}" for k, v in sorted(retried.items())) + ")")


def _stdout():
    from rich.console import Console

    return Console() if sys.stdout.isatty() else Console(width=200)


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:60] or "goal"


def _read_goals(path: Path, user_error) -> tuple[list[dict], dict]:
    import yaml

    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise user_error(f"cannot read {path}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise user_error(f"{path} is not valid YAML: {str(exc).splitlines()[0]}") from exc
    if isinstance(data, list):
        data = {"goals": data}
    if not isinstance(data, dict) or not isinstance(data.get("goals"), list) or not data["goals"]:
        raise user_error(f"{path} must hold a non-empty list under 'goals'")
    goals = []
    for i, g in enumerate(data["goals"]):
        g = {"goal": g} if isinstance(g, str) else g
        if not isinstance(g, dict) or not str(g.get("goal", "")).strip():
            raise user_error(f"{path}: goal {i + 1} is empty")
        goals.append(g)
    return goals, data.get("defaults") or {}


def _lock_check() -> dict:
    """doctor's row for the installed packages against requirements.lock (what the tests passed on)."""
    from textbook.lockfile import LOCK_PATH, compare, locked_versions

    part = "packages vs requirements.lock"
    if not LOCK_PATH.is_file():
        return {"part": part, "status": "optional", "required": False,
                "detail": "no lock beside this install (a wheel install): versions not checked"}
    drift = compare()
    if not drift:
        return {"part": part, "status": "ok", "required": True,
                "detail": f"exact: {len(locked_versions())} packages as locked"}
    shown = "; ".join(str(d) for d in drift[:5]) + (f"; and {len(drift) - 5} more" if len(drift) > 5 else "")
    return {"part": part, "status": "differs", "required": True,
            "detail": f"{len(drift)} differ: {shown}. `make setup` makes a new venv from the lock"}


def _doctor_checks(settings) -> list[dict]:
    import importlib.metadata as md

    out = []

    def add(part: str, ok: bool, detail: str, required: bool = True) -> None:
        out.append({"part": part, "status": "ok" if ok else ("missing" if required else "optional"),
                    "detail": detail, "required": required})

    for tool in ("ffmpeg", "ffprobe", "tesseract"):
        add(tool, bool(shutil.which(tool)), shutil.which(tool) or f"apt-get install {tool}")
    try:
        from tools.asr import offline_model_path

        add("whisper-base (offline)", True, f"{offline_model_path()} (sha256 verified)")
    except Exception as exc:
        add("whisper-base (offline)", False, str(exc).splitlines()[0])
    from agents.local_llm import MODELS, gguf_path

    chosen = settings.agent.llm.embedded_model
    for key in MODELS:
        use = "the embedded LLM" if key == chosen and not settings.agent.llm.base_url else "not in use"
        try:
            add(f"{key} GGUF ({use})", True, f"{gguf_path(key)} (sha256 verified)")
        except Exception as exc:
            add(f"{key} GGUF ({use})", False, str(exc), required=key == chosen and not settings.agent.llm.base_url)
    out.append(_lock_check())
    for pkg in ("llama-cpp-python", "langgraph", "langchain-openai", "yt-dlp", "google-api-python-client", "ray",
                "sentence-transformers"):
        try:
            add(pkg, True, md.version(pkg), required=pkg != "ray")
        except md.PackageNotFoundError:
            add(pkg, False, f"pip install {pkg}", required=pkg != "ray")
    llm = settings.agent.llm
    if llm.base_url:
        from agents.local_llm import reachable

        why = reachable(llm.base_url, api_key=os.environ.get(llm.api_key_env))
        add("LLM endpoint", why is None, why or f"{llm.base_url} answers (model {llm.model})")
    else:
        add("LLM endpoint", True, "none configured: builds start the embedded llama.cpp server on 127.0.0.1")
    key_set = bool(os.environ.get("TEXTBOOK_YOUTUBE_API_KEY"))
    add("YouTube Data API key", key_set, "set (TEXTBOOK_YOUTUBE_API_KEY)" if key_set else
        "not set: --source youtube unavailable; ytdlp, local:DIR and urls:FILE work", required=False)
    add("LLM API key", bool(os.environ.get(llm.api_key_env)), f"{llm.api_key_env} " +
        ("set" if os.environ.get(llm.api_key_env) else "not set (fine for local servers)"), required=False)
    db = Path(settings.db)
    parent = db.parent if str(db.parent) else Path(".")
    writable = os.access(parent if parent.exists() else Path("."), os.W_OK)
    if db.is_file():
        add("database", True, f"{db.resolve()} exists")
    elif not writable:
        add("database", False, f"{db.resolve()}: its folder is not writable")
    else:
        out.append({"part": "database", "status": "not created yet", "required": False,
                    "detail": f"{db.resolve()} does not exist: a build or process creates it; runs, trace and "
                              "stats need it (or --db FILE)"})
    return out
