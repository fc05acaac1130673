"""`textbook view` (the store in a browser) and `textbook review` (a waiting build's review in the terminal).

Registered on the main Typer app by ``register``; errors are the app's UserError (one line, exit 2).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from textbook.cli_agent import existing_db, load_settings
from textbook.console import err_console

DbOpt = Annotated[Optional[Path], typer.Option("--db", help="DuckDB file (env TEXTBOOK_DB)")]
ConfigOpt = Annotated[Optional[Path], typer.Option("--config", help="settings file (TOML, YAML or JSON)")]


def _recorded_media(db: Path) -> str | None:
    """The media root the store's latest run recorded (pipeline.runner.recorded_media), or None."""
    from pipeline.runner import recorded_media
    from store import open_store

    store = open_store(db, read_only=True)
    try:
        latest = store.latest_run()
        return recorded_media(store, latest) if latest else None
    finally:
        store.close()


def register(app: typer.Typer, user_error: type[Exception], setup_logging) -> None:
    """Add ``view`` (the browser viewer of a store) and ``review`` (answer a build's pending review) to ``app``."""
    @app.command()
    def view(db: DbOpt = None, config: ConfigOpt = None,
             media: Annotated[Optional[str], typer.Option("--media", help="the local folder the images are in "
                                                                       "(default: the one the latest run "
                                                                       "recorded, as process --media gave it; "
                                                                       "else NAME_media/ beside --db)")] = None,
             port: Annotated[int, typer.Option(help="port (0: a free one)", min=0, max=65535)] = 8765,
             host: Annotated[str, typer.Option(help="bind address (127.0.0.1 unless you mean to share it)")]
             = "127.0.0.1") -> None:
        """Browse runs, videos, decisions, samples and stats in a browser; answer a waiting build's review."""
        from textbook.web.backend import FileBackend
        from textbook.web.server import ServeError, Viewer, is_loopback

        setup_logging(True)
        settings = load_settings(config, {"db": db} if db else {})
        backend = FileBackend(existing_db(settings.db, user_error))
        root = media or _recorded_media(settings.db)
        if root is not None:
            from tools import storage

            if storage.is_remote(root):  # served files are local ones: say where the images are instead
                storage.filesystem(root)  # credentials in the URI, a missing package: one line (ToolError)
                whose = "the images are" if media else "the latest run's images are"
                err_console.print(f"note: {whose} in {storage.redact(root)}; the viewer shows images from a local "
                                  "folder only (--media)", highlight=False, soft_wrap=True)
            elif not storage.local_path(root).is_dir():
                raise user_error(f"--media {root}: no such folder")
            else:
                backend.media_dir = storage.local_path(root).resolve()
        try:
            viewer = Viewer(backend, host, port)
        except ServeError as exc:
            raise user_error(str(exc)) from exc
        if not is_loopback(host):
            err_console.print(f"warning: serving {host} to the network, without authentication", highlight=False)
        err_console.print(f"textbook view of {settings.db}: {viewer.url} (Ctrl-C stops)", highlight=False)
        viewer.run()

    @app.command()
    def review(run_id: Annotated[str, typer.Argument(help="the build that waits for review")], db: DbOpt = None,
               config: ConfigOpt = None,
               approve: Annotated[bool, typer.Option(help="approve the taxonomy as proposed")] = False,
               remove: Annotated[Optional[list[str]], typer.Option(help="remove a taxonomy node (id)")] = None,
               rename: Annotated[Optional[list[str]], typer.Option(help="ID=NEW NAME")] = None,
               add: Annotated[Optional[list[str]], typer.Option(help="SUBCOURSE_ID=NEW POINT")] = None,
               order: Annotated[Optional[list[str]], typer.Option(help="ID=N: place among its siblings")] = None,
               accept: Annotated[Optional[list[str]], typer.Option(help="accept a borderline video (id)")] = None,
               reject: Annotated[Optional[list[str]], typer.Option(help="reject a borderline video (id)")] = None,
               resume: Annotated[bool, typer.Option(help="continue the build after answering")] = True) -> None:
        """Answer a build's waiting review in the terminal (the same review as in `textbook view`),
        then continue the build. Without options it asks on standard input."""
        from agents import review as rv
        from store import open_store

        settings = load_settings(config, {"db": db} if db else {})
        store = open_store(existing_db(settings.db, user_error))
        try:
            if store.run(run_id) is None:
                raise user_error(f"no run {run_id} in {settings.db} (see `textbook runs`)")
            waiting = rv.pending_all(store, run_id)
            if not waiting:
                raise user_error(f"{run_id} does not wait for a review")
            flags = any([approve, remove, rename, add, order, accept, reject])
            for payload in waiting:
                if flags:
                    answer = _answer_from_flags(payload, approve, remove, rename, add, order, accept, reject,
                                                user_error)
                else:
                    answer = _ask(payload, user_error)
                problems = rv.check_answer(payload, answer)
                if problems:
                    raise user_error("; ".join(problems))
                rv.record_answer(store, run_id, payload["key"], answer, via="terminal")
                err_console.print(f"recorded the {payload['kind']} review of {run_id}", highlight=False)
        finally:
            store.close()
        if resume:
            build = next(c.callback for c in app.registered_commands if c.callback.__name__ == "build")
            build(resume=run_id, db=db, config=config)


def _pairs(values: list[str] | None, what: str, user_error) -> dict[str, str]:
    out = {}
    for v in values or []:
        key, sep, val = v.partition("=")
        if not sep or not key.strip() or not val.strip():
            raise user_error(f"{what} takes ID=VALUE, not {v!r}")
        out[key.strip()] = val.strip()
    return out


def _answer_from_flags(payload, approve, remove, rename, add, order, accept, reject, user_error) -> dict:
    if payload["kind"] == "borderline":
        if approve or remove or rename or add or order:
            raise user_error("this review decides borderline videos: use --accept VIDEO / --reject VIDEO")
        return {"action": "decide", "decisions": {**{v: "accept" for v in accept or []},
                                                  **{v: "reject" for v in reject or []}}}
    if accept or reject:
        raise user_error("this review is of the taxonomy: use --approve, --remove, --rename, --add, --order")
    if approve and not (remove or rename or add or order):
        return {"action": "approve"}
    adds: dict[str, list[str]] = {}
    for sub, name in [(k, v) for k, v in (x.partition("=")[::2] for x in add or [])]:
        if not sub.strip() or not name.strip():
            raise user_error(f"--add takes SUBCOURSE_ID=NAME, not {sub}={name}")
        adds.setdefault(sub.strip(), []).append(name.strip())
    orders = {}
    for k, v in _pairs(order, "--order", user_error).items():
        if not v.isdigit():
            raise user_error(f"--order takes ID=N with N a whole number, not {k}={v}")
        orders[k] = int(v)
    return {"action": "edit", "names": _pairs(rename, "--rename", user_error), "remove": list(remove or []),
            "add": adds, "order": orders}


def _show_taxonomy(nodes: list[dict]) -> None:
    from textbook.cli_agent import safe

    depth = {"subject": 0, "course": 1, "subcourse": 2, "point": 3}
    for n in nodes:
        err_console.print(f"{'  ' * depth.get(n['level'], 0)}{n['node_id']:<16} {n['level']:<9} {safe(n['name'])}",
                          highlight=False)


def _ask(payload: dict, user_error) -> dict:
    """Ask on standard input (a terminal, or lines piped in)."""
    import copy
    import sys

    from textbook.cli_agent import safe

    def line(prompt: str) -> str:
        err_console.print(prompt, end="", highlight=False)
        got = sys.stdin.readline()
        if not got:
            raise user_error("no answer given (end of input): nothing recorded")
        return got.strip()

    if payload["kind"] == "borderline":
        decisions = {}
        err_console.print(f"borderline {payload['stage']} judgments (review band {payload['band'][0]}-"
                          f"{payload['band'][1]}):", highlight=False)
        for it in payload["items"]:
            err_console.print(f"\n{safe(it['video_id'])}  {safe(it['title'] or '')}\n  point: {safe(it['point'])}\n"
                              f"  model: {it['verdict']} (score {it['score']}): {safe('; '.join(it['reasons']))}",
                              highlight=False)
            while (got := line("  accept or reject? [a/r] ").lower()) not in ("a", "r", "accept", "reject"):
                pass
            decisions[it["video_id"]] = "accept" if got.startswith("a") else "reject"
        return {"action": "decide", "decisions": decisions}
    from agents.review import apply_taxonomy

    err_console.print("taxonomy proposed by the planner:", highlight=False)
    _show_taxonomy(payload["nodes"])
    err_console.print("commands: approve | rm ID | rename ID NAME | add SUBCOURSE_ID NAME | order ID N | show | done",
                      highlight=False)
    edit: dict = {"action": "edit", "names": {}, "remove": [], "add": {}, "order": {}}
    while True:
        before = copy.deepcopy(edit)
        cmd, _, rest = line("> ").partition(" ")
        arg, _, more = rest.strip().partition(" ")
        if cmd in ("approve", "ok"):
            return {"action": "approve"}
        if cmd == "done":
            return edit
        if cmd == "rm" and arg:
            edit["remove"].append(arg)
        elif cmd == "rename" and arg and more.strip():
            edit["names"][arg] = more.strip()
        elif cmd == "add" and arg and more.strip():
            edit["add"].setdefault(arg, []).append(more.strip())
        elif cmd == "order" and arg and more.strip().isdigit():
            edit["order"][arg] = int(more)
        elif cmd == "show":
            pass
        else:
            err_console.print("?  approve | rm ID | rename ID NAME | add SUBCOURSE_ID NAME | order ID N | show | done",
                              highlight=False)
            continue
        try:
            nodes, changes = apply_taxonomy(payload["nodes"], edit)
        except ValueError as exc:
            err_console.print(f"not taken: {exc}", highlight=False)
            edit = before
            continue
        _show_taxonomy(nodes)
