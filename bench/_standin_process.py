"""The stand-in LLM server (agents/standin.py) in a process of its own, for the scale benchmarks
(bench_scale.py's gateway part, bench/_scale_build.py)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


class StandInProcess:
    """The stand-in server (``python -m agents.standin``) in a process of its own, so its event loop does
    not share this process's interpreter lock with the clients measured. ``choices``: property name ->
    the value it answers (``{"verdict": "reject"}``: every judge rejects). ``base_url`` once started."""

    def __init__(self, latency_s: float = 0.0, choices: dict | None = None):
        self.latency_s = latency_s
        self.choices = dict(choices or {})
        self.proc: subprocess.Popen | None = None
        self.base_url = ""

    def __enter__(self) -> StandInProcess:
        self.proc = subprocess.Popen([sys.executable, "-m", "agents.standin", "--port", "0", "--latency",
                                      f"{self.latency_s:g}",
                                      *(f"--choice={k}={v}" for k, v in self.choices.items())],
                                     cwd=ROOT, stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        m = re.search(r"(http://\S+/v1)", line)
        if not m:
            self.proc.kill()
            raise RuntimeError(f"the stand-in did not start: {line!r}")
        self.base_url = m.group(1)
        return self

    def __exit__(self, *exc) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
