"""Run the build graph for one goal: set up the store, sources, gateway and checkpointer.

A run's id is a hash of its goal and settings, so the same command twice is the same run:
the second pays for nothing (response cache, search cache, stage status), and retries the videos
that failed (agents.slots.retry_failed: a failure is not a result; judgments and rejections stay). ``resume``
continues a killed run from its last LangGraph checkpoint in the same DuckDB file.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agents import visual_filter
from agents.budget import BudgetTracker
from agents.config import AgentConfig, LLMConfig, ReviewConfig
from agents.deps import Deps
from agents.graph import BuildAgent
from agents.llm import Gateway, LLMUnavailable
from agents.slots import retry_failed
from pipeline.config import PipelineConfig
from pipeline.runner import Runner, check_writable, media_dir_for
from tools import storage

log = logging.getLogger(__name__)

YOUTUBE_KEY_ENV = "TEXTBOOK_YOUTUBE_API_KEY"


class BuildError(Exception):
    """Bad input for a build (one line for the user)."""


class StoreSearchCache:
    """The search cache of tools.search, kept in DuckDB so no query is paid twice across runs."""

    def __init__(self, store):
        self.store = store

    def get(self, key: str) -> dict | None:
        """The search answer cached in the store under ``key``, or None."""
        return self.store.search_cache_get(key)

    def put(self, key: str, value: dict, units: int) -> None:
        """Cache a search answer in the store; ``units`` is the API quota it cost (what a later hit saves)."""
        self.store.search_cache_put(key, value, units)


def make_sources(specs: list[str], store=None, comments: int | None = None, min_relevance: float | None = None,
                 embed=None) -> list:
    """Sources from CLI specs; raises BuildError (one line) for a bad spec. Without ``store`` the search
    cache is attached later (``attach_store``), so a bad spec fails before any database is created.
    ``embed`` (texts -> unit rows) lets local and URL sources match by meaning, not only by words."""
    from tools.errors import ToolError
    from tools.search import make_source

    if not specs:
        raise BuildError("no source given (youtube, ytdlp, local:DIR, urls:FILE)")
    out = []
    for spec in specs:
        try:
            source = make_source(spec, api_key=os.environ.get(YOUTUBE_KEY_ENV),
                                 cache=StoreSearchCache(store) if store is not None else None)
        except ToolError as exc:
            raise BuildError(exc.message) from exc
        if comments is not None and hasattr(source, "comments"):
            source.comments = comments
        if hasattr(source, "min_relevance"):
            if min_relevance is not None:
                source.min_relevance = min_relevance
            source.embed = embed
        out.append(source)
    return out


def attach_store(sources: list, store) -> list:
    """Give sources that cache their results (YouTube) the store's search cache."""
    for source in sources:
        if hasattr(source, "cache") and source.cache is None:
            source.cache = StoreSearchCache(store)
    return sources


def measured_accuracy() -> dict:
    """``models`` of agents/judge_accuracy.json: per embedded model alias, per judge (and ``polish``) what
    bench/bench_judges.py and bench/bench_grounding.py measured, with the prompt's sha256."""
    return json.loads((Path(__file__).parent / "judge_accuracy.json").read_text()).get("models", {})


def judge_enforcement(agent: AgentConfig, embedded_alias: str | None) -> dict[str, str]:
    """Per judge (metadata, transcript, clip): "enforced" or "advisory: WHY".

    ``yes``/``no`` apply to all. ``auto``: a configured endpoint is enforced; with the embedded model a
    judge is enforced when its accuracy measured on examples/judge_eval (agents/judge_accuracy.json,
    written by bench/bench_judges.py with the prompt's sha256) reaches ``agent.judge_bar``."""
    import prompts

    kinds = ("metadata", "transcript", "clip")
    rules = {"clip": "off: the measured signals decide (agent.clip_judge = rules)"} if agent.clip_judge != "llm" else {}
    if agent.enforce_judges == "yes":
        return dict.fromkeys(kinds, "enforced") | rules
    if agent.enforce_judges == "no":
        return dict.fromkeys(kinds, "advisory: agent.enforce_judges = no") | rules
    if not embedded_alias:
        return dict.fromkeys(kinds, "enforced") | rules
    measured = measured_accuracy()
    prompt_of = {"metadata": "metadata_judge", "transcript": "transcript_judge", "clip": "clip_judge"}
    out = {}
    for kind in kinds:
        m = (measured.get(embedded_alias) or {}).get(kind)
        if not m:
            out[kind] = f"advisory: not measured for {embedded_alias}"
        elif m["prompt_sha256"] != prompts.load(prompt_of[kind]).sha256:
            out[kind] = "advisory: the prompt changed since it was measured (run bench/bench_judges.py)"
        elif m["accuracy"] < agent.judge_bar:
            out[kind] = f"advisory: {m['accuracy']:.0%} accurate on the labelled set (bar {agent.judge_bar:.0%})"
        else:
            out[kind] = "enforced"
    return out | rules


# settings added after runs existed: at their defaults they leave a run's id as it was
_LATER_KEYS = ("polish_terms", "polish_min_ratio", "polish_max_ratio", "use_rewrite", "visual_filter",
               "caption_min_similarity", "caption_max_images")


def rewrite_use(agent: AgentConfig, embedded_alias: str | None, measured: dict | None = None) -> str:
    """Whether an accepted clip rewrite replaces the text kept without it: "used" or "advisory: WHY".

    ``agent.use_rewrite`` yes/no decide; ``auto``: a configured endpoint's rewrite is used; the embedded
    model's only when agents/judge_accuracy.json records, for its alias and the current polish prompt, a
    WER of its checked rewrite as kept below the WER of what the corpus keeps when the rewrite is advisory
    (key ``polish``): with ``agent.polish_terms``, the grounded rewrite (``wer_rewrite``) against the ASR
    corrected from the slide (``wer_corrected``; agents.rewrite.Rewrite.kept); without, the plain rewrite
    (``wer_plain``) against the raw ASR (``wer_raw``). A record without these keys compares ``wer_rewrite``
    with ``wer_raw``. Measured by bench/bench_grounding.py llm:
    SmolLM2-135M's kept rewrite (3.26%) beats the raw ASR (3.44%) only through the slide corrections it keeps
    on refusal, and is worse than those corrections alone (2.58%). ``measured``: that file's ``models``
    (None: read it)."""
    import prompts

    if agent.use_rewrite == "yes" or (agent.use_rewrite == "auto" and not embedded_alias):
        return "used"
    if agent.use_rewrite == "no":
        return "advisory: agent.use_rewrite = no"
    if measured is None:
        measured = measured_accuracy()
    m = (measured.get(embedded_alias) or {}).get("polish")
    if not m:
        return f"advisory: the rewrite of {embedded_alias} is not measured against the raw ASR"
    if m["prompt_sha256"] != prompts.load("polish").sha256:
        return "advisory: the polish prompt changed since it was measured"
    if agent.polish_terms:
        got, base, what = m["wer_rewrite"], m.get("wer_corrected", m["wer_raw"]), \
            "the ASR corrected from the slide" if "wer_corrected" in m else "the raw ASR"
    else:
        got, base, what = m.get("wer_plain", m["wer_rewrite"]), m["wer_raw"], "the raw ASR"
    if got >= base:
        return f"advisory: its rewrite's WER {got:.1%} does not beat {what}'s {base:.1%}"
    return "used"


def run_id_for(goal: str, agent: AgentConfig, pipeline: PipelineConfig) -> str:
    """The id of a build: ``build-`` and 12 hex digits of the sha256 of its goal (whitespace folded) and agent and
    pipeline configs, so the same build resumes under the same id. Settings added later are left out at their
    defaults, so older runs keep their ids."""
    agent_json = agent.model_dump(mode="json")
    if agent.review == ReviewConfig():  # runs without review keep the ids they had before it existed
        agent_json.pop("review")
    for key in _LATER_KEYS:
        if getattr(agent, key) == AgentConfig.model_fields[key].default:
            agent_json.pop(key)
    cfg = {"goal": " ".join(goal.split()), "agent": agent_json, "pipeline": pipeline.model_dump(mode="json")}
    return "build-" + hashlib.sha256(json.dumps(cfg, sort_keys=True).encode()).hexdigest()[:12]


@dataclass
class BuildSpec:
    """What a build was asked to do: the goal, the agent and pipeline configs, the export folder, and the
    media root (``media``: where downloads, keyframes and clip images go: a folder or an object-store URI every
    worker can write, tools.storage; None: NAME_media/ beside the store)."""

    goal: str
    agent: AgentConfig
    pipeline: PipelineConfig
    out: Path
    media: str | None = None


def spec_from_run(store, run_id: str) -> BuildSpec:
    """The spec a stored build ran with (for ``--resume``). Raises BuildError when the run is unknown or not a build."""
    row = store.run(run_id)
    if row is None:
        raise BuildError(f"no run {run_id} in {store.path}")
    if row["command"] != "build":
        raise BuildError(f"{run_id} is a `{row['command']}` run, not a build")
    cfg = json.loads(row["config"])
    return BuildSpec(goal=json.loads(row["inputs"])[0], agent=AgentConfig.model_validate(cfg["agent"]),
                     pipeline=PipelineConfig.model_validate(cfg["pipeline"]), out=Path(cfg["out"]),
                     media=cfg.get("media"))


class BuildInterrupted(Exception):
    """The build was stopped by SIGINT or SIGTERM; the run is marked interrupted and can be resumed."""

    def __init__(self, run_id: str, cause: BaseException):
        super().__init__(f"{run_id} interrupted")
        self.run_id = run_id
        self.cause = cause


def run_build(store, spec: BuildSpec, *, run_id: str | None = None, resume: bool = False,
              models: dict | None = None, base_url: str | None = None, model_name: str | None = None,
              on_event: Callable[[dict], None] | None = None, reporter=None,
              sources: list | None = None, on_progress: Callable[[str, int], None] | None = None,
              wait_for_review: Callable[[str, dict], dict] | None = None) -> dict[str, Any]:
    """Run (or resume) one build; returns the result summary. ``base_url`` overrides the endpoint
    for this process only (the embedded server's port is not part of the run); ``model_name`` set
    with it means the embedded server. Raises BuildError (one line: bad input, every source failed)
    and BuildInterrupted (SIGINT/SIGTERM: the run is marked interrupted). A build that pauses for a
    review nobody has answered returns ``{"run_id", "waiting_for_review"}`` (run status ``waiting``);
    ``wait_for_review(run_id, payload) -> answer`` blocks for the answer instead."""
    from agents.assign import embed_texts
    from store.checkpoint import DuckDBSaver

    t0 = time.monotonic()
    goal = " ".join(spec.goal.split())
    if not goal:
        raise BuildError("the goal is empty: say what textbook to build, e.g. \"build a chemistry textbook\"")
    run_id = run_id or run_id_for(goal, spec.agent, spec.pipeline)
    if sources is None:
        sources = make_sources(spec.agent.sources, store, comments=spec.agent.comments,
                               min_relevance=spec.agent.min_relevance, embed=embed_texts)
    attach_store(sources, store)
    check_writable(spec.out)
    media, remote = media_root(spec, store.path)
    cfg_json = {"agent": spec.agent.model_dump(mode="json"), "pipeline": spec.pipeline.model_dump(mode="json"),
                "out": str(spec.out), **({"media": storage.redact(str(media))} if spec.media else {})}
    previous = store.run(run_id)
    paid_before = store.llm_totals(run_id)["paid_calls"] if previous is not None else 0
    if resume and previous is not None and previous["status"] == "finished" and \
            not json.loads(previous["summary"] or "{}").get("failed"):
        return {**json.loads(previous["summary"] or "{}"), "already_finished": True, "paid_now": 0}
    store.start_run(run_id, "build", [goal], cfg_json, run_id.removeprefix("build-"))

    llm_cfg = _endpoint_config(spec.agent.llm, base_url, model_name)
    budget = BudgetTracker(store, run_id, spec.agent.budgets)
    gateway = _gateway(store, run_id, llm_cfg, models, budget, on_progress)
    runner = Runner(store, spec.pipeline, spec.out, reporter, command="build", media=media)
    if spec.pipeline.executor == "ray" or remote:  # every node can write and read the media root
        _preflight(store, run_id, runner)
    embedded = model_name if base_url and model_name else None
    judges = judge_enforcement(spec.agent, embedded) | visual_filter.mode(spec.agent)
    enforce = {k: v == "enforced" for k, v in judges.items()}
    deps = Deps(store=store, gateway=gateway, cfg=spec.agent, runner=runner, sources=sources, budget=budget,
                downloads=storage.join(media, "downloads") if remote else media / "downloads", enforce=enforce,
                on_event=on_event or (lambda e: None), embed=embed_texts, rewrite_use=rewrite_use(spec.agent, embedded))
    graph = BuildAgent(deps).compile(checkpointer=DuckDBSaver(store.con))
    config = {"configurable": {"thread_id": run_id}, "max_concurrency": 1, "recursion_limit": 1000}
    # the same command again (or --resume) retries what failed last time; judgments and rejections stay
    retried = retry_failed(store, run_id, spec.agent) if previous is not None else Counter()
    continuing = _continues(graph, config, previous, retried)
    deps.on_event({"event": "run_start", "run_id": run_id, "goal": goal, "resume": continuing,
                   "enforce_judges": all(enforce.values()), "judges": judges, "rewrite": deps.rewrite_use,
                   "model": llm_cfg.model, "retried": dict(retried)})
    start = None if continuing else {"run_id": run_id, "goal": goal, "searched": [], "stop": None}
    final = _drive(graph, start, config, store, run_id, runner, wait_for_review, deps.on_event)
    if "waiting_for_review" in final:
        return {"run_id": run_id, "waiting_for_review": final["waiting_for_review"]["kind"],
                "review_key": final["waiting_for_review"]["key"]}
    result = {**(final.get("result") or {}), "media": storage.redact(str(media)),
              "judges": _judges_word(judges), "judge_modes": judges,
              "retried": dict(retried), "seconds": round(time.monotonic() - t0, 1),
              "paid_now": store.llm_totals(run_id)["paid_calls"] - paid_before}
    if result.get("error"):
        # every search failed: a rerun (network back, key fixed) must search again, not resume past it
        graph.checkpointer.delete_thread(run_id)
        store.finish_run(run_id, "failed", result)
        raise BuildError(result["error"])
    store.finish_run(run_id, "finished", result)
    return result


def media_root(spec: BuildSpec, db_path: Path) -> tuple[Path | str, bool]:
    """``(media root, whether it is an object-store URI)`` of a build: ``spec.media`` (a folder made absolute, or
    a URI), else NAME_media/ beside the store. A local root gets its downloads/ folder and is checked writable
    (pipeline.runner.InputError); a remote one is checked by the runner's preflight on every node."""
    if spec.media is not None and storage.is_remote(spec.media):
        storage.filesystem(spec.media)  # credentials in the URI or a missing package: ToolError, before any run
        return spec.media, True
    media = storage.local_path(spec.media).absolute() if spec.media else media_dir_for(db_path)
    check_writable(media)
    (media / "downloads").mkdir(parents=True, exist_ok=True)
    return media, False


def _preflight(store, run_id: str, runner: Runner) -> None:
    """The runner's preflight (pipeline.runner.Runner.preflight: Ray joined, the media root written and read
    by every node); a node that cannot fails the run: marked failed, BuildError with the one line."""
    from pipeline.runner import PreflightError

    try:
        runner.preflight()
    except PreflightError as exc:
        runner.close()
        store.finish_run(run_id, "failed", {"error": str(exc)[:500]})
        raise BuildError(str(exc)) from None


def _endpoint_config(llm_cfg: LLMConfig, base_url: str | None, model_name: str | None) -> LLMConfig:
    """The LLM config with ``base_url`` (this process's endpoint) in place; ``model_name`` with it means the
    embedded llama.cpp server, which gets its own request settings."""
    if not base_url:
        return llm_cfg
    update: dict[str, Any] = {"base_url": base_url, "model": model_name or llm_cfg.model}
    if model_name:  # the embedded llama.cpp server: max_tokens spelled the old way, one request at a
        # time (no HTTP re-sends: a re-sent request would queue behind the abandoned one), answers
        # under a schema grammar, streamed (a cut request stops the server's generation)
        update |= {"legacy_max_tokens": True, "http_retries": 0, "concurrency": 1}
        if llm_cfg.structured == "auto":
            update["structured"] = "llamacpp"
        if llm_cfg.stream is None:
            update["stream"] = True
    return llm_cfg.model_copy(update=update)


def _gateway(store, run_id: str, llm_cfg: LLMConfig, models: dict | None, budget: BudgetTracker,
             on_progress: Callable[[str, int], None] | None) -> Gateway:
    """The run's LLM gateway; a real endpoint (no scripted ``models``) is checked first, so one that is down
    fails the run at once: the run is marked failed and BuildError says why (one line)."""
    gateway = Gateway(store, run_id, llm_cfg, models=models, budget=budget, on_progress=on_progress)
    if models is None:
        try:
            gateway.preflight()
        except LLMUnavailable as exc:
            store.finish_run(run_id, "failed", {"error": str(exc)[:500]})
            raise BuildError(str(exc)) from exc
    return gateway


def _continues(graph, config: dict, previous: dict | None, retried: Counter) -> bool:
    """Whether this call continues the run from its checkpoint rather than starting the graph over.

    An unfinished run with a checkpoint continues from it, whether asked with --resume or by repeating the
    command; a finished run repeated starts over and is served by the caches. (StateSnapshot.next is empty
    when the last step's writes were saved but not its successor checkpoint, so the test is on the checkpoint
    itself.) A run stopped past the videos node with videos to retry starts over too, so they are retried."""
    continuing = (previous is not None and previous["status"] != "finished"
                  and graph.checkpointer.get_tuple(config) is not None)
    if continuing and retried and set(graph.get_state(config).next) <= {"coverage", "assemble"}:
        continuing = False
    return continuing


def _drive(graph, start: dict | None, config: dict, store, run_id: str, runner: Runner,
           wait_for_review: Callable[[str, dict], dict] | None, on_event: Callable[[dict], None]) -> dict:
    """Run the graph from ``start`` (None: from its checkpoint) through any reviews; the final state.

    On the way out the runner is closed, and a run that did not end is marked: ``interrupted`` (raises
    BuildInterrupted), ``failed`` with the endpoint down (raises BuildError, one line) or ``failed`` with any
    other error (re-raised)."""
    from agents import review
    from agents.interrupts import is_interrupt

    try:
        return review.drive(graph, start, config, store, run_id, wait_for_review, on_event)
    except BaseException as exc:
        if is_interrupt(exc):
            store.finish_run(run_id, "interrupted", {"error": f"interrupted ({type(exc).__name__})"})
            raise BuildInterrupted(run_id, exc) from exc
        if isinstance(exc, LLMUnavailable):
            store.finish_run(run_id, "failed", {"error": str(exc)[:500]})
            raise BuildError(f"{exc} (the run is saved: resume with textbook build --resume {run_id})") from exc
        store.finish_run(run_id, "failed", {"error": f"{type(exc).__name__}: {exc}"[:500]})
        raise
    finally:
        runner.close()


def _judges_word(judges: dict[str, str]) -> str:
    modes = {v == "enforced" for v in judges.values() if not v.startswith("off")}
    return "enforced" if modes == {True} else "advisory" if modes == {False} else "mixed"
