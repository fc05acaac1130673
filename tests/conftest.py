"""Shared fixtures: paths into tests/data and one real `textbook process` run of the lessons."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LESSONS = ROOT / "tests" / "data" / "lessons"
TEXTBOOK = [sys.executable, "-m", "textbook.cli"]


def truth(name: str) -> dict:
    return json.loads((LESSONS / f"{name}.truth.json").read_text())


def run_cli(*args: str, cwd: Path | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("TEXTBOOK_DEBUG", None)
    return subprocess.run([*TEXTBOOK, *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=timeout)


@pytest.fixture(scope="session", autouse=True)
def _system_parts():
    """Fail loudly (never skip) when a part the tests exercise is missing."""
    missing = [tool for tool in ("ffmpeg", "ffprobe", "tesseract", "espeak-ng") if not shutil.which(tool)]
    if missing:
        pytest.fail(f"missing system tools: {', '.join(missing)} (run `make setup`)", pytrace=False)


@pytest.fixture(scope="session")
def lessons() -> Path:
    return LESSONS


@pytest.fixture(scope="session")
def processed(tmp_path_factory) -> dict:
    """`textbook process tests/data/lessons --json` once for the session."""
    work = tmp_path_factory.mktemp("process")
    proc = run_cli("process", str(LESSONS), "--db", str(work / "runs.duckdb"), "--out", str(work / "out"), "--json")
    # the truncated lesson fails (kind corrupt), so the exit code is 1 and the rest still finished
    assert proc.returncode == 1, proc.stderr
    summary = json.loads(proc.stdout)
    return {"dir": work, "db": work / "runs.duckdb", "out": work / "out", "summary": summary,
            "stderr": proc.stderr}


@pytest.fixture(scope="session")
def relative_store(tmp_path_factory) -> dict:
    """Two lessons (chemistry, physics) processed with `--db rel/x.duckdb`, a path relative to the folder the
    command ran in (``made``), as a user types it; read it from ``elsewhere``, another folder."""
    root = tmp_path_factory.mktemp("relative")
    made, elsewhere = root / "made", root / "elsewhere"
    (made / "lessons").mkdir(parents=True)
    elsewhere.mkdir()
    for name in ("chemistry_atoms", "physics_newton"):
        for ext in (".mp4", ".json"):
            shutil.copy(LESSONS / f"{name}{ext}", made / "lessons" / f"{name}{ext}")
    proc = run_cli("process", "lessons", "--db", "rel/x.duckdb", "--out", "rel/out", "--json", cwd=made)
    assert proc.returncode == 0, proc.stderr
    return {"made": made, "elsewhere": elsewhere, "db": made / "rel" / "x.duckdb", "out": made / "rel" / "out",
            "summary": json.loads(proc.stdout)}

