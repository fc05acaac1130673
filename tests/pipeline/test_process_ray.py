"""`process` on a Ray cluster of several nodes on this machine (ray.cluster_utils.Cluster): the flow's heavy
stages go to actor pools (pipeline/pools.py) placed by their resources; the samples are those of the local
executor. A worker node removed mid-run: the run finishes on the other node, nothing lost or done twice."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from pipeline.config import PipelineConfig
from pipeline.pools import PoolConfig, PoolSpec
from pipeline.runner import Runner
from store import open_store
from tests.pipeline.test_pools import _Cluster

ROOT = Path(__file__).resolve().parents[2]
LESSONS = ROOT / "examples/lessons"


def _samples(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def local(tmp_path_factory):
    """The lessons through the local executor: what every placement must give."""
    work = tmp_path_factory.mktemp("local")
    store = open_store(work / "runs.duckdb")
    result = Runner(store, PipelineConfig(), work / "out").run([LESSONS])
    store.close()
    assert result.samples == 2
    return _samples(work / "out")


def _ray_runner(tmp_path: Path, pools: PoolConfig) -> tuple[Runner, object]:
    store = open_store(tmp_path / "ray.duckdb")
    runner = Runner(store, PipelineConfig(executor="ray", pools=pools), tmp_path / "out")
    close = runner.close
    runner.close = lambda: None  # keep the pools up after the run, to read where their actors ran
    return runner, close


@pytest.mark.slow
def test_asr_pinned_to_the_second_node_gives_the_local_samples(local, tmp_path):
    c = _Cluster({"num_cpus": 2}, {"num_cpus": 2, "resources": {"asr_node": 1}})
    try:
        runner, close = _ray_runner(tmp_path, PoolConfig(asr=PoolSpec(size=1, num_cpus=1,
                                                                      resources={"asr_node": 1})))
        try:
            result = runner.run([LESSONS])
            (asr,) = runner._exec.stats("asr")
            visual = runner._exec.stats("keyframes") + runner._exec.stats("ocr")
            head, asr_node = c.cluster.head_node.node_id, c.workers[0].node_id
        finally:
            close()
            runner.store.close()
    finally:
        c.close()
    assert asr["node_id"] == asr_node != head
    assert asr["asr_loads"] == 1 and asr["tasks"] == 2  # one model load, both videos
    assert sum(a["tasks"] for a in visual) == 4
    assert result.stages_run["asr"] == 2 and result.samples == 2
    assert _samples(tmp_path / "out") == local


@pytest.mark.slow
def test_a_worker_node_removed_mid_run_the_run_finishes_on_the_other(local, tmp_path):
    """The head hosts no actor (0 CPUs); two worker nodes. Once the ASR actor holds its first video, its node
    is removed: Ray restarts the actor on the other node and retries the task; the run completes with the
    local samples, each video transcribed once in the store."""
    c = _Cluster({"num_cpus": 0}, {"num_cpus": 2}, {"num_cpus": 2})
    try:
        runner, close = _ray_runner(tmp_path, PoolConfig())
        out: dict = {}
        thread = threading.Thread(target=lambda: out.setdefault("result", runner.run([LESSONS])))
        thread.start()
        victim = None
        deadline = time.monotonic() + 300
        while victim is None and time.monotonic() < deadline and thread.is_alive():
            time.sleep(0.2)
            pools = getattr(runner, "_exec", None)
            if pools is not None and pools.in_flight("asr"):
                node = pools.stats("asr")[0]["node_id"]
                victim = next(w for w in c.workers if w.node_id == node)
        assert victim is not None, "the ASR pool never held a video"
        c.cluster.remove_node(victim)
        thread.join(600)
        assert not thread.is_alive()
        after = runner._exec.stats("asr")
        survivor = next(w for w in c.workers if w is not victim).node_id
        close()
        transcripts = runner.store.scalar("SELECT count(*) FROM transcripts")
        runner.store.close()
    finally:
        c.close()
    result = out["result"]
    assert [a["node_id"] for a in after] == [survivor]  # the ASR actor was restarted there
    assert result.stages_run["asr"] == 2 and transcripts == 2  # nothing done twice in the store
    assert [v.status for v in result.videos] == ["kept", "kept"]  # nothing lost
    assert _samples(tmp_path / "out") == local
