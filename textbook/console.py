"""Terminal output: progress bars (quiet with --quiet or when stdout is not a terminal)."""

from __future__ import annotations

import sys

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

err_console = Console(stderr=True)


class ProgressReporter:
    """Implements pipeline.runner.Reporter with one rich bar per stage."""

    def __init__(self, enabled: bool):
        self.enabled = enabled and sys.stdout.isatty()
        self.progress = Progress(TextColumn("{task.description:<10}"), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), console=err_console, transient=False) if self.enabled else None
        self.tasks: dict[str, int] = {}

    def __enter__(self):
        if self.progress:
            self.progress.start()
        return self

    def __exit__(self, *exc):
        if self.progress:
            self.progress.stop()

    def stage(self, name: str, total: int) -> None:
        if self.progress:
            self.tasks[name] = self.progress.add_task(name, total=total)

    def advance(self, name: str) -> None:
        if self.progress and name in self.tasks:
            self.progress.advance(self.tasks[name])
