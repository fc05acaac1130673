"""The Ray actor pools (pipeline.pools): their config and presets; on real Ray clusters started on this
machine (ray.cluster_utils.Cluster: several raylets, one GCS), an ASR pool pinned to a node by a custom
resource transcribes as a local call does; GPU shares give actors distinct CUDA_VISIBLE_DEVICES and one
model load each; a node removed mid-run loses no task and does none twice; a crashing actor fails its task
as worker_lost and is replaced; the preflight checks the media root from every node."""

from __future__ import annotations

import os
import subprocess
import time
from collections import Counter

import pytest

from pipeline.pools import (
    GB,
    POOL_PRESETS,
    WORKER_LOST,
    PoolConfig,
    PoolSpec,
    PoolUnavailable,
    RayPoolExecutor,
    pool_preset,
)
from pipeline.preflight import PreflightError, check_nodes
from pipeline.stages.asr import asr_task
from tests.pipeline._tasks import exit_process, square, square_where
from tools.asr import AsrOptions
from tools.errors import RunStopped, ToolError

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SENTENCE = "Atoms are made of protons, neutrons and electrons. The nucleus holds the protons."


# -- config (no Ray) ----------------------------------------------------------------------------------------
def test_presets_fit_the_machines_they_are_for():
    """Each preset's pools, all at full size, fit the machine it names (else the last pools' actors wait
    forever for what the first ones hold)."""
    machines = {"cpu": {"CPU": 2, "GPU": 0, "memory": 4 * GB}, "gpu1": {"CPU": 16, "GPU": 1, "memory": 64 * GB},
                "gpu8": {"CPU": 128, "GPU": 8, "memory": 512 * GB}}
    for name, machine in machines.items():
        demand = pool_preset(name).demand()
        assert all(demand.get(k, 0) <= v for k, v in machine.items()), (name, demand)
    assert pool_preset("cpu") == PoolConfig()  # the default
    assert pool_preset("gpu1").asr.num_gpus > 0 and pool_preset("gpu8").asr.size >= 8  # ASR on the GPUs
    assert pool_preset("cpu").demand().get("GPU", 0) == 0
    assert set(POOL_PRESETS) == {"cpu", "gpu1", "gpu8"}
    with pytest.raises(ValueError, match="cpu, gpu1, gpu8"):
        pool_preset("tpu")
    copy = pool_preset("gpu1")
    copy.asr.size = 99
    assert POOL_PRESETS["gpu1"].asr.size == 2  # a copy, not the preset


def test_pool_spec_is_what_ray_is_told_and_capacity_is_actors_times_in_flight():
    spec = PoolSpec(size=3, num_cpus=0.5, num_gpus=0.25, resources={"asr_node": 1}, max_in_flight=4,
                    max_restarts=5, max_task_retries=-1)
    assert spec.actor_options() == {"num_cpus": 0.5, "num_gpus": 0.25, "resources": {"asr_node": 1},
                                    "max_restarts": 5, "max_task_retries": -1}
    assert spec.demand() == {"CPU": 0.5, "GPU": 0.25, "asr_node": 1}
    assert PoolSpec(memory_gb=2).actor_options()["memory"] == 2 * GB == PoolSpec(memory_gb=2).demand()["memory"]
    cfg = PoolConfig(asr=spec)
    assert cfg.demand()["GPU"] == 0.75 and cfg.demand()["asr_node"] == 3
    executor = RayPoolExecutor(cfg)  # starts nothing until a submit
    assert executor.capacity("asr") == 12 and executor.capacity("probe") == 2
    assert executor.pending("asr") == 0
    with pytest.raises(ValueError, match="download, probe, asr, keyframes, ocr"):
        executor.capacity("clips")
    with pytest.raises(ValueError, match="whole number"):
        PoolSpec(num_gpus=1.5)
    with pytest.raises(ValueError):
        PoolConfig.model_validate({"asr": {"size": 0}})
    with pytest.raises(ValueError):
        PoolConfig.model_validate({"asr": {"gpus": 1}})  # a typo is an error, not a default
    executor.close()


def test_the_flow_holds_no_more_downloads_than_the_download_pool_takes(tmp_path):
    """Backpressure for the build's downloads on Ray: the ``download`` lane (DownloadStage.needs) is bounded by
    the download pool's capacity (actors x in flight), however many videos are in flight. (No Ray is started:
    the pools' capacities are config; the stage here holds its lane as a download would.)"""
    import threading
    import time

    from agents.stages import DownloadStage
    from pipeline.config import PipelineConfig
    from pipeline.records import Video
    from pipeline.runner import Runner
    from pipeline.stage import Stage
    from store import open_store

    now, peak, lock = [0], [0], threading.Lock()

    class Holds(Stage):
        name, needs = "download", DownloadStage.needs

        def step(self, video):
            with lock:
                now[0] += 1
                peak[0] = max(peak[0], now[0])
            time.sleep(0.05)
            with lock:
                now[0] -= 1
            return video

    store = open_store(tmp_path / "lane.duckdb")
    try:
        pools = PoolConfig(download=PoolSpec(size=2, num_cpus=0, max_in_flight=1))
        runner = Runner(store, PipelineConfig(executor="ray", pools=pools), tmp_path / "out")
        flow = runner.flow([Holds(runner.ctx)], workers=12)
        result = flow.run([Video(video_id=f"v{i}", source=f"http://x/{i}") for i in range(12)])
        runner.close()
    finally:
        store.close()
    assert DownloadStage.needs.lane == "download"
    assert len(result.passed) == 12 and peak[0] == 2  # the pool's capacity: 2 actors x 1 in flight


# -- Ray ------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def speech(tmp_path_factory):
    """A 5-second spoken sentence (espeak-ng, 22 kHz wav)."""
    wav = tmp_path_factory.mktemp("speech") / "speech.wav"
    subprocess.run(["espeak-ng", "-v", "en-us", "-s", "160", "-w", str(wav), SENTENCE], check=True)
    return str(wav)


def _asr_args(path: str) -> tuple:
    return path, AsrOptions(), ("en",), 1.0


def _transcript(tr: dict) -> dict:
    """What a transcript says (its timing, ``seconds``, differs run to run)."""
    return {k: v for k, v in tr.items() if k != "seconds"}


class _Cluster:
    """A Ray cluster of raylets on this machine, and the driver connected to it (workers import this
    checkout, as the executor's own local Ray does)."""

    def __init__(self, head: dict, *workers: dict):
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        import ray
        from ray.cluster_utils import Cluster

        assert not ray.is_initialized()
        self.ray = ray
        self.cluster = Cluster(initialize_head=True, head_node_args={"include_dashboard": False, **head})
        self.workers = [self.cluster.add_node(**w) for w in workers]
        self.cluster.wait_for_nodes()
        ray.init(address=self.cluster.address, log_to_driver=False,
                 runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join([ROOT, "${PYTHONPATH}"])}})

    def close(self) -> None:
        self.ray.shutdown()
        self.cluster.shutdown()


@pytest.fixture(scope="class")
def two_nodes():
    """Head (1 CPU) + a worker node that has the custom resource ``asr_node``; gone after the class's tests
    (the tests after them start clusters of their own)."""
    c = _Cluster({"num_cpus": 1}, {"num_cpus": 1, "resources": {"asr_node": 1}})
    yield c
    c.close()


@pytest.mark.slow
class TestTwoNodes:

    def test_asr_pool_pinned_to_the_asr_node_transcribes_as_a_local_call(self, two_nodes, speech):
        cfg = PoolConfig(asr=PoolSpec(size=1, num_cpus=1, resources={"asr_node": 1}))
        executor = RayPoolExecutor(cfg)
        try:
            remote = executor.submit("asr", asr_task, _asr_args(speech)).result(timeout=300)
            (actor,) = executor.stats("asr")
        finally:
            executor.close()
        asr_node = two_nodes.workers[0].node_id
        assert actor["node_id"] == asr_node != two_nodes.cluster.head_node.node_id
        assert actor["pid"] != os.getpid() and actor["asr_loads"] == 1
        local = asr_task(*_asr_args(speech))
        assert _transcript(remote) == _transcript(local)
        assert "protons" in " ".join(s["text"] for s in remote["segments"])
        assert two_nodes.ray.is_initialized()  # the executor leaves a Ray it did not start

    def test_preflight_reaches_every_node(self, two_nodes, tmp_path):
        nodes = check_nodes(tmp_path / "media")
        assert sorted(nodes) == sorted(n.node_id for n in two_nodes.cluster.list_all_nodes())
        assert not any(p.is_file() for p in (tmp_path / "media").rglob("*"))

    def test_preflight_names_the_node_that_cannot_write(self, two_nodes, tmp_path):
        blocker = tmp_path / "media"
        blocker.write_text("a file where the media root should be")
        with pytest.raises(PreflightError) as err:
            check_nodes(blocker)
        message = str(err.value)
        assert "\n" not in message and "cannot write" in message and str(blocker) in message
        named = [n.node_id for n in two_nodes.cluster.list_all_nodes() if n.node_id[:12] in message]
        assert len(named) == 1  # names one node (and says how many more)
        assert message.endswith("(and 1 more node)")

    def test_a_pool_no_node_can_host_stops_the_run_in_one_line(self, two_nodes):
        executor = RayPoolExecutor(PoolConfig(ocr=PoolSpec(size=1, num_cpus=1, resources={"ocr_node": 1})))
        try:
            with pytest.raises(PoolUnavailable) as err:
                executor.submit("ocr", square, (2,))
        finally:
            executor.close()
        assert err.value.kind == "config" and isinstance(err.value, RunStopped)
        assert "no node of the Ray cluster can host a ocr actor" in str(err.value)
        assert "ocr_node=1" in str(err.value) and "\n" not in str(err.value)
        assert "memory=" in str(err.value).split("nodes have:")[1]  # what the nodes have, in GB


@pytest.mark.slow
def test_gpu_shares_give_each_asr_actor_its_own_device_and_one_model_load(speech):
    """A node that declares 2 GPUs (this machine has none: Ray assigns the ids all the same); two ASR
    actors of one GPU each: distinct CUDA_VISIBLE_DEVICES, and four tasks load the model once per actor."""
    c = _Cluster({"num_cpus": 2, "num_gpus": 2})
    executor = RayPoolExecutor(PoolConfig(asr=PoolSpec(size=2, num_cpus=1, num_gpus=1)))
    try:
        assert executor.capacity("asr") == 4
        futures = [executor.submit("asr", asr_task, _asr_args(speech)) for _ in range(4)]
        results = [f.result(timeout=600) for f in futures]
        actors = executor.stats("asr")
    finally:
        executor.close()
        c.close()
    assert len({str(_transcript(r)) for r in results}) == 1
    assert sorted(a["cuda_visible_devices"] for a in actors) == ["0", "1"]
    assert sorted(tuple(a["gpu_ids"]) for a in actors) == [("0",), ("1",)]
    assert [a["asr_loads"] for a in actors] == [1, 1]
    assert [a["omp_num_threads"] for a in actors] == ["1", "1"]  # whisper's threads: the actor's one CPU
    assert sum(a["tasks"] for a in actors) == 4 and all(a["tasks"] == 2 for a in actors)
    assert len({a["pid"] for a in actors}) == 2


@pytest.mark.slow
def test_a_node_removed_mid_run_loses_no_task_and_does_none_twice():
    """Two worker nodes of 2 CPUs (the head has none); a pool of two 1-CPU actors. Once the first results
    are in, the node of one actor (it holds tasks) is removed: Ray restarts that actor on the other node and
    retries the tasks it held; every future gets its one result."""
    c = _Cluster({"num_cpus": 0}, {"num_cpus": 2}, {"num_cpus": 2})
    executor = RayPoolExecutor(PoolConfig(probe=PoolSpec(size=2, num_cpus=1, max_in_flight=2, max_restarts=2,
                                                         max_task_retries=3)))
    try:
        futures = [executor.submit("probe", square_where, (x, 0.3)) for x in range(16)]
        first = futures[0].result(timeout=120)
        before = executor.stats("probe")
        victim = next(w for w in c.workers if w.node_id == first[1])
        survivor = next(w for w in c.workers if w is not victim).node_id
        assert executor.pending("probe") > 8  # most of the run is still to come
        c.cluster.remove_node(victim)
        late = [i for i, f in enumerate(futures) if not f.done()]  # to run on the survivor (or retried there)
        results = [f.result(timeout=180) for f in futures]
        after = executor.stats("probe")
    finally:
        executor.close()
        c.close()
    assert {a["node_id"] for a in before} == {w.node_id for w in c.workers}  # one actor a node at first
    assert Counter(r[0] for r in results) == Counter(x * x for x in range(16))  # all there, none twice
    assert [a["node_id"] for a in after] == [survivor, survivor]  # the lost actor was restarted there
    assert len(late) >= 4 and all(results[i][1] == survivor for i in late)


@pytest.mark.slow
def test_a_crashing_actor_fails_its_task_as_worker_lost_and_is_replaced():
    """A local Ray started by the executor: a task that kills its actor's process each time is retried
    (max_task_retries) on the restarted actor, then fails as worker_lost; the pool replaces the dead actor
    and the next tasks run; a task's own ToolError keeps its kind."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray

    assert not ray.is_initialized()
    executor = RayPoolExecutor(PoolConfig(keyframes=PoolSpec(size=1, num_cpus=1, max_restarts=1,
                                                             max_task_retries=1)), workers=2)
    try:
        assert executor.submit("keyframes", square, (3,)).result(timeout=120)[0] == 9
        pid = executor.stats("keyframes")[0]["pid"]
        crash = executor.submit("keyframes", exit_process, (1,))
        with pytest.raises(ToolError) as err:
            crash.result(timeout=120)
        assert err.value.kind == WORKER_LOST and "keyframes worker lost" in str(err.value)
        later = [executor.submit("keyframes", square, (x,)) for x in (4, -1)]
        assert later[0].result(timeout=120)[0] == 16
        bad = later[1].exception(timeout=120)
        assert type(bad) is ToolError and (bad.kind, bad.message) == ("corrupt", "bad input -1")
        (actor,) = executor.stats("keyframes")
        assert actor["pid"] not in (pid, os.getpid())
        slow = [executor.submit("keyframes", square, (x, 5.0)) for x in range(4)]  # capacity 2: two wait here
        deadline = time.monotonic() + 30
        while executor.in_flight("keyframes") < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert (executor.in_flight("keyframes"), executor.pending("keyframes")) == (2, 4)
    finally:
        executor.close()
    assert not ray.is_initialized()  # it started Ray, so it shut it down
    # close() leaves no future hanging: those at the actor fail as worker_lost, those waiting are cancelled
    assert all(f.done() for f in slow)
    assert [f.cancelled() for f in slow] == [False, False, True, True]
    assert all(f.exception().kind == WORKER_LOST for f in slow[:2])
