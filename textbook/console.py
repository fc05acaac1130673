"""Terminal output: progress bars for `process`, live progress for `build` (quiet with --quiet).

Untrusted text (titles, reasons, transcripts) is printed with ``literal``: Rich markup off,
control and escape characters shown as visible ``\\xNN`` escapes, nothing HTML-encoded.
"""

from __future__ import annotations

import re
import sys
import threading
import time

from rich.console import Console
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.spinner import Spinner
from rich.table import Table
from rich.text import Text

err_console = Console(stderr=True)
_CTRL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def literal(text) -> str:
    """Untrusted text for the terminal: control and escape characters (ESC, CR, BEL, C1) become visible
    ``\\xNN`` escapes; everything else is kept as is. Print it with ``markup=False``."""
    return _CTRL.sub(lambda m: f"\\x{ord(m.group(0)):02x}", str(text))


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


def _clock(seconds: float) -> str:
    seconds = int(max(0, seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


class BuildProgress:
    """What a running build is doing, on stderr: the node, items done of total, streamed tokens of the
    call in flight, and an ETA for the node (mean seconds per item so far x items left).

    In a terminal: one live line with a spinner (rich Live), node changes and warnings printed above
    it. Otherwise: one line per node start (``[  12.3s] node``), warnings and budget lines.
    Use as the build's ``on_event``, ``on_progress`` (tokens) and the runner's Reporter."""

    def __init__(self, enabled: bool, console: Console | None = None):
        self.console = console or err_console
        self.enabled = enabled
        self.live_mode = enabled and self.console.is_terminal
        self.started = time.monotonic()
        self.node = ""
        self.node_started = self.started
        self.done = self.total = 0
        self.item: str | None = None
        self.item_started = self.started
        self.tokens = 0
        self.stage_name: str | None = None
        self._lock = threading.Lock()
        self._spinner = Spinner("dots")
        self._live: Live | None = None

    # -- context ---------------------------------------------------------------
    def __enter__(self) -> BuildProgress:
        if self.live_mode:
            self._live = Live(self, console=self.console, refresh_per_second=8, transient=True)
            self._live.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None

    def __rich__(self) -> Table:
        with self._lock:
            line = Text()
            line.append(f"{_clock(time.monotonic() - self.started):>6} ", style="dim")
            line.append(self.stage_name or self.node or "starting", style="bold")
            if self.total:
                line.append(f"  {self.done}/{self.total}")
            if self.item:
                line.append(f"  {literal(self.item)[:40]}", style="cyan")
            if self.tokens:
                line.append(f"  {self.tokens} tokens")
            eta = self.eta()
            if eta is not None:
                line.append(f"  ETA {_clock(eta)}", style="dim")
        grid = Table.grid(padding=(0, 1))
        grid.add_row(self._spinner, line)
        return grid

    def eta(self) -> float | None:
        """Seconds left in the current node, from the mean time per finished item (None: unknown)."""
        if not self.total or not self.done or self.done >= self.total:
            return None
        per = (time.monotonic() - self.node_started) / self.done
        return per * (self.total - self.done)

    def _print(self, text: str) -> None:
        if self.enabled:
            self.console.print(text, markup=False, highlight=False, soft_wrap=True)

    # -- the build's on_event --------------------------------------------------
    def __call__(self, e: dict) -> None:
        kind = e.get("event")
        if kind == "run_start":
            retried = sum((e.get("retried") or {}).values())
            self._print(f"run {e['run_id']}" + (" (resuming)" if e.get("resume") else "")
                        + (f" (retrying {retried} failed video{'s' * (retried != 1)})" if retried else ""))
            judges = e.get("judges") or {}
            for name, mode in judges.items():
                if mode.startswith("advisory"):
                    self._print(f"{name} judge {mode} (its verdicts are recorded, it drops nothing)")
                elif mode != "enforced":
                    self._print(f"{name} judge: {mode}")
        elif kind == "node_start":
            with self._lock:
                self.node, self.node_started = e["node"], time.monotonic()
                self.done = self.total = self.tokens = 0
                self.item, self.stage_name = None, None
            if not self.live_mode:
                self._print(f"[{time.monotonic() - self.started:7.1f}s] {e['node']}")
        elif kind == "progress":
            with self._lock:
                if e["node"] != self.node:
                    self.node, self.node_started = e["node"], time.monotonic()
                self.done, self.total, self.item = e["done"], e["total"], e.get("item")
                self.tokens = 0
        elif kind == "node_end" and self.live_mode:
            self._print(f"{_clock(time.monotonic() - self.started):>6} {e['node']} done "
                        f"({_clock(time.monotonic() - self.node_started)})")
        elif kind == "warning":
            self._print(f"warning: {literal(e['message'])}")
        elif kind == "item_failed":
            self._print(f"failed: {literal(e['video_id'])} at {e['node']} ({e['kind']}): {literal(e['message'])}")
        elif kind == "budget":
            self._print(f"budget spent: {literal(e['detail'])}")
        elif kind == "review_wait":
            self._print(f"waiting for your {e['kind']} review in the viewer")

    # -- the gateway's on_progress (a worker thread) ---------------------------
    def on_tokens(self, role: str, n: int) -> None:
        with self._lock:
            self.tokens = n

    # -- pipeline.runner.Reporter ---------------------------------------------
    def stage(self, name: str, total: int) -> None:
        with self._lock:
            self.stage_name, self.done, self.total, self.item = name, 0, total, None
            self.node_started = time.monotonic()

    def advance(self, name: str) -> None:
        with self._lock:
            self.done += 1
