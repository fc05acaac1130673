"""What a `textbook build` costs: LLM calls and tokens per accepted video, YouTube search units per
accepted candidate, and what a rerun of the same build pays (target: nothing).

- embedded: the real llama.cpp server with the offline SmolLM2-135M, the local source on two
  narrated lessons, the whole graph end to end (ASR, keyframes, OCR, judges, polish, clip judge).
- youtube: scripted models and the YouTube Data API on recorded responses (tests/data/youtube),
  replayed by endpoint with fresh video ids per search; downloads are cut (offline), so this
  measures the search side: units per query and per metadata-accepted candidate.
Each build runs twice on the same store: the rerun is measured against the first run.
    python bench/bench_agent.py
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import parse_qs, urlparse

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from googleapiclient.discovery import build as build_service  # noqa: E402
from googleapiclient.http import HttpMockSequence  # noqa: E402

import agents.build  # noqa: E402
import tools.download  # noqa: E402
from agents.build import BuildSpec, StoreSearchCache, run_build  # noqa: E402
from agents.config import AgentConfig, LLMConfig, TaxonomySize  # noqa: E402
from agents.local_llm import MODEL_ALIAS, embedded_server  # noqa: E402
from pipeline.config import PipelineConfig  # noqa: E402
from store.db import open_store  # noqa: E402
from tests.agents.scripted import ScriptedChatModel, models_for, physics_script  # noqa: E402
from tools.search import YouTubeSource  # noqa: E402

GOAL = "build a physics textbook"
LESSONS = ROOT / "tests/data/lessons"
YT = ROOT / "tests/data/youtube"
SMALL = ("physics_newton", "chemistry_atoms")
FAKE_KEY = "AIzaSyBENCH-not-a-real-key-000000000000"


class YouTubeReplay(HttpMockSequence):
    """The recorded API responses, answered by endpoint so any number of searches can run.

    Search n gets the recorded hits with ids ending in n (real queries find different videos);
    videos.list answers for the ids it is asked; each video's comments cycle through the recorded
    outcomes (comments, comments disabled, none). ``request_sequence`` counts the HTTP requests.
    """

    HITS = ("kKKM8Y-u7ds", "g550H4e5FCY", "mn34mnnDnKU")
    COMMENTS = ((200, "comments.json"), (403, "error_comments_disabled.json"), (200, "comments_empty.json"))

    def __init__(self):
        super().__init__([])
        self.searches = 0
        self.body = {name: (YT / name).read_text() for name in ("search.json", "videos.json", *(
            f for _, f in self.COMMENTS))}

    def _renamed(self, text: str, n: int) -> str:
        for vid in self.HITS:
            text = text.replace(vid, vid[:8] + f"{n:03d}")
        return text

    def request(self, uri, method="GET", body=None, headers=None, redirections=1, connection_type=None):
        url = urlparse(uri)
        query = parse_qs(url.query)
        if url.path.endswith("/search"):
            self.searches += 1
            status, text = 200, self._renamed(self.body["search.json"], self.searches)
        elif url.path.endswith("/videos"):
            status, text = 200, self._renamed(self.body["videos.json"], int(query["id"][0].split(",")[0][-3:]))
        elif url.path.endswith("/commentThreads"):
            index = [v[:8] for v in self.HITS].index(query["videoId"][0][:8])
            status, name = self.COMMENTS[index % len(self.COMMENTS)]
            text = self.body[name]
        else:
            raise AssertionError(f"unexpected request {url.path}")
        self._iterable.append(({"status": str(status), "content-type": "application/json; charset=UTF-8"}, text))
        return super().request(uri, method, body, headers, redirections, connection_type)


def _per(value: float, n: int) -> str:
    return f"{value / n:.1f}" if n else "n/a"


def _row(name: str, value) -> None:
    print(f"  {name:<44} {value}")


def _build(store, spec: BuildSpec, **kw) -> tuple[dict, float]:
    t0 = time.perf_counter()
    result = run_build(store, spec, **kw)
    return result, time.perf_counter() - t0


def _by_node(calls: list[dict]) -> str:
    count: dict[str, int] = {}
    for c in calls:
        count[c["node"]] = count.get(c["node"], 0) + 1
    return ", ".join(f"{node} {n}" for node, n in count.items()) or "none"


def embedded(work: Path) -> bool:
    lessons = work / "lessons"
    lessons.mkdir(parents=True)
    for name in SMALL:
        for suffix in (".mp4", ".json"):
            shutil.copy(LESSONS / f"{name}{suffix}", lessons / f"{name}{suffix}")
    # retries=1 as in tests/agents/test_e2e_llama.py: the 135M model often answers off-schema, and
    # each re-ask costs up to max_tokens more at 10-40 tokens/s on two cores (slower when the
    # cores are shared: hence the long timeout; llama.cpp serves one request at a time)
    agent = AgentConfig(llm=LLMConfig(max_tokens=256, retries=1, timeout_s=600, embedded_model="smollm2-135m"),
                        taxonomy=TaxonomySize(courses=1, subcourses=1, points=2),
                        sources=[f"local:{lessons}"], per_point=1, max_rounds=2)
    spec = BuildSpec(GOAL, agent, PipelineConfig(), work / "out")
    store = open_store(work / "db.duckdb")
    t0 = time.perf_counter()
    with embedded_server(log_file=work / "llama.log") as base_url:
        started = time.perf_counter() - t0
        kw = {"base_url": base_url, "model_name": MODEL_ALIAS}
        first, wall = _build(store, spec, **kw)
        run_id = first["run_id"]
        calls = store.llm_calls(run_id)
        _, rewall = _build(store, spec, **kw)
        seen = {c["call_id"] for c in calls}
        recalls = [c for c in store.llm_calls(run_id) if c["call_id"] not in seen]
    paid = [c for c in calls if not c["cached"]]
    tokens = sum(c["input_tokens"] + c["output_tokens"] for c in paid)
    repaid = [c for c in recalls if not c["cached"]]
    invalid = {c["cache_key"] for c in paid if c["error"]}
    n = first["accepted_videos"]
    print(f"embedded: llama.cpp SmolLM2-135M (started in {started:.1f} s), local source, {len(SMALL)} lessons, "
          f"{first['knowledge_points']} knowledge points, judges {first.get('judges', '?')}")
    _row("first run: wall", f"{wall:.1f} s")
    _row("accepted videos / samples", f"{n} / {first['samples']}")
    _row("LLM calls / paid / answers never valid", f"{len(calls)} / {len(paid)} / {len(invalid)}")
    _row("paid tokens (input + output)", tokens)
    _row("paid calls per accepted video", _per(len(paid), n))
    _row("paid tokens per accepted video", _per(tokens, n))
    _row("paid calls by node", _by_node(paid))
    _row("rerun: LLM calls paid (target 0)", f"{len(repaid)} "
         f"({sum(c['input_tokens'] + c['output_tokens'] for c in repaid)} tokens)")
    if repaid:
        _row("rerun: paid calls by node", _by_node(repaid))
        _row("rerun: of them never valid in the first run", sum(c["cache_key"] in invalid for c in repaid))
    _row("rerun: wall", f"{rewall:.1f} s = {rewall / wall:.2f}x the first run")
    store.close()
    return not repaid


def youtube(work: Path) -> bool:
    agent = AgentConfig(taxonomy=TaxonomySize(courses=1, subcourses=1, points=2), sources=["youtube"],
                        per_point=1, max_rounds=2, results_per_query=3)
    spec = BuildSpec(GOAL, agent, PipelineConfig(), work / "out")
    store = open_store(work / "db.duckdb")
    replays: list[YouTubeReplay] = []

    def sources(specs, store_, comments=None, **kw):
        http = YouTubeReplay()
        replays.append(http)
        service = build_service("youtube", "v3", developerKey=FAKE_KEY, http=http, cache_discovery=False,
                                static_discovery=True)
        return [YouTubeSource(service=service, cache=StoreSearchCache(store_),
                              comments=agent.comments if comments is None else comments)]

    def offline(url, *args, **kwargs):
        raise tools.download.DownloadError("network", "offline bench")

    real_sources, real_download = agents.build.make_sources, tools.download.download
    agents.build.make_sources, tools.download.download = sources, offline
    try:
        first, wall = _build(store, spec, models=models_for(ScriptedChatModel(script=physics_script())))
        run_id = first["run_id"]
        units, queries = store.search_units(run_id), store.queries(run_id)
        accepted = len([j for j in store.judgments(run_id) if j["kind"] == "metadata" and j["verdict"] == "accept"])
        llm = store.llm_totals(run_id)
        _, rewall = _build(store, spec, models=models_for(ScriptedChatModel(script=physics_script())))
    finally:
        agents.build.make_sources, tools.download.download = real_sources, real_download
    re_units = store.search_units(run_id) - units
    re_queries = len(store.queries(run_id)) - len(queries)
    re_paid = store.llm_totals(run_id)["paid_calls"] - llm["paid_calls"]
    requests = [len(r.request_sequence) for r in replays]
    print(f"youtube: scripted models, YouTube Data API on recorded responses, downloads cut off, "
          f"{first['knowledge_points']} knowledge points, {agent.results_per_query} results per query")
    _row("first run: wall", f"{wall:.1f} s")
    _row("queries / HTTP requests", f"{len(queries)} / {requests[0]}")
    _row("search units", units)
    _row("metadata-accepted candidates", accepted)
    _row("units per query", _per(units, len(queries)))
    _row("units per metadata-accepted candidate", _per(units, accepted))
    _row("rerun: search units paid (target 0)", re_units)
    _row("rerun: HTTP requests (target 0)", requests[1])
    _row("rerun: new queries / LLM calls paid", f"{re_queries} / {re_paid}")
    _row("rerun: wall", f"{rewall:.1f} s = {rewall / wall:.2f}x the first run")
    store.close()
    return re_units == 0 and requests[1] == 0


def main() -> None:
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        search_ok = youtube(Path(tmp) / "youtube")
        llm_ok = embedded(Path(tmp) / "embedded")
    print(f"targets: rerun LLM calls paid 0 {'met' if llm_ok else 'NOT met'}; rerun search units and HTTP "
          f"requests 0 {'met' if search_ok else 'NOT met'}  (bench {time.perf_counter() - t0:.0f} s, "
          f"{os.cpu_count()} cores, load average {os.getloadavg()[1]:.1f} over the last 5 min)")


if __name__ == "__main__":
    main()
