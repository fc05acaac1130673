"""`build`'s progress without a terminal: plain status lines at least every ``every_s`` seconds.

The build's stderr to a file (CI, nohup) used to stay silent for minutes inside ``videos``; the
end-to-end check that a real build prints them is in tests/textbook/test_cli_agent.py.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import threading
import time

import pytest
from rich.console import Console

from tests.conftest import ROOT, TEXTBOOK
from textbook.console import BuildProgress

LINE = re.compile(r"\[ *\d+\.\ds\] (?P<node>[a-z_ ]+): (?P<done>\d+)/(?P<total>\d+) done, "
                  r"eta (?P<eta>unknown|\d+s|\d+m\d\ds)")


def _progress(tmp_path, every_s: float) -> tuple[BuildProgress, object]:
    log = (tmp_path / "stderr.log").open("w")  # a file, as with 2> build.log: not a terminal
    return BuildProgress(True, Console(file=log, width=80), every_s=every_s), log


def _wait_for(path, pattern: str, timeout_s: float = 10.0) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        text = path.read_text()
        if re.search(pattern, text):
            return text
        time.sleep(0.02)
    raise AssertionError(f"no {pattern!r} in {path.read_text()!r}")


def test_a_status_line_every_interval_with_node_done_total_and_eta(tmp_path):
    show, log = _progress(tmp_path, every_s=0.1)
    path = tmp_path / "stderr.log"
    with show:
        show({"event": "node_start", "node": "videos"})
        _wait_for(path, r"videos: running")  # no count reported yet: still a line
        show({"event": "progress", "node": "videos", "done": 0, "total": 4})
        _wait_for(path, r"videos: 0/4 done, eta unknown")
        time.sleep(0.2)
        show({"event": "progress", "node": "videos", "done": 1, "total": 4, "item": "lesson-1"})
        # a pipeline stage inside one video reports its own small counts: they do not replace the node's
        show.stage("asr", 1)
        show.advance("asr")
        text = _wait_for(path, r"videos: 1/4 done, eta \d+s")
    log.close()
    lines = path.read_text().splitlines()
    assert lines[0].endswith("] videos")  # the node start line
    status = [m for m in map(LINE.fullmatch, lines) if m]
    assert status and {m["node"] for m in status} == {"videos"}
    eta = int(status[-1]["eta"].rstrip("s"))
    assert 0 < eta < 30  # 3 left at the first video's pace (a fraction of a second each)
    assert "\x1b" not in text and not re.search(r"[\x00-\x08\x0b-\x1f\x7f]", text)  # plain: no control characters
    assert "[bold" not in text and "[/" not in text  # no Rich markup
    n = len(lines)
    time.sleep(0.3)
    assert len(path.read_text().splitlines()) == n  # the ticker stopped with the build


def test_the_interval_is_kept_while_nothing_else_happens(tmp_path):
    show, log = _progress(tmp_path, every_s=0.05)
    with show:
        show({"event": "node_start", "node": "judge_metadata"})
        show({"event": "progress", "node": "judge_metadata", "done": 2, "total": 5})
        time.sleep(0.6)
    log.close()
    status = [line for line in (tmp_path / "stderr.log").read_text().splitlines() if LINE.fullmatch(line)]
    assert len(status) >= 4, status  # about 12 in 0.6 s; at least a few even on a loaded machine
    assert all("judge_metadata: 2/5 done" in line for line in status)


def test_a_terminal_gets_the_live_line_and_no_ticker(tmp_path):
    show = BuildProgress(True, Console(file=(tmp_path / "tty.log").open("w"), force_terminal=True), every_s=0.01)
    with show:
        assert show.live_mode and show._ticker._thread is None  # no ticker thread started
        show({"event": "progress", "node": "videos", "done": 1, "total": 2})
    names = [t.name for t in threading.enumerate()]
    assert "textbook-progress" not in names


def test_quiet_prints_nothing(tmp_path):
    log = (tmp_path / "stderr.log").open("w")
    with BuildProgress(False, Console(file=log), every_s=0.01) as show:
        show({"event": "node_start", "node": "videos"})
        time.sleep(0.1)
    log.close()
    assert (tmp_path / "stderr.log").read_text() == ""


def test_process_without_a_terminal_prints_each_unfinished_stage(tmp_path):
    from textbook.console import ProgressReporter

    log = (tmp_path / "stderr.log").open("w")
    with ProgressReporter(True, every_s=0.05, console=Console(file=log, width=80)) as reporter:
        assert reporter.plain and reporter.progress is None  # pytest's stdout is not a terminal
        reporter.stage("asr", 3)
        reporter.stage("keyframes", 1)
        reporter.advance("asr")
        reporter.advance("keyframes")
        assert [line.split("] ")[1].split(",")[0] for line in reporter.status_lines()] == ["asr: 1/3 done"]
        _wait_for(tmp_path / "stderr.log", r"asr: 1/3 done, eta \d+s")
    log.close()
    lines = (tmp_path / "stderr.log").read_text().splitlines()
    assert lines and all(LINE.fullmatch(line) for line in lines), lines


@pytest.mark.e2e
def test_process_to_a_file_prints_stage_lines(lessons, tmp_path):
    """A real `textbook process` with stderr to a file: plain stage lines (stage, done/total, eta)."""
    folder = tmp_path / "in"
    folder.mkdir()
    for suffix in (".mp4", ".json"):
        shutil.copy(lessons / f"physics_newton{suffix}", folder / f"physics_newton{suffix}")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TEXTBOOK_PROGRESS_EVERY_S": "0.5"}
    env.pop("TEXTBOOK_DEBUG", None)
    with (tmp_path / "stderr.log").open("w") as err:
        proc = subprocess.run([*TEXTBOOK, "process", str(folder), "--db", str(tmp_path / "db.duckdb"), "--out",
                               str(tmp_path / "out")], cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=err,
                              timeout=600)
    text = (tmp_path / "stderr.log").read_text()
    assert proc.returncode == 0, text
    status = [m for m in map(LINE.fullmatch, text.splitlines()) if m]
    assert status, text
    assert {m["node"] for m in status} <= {"register", "probe", "filter", "asr", "keyframes", "ocr", "clips",
                                           "interleave", "pack", "export"}, text
    assert "asr" in {m["node"] for m in status}  # ASR of a 30-second lesson takes seconds
    assert "\x1b" not in text and "Traceback" not in text
