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
import time
from contextlib import ExitStack, contextmanager, nullcontext
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape
from rich.table import Table

from textbook.console import err_console
from textbook.settings import load_settings

DbOpt = Annotated[Optional[Path], typer.Option("--db", help="DuckDB file (env TEXTBOOK_DB)")]
ConfigOpt = Annotated[Optional[Path], typer.Option("--config", help="settings file (TOML, YAML or JSON)")]
_CTRL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f\x1b]")


def safe(text) -> str:
    """Untrusted text for the terminal: no control or escape sequences, no rich markup."""
    return escape(_CTRL.sub("", str(text)))


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

    def __enter__(self):
        from agents.local_llm import QUALITY_NOTE, LocalLLMError, embedded_server, reachable

        self._stack = ExitStack()
        if self.cfg.base_url:
            why = reachable(self.cfg.base_url, api_key=os.environ.get(self.cfg.api_key_env))
            if why:
                raise self.user_error(why)
            return None, None
        try:
            url = self._stack.enter_context(embedded_server(self.cfg.embedded_port, self.cfg.embedded_ctx))
        except LocalLLMError as exc:
            raise self.user_error(str(exc)) from exc
        from agents.local_llm import MODEL_ALIAS

        if not self.quiet:
            err_console.print(f"note: {QUALITY_NOTE}", highlight=False)
        return url, MODEL_ALIAS

    def __exit__(self, *exc):
        self._stack.close()


def register(app: typer.Typer, user_error: type[Exception], setup_logging) -> None:  # noqa: C901
    from agents.build import BuildError, BuildSpec, run_build, spec_from_run
    from store import open_store

    def _progress(quiet: bool, as_json: bool):
        if quiet or as_json:
            return lambda e: None
        started = time.monotonic()

        def show(e: dict) -> None:
            if e["event"] == "run_start":
                err_console.print(f"run {e['run_id']}" + (" (resuming)" if e["resume"] else ""), highlight=False)
                if not e.get("enforce_judges", True):
                    err_console.print("judges are advisory: their verdicts are recorded, nothing is dropped by them "
                                      "(agent.enforce_judges = yes to enforce)", highlight=False)
            elif e["event"] == "node_start":
                err_console.print(f"[{time.monotonic() - started:7.1f}s] {e['node']}", highlight=False)
            elif e["event"] == "budget":
                err_console.print(f"budget spent: {safe(e['detail'])}", highlight=False)
            elif e["event"] == "review_wait":
                err_console.print(f"waiting for your {e['kind']} review in the viewer", highlight=False)
        return show

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
        as_json: Annotated[bool, typer.Option("--json", help="print the result as JSON")] = False,
        quiet: Annotated[bool, typer.Option("--quiet", "-q")] = False,
        review: Annotated[Optional[str], typer.Option("--review", help="taxonomy and/or borderline "
                                                                       "(comma-separated): pause for a human")] = None,
        view: Annotated[bool, typer.Option("--view", help="serve `textbook view` from this build")] = False,
        view_port: Annotated[int, typer.Option("--view-port", help="port of --view on 127.0.0.1")] = 8765,
    ) -> None:
        """Plan a taxonomy, find and judge videos, and build a textbook from them, tracing every step."""
        setup_logging(quiet)
        if resume is None and (goal is None or not goal.strip()):
            raise user_error('the goal is empty: say what textbook to build, e.g. "build a chemistry textbook"')
        over = _overrides(db, out, source, max_videos, per_point, budget_usd, llm, llm_url)
        if review:
            from agents.review import parse_review_flag

            try:
                over["agent"]["review"] = parse_review_flag(review)
            except ValueError as exc:
                raise user_error(str(exc)) from exc
        if executor or workers:
            over["pipeline"] = {k: v for k, v in (("executor", executor), ("workers", workers)) if v}
        settings = load_settings(config, over)
        store = open_store(settings.db)
        try:
            if resume:
                spec = spec_from_run(store, resume)
            else:
                spec = BuildSpec(goal=goal, agent=settings.agent, pipeline=settings.pipeline, out=settings.out)
            try:
                from agents.build import make_sources

                # made once, here, so bad sources fail before any model starts
                sources = make_sources(spec.agent.sources, store, comments=spec.agent.comments)
            except BuildError as exc:
                raise user_error(str(exc)) from exc
            with Endpoint(spec.agent.llm, user_error, quiet or as_json) as (url, alias), \
                    _viewer(store, view, view_port, user_error) as wait:
                result = run_build(store, spec, run_id=resume, resume=bool(resume), base_url=url, model_name=alias,
                                   on_event=_progress(quiet, as_json), sources=sources, wait_for_review=wait)
        except BuildError as exc:
            raise user_error(str(exc)) from exc
        finally:
            store.close()
        if as_json:
            print(json.dumps(result, indent=2, default=str))
            return
        if result.get("waiting_for_review"):
            where = f" --db {db}" if db else ""
            print(f"{result['run_id']} waits for your review ({result['waiting_for_review']}): "
                  f"textbook review {result['run_id']}{where} (terminal), or textbook view{where} (browser) "
                  f"then textbook build --resume {result['run_id']}{where}")
            return
        if result.get("already_finished"):
            print(f"{result['run_id']} had already finished; its result:")
        print(f"{result['run_id']}: {result['accepted_videos']} videos accepted, {result['samples']} samples in "
              f"{result['out_dir']}" + (f" (stopped: budget {result['stop']})" if result.get("stop") else ""))
        llm_t = result["llm"]
        print(f"  knowledge points {result['knowledge_points']}, candidates {result['candidates']}, search units "
              f"{result['search_units']}, LLM calls {llm_t['calls']} ({llm_t['paid_calls']} paid, "
              f"{llm_t['paid_tokens']} tokens, ${llm_t['cost_usd']:.4f})")
        print(f"  inspect: textbook trace {result['run_id']}" + (f" --db {db}" if db else ""))

    @app.command()
    def runs(db: DbOpt = None, config: ConfigOpt = None,
             as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
        """List the runs in the store."""
        settings = load_settings(config, {"db": db} if db else {})
        store = open_store(settings.db, read_only=True)
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
    def trace(run_id: Annotated[str, typer.Argument(help="the run to show")], db: DbOpt = None,
              node: Annotated[Optional[str], typer.Option(help="only this node")] = None,
              video: Annotated[Optional[str], typer.Option(help="only this video id")] = None,
              config: ConfigOpt = None, as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
        """What the agent did and why: every node run, decision and LLM call of a run, in order."""
        settings = load_settings(config, {"db": db} if db else {})
        store = open_store(settings.db, read_only=True)
        try:
            run = store.run(run_id)
            if run is None:
                raise user_error(f"no run {run_id} in {settings.db} (see `textbook runs`)")
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
        t0 = min([e["started_at"] for e in events] + [c["created_at"] for c in calls], default=None)
        con.print(f"{run_id}  {run['status']}  goal: {safe(json.loads(run['inputs'])[0])}", highlight=False)
        items = [(e["started_at"], 0, e) for e in events] + [(c["created_at"], 1, c) for c in calls]
        for when, kind, x in sorted(items, key=lambda t: (t[0], t[1])):
            at = f"+{(when - t0).total_seconds():7.1f}s"
            if kind == 0:
                vid = f" [{safe(x['video_id'])}]" if x["video_id"] else ""
                line = f"{at}  {x['node']}{vid}"
                if x["decision"]:
                    line += f"  -> {safe(x['decision'])}"
                if x["reasons"]:
                    line += "  because " + safe("; ".join(str(r) for r in x["reasons"]))[:300]
                if x["seconds"] is not None and not x["decision"]:
                    line += f"  ({x['seconds']:.2f}s)"
                if x["error"]:
                    line += f"  ERROR {safe(x['error'])}"
                con.print(line, highlight=False)
            else:
                tag = "cached" if x["cached"] else f"{x['latency_s']:.2f}s"
                est = "~" if x["tokens_estimated"] else ""
                err = f"  invalid: {safe(x['error'])}" if x["error"] else ""
                con.print(f"{at}    llm {x['role']} {x['prompt_name']}@{x['prompt_sha256'][:8]} {safe(x['model'])}"
                          f"  tokens {est}{x['input_tokens']}+{x['output_tokens']}  {tag}"
                          f"  tries {x['attempts']}{err}", highlight=False)
        paid = [c for c in calls if not c["cached"]]
        con.print(f"{len(events)} node events, {len(calls)} LLM calls ({len(paid)} paid, "
                  f"{sum(c['input_tokens'] + c['output_tokens'] for c in paid)} tokens)", highlight=False)

    @app.command()
    def batch(goals_file: Annotated[Path, typer.Argument(help="YAML: goals: [...] and optional defaults:")],
              executor: Annotated[Optional[str], typer.Option(help="local, process or ray")] = None,
              workers: Annotated[Optional[int], typer.Option(help="workers of the executor")] = None,
              ray_address: Annotated[Optional[str], typer.Option(help="Ray cluster address (none: local)")] = None,
              db: DbOpt = None, out: Annotated[Optional[Path], typer.Option(help="export root")] = None,
              config: ConfigOpt = None) -> None:
        """Run many goals headless: JSON log lines on stdout; exit 1 if any goal failed."""
        setup_logging(True)
        goals, defaults = _read_goals(goals_file, user_error)
        over: dict = {}
        if executor or workers or ray_address:
            over["pipeline"] = {k: v for k, v in (("executor", executor), ("workers", workers),
                                                  ("ray_address", ray_address)) if v}
        if db:
            over["db"] = db
        settings = load_settings(config, over)
        root = out or settings.out
        store = open_store(settings.db)
        failed = 0

        def emit(obj: dict) -> None:
            print(json.dumps({"ts": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), **obj}), flush=True)

        try:
            agent = settings.agent.model_copy(deep=True)
            needs_embedded = any(not g.get("llm_url") for g in goals) and not agent.llm.base_url
            with Endpoint(agent.llm, user_error, True) if needs_embedded else nullcontext((None, None)) as ep:
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
                                           on_event=lambda e, i=i: emit({"index": i, **e}))
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
                  n_ctx: Annotated[int, typer.Option(help="context length")] = 4096) -> None:
        """Serve the embedded SmolLM2-135M GGUF with llama.cpp's OpenAI-compatible server."""
        from agents.local_llm import QUALITY_NOTE, LocalLLMError, server_command

        try:
            cmd = server_command(port, host=host, n_ctx=n_ctx)
        except LocalLLMError as exc:
            raise user_error(str(exc)) from exc
        err_console.print(f"serving on http://{host}:{port}/v1 (model smollm2-135m-instruct); {QUALITY_NOTE}",
                          highlight=False)
        os.execv(cmd[0], cmd)

    @app.command()
    def doctor(config: ConfigOpt = None, as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
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
        if any(c["status"] == "missing" and c["required"] for c in checks):
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


def _doctor_checks(settings) -> list[dict]:
    import importlib.metadata as md

    out = []

    def add(part, ok, detail, required=True):
        out.append({"part": part, "status": "ok" if ok else ("missing" if required else "optional"),
                    "detail": detail, "required": required})

    for tool in ("ffmpeg", "ffprobe", "tesseract"):
        add(tool, bool(shutil.which(tool)), shutil.which(tool) or f"apt-get install {tool}")
    try:
        from tools.asr import offline_model_path

        add("whisper-base (offline)", True, f"{offline_model_path()} (sha256 verified)")
    except Exception as exc:
        add("whisper-base (offline)", False, str(exc).splitlines()[0])
    try:
        from agents.local_llm import gguf_path

        add("SmolLM2 GGUF (embedded LLM)", True, f"{gguf_path()} (sha256 verified)")
    except Exception as exc:
        add("SmolLM2 GGUF (embedded LLM)", False, str(exc))
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
    add("database", os.access(parent if parent.exists() else Path("."), os.W_OK), str(db.resolve()))
    return out
