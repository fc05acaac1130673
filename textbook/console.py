"""Terminal output: progress bars for `process`, live progress for `build` (quiet with --quiet); without a
terminal (a file, a pipe, CI), plain status lines at least every ``every_s`` seconds instead.

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


class _Ticker:
    """Calls ``emit()`` every ``every_s`` seconds on a daemon thread between ``start()`` and ``stop()``:
    the plain status lines of a run whose output is not a terminal."""

    def __init__(self, every_s: float, emit):
        self.every_s, self.emit = every_s, emit
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="textbook-progress", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            self.emit()


class ProgressReporter:
    """Implements pipeline.runner.Reporter: one rich bar per stage in a terminal; otherwise (a file, a pipe,
    CI) a plain line per unfinished stage at least every ``every_s`` seconds
    (``[  61.0s] asr: 3/12 done, eta 1m02s``)."""

    def __init__(self, enabled: bool, every_s: float = 30.0, console: Console | None = None):
        self.console = console or err_console
        self.enabled = enabled and sys.stdout.isatty()
        self.plain = enabled and not self.enabled
        self.every_s = every_s
        self.progress = Progress(TextColumn("{task.description:<10}"), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), console=self.console, transient=False) if self.enabled else None
        self.tasks: dict[str, int] = {}
        self.counts: dict[str, list] = {}  # stage -> [done, total, started (monotonic)]
        self.started = time.monotonic()
        self._lock = threading.Lock()
        self._ticker = _Ticker(every_s, self._tick)

    def __enter__(self):
        if self.progress:
            self.progress.start()
        elif self.plain:
            self._ticker.start()
        return self

    def __exit__(self, *exc):
        if self.progress:
            self.progress.stop()
        self._ticker.stop()

    def _tick(self) -> None:
        for line in self.status_lines():
            self.console.print(line, markup=False, highlight=False, soft_wrap=True)

    def status_lines(self) -> list[str]:
        """One plain line per stage begun and not finished: ``[ elapsed] stage: done/total done, eta ...``."""
        now = time.monotonic()
        with self._lock:
            rows = [(name, done, total, since) for name, (done, total, since) in self.counts.items() if done < total]
        out = []
        for name, done, total, since in rows:
            eta = _eta(done, total, now - since)
            out.append(literal(f"[{now - self.started:7.1f}s] {name}: {done}/{total} done, eta "
                               f"{'unknown' if eta is None else _clock(eta)}"))
        return out

    def stage(self, name: str, total: int) -> None:
        """Start counting stage ``name`` of ``total`` items (a progress bar when the terminal shows one)."""
        with self._lock:
            self.counts[name] = [0, total, time.monotonic()]
        if self.progress:
            self.tasks[name] = self.progress.add_task(name, total=total)

    def advance(self, name: str) -> None:
        """Count one more item of stage ``name`` done (no-op for a stage not started)."""
        with self._lock:
            if name in self.counts:
                self.counts[name][0] += 1
        if self.progress and name in self.tasks:
            self.progress.advance(self.tasks[name])


def _eta(done: int, total: int, elapsed_s: float) -> float | None:
    """Seconds left: the mean time per finished item so far x items left; 0 when all are done; None before the
    first is done."""
    if not total or not done:
        return None
    return max(0.0, elapsed_s / done * (total - done))


def _clock(seconds: float) -> str:
    seconds = int(max(0, seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


class BuildProgress:
    """What a running build is doing, on stderr: the node, items done of total, streamed tokens of the
    call in flight, and an ETA for the node (mean seconds per item so far x items left).

    In a terminal: one live line with a spinner (rich Live), node changes and warnings printed above
    it. Otherwise (a file, a pipe, CI, nohup): one line per node start (``[  12.3s] node``), warnings
    and budget lines, and a plain status line at least every ``every_s`` seconds while the build runs
    (``[ 312.0s] videos: 3/12 done, eta 4m10s``; no markup, no control characters).
    Use as the build's ``on_event``, ``on_progress`` (tokens) and the runner's Reporter; a pipeline
    stage's own counts (asr 0/1 for one video) are shown beside the node's, never in place of them."""

    def __init__(self, enabled: bool, console: Console | None = None, every_s: float = 30.0):
        self.console = console or err_console
        self.enabled = enabled
        self.live_mode = enabled and self.console.is_terminal
        self.every_s = every_s
        self.started = time.monotonic()
        self.node = ""
        self.node_started = self.started
        self.done = self.total = 0
        self.item: str | None = None
        self.item_started = self.started
        self.tokens = 0
        self.stage_name: str | None = None
        self.stage_done = self.stage_total = 0
        self.stage_started = self.started
        self._lock = threading.Lock()
        self._spinner = Spinner("dots")
        self._live: Live | None = None
        self._ticker = _Ticker(every_s, lambda: self._print(self.status_line()))

    # -- context ---------------------------------------------------------------
    def __enter__(self) -> BuildProgress:
        if self.live_mode:
            self._live = Live(self, console=self.console, refresh_per_second=8, transient=True)
            self._live.start()
        elif self.enabled:
            self._ticker.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None
        self._ticker.stop()

    def _counts(self) -> tuple[str, int, int, float]:
        """(what is counted, done, total, when its counting began): the node's items when it reports them,
        else the pipeline stage's (under the lock)."""
        name = self.node or "starting"
        if self.total or not self.stage_total:
            return name, self.done, self.total, self.node_started
        return f"{name} {self.stage_name}" if self.node else str(self.stage_name), self.stage_done, \
            self.stage_total, self.stage_started

    def status_line(self) -> str:
        """The plain status line: ``[ elapsed] node: done/total done, eta 4m10s`` (``eta unknown`` before the
        first item is done; ``node: running`` while the node has reported no count)."""
        now = time.monotonic()
        with self._lock:
            name, done, total, since = self._counts()
        if not total:
            text = f"{name}: running"
        else:
            eta = _eta(done, total, now - since)
            text = f"{name}: {done}/{total} done, eta {'unknown' if eta is None else _clock(eta)}"
        return literal(f"[{now - self.started:7.1f}s] {text}")

    def __rich__(self) -> Table:
        with self._lock:
            name, done, total, since = self._counts()
            line = Text()
            line.append(f"{_clock(time.monotonic() - self.started):>6} ", style="dim")
            line.append(name, style="bold")
            if self.stage_name and self.total:
                line.append(f" ({self.stage_name})", style="dim")
            if total:
                line.append(f"  {done}/{total}")
            if self.item:
                line.append(f"  {literal(self.item)[:40]}", style="cyan")
            if self.tokens:
                line.append(f"  {self.tokens} tokens")
            eta = _eta(done, total, time.monotonic() - since)
            if eta is not None and done < total:
                line.append(f"  ETA {_clock(eta)}", style="dim")
        grid = Table.grid(padding=(0, 1))
        grid.add_row(self._spinner, line)
        return grid

    def eta(self) -> float | None:
        """Seconds left in the current node, from the mean time per finished item (None: unknown)."""
        with self._lock:
            _, done, total, since = self._counts()
        return _eta(done, total, time.monotonic() - since)

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
                self.done = self.total = self.tokens = self.stage_done = self.stage_total = 0
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
        """The gateway's streaming count: ``n`` tokens received so far by the current request of ``role``."""
        with self._lock:
            self.tokens = n

    # -- pipeline.runner.Reporter ---------------------------------------------
    def stage(self, name: str, total: int) -> None:
        """A pipeline stage of ``total`` items started inside the current node (shown beside the node's line)."""
        with self._lock:
            self.stage_name, self.stage_done, self.stage_total = name, 0, total
            self.stage_started = time.monotonic()

    def advance(self, name: str) -> None:
        """One more item of the current pipeline stage done."""
        with self._lock:
            if name == self.stage_name:
                self.stage_done += 1
