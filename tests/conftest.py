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



# -- an S3 stand-in (moto's server) on 127.0.0.1 for the media-by-URI tests -----------------------------------
S3_ENV = {"AWS_ACCESS_KEY_ID": "testing-key-id", "AWS_SECRET_ACCESS_KEY": "testing-secret-not-real",
          "AWS_SESSION_TOKEN": "testing-session", "AWS_DEFAULT_REGION": "us-east-1"}


@pytest.fixture(scope="session")
def s3_server():
    """moto's S3 server on a free port of 127.0.0.1 for the session: its endpoint URL (stopped at the end)."""
    import socket

    from moto.server import ThreadedMotoServer

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture
def s3_bucket(s3_server, monkeypatch, tmp_path) -> str:
    """A fresh bucket on the stand-in, the environment pointing at it (AWS_ENDPOINT_URL, fake credentials; no
    config file of this machine read): ``s3://NAME``."""
    import uuid

    import boto3

    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server)
    for key, value in S3_ENV.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    name = f"tb-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1").create_bucket(Bucket=name)
    return f"s3://{name}"
