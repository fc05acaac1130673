"""Run the build graph for one goal: set up the store, sources, gateway and checkpointer.

A run's id is a hash of its goal and settings, so the same command twice is the same run:
the second pays for nothing (response cache, search cache, stage status). ``resume``
continues a killed run from its last LangGraph checkpoint in the same DuckDB file.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agents.budget import BudgetTracker
from agents.config import AgentConfig, ReviewConfig
from agents.graph import BuildAgent, Deps
from agents.llm import Gateway
from pipeline.config import PipelineConfig
from pipeline.runner import Runner, check_writable, media_dir_for

log = logging.getLogger(__name__)

YOUTUBE_KEY_ENV = "TEXTBOOK_YOUTUBE_API_KEY"


class BuildError(Exception):
    """Bad input for a build (one line for the user)."""


class StoreSearchCache:
    """The search cache of tools.search, kept in DuckDB so no query is paid twice across runs."""

    def __init__(self, store):
        self.store = store

    def get(self, key: str) -> dict | None:
        return self.store.search_cache_get(key)

    def put(self, key: str, value: dict, units: int) -> None:
        self.store.search_cache_put(key, value, units)


def make_sources(specs: list[str], store, comments: int | None = None) -> list:
    from tools.errors import ToolError
    from tools.search import make_source

    if not specs:
        raise BuildError("no source given (youtube, ytdlp, local:DIR, urls:FILE)")
    out = []
    for spec in specs:
        try:
            source = make_source(spec, api_key=os.environ.get(YOUTUBE_KEY_ENV), cache=StoreSearchCache(store))
        except ToolError as exc:
            raise BuildError(exc.message) from exc
        if comments is not None and hasattr(source, "comments"):
            source.comments = comments
        out.append(source)
    return out


def run_id_for(goal: str, agent: AgentConfig, pipeline: PipelineConfig) -> str:
    agent_json = agent.model_dump(mode="json")
    if agent.review == ReviewConfig():  # runs without review keep the ids they had before it existed
        agent_json.pop("review")
    cfg = {"goal": " ".join(goal.split()), "agent": agent_json, "pipeline": pipeline.model_dump(mode="json")}
    return "build-" + hashlib.sha256(json.dumps(cfg, sort_keys=True).encode()).hexdigest()[:12]


@dataclass
class BuildSpec:
    goal: str
    agent: AgentConfig
    pipeline: PipelineConfig
    out: Path


def spec_from_run(store, run_id: str) -> BuildSpec:
    row = store.run(run_id)
    if row is None:
        raise BuildError(f"no run {run_id} in {store.path}")
    if row["command"] != "build":
        raise BuildError(f"{run_id} is a `{row['command']}` run, not a build")
    cfg = json.loads(row["config"])
    return BuildSpec(goal=json.loads(row["inputs"])[0], agent=AgentConfig.model_validate(cfg["agent"]),
                     pipeline=PipelineConfig.model_validate(cfg["pipeline"]), out=Path(cfg["out"]))


def run_build(store, spec: BuildSpec, *, run_id: str | None = None, resume: bool = False,
              models: dict | None = None, base_url: str | None = None, model_name: str | None = None,
              on_event: Callable[[dict], None] | None = None, reporter=None,
              sources: list | None = None, wait_for_review: Callable[[str, dict], dict] | None = None
              ) -> dict[str, Any]:
    """Run (or resume) one build; returns the result summary. ``base_url`` overrides the endpoint
    for this process only (the embedded server's port is not part of the run). A build that pauses
    for a review nobody has answered returns ``{"run_id", "waiting_for_review"}`` (run status
    ``waiting``); ``wait_for_review(run_id, payload) -> answer`` blocks for the answer instead."""
    from agents import review
    from store.checkpoint import DuckDBSaver

    goal = " ".join(spec.goal.split())
    if not goal:
        raise BuildError("the goal is empty: say what textbook to build, e.g. \"build a chemistry textbook\"")
    run_id = run_id or run_id_for(goal, spec.agent, spec.pipeline)
    if sources is None:
        sources = make_sources(spec.agent.sources, store, comments=spec.agent.comments)
    check_writable(spec.out)
    media = media_dir_for(store.path)
    check_writable(media)
    cfg_json = {"agent": spec.agent.model_dump(mode="json"), "pipeline": spec.pipeline.model_dump(mode="json"),
                "out": str(spec.out)}
    previous = store.run(run_id)
    if resume and previous is not None and previous["status"] == "finished":
        return {**json.loads(previous["summary"] or "{}"), "already_finished": True}
    store.start_run(run_id, "build", [goal], cfg_json, run_id.removeprefix("build-"))

    llm_cfg = spec.agent.llm
    if base_url:
        update: dict[str, Any] = {"base_url": base_url, "model": model_name or llm_cfg.model}
        if model_name:  # the embedded llama.cpp server: max_tokens spelled the old way, one request at a
            # time (a re-sent request would queue behind the abandoned one), and a slow CPU
            update |= {"legacy_max_tokens": True, "http_retries": 0, "timeout_s": max(llm_cfg.timeout_s, 600.0)}
        llm_cfg = llm_cfg.model_copy(update=update)
    budget = BudgetTracker(store, run_id, spec.agent.budgets)
    gateway = Gateway(store, run_id, llm_cfg, models=models, budget=budget)
    runner = Runner(store, spec.pipeline, spec.out, reporter, command="build")
    embedded = bool(base_url and model_name)
    enforce = {"yes": True, "no": False}.get(spec.agent.enforce_judges, not embedded)
    deps = Deps(store=store, gateway=gateway, cfg=spec.agent, runner=runner, sources=sources, budget=budget,
                downloads=media / "downloads", enforce_judges=enforce, on_event=on_event or (lambda e: None))
    (media / "downloads").mkdir(parents=True, exist_ok=True)
    graph = BuildAgent(deps).compile(checkpointer=DuckDBSaver(store.con))
    config = {"configurable": {"thread_id": run_id}, "max_concurrency": 1, "recursion_limit": 1000}
    # An unfinished run with a checkpoint continues from it, whether asked with --resume or by
    # repeating the command; a finished run repeated starts over and is served by the caches.
    # (StateSnapshot.next is empty when the last step's writes were saved but not its successor
    # checkpoint, so the test is on the checkpoint itself.)
    continuing = (previous is not None and previous["status"] != "finished"
                  and graph.checkpointer.get_tuple(config) is not None)
    deps.on_event({"event": "run_start", "run_id": run_id, "goal": goal, "resume": continuing,
                   "enforce_judges": enforce})
    try:
        start = None if continuing else {"run_id": run_id, "goal": goal, "searched": [], "stop": None}
        final = review.drive(graph, start, config, store, run_id, wait_for_review, deps.on_event)
    except BaseException as exc:
        store.finish_run(run_id, "failed", {"error": f"{type(exc).__name__}: {exc}"[:500]})
        raise
    finally:
        runner.close()
    if "waiting_for_review" in final:
        return {"run_id": run_id, "waiting_for_review": final["waiting_for_review"]["kind"],
                "review_key": final["waiting_for_review"]["key"]}
    result = {**(final.get("result") or {}), "judges": "enforced" if enforce else "advisory"}
    store.finish_run(run_id, "finished", result)
    return result
