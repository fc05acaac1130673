"""The build with ``--executor ray`` on a two-node Ray cluster on this machine (ray.cluster_utils.Cluster): the
download pool, pinned by a custom resource to the second node, fetches the found videos there with yt-dlp
from an HTTP server on 127.0.0.1 into the media root; the driver registers them from the task's record
(never reading the file for its sha256) and a worker of the probe pool probes it; the build gives the local
executor's samples; a 404 stays that video's ``download_failed`` with its kind and a 503 a failure
(``download: http-5xx``), the same as on the local executor."""

from __future__ import annotations

import functools
import http.server
import json
import threading
from pathlib import Path

import pytest

import pipeline.runner
from agents.build import BuildSpec, run_build
from agents.config import AgentConfig, LLMConfig, TaxonomySize
from pipeline.config import PipelineConfig
from pipeline.pools import PoolConfig, PoolSpec
from store import open_store
from tests.agents.scripted import ScriptedChatModel, models_for, physics_script, points
from tests.pipeline.test_pools import _Cluster

pytestmark = pytest.mark.slow  # two real builds (ASR, keyframes, OCR of a 35 s lesson) and a Ray cluster

LESSONS = Path(__file__).resolve().parents[1] / "data" / "lessons"
ATOMS = "Atoms and molecules"


class _Handler(http.server.SimpleHTTPRequestHandler):
    """Serves the lessons; paths under /busy/ answer 503 (a transient fault)."""

    def do_GET(self):
        if self.path.startswith("/busy/"):
            self.send_error(503, "Service Unavailable")
            return
        super().do_GET()

    def log_message(self, *args):
        pass


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        pass  # yt-dlp's generic extractor reads a little and hangs up: a broken pipe here is expected


@pytest.fixture(scope="module")
def urls(tmp_path_factory):
    """A URL list (the ``urls:FILE`` source): the atoms lesson served over HTTP, a URL that answers 404 and one
    that answers 503."""
    httpd = _Server(("127.0.0.1", 0), functools.partial(_Handler, directory=str(LESSONS)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{httpd.server_address[1]}"
    listing = tmp_path_factory.mktemp("urls") / "urls.txt"
    listing.write_text(f"{base}/chemistry_atoms.mp4 Atoms and molecules, a lesson\n"
                       f"{base}/gone_atoms.mp4 Atoms and molecules, a lost lesson\n"
                       f"{base}/busy/atoms.mp4 Atoms and molecules, a busy server\n")
    yield listing
    httpd.shutdown()
    httpd.server_close()


def _build(tmp_path: Path, listing: Path, pipe: PipelineConfig) -> tuple[dict, dict, list[dict]]:
    """One build over the URL list: (its result, candidates by title, its samples)."""
    script = physics_script(Taxonomy=lambda t: {"subjects": [{"name": "Physics", "courses": [{
        "name": "Mechanics", "subcourses": [{"name": "Forces", "points": points(ATOMS)}]}]}]},
        Queries=lambda t: {"queries": ["atoms molecules"]})
    agent = AgentConfig(llm=LLMConfig(model="scripted-build-ray"), sources=[f"urls:{listing}"],
                        library_points=False, max_rounds=1, min_relevance=0.0, per_point=3, download_retries=0,
                        taxonomy=TaxonomySize(courses=1, subcourses=1, points=1))
    store = open_store(tmp_path / "build.duckdb")
    try:
        result = run_build(store, BuildSpec("build a physics textbook", agent, pipe, tmp_path / "out"),
                           models=models_for(ScriptedChatModel(script=script)))
        cands = {c["metadata"]["title"]: c for c in store.candidates(result["run_id"])}
    finally:
        store.close()
    samples = [json.loads(line) for line in (tmp_path / "out" / "samples.jsonl").read_text().splitlines()]
    return result, cands, samples


def test_the_download_pool_on_the_second_node_gives_the_local_samples(urls, tmp_path, monkeypatch):
    local, local_cands, local_samples = _build(tmp_path / "local", urls, PipelineConfig())
    assert local["samples"] == len(local_samples) > 0

    read_by_driver: list[str] = []
    content = pipeline.runner._content

    def spy(f):  # the driver hashing a file for its registration: what it must not do with a worker's download
        read_by_driver.append(str(f))
        return content(f)

    stats: dict = {}
    close = pipeline.runner.Runner.close

    def close_after_reading_the_pools(self):  # where the download actor ran, before the pools go
        if self._exec is not None and hasattr(self._exec, "stats"):
            stats["download"], stats["probe"] = self._exec.stats("download"), self._exec.stats("probe")
        close(self)

    monkeypatch.setattr(pipeline.runner, "_content", spy)
    monkeypatch.setattr(pipeline.runner.Runner, "close", close_after_reading_the_pools)
    c = _Cluster({"num_cpus": 2}, {"num_cpus": 1, "resources": {"download_node": 1}})
    try:
        pools = PoolConfig(download=PoolSpec(size=1, num_cpus=0, resources={"download_node": 1}))
        ray_result, cands, samples = _build(tmp_path / "ray", urls, PipelineConfig(executor="ray", pools=pools))
        head, download_node = c.cluster.head_node.node_id, c.workers[0].node_id
    finally:
        c.close()

    (actor,) = stats["download"]
    assert actor["node_id"] == download_node != head  # downloaded on the second node
    assert actor["tasks"] == 3  # the lesson, the 404 and the 503
    assert sum(a["tasks"] for a in stats["probe"]) == 1  # the download probed by a worker, not the driver
    kept = cands["Atoms and molecules, a lesson"]
    media = tmp_path / "ray" / "build_media" / "downloads"
    assert Path(kept["path"]) == media / f"{kept['video_id']}.mp4" and Path(kept["path"]).is_file()
    assert kept["status"] == "accepted"
    assert read_by_driver == []  # registered from the task's sha256, not by reading the file
    gone = cands["Atoms and molecules, a lost lesson"]
    assert (gone["status"], gone["reason"]) == ("download_failed", "not-found")  # the video cannot be had
    busy = cands["Atoms and molecules, a busy server"]
    assert (busy["status"], busy["reason"]) == ("error", "download: http-5xx")  # a failure: the rerun retries it
    assert {t: (c["status"], c["reason"]) for t, c in local_cands.items()} == \
        {t: (c["status"], c["reason"]) for t, c in cands.items()}
    assert samples == local_samples and ray_result["samples"] == local["samples"]
