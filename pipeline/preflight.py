"""The preflight of a run's storage: before the first task, whoever will write the media root (and the
export folder) proves it can write there and read it back, so a run never spends hours of ASR to lose the
frames to a bucket it may not write, or to a node's own disk that the others never see.

    check_here(["s3://bucket/media", "s3://bucket/out"])     # the driver (local and process executors)
    check_nodes("s3://bucket/media")                          # every alive node of the running Ray

Each check is tools.storage.check_read_write (a probe object written, read back, deleted). ``check_nodes``
pins one tiny task to each alive node (Ray's ``NodeAffinitySchedulingStrategy``, ``soft=False``, 0 CPUs so it
runs beside busy workers): each writes a marker ``.textbook-preflight/TOKEN/NODE`` under the root and reads
it back, then each node reads every node's marker (a local folder that is not shared between the nodes
fails here: a node would not see the frames another wrote), then the markers are removed.

Either raises :class:`PreflightError`: one line naming the node (or this machine) and what it could not do.
(The helper ``pools`` wrote the same check for its actor pools, pipeline/pools.py ``preflight``, for local
roots; this one goes through tools.storage, so URIs work: the two are to be merged.)
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import uuid
from collections.abc import Callable, Iterable
from typing import Any

from tools import storage

log = logging.getLogger(__name__)

__all__ = ["PreflightError", "check_here", "check_nodes"]


class PreflightError(Exception):
    """A node (or this machine) cannot write or read a run's media root or export folder: the run stops
    before its first task with this one line (exit status 1)."""


def _one_line(exc: BaseException) -> str:
    text = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    return (str(text).splitlines() or [type(exc).__name__])[0][:300]


def check_here(uris: Iterable[str | os.PathLike]) -> None:
    """Each of ``uris`` (paths or URIs) written, read back and cleaned by this process
    (tools.storage.check_read_write). Raises PreflightError naming this machine and the URI."""
    for uri in uris:
        try:
            storage.check_read_write(uri)
        except Exception as exc:  # noqa: BLE001 - ToolError, or a client's own error: one line either way
            raise PreflightError(f"preflight: this machine ({socket.gethostname()}) cannot write and read back "
                                 f"{storage.redact(uri)}: {_one_line(exc)}") from None


def _write(root: str, name: str, token: str) -> str | None:
    """On one node: the storage probe, then ``token`` written to ``root/name`` and read back; None, or what
    went wrong."""
    target = storage.join(root, name)
    try:
        storage.check_read_write(root)
        storage.write_bytes(target, token.encode())
        back = storage.read_bytes(target).decode()
    except Exception as exc:  # noqa: BLE001 - reported as the node's problem
        return f"cannot write and read back {storage.redact(root)}: {_one_line(exc)}"
    return None if back == token else f"wrote {storage.redact(target)} but read back something else"


def _read(root: str, names: list[str], token: str) -> str | None:
    """On one node: every node's marker read; None, or the first that is missing or different."""
    for name in names:
        target = storage.join(root, name)
        try:
            back = storage.read_bytes(target).decode()
        except Exception as exc:  # noqa: BLE001
            return (f"cannot read {storage.redact(target)}, written by another node (is the media root shared "
                    f"by every node?): {_one_line(exc)}")
        if back != token:
            return f"reads {storage.redact(target)}, written by another node, as something else"
    return None


def _remove(root: str, name: str) -> None:
    """On one node: its marker removed (and, in a local folder, the marker's folders once empty)."""
    try:
        target = storage.join(root, name)
        storage.remove(target)
        if not storage.is_remote(root):
            folder = os.path.dirname(target)
            for _ in range(2):  # .textbook-preflight/TOKEN, then .textbook-preflight
                with contextlib.suppress(OSError):
                    os.rmdir(folder)
                folder = os.path.dirname(folder)
    except Exception as exc:  # noqa: BLE001 - a marker left behind is harmless
        log.debug("preflight: could not remove %s: %s", name, exc)


def check_nodes(root: str | os.PathLike, timeout: float = 120.0) -> list[str]:
    """The media root ``root`` written and read by every alive node of the running Ray (see the module
    docstring), each node reading what every other wrote. Returns the nodes' ids (hex). Raises
    PreflightError naming the first node that cannot (id and address), what it could not do, and how many
    more could not; a node that does not answer within ``timeout`` seconds a phase is one that cannot.
    Needs Ray initialized."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    text = str(root)
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    token = uuid.uuid4().hex
    names = {n["NodeID"]: f".textbook-preflight/{token}/{n['NodeID']}" for n in nodes}
    label = {n["NodeID"]: f"{n['NodeID'][:12]} ({n.get('NodeManagerAddress', '?')})" for n in nodes}

    def on_each(fn: Callable, args_of: Callable[[str], tuple]) -> dict[str, Any]:
        remote = ray.remote(fn)
        refs = {node: remote.options(num_cpus=0, max_retries=0, scheduling_strategy=NodeAffinitySchedulingStrategy(
            node, soft=False)).remote(*args_of(node)) for node in names}
        ready, _ = ray.wait(list(refs.values()), num_returns=len(refs), timeout=timeout)
        out: dict[str, Any] = {}
        for node, ref in refs.items():
            if ref not in ready:
                ray.cancel(ref, force=True)
                out[node] = f"did not answer within {timeout:g} s"
                continue
            try:
                out[node] = ray.get(ref)
            except Exception as exc:  # noqa: BLE001 - the node died, or the task could not run there
                out[node] = f"could not run the check: {_one_line(exc)}"
        return out

    try:
        for fn, args_of in [(_write, lambda node: (text, names[node], token)),
                            (_read, lambda node: (text, list(names.values()), token))]:
            problems = {node: p for node, p in on_each(fn, args_of).items() if p}
            if problems:
                node, problem = next(iter(problems.items()))
                more = len(problems) - 1
                tail = f" (and {more} more node{'s' if more > 1 else ''})" if more else ""
                raise PreflightError(f"preflight: node {label[node]} {problem}{tail}")
    finally:
        on_each(_remove, lambda node: (text, names[node]))
    log.info("preflight: %d nodes write and read %s", len(names), storage.redact(text))
    return list(names)
