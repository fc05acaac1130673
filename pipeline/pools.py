"""Ray actor pools for the heavy stages: one pool of long-lived actors per stage (download, probe, ASR,
keyframes, OCR), each actor declaring what it needs (CPUs, a GPU or a fraction of one, custom node resources).

Why actors and not one Ray task per video (pipeline.executors.RayExecutor): a task declares no resources
(an ASR task on a GPU node is not given a GPU, and several land on GPU 0) and loads its model in whatever
worker process it lands in; an actor is one process for the run's life, placed by Ray on a node that has
what it declared, with ``CUDA_VISIBLE_DEVICES`` set to the GPU(s) Ray gave it, and it keeps what its task
functions load (the ASR model: ``pipeline.stages.asr``'s per-process cache) from its first task to its
last. This is how the field runs video curation on Ray (NeMo Curator / Cosmos-Curate: every stage a Ray
actor pool with declared CPU/GPU needs; /work/shared/SCALE.md).

- ``PoolConfig``: per stage a ``PoolSpec`` (size, num_cpus, num_gpus, memory, custom resources, max in flight per
  actor, max_restarts, max_task_retries); ``POOL_PRESETS`` / ``pool_preset(name)``: ``cpu`` (the default),
  ``gpu1`` (one GPU node), ``gpu8`` (an 8-GPU node). The ``download`` pool is the build's (yt-dlp into the
  media root, tools.download.download_task); ``process`` never starts it.
- ``RayPoolExecutor``: ``submit(stage, fn, args)`` returns a ``concurrent.futures.Future`` of
  ``fn(*args)`` run by an actor of the stage's pool; ``capacity(stage)`` is what the pool takes at once
  (actors x max in flight), so the caller submits no more than the pools can take (backpressure); a
  submit beyond it waits in this process, not in Ray.
- Faults: an actor whose process or node dies is restarted by Ray (``max_restarts``) and the tasks it held
  are retried (``max_task_retries``: at-least-once; each future still gets one result); when Ray gives
  up, the future's exception is a ``ToolError`` of kind ``worker_lost`` (that video's failure, retried by
  a rerun) and the pool replaces the dead actor: never a crash of the run.
- The preflight of the media root on every node is pipeline.preflight.check_nodes (``start`` joins Ray
  first).

Ray's docs: actors and their resources (docs.ray.io "Actors", "Resources", "Accelerator support"), actor
fault tolerance (``max_restarts``, ``max_task_retries``), ``NodeAffinitySchedulingStrategy``,
``ObjectRef.future()``.
"""

from __future__ import annotations

import logging
import math
import os
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from tools.errors import RunStopped, ToolError

log = logging.getLogger(__name__)

# The repository root: Ray workers put it on their path to import the project's modules.
ROOT = Path(__file__).resolve().parent.parent

# The heavy stages, each with its own pool (their pure task functions: pipeline.stages.*_task, and the build's
# download: tools.download.download_task).
STAGES = ("download", "probe", "asr", "keyframes", "ocr")

GB = 1024**3
WORKER_LOST = "worker_lost"  # ToolError kind: the actor or node running the task died and Ray gave up


# -- configuration ----------------------------------------------------------------------------------------
class PoolSpec(BaseModel):
    """One stage's pool: how many actors and what each one declares to Ray's scheduler.

    Ray places an actor only on a node that has all it declares, and holds that for the actor's life; a
    GPU share sets the actor's ``CUDA_VISIBLE_DEVICES``. Declared CPUs are for placement, not a limit.
    """

    model_config = ConfigDict(extra="forbid")
    size: int = Field(1, ge=1, description="actors in the pool (each loads its model once)")
    num_cpus: float = Field(1.0, ge=0, description="CPUs each actor holds (fractional allowed)")
    num_gpus: float = Field(0.0, ge=0, description=(
        "GPUs each actor holds: a fraction shares one GPU (0.5: two actors a GPU), above 1 a whole number"))
    memory_gb: float = Field(0.0, ge=0, description=(
        "host memory each actor reserves (Ray's `memory`, for placement): a node takes no more whisper "
        "actors than its memory holds, where an uncounted model per process gets workers OOM-killed"))
    resources: dict[str, float] = Field(default_factory=dict, description=(
        "custom resources each actor holds, to pin a pool to nodes started with them "
        "(e.g. {'asr_node': 1} with `ray start --resources '{\"asr_node\": 4}'`)"))
    max_in_flight: int = Field(2, ge=1, description=(
        "tasks an actor holds at once: one running, the rest queued at the actor so it never waits on the driver"))
    max_restarts: int = Field(3, ge=-1, description="times Ray restarts a dead actor (-1: no limit)")
    max_task_retries: int = Field(2, ge=-1, description=(
        "times Ray retries a task whose actor died (-1: no limit); then the task fails as worker_lost"))

    @field_validator("num_gpus")
    @classmethod
    def _whole_above_one(cls, v: float) -> float:
        if v > 1 and v != int(v):
            raise ValueError(f"num_gpus above 1 must be a whole number (Ray's rule), not {v}")
        return v

    def demand(self) -> dict[str, float]:
        """What one actor holds, in Ray's resource names (CPU, GPU, custom)."""
        need = {"CPU": self.num_cpus, "GPU": self.num_gpus, "memory": self.memory_gb * GB, **self.resources}
        return {k: v for k, v in need.items() if v > 0}

    def actor_options(self) -> dict[str, Any]:
        """The options of ``ActorClass.options(...)`` for one actor of this pool."""
        options = {"num_cpus": self.num_cpus, "num_gpus": self.num_gpus, "resources": dict(self.resources),
                   "max_restarts": self.max_restarts, "max_task_retries": self.max_task_retries}
        if self.memory_gb:
            options["memory"] = round(self.memory_gb * GB)
        return options


class PoolConfig(BaseModel):
    """The actor pools of the heavy stages, one ``PoolSpec`` each (``RayPoolExecutor``). Presets:
    ``POOL_PRESETS`` (``cpu``, the default; ``gpu1``; ``gpu8``)."""

    model_config = ConfigDict(extra="forbid")
    download: PoolSpec = Field(PoolSpec(size=2, num_cpus=0.0), description=(
        "yt-dlp into the media root (the build): network-bound, so several a CPU; 0 CPUs declared here so the "
        "CPU preset's other pools keep the 2 CPUs"))
    probe: PoolSpec = Field(PoolSpec(size=1, num_cpus=0.25), description="ffprobe of each input: light")
    asr: PoolSpec = Field(PoolSpec(size=1, num_cpus=1.0, memory_gb=1.0),
                          description="faster-whisper: the model per actor")
    keyframes: PoolSpec = Field(PoolSpec(size=1, num_cpus=0.5), description="decoding + SSIM + frame files")
    ocr: PoolSpec = Field(PoolSpec(size=1, num_cpus=0.25), description="tesseract (or VLM requests) per keyframe")

    def spec(self, stage: str) -> PoolSpec:
        """The stage's pool; ValueError for a stage without one."""
        if stage not in STAGES:
            raise ValueError(f"no pool for stage {stage!r} (pools: {', '.join(STAGES)})")
        return getattr(self, stage)

    def demand(self) -> dict[str, float]:
        """What all pools hold at full size, summed (Ray's resource names)."""
        total: dict[str, float] = {}
        for stage in STAGES:
            spec = self.spec(stage)
            for k, v in spec.demand().items():
                total[k] = total.get(k, 0.0) + v * spec.size
        return total


# Sane numbers for three machines. cpu: all five pools fit on 2 CPUs (a laptop, CI). gpu1: one node with a GPU
# and ~16 CPUs, ~64 GB: two whisper actors share the GPU (one decodes while the other extracts features),
# keyframes and tesseract on the CPUs. gpu8: an 8-GPU node with ~128 CPUs (the NeMo Curator floors' node,
# SCALE.md): two whisper actors a GPU, decoding/OCR actors on the CPUs; leaves ~14 CPUs to Ray, the driver and
# ffmpeg children. Memory: 4 GB a whisper actor (large-v3's weights and audio on the host side), 1 GB a
# keyframes actor (decoded frames), 0.5 GB a tesseract actor. Downloads wait on the network, not a CPU: four
# yt-dlp actors a declared CPU (yt-dlp's own merge is an ffmpeg copy, no re-encode), each holding one
# download and one queued.
POOL_PRESETS: dict[str, PoolConfig] = {
    "cpu": PoolConfig(),
    "gpu1": PoolConfig(
        download=PoolSpec(size=8, num_cpus=0.25),
        probe=PoolSpec(size=2, num_cpus=0.25),
        asr=PoolSpec(size=2, num_cpus=1.0, num_gpus=0.5, memory_gb=4.0),
        keyframes=PoolSpec(size=6, num_cpus=1.0, memory_gb=1.0),
        ocr=PoolSpec(size=4, num_cpus=1.0, memory_gb=0.5),
    ),
    "gpu8": PoolConfig(
        download=PoolSpec(size=32, num_cpus=0.25),
        probe=PoolSpec(size=8, num_cpus=0.25),
        asr=PoolSpec(size=16, num_cpus=2.0, num_gpus=0.5, memory_gb=4.0),
        keyframes=PoolSpec(size=48, num_cpus=1.0, memory_gb=1.0),
        ocr=PoolSpec(size=32, num_cpus=1.0, memory_gb=0.5),
    ),
}


def pool_preset(name: str) -> PoolConfig:
    """A copy of the named preset (``cpu``, ``gpu1``, ``gpu8``); ValueError naming them for another name."""
    if name not in POOL_PRESETS:
        raise ValueError(f"unknown pool preset {name!r} ({', '.join(POOL_PRESETS)})")
    return POOL_PRESETS[name].model_copy(deep=True)


class PoolUnavailable(ToolError, RunStopped):
    """What the run cannot go on without: a pool no node can host (kind ``config``), a node that cannot
    write or read the media root (kind ``storage``). Ends the run with its one-line message."""

    def __reduce__(self):
        return (PoolUnavailable, (self.kind, self.message))


# -- the actor --------------------------------------------------------------------------------------------
class StageWorker:
    """One actor of a stage's pool (made a Ray actor class by ``RayPoolExecutor``).

    ``run(fn, args)`` calls the stage's pure task function in this actor's process, which lives as long as
    the actor: what the function loads and caches per process (the ASR model, ``pipeline.stages.asr``'s
    ``_transcriber``) is loaded by the actor's first task and held for the rest. A restarted actor is a
    new process and loads again.
    """

    def __init__(self, stage: str):
        self.stage = stage
        self.tasks = 0

    def run(self, fn: Callable[..., Any], args: tuple) -> Any:
        self.tasks += 1
        return fn(*args)

    def stats(self) -> dict:
        """Where this actor runs and what it loaded: ``node_id`` (Ray's hex id), ``pid``,
        ``cuda_visible_devices`` (as Ray set it; None without a GPU share), ``gpu_ids`` (Ray's),
        ``omp_num_threads`` (as Ray set it from the declared CPUs: whisper's CPU threads), ``tasks``
        (run by this process), ``asr_loads`` (whisper models this process loaded)."""
        import sys

        import ray

        ctx = ray.get_runtime_context()
        asr = sys.modules.get("pipeline.stages.asr")
        return {"stage": self.stage, "node_id": ctx.get_node_id(), "pid": os.getpid(),
                "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
                "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),  # Ray's: the declared CPUs (whisper's threads)
                "gpu_ids": [str(g) for g in ctx.get_accelerator_ids().get("GPU", [])],
                "tasks": self.tasks, "asr_loads": asr._transcriber.cache_info().misses if asr else 0}


# -- the executor -----------------------------------------------------------------------------------------
@dataclass(eq=False)
class _Slot:
    """One actor of a pool and the tasks it holds."""

    handle: Any = None
    in_flight: int = 0
    dead: bool = False  # Ray gave up on it: the dispatcher replaces it before giving it a task


@dataclass(eq=False)
class _Pool:
    stage: str
    spec: PoolSpec
    slots: list[_Slot]
    queue: deque = field(default_factory=deque)  # (future, fn, args) waiting for a free slot
    held: dict = field(default_factory=dict)  # ObjectRef hex -> (ObjectRef, future, slot): at an actor
    replaced: int = 0


class RayPoolExecutor:
    """The heavy stages' tasks on Ray actor pools, one pool per stage (``PoolConfig``).

    ``address=None`` starts a local Ray (no dashboard, worker output not forwarded) on first use with
    ``workers`` CPUs, or as many as the pools declare if more; a running Ray (a test's cluster) is used as
    it is; ``"auto"`` or ``"ray://host:10001"`` connects to a cluster whose nodes have the project. A pool's
    actors start on the stage's first ``submit``. ``close()`` kills the actors, and shuts Ray down only if
    this executor started it. Thread-safe: the flow's threads may submit at once.
    """

    def __init__(self, cfg: PoolConfig | None = None, address: str | None = None, workers: int = 2):
        self.cfg = cfg or PoolConfig()
        self.address = address
        self.workers = max(1, workers)
        self._started = False
        self._closed = False
        self._pools: dict[str, _Pool] = {}
        self._cond = threading.Condition()
        self._create_lock = threading.RLock()  # starting Ray and a pool's actors: once
        self._thread: threading.Thread | None = None
        self._settled: deque = deque()  # (future, result, exception) for the dispatcher to resolve
        self._actor_class = None

    # -- Ray ----------------------------------------------------------------------------------------------
    def _ray(self):
        """Ray, started or connected on first use; PoolUnavailable (kind ``config``) when it cannot be."""
        if self.address is None:
            local_auth_mode()  # before Ray is imported: it reads the mode once
        import ray

        with self._create_lock:
            if ray.is_initialized():
                return ray
            env = {"PYTHONPATH": os.pathsep.join([str(ROOT), "${PYTHONPATH}"])}  # Ray expands ${..} on the worker
            options: dict[str, Any] = {"ignore_reinit_error": True, "log_to_driver": False,
                                       "configure_logging": False, "runtime_env": {"env_vars": env}}
            if self.address is None:
                # declared CPUs are for placement: give the pools what they declare so none waits forever
                cpus = max(self.workers, math.ceil(self.cfg.demand().get("CPU", 0.0)))
                options.update(num_cpus=cpus, include_dashboard=False)
            log.info("starting Ray (%s)", self.address or "local")
            try:
                ray.init(self.address, **options)
            except Exception as exc:  # an address with no cluster behind it, a version mismatch, ...
                where = f"the Ray cluster at {self.address}" if self.address else "a local Ray"
                raise PoolUnavailable("config", f"cannot start {where}: {_one_line(exc)}") from exc
            self._started = True
            return ray

    def _pool(self, stage: str) -> _Pool:
        """The stage's pool, its actors started on first use; PoolUnavailable when no alive node can host
        one of its actors."""
        pool = self._pools.get(stage)
        if pool is not None:
            return pool
        spec = self.cfg.spec(stage)
        with self._create_lock:
            if stage in self._pools:
                return self._pools[stage]
            ray = self._ray()
            _check_placeable(ray, stage, spec)
            if self._actor_class is None:
                self._actor_class = ray.remote(StageWorker)
            options = spec.actor_options()
            slots = [_Slot(self._actor_class.options(**options).remote(stage)) for _ in range(spec.size)]
            pool = _Pool(stage, spec, slots)
            with self._cond:
                if self._closed:
                    raise RuntimeError("RayPoolExecutor is closed")
                self._pools[stage] = pool
                if self._thread is None:
                    self._thread = threading.Thread(target=self._dispatch, name="ray-pools", daemon=True)
                    self._thread.start()
            log.info("%s pool: %d actors, each %s", stage, spec.size, _resources(spec.demand()))
            return pool

    # -- the interface the flow calls ----------------------------------------------------------------------
    def submit(self, stage: str, fn: Callable[..., Any], args: tuple) -> Future:
        """``fn(*args)`` on an actor of ``stage``'s pool; its Future holds the result, or the task's own
        exception (a ToolError keeps its kind), or a ToolError ``worker_lost`` when the actor or its node
        died and Ray's retries (``max_task_retries``) are spent. ``fn`` and ``args`` must pickle (a
        module-level function such as ``pipeline.stages.asr.asr_task`` goes by name; the actors import
        it). Beyond ``capacity(stage)`` the task waits here. Raises ValueError for an unknown stage,
        PoolUnavailable when Ray cannot start or no node can host the pool."""
        pool = self._pool(stage)
        future: Future = Future()
        with self._cond:
            if self._closed:
                raise RuntimeError("RayPoolExecutor is closed")
            pool.queue.append((future, fn, tuple(args)))
            self._cond.notify_all()
        return future

    def capacity(self, stage: str) -> int:
        """Tasks the stage's pool takes at once: actors x max in flight per actor. The flow keeps at most
        this many of the stage's tasks submitted and not done."""
        spec = self.cfg.spec(stage)
        return spec.size * spec.max_in_flight

    def pending(self, stage: str) -> int:
        """The stage's tasks submitted and not done (at an actor or waiting here)."""
        pool = self._pools.get(stage)
        if pool is None:
            return 0
        with self._cond:
            return sum(s.in_flight for s in pool.slots) + len(pool.queue)

    def in_flight(self, stage: str) -> int:
        """The stage's tasks at its actors (running or queued there), at most ``capacity(stage)``."""
        pool = self._pools.get(stage)
        if pool is None:
            return 0
        with self._cond:
            return sum(s.in_flight for s in pool.slots)

    def stats(self, stage: str) -> list[dict]:
        """``StageWorker.stats()`` of each live actor of the stage's pool (empty before its first task)."""
        pool = self._pools.get(stage)
        if pool is None:
            return []
        import ray

        with self._cond:
            handles = [s.handle for s in pool.slots if s.handle is not None and not s.dead]
        return ray.get([h.stats.remote() for h in handles])

    def start(self) -> None:
        """Start (or join) Ray now, before the first task: a preflight asks its nodes
        (pipeline.preflight.check_nodes). Raises PoolUnavailable (kind config) when Ray cannot start."""
        self._ray()

    def close(self) -> None:
        """Cancels what waits here, fails what actors hold (ToolError ``worker_lost``: the executor closed),
        kills the actors, stops the dispatcher, and shuts Ray down if this executor started it."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            self._cond.notify_all()
        if self._thread is not None:  # it finishes the sends it has begun
            self._thread.join(timeout=30)
        with self._cond:
            waiting = [item[0] for pool in self._pools.values() for item in pool.queue]
            held = [(pool.stage, future) for pool in self._pools.values() for _, future, _ in pool.held.values()]
            settled, self._settled = self._settled, deque()
            for pool in self._pools.values():
                pool.queue.clear()
                pool.held.clear()
            handles = [s.handle for pool in self._pools.values() for s in pool.slots if s.handle is not None]
        for future in waiting:
            future.cancel()
        _resolve(settled)
        _resolve((future, None, ToolError(WORKER_LOST, f"{stage} task abandoned: the executor closed"))
                 for stage, future in held)
        import ray

        if ray.is_initialized():
            for handle in handles:
                try:
                    ray.kill(handle)
                except Exception as exc:  # already gone with its node
                    log.debug("kill actor: %s", exc)
        if self._started:
            ray.shutdown()
            self._started = False

    # -- dispatch ----------------------------------------------------------------------------------------
    def _dispatch(self) -> None:
        """The one thread that resolves finished tasks' futures (so the caller's callbacks never run on Ray's
        own threads), hands queued tasks to actors with room (least loaded first) and replaces dead actors;
        woken by submits and by Ray's callbacks."""
        while True:
            with self._cond:
                while not (self._closed or self._settled or any(self._ready(p) for p in self._pools.values())):
                    self._cond.wait()
                if self._closed:
                    return
                settled, self._settled = self._settled, deque()
                picks = self._picks()
            _resolve(settled)
            for pick in picks:
                self._send(*pick)

    @staticmethod
    def _ready(pool: _Pool) -> bool:
        """Under the lock: whether a queued task has a slot (or must fail: every actor is lost)."""
        live = _live(pool)
        return bool(pool.queue) and (not live or min(s.in_flight for s in live) < pool.spec.max_in_flight)

    def _picks(self) -> list[tuple]:
        """Under the lock: the queued tasks that have a slot now, each slot's count taken."""
        picks = []
        for pool in self._pools.values():
            while pool.queue:
                live = _live(pool)
                if not live:  # Ray gave up on every actor, and on their replacements
                    future, _, _ = pool.queue.popleft()
                    if future.set_running_or_notify_cancel():
                        self._settled.append((future, None, ToolError(
                            WORKER_LOST, f"the {pool.stage} pool lost all its actors ({pool.replaced} replaced)")))
                    continue
                slot = min(live, key=lambda s: (s.in_flight, s.dead))
                if slot.in_flight >= pool.spec.max_in_flight:
                    break
                future, fn, args = pool.queue.popleft()
                if not future.set_running_or_notify_cancel():
                    continue  # cancelled while it waited
                replace = slot.dead
                if replace:
                    slot.dead = False
                    pool.replaced += 1
                slot.in_flight += 1
                picks.append((pool, slot, replace, future, fn, args))
        return picks

    def _send(self, pool: _Pool, slot: _Slot, replace: bool, future: Future, fn, args) -> None:
        """On the dispatcher thread: the task to its actor (a new one first if the slot's died)."""
        try:
            if replace:
                log.warning("%s pool: replacing a dead actor (%d so far)", pool.stage, pool.replaced)
                slot.handle = self._actor_class.options(**pool.spec.actor_options()).remote(pool.stage)
            ref = slot.handle.run.remote(fn, args)
        except Exception as exc:  # Ray is down or the handle is unusable
            with self._cond:
                slot.in_flight -= 1
            _resolve([(future, None, _worker_lost(pool.stage, exc))])
            return
        key = ref.hex()
        with self._cond:
            pool.held[key] = (ref, future, slot)  # the ref is held until its result is read
        ref.future().add_done_callback(lambda done: self._settle(pool, key, done))

    def _settle(self, pool: _Pool, key: str, done: Future) -> None:
        """On Ray's callback thread: the task's outcome, queued for the dispatcher (no Ray calls here, and
        none of the caller's callbacks)."""
        import ray.exceptions as rex

        dead, result, exc = False, None, None
        try:
            result = done.result()
        except rex.RayTaskError as err:  # the task's own exception, not Ray's wrapper around it
            exc = _cause(err)
        except rex.RayError as err:  # the actor or its node died and Ray gave up, out of memory, ...
            dead = isinstance(err, rex.ActorDiedError)
            exc = _worker_lost(pool.stage, err)
        except BaseException as err:  # cancelled
            exc = err
        with self._cond:
            held = pool.held.pop(key, None)
            if held is None:  # the executor closed: close() resolved it
                return
            _, future, slot = held
            slot.in_flight -= 1
            if dead:
                slot.dead = True
            self._settled.append((future, result, exc))
            self._cond.notify_all()


def local_auth_mode() -> None:
    """Before a local Ray is started: ``RAY_AUTH_MODE=token`` unless the user set a mode. Ray 2.60 turns token
    authentication on for a new local cluster when the variable is unset, and says so in a warning line on
    stderr ("Token authentication is enabled for this Ray cluster. Set RAY_AUTH_MODE=disabled to opt out");
    an explicit mode is respected "without warning" (ray._private.authentication.authentication_token_setup;
    docs.ray.io "Ray token authentication": the mode is set through the environment only). Naming the mode
    Ray would pick keeps its behaviour (a token in ~/.ray/auth_token, made by Ray if missing) without the line.

    Ray reads the mode once, when its core module is imported: so this sets it only while Ray is not yet
    imported in this process (setting it later would give the driver and the cluster's processes different
    modes, and the cluster fails to start); then, and when ``RAY_ADDRESS`` names a running cluster (whose mode
    is its own), nothing is changed and Ray's line may show."""
    import sys

    if "RAY_AUTH_MODE" in os.environ or os.environ.get("RAY_ADDRESS") or "ray._raylet" in sys.modules:
        return
    os.environ["RAY_AUTH_MODE"] = "token"


def _live(pool: _Pool) -> list[_Slot]:
    """The pool's slots that have an actor or may get a new one."""
    return [s for s in pool.slots if not (s.dead and pool.replaced >= _max_replacements(pool.spec))]


def _resolve(outcomes) -> None:
    """Sets each (future, result, exception); a future already resolved (closed meanwhile) is left."""
    for future, result, exc in outcomes:
        if future.done():
            continue
        if exc is None:
            future.set_result(result)
        else:
            future.set_exception(exc)


def _max_replacements(spec: PoolSpec) -> int:
    """Dead actors a pool replaces before it fails its tasks (each replacement has its own restarts)."""
    return 2 * spec.size + 2


def _cause(exc: BaseException) -> BaseException:
    """The exception the task raised, not Ray's wrapper around it."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, BaseException):
        return cause
    return exc.as_instanceof_cause()


def _worker_lost(stage: str, exc: BaseException) -> ToolError:
    text = (str(exc).strip().splitlines() or [""])[0][:300]
    return ToolError(WORKER_LOST, f"{stage} worker lost ({type(exc).__name__}): {text}")


def _alive_nodes(ray) -> list[dict]:
    return [n for n in ray.nodes() if n.get("Alive")]


def _check_placeable(ray, stage: str, spec: PoolSpec) -> None:
    """PoolUnavailable unless some alive node has (in total) all one actor of the pool declares."""
    need = spec.demand()
    nodes = _alive_nodes(ray)
    if any(all(n["Resources"].get(k, 0.0) >= v for k, v in need.items()) for n in nodes):
        return
    shown = [{k: v for k, v in n["Resources"].items() if not k.startswith(("node:", "object_store"))} for n in nodes]
    have = "; ".join(_resources(r) for r in shown)
    raise PoolUnavailable("config", f"no node of the Ray cluster can host a {stage} actor: each needs "
                                    f"{_resources(need)}; nodes have: {have or 'none alive'}")


def _resources(resources: dict[str, float]) -> str:
    """``CPU=1, GPU=0.5, memory=4GB, asr_node=1`` (Ray's memory is in bytes)."""
    return ", ".join(f"{k}={v / GB:.3g}GB" if k == "memory" else f"{k}={v:g}" for k, v in sorted(resources.items()))


def _one_line(exc: BaseException) -> str:
    """An exception as one line of at most 300 characters (its message's first line)."""
    text = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    return (str(text).splitlines() or [type(exc).__name__])[0][:300]
