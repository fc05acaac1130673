"""`textbook view` (the store in a browser) and `textbook review` (a waiting build's review in the terminal).

Registered on the main Typer app by ``register``; errors are the app's UserError (one line, exit 2).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from textbook.console import err_console
from textbook.settings import load_settings

DbOpt = Annotated[Optional[Path], typer.Option("--db", help="DuckDB file (env TEXTBOOK_DB)")]
ConfigOpt = Annotated[Optional[Path], typer.Option("--config", help="settings file (TOML, YAML or JSON)")]


def register(app: typer.Typer, user_error: type[Exception], setup_logging) -> None:
    @app.command()
    def view(db: DbOpt = None, config: ConfigOpt = None,
             port: Annotated[int, typer.Option(help="port (0: a free one)")] = 8765,
             host: Annotated[str, typer.Option(help="bind address (127.0.0.1 unless you mean to share it)")]
             = "127.0.0.1") -> None:
        """Browse runs, videos, decisions, samples and stats in a browser; answer a waiting build's review."""
        from textbook.web.backend import FileBackend
        from textbook.web.server import ServeError, Viewer, is_loopback

        setup_logging(True)
        settings = load_settings(config, {"db": db} if db else {})
        if not Path(settings.db).is_file():
            raise user_error(f"no database at {settings.db} (run `textbook process` or `textbook build` first)")
        try:
            viewer = Viewer(FileBackend(settings.db), host, port)
        except ServeError as exc:
            raise user_error(str(exc)) from exc
        if not is_loopback(host):
            err_console.print(f"warning: serving {host} to the network, without authentication", highlight=False)
        err_console.print(f"textbook view of {settings.db}: {viewer.url} (Ctrl-C stops)", highlight=False)
        viewer.run()
