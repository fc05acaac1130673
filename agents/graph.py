"""The build graph: from a goal to a textbook, every node run and decision traced in DuckDB.

    interpret_goal -> taxonomy [-> review_taxonomy] -> plan_queries -(Send per point)-> search_point
    -> videos [-> review_metadata -> review_transcripts] -> after_videos -> videos | coverage
    coverage -> plan_queries (short knowledge points, new phrasings) | assemble -> END

Later rounds ask only open sources (search APIs: youtube, ytdlp) again: a closed library (local:DIR,
urls:FILE) that answered a point once is not asked it again, since its whole catalogue is known after
one look. When every source of the run is closed, coverage ends the loop after round 1 (``library
exhausted``).

``videos`` moves every candidate through the build's stages (agents/stages.py: metadata judge, download,
probe, asr, transcript judges, keyframes, ocr, clips with rewrites and clip judge) on the one scheduler
(pipeline/flow.py), many videos at once, slots per point (agents/slots.py). Review nodes exist only
when ``agent.review`` asks for them.

State stays small (ids, counters, the stop reason); everything else lives in the store.
Nodes are idempotent: a resumed run re-enters the node it was killed in, LLM answers come
from the response cache, searches from the search cache, stages from their stage status.
A spent budget sets ``stop``: every later node passes through and ``assemble`` packs what
the run has.
"""

from __future__ import annotations

import functools
import json
import logging
import operator
import re
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Annotated, Any, Literal, TypedDict

from langgraph.graph import END, START, StateGraph
from langgraph.types import Command, Send

from agents import assign, schemas
from agents.deps import Deps
from agents.llm import BudgetExceeded, LLMOutputInvalid
from agents.review import ReviewNodes, mark_lineage
from agents.slots import HOLDS_SLOT, SlotAdmission, has_work
from agents.stages import BuildLedger, MetadataJudgeStage, build_stages, candidate_video, failure_reason
from pipeline.flow import Flow
from pipeline.records import Status
from pipeline.stats import rewrite_counts
from tools.errors import ToolError

log = logging.getLogger(__name__)

KNOWN_SUBJECTS = ("mathematics", "physics", "chemistry", "earth science", "engineering", "computer science",
                  "biology", "geography", "astronomy", "statistics")
_STOP = frozenset("a an the of and or to in on for with by is are how what why build make textbook lesson "
                  "lessons course video videos school".split())


ALWAYS = ("after_videos", "coverage", "assemble")  # nodes that run after a budget stop: they finish the run


def _last(old: str | None, new: str | None) -> str | None:
    """The stop reason: parallel search branches may each hit a budget in the same step."""
    return new


class BuildState(TypedDict, total=False):
    """The graph's checkpointed state: ids and counters only; everything else lives in the store."""

    run_id: str
    goal: str
    spec: dict
    round: int
    points: list[str]          # knowledge point ids to (re)query this round
    plans: list[dict]          # this round's [{point_id, queries}]
    stop: Annotated[str | None, _last]   # the budget that stopped the run
    searched: Annotated[list[str], operator.add]
    outcomes: dict             # the last videos node: how many chains ended in each status
    coverage: str              # why the coverage loop ended (for the summary)
    result: dict


def _words(text: str) -> set[str]:
    return {w for w in re.findall(r"[a-z0-9]+", text.lower()) if w not in _STOP and len(w) > 2}


def _summary(value: Any, limit: int = 400) -> Any:
    """A short JSON-safe summary of a node's input or output for the events table."""
    text = json.dumps(value, default=str, ensure_ascii=False)
    return value if len(text) <= limit else {"summary": text[:limit] + "…"}


class BuildAgent:
    """Nodes as methods over shared dependencies; ``compile(checkpointer)`` assembles the graph."""

    def __init__(self, deps: Deps):
        self.d = deps

    # -- tracing -------------------------------------------------------------
    def _traced(self, name: str, fn: Callable) -> Callable:
        @functools.wraps(fn)
        def node(state: dict):
            store, run_id = self.d.store, state.get("run_id") or self.d.gateway.run_id
            if state.get("stop") and name not in ALWAYS:
                return {}
            ev = store.event_start(run_id, name, None,
                                   _summary({k: v for k, v in state.items() if k not in ("searched", "spec")}))
            self.d.on_event({"event": "node_start", "node": name})
            try:
                if name not in ALWAYS:  # these always run: they finish the run
                    self.d.budget.check_wall()
                out = fn(state)
            except BudgetExceeded as exc:
                store.event_end(ev, {"stop": exc.name}, decision="stop", reasons=[str(exc)], error="budget")
                self.d.on_event({"event": "budget", "node": name, "budget": exc.name, "detail": str(exc)})
                store.flush()
                return {"stop": exc.name}
            except Exception as exc:
                store.event_end(ev, None, error=f"{type(exc).__name__}: {exc}"[:500])
                raise
            except BaseException as exc:  # Ctrl-C, SIGTERM: the trace says where the run was stopped
                store.event_end(ev, None, error=f"interrupted ({type(exc).__name__})")
                raise
            update = out.update if isinstance(out, Command) else out
            store.event_end(ev, _summary(update or {}))
            # the node's queued writes land before LangGraph checkpoints past it (a resume never skips a node
            # whose writes were lost); one that failed fails the run here (StoreWriteFailed, logged)
            store.flush()
            self.d.on_event({"event": "node_end", "node": name})
            return out
        return node

    # -- nodes ---------------------------------------------------------------

    def interpret_goal(self, state: BuildState) -> dict:
        """The goal as a spec (title, subjects, level, language); subjects held to those the goal names."""
        goal = state["goal"]
        try:
            spec = self.d.gateway.call("planner", "interpret_goal", "goal", {"goal": goal}, schemas.GoalSpec).value
            reasons = ["model"]
            named = named_subjects(goal)
            if named and [s.lower() for s in spec.subjects] != named:
                reasons.append(f"policy: subjects held to those the goal names ({', '.join(named)}; the model said "
                               f"{', '.join(spec.subjects)})")
                spec = spec.model_copy(update={"subjects": [s.title() for s in named]})
        except LLMOutputInvalid as exc:
            spec = self._fallback_spec(goal)
            reasons = [f"policy: the goal was read without the model ({failure_reason(exc)})"]
        self.d.decision("interpret_goal", None, "spec", reasons, spec.model_dump())
        return {"spec": spec.model_dump(), "round": 0}

    @staticmethod
    def _fallback_spec(goal: str) -> schemas.GoalSpec:
        low = goal.lower()
        subjects = [s for s in KNOWN_SUBJECTS if s in low] or [" ".join(sorted(_words(goal), key=low.find)) or goal]
        level = next((lv for lv in ("primary", "middle school", "high school", "university") if lv in low),
                     "middle school")
        return schemas.GoalSpec(title=goal.strip()[:80], subjects=[s.title() for s in subjects], level=level)

    def taxonomy(self, state: BuildState) -> dict:
        """The knowledge taxonomy (subject > course > sub-course > knowledge point; paper section 3.1), held to
        the configured size and grounded in a local library's catalogue; the points of round 1."""
        spec, size = state["spec"], self.d.cfg.taxonomy
        values = {"level": spec["level"], "title": spec["title"], "subjects": ", ".join(spec["subjects"]),
                  "courses": size.courses, "subcourses": size.subcourses, "points": size.points,
                  **library_values(self.d.sources)}
        shape = schemas.sized_taxonomy(len(spec["subjects"]), size.courses, size.subcourses, size.points)
        try:
            tax = self.d.gateway.call("planner", "taxonomy", "taxonomy", values, shape).value
            tax = _trim(tax, size)
            reasons = ["model"]
            library = [c for s in self.d.sources if hasattr(s, "catalog") for c in s.catalog()]
            if library and self.d.cfg.library_points:
                tax, added = assign.ground_in_library(tax, library, self.d.embed)
                reasons += [f"library: {a}" for a in added]
        except LLMOutputInvalid as exc:
            tax = schemas.Taxonomy(subjects=[schemas.Subject(name=s, courses=[schemas.Course(
                name=f"{s} fundamentals", subcourses=[schemas.SubCourse(name=f"Core ideas of {s}", points=[
                    schemas.KnowledgePoint(name=f"introduction to {s}", difficulty=1)])])])
                for s in spec["subjects"]])
            reasons = [f"policy: one introductory point per subject ({failure_reason(exc)})"]
        nodes = tax.nodes()
        self.d.store.save_taxonomy(state["run_id"], nodes)
        points = [n["node_id"] for n in nodes if n["level"] == "point"]
        self.d.decision("taxonomy", None, f"{len(points)} knowledge points", reasons,
                       {"subjects": len(tax.subjects), "points": len(points),
                        "paths": [" > ".join(self.d.path(state["run_id"], p)[1]) for p in points][:50]})
        return {"points": points, "round": 1}


    def plan_queries(self, state: BuildState) -> dict:
        """Queries for each point of this round, all points asked at once; decisions recorded in point order."""

        run_id, spec, rnd = state["run_id"], state["spec"], state["round"]
        n = self.d.cfg.queries_per_point
        pids = state.get("points", [])
        done = [0]

        def plan(pid: str) -> tuple[str, list[str], str]:
            point, chain = self.d.path(run_id, pid)
            # earlier rounds only: a rerun of this round must render the same prompt (a cache hit)
            previous = list(dict.fromkeys(q["query"] for q in self.d.store.queries(run_id, pid) if q["round"] < rnd))
            prev_text = ("Write new phrasings, different from these earlier queries:\n" +
                         "\n".join(f"- {q}" for q in previous)) if previous else ""
            values = {"n": n, "level": spec["level"], "path": " > ".join(chain),
                      "language": spec["language"], "previous": prev_text}
            try:
                qs = self.d.gateway.call("planner", "plan_queries", "queries", values,
                                         schemas.sized_queries(n)).value.queries
                why = "model"
            except LLMOutputInvalid as exc:
                qs, why = [], f"policy: queries from the point's name ({failure_reason(exc)})"
            fallback = [point, f"{point} {chain[0]}", f"{point} explained", f"{point} lesson for {spec['level']}",
                        f"what is {point}"]
            fresh = [q for q in [*qs, *fallback] if q.lower() not in {p.lower() for p in previous}]
            done[0] += 1
            self.d.progress("plan_queries", done[0], len(pids), pid)
            return pid, list(dict.fromkeys(fresh))[:n], why

        with ThreadPoolExecutor(max(1, min(self.d.workers(), len(pids) or 1)), thread_name_prefix="plan") as pool:
            planned = list(pool.map(plan, pids))
        plans = []
        for pid, fresh, why in planned:
            if fresh:
                plans.append({"point_id": pid, "queries": fresh, "round": rnd})
                self.d.decision("plan_queries", None, f"{pid}: {len(fresh)} queries", [why], {"queries": fresh})
        return {"plans": plans}

    def route_searches(self, state: BuildState) -> list[Send] | str:
        """One ``search_point`` per planned point (LangGraph Send), or straight to ``videos``."""
        plans = state.get("plans") or []
        if state.get("stop") or not plans:
            return "videos"
        return [Send("search_point", {"run_id": state["run_id"], **p}) for p in plans]

    def search_point(self, payload: dict) -> dict:
        """Search every source for one knowledge point's queries (fanned out per point); record each
        video found as a hit of this point with its fit to the point."""
        from tools.search import QuotaExceeded

        run_id, pid, rnd = payload["run_id"], payload["point_id"], payload["round"]
        store, budget = self.d.store, self.d.budget
        point, chain = self.d.path(run_id, pid)
        sources = self._sources_for(run_id, pid, rnd)
        for query in payload["queries"]:
            if any(q["query"] == query and q["round"] == rnd and q["error"] is None
                   for q in store.queries(run_id, pid)):
                continue  # resumed: this query's results are already recorded
            for source in sources:
                estimate = _search_units(source, self.d.cfg.results_per_query)
                if estimate and budget.daily_units_left() < estimate:
                    store.record_query(run_id, pid, rnd, query, source.name, None, 0, False, "daily quota spent")
                    self.d.warn("search_point", f"{source.name}: the project's daily search quota is spent",
                               {"point_id": pid, "query": query})
                    continue
                budget.check_search(estimate)
                before = source.units_used
                try:
                    found = source.search(query, self.d.cfg.results_per_query)
                except ToolError as exc:
                    kind = "quota" if isinstance(exc, QuotaExceeded) else exc.kind
                    store.record_query(run_id, pid, rnd, query, source.name, None, source.units_used - before,
                                       False, f"{kind}: {exc.message}")
                    self.d.warn("search_point", f"{source.name} failed ({kind}): {exc.message}",
                               {"point_id": pid, "query": query})
                    continue  # the next source
                units = source.units_used - before
                fits = assign.fit([_video_text(c.to_dict()) for c in found], [assign.point_text(chain)],
                                  self.d.embed, [point])[:, 0] if found else []
                new = 0
                for c, f in zip(found, fits, strict=True):
                    store.add_candidate(run_id, c.video_id, pid, c.source, c.url, query, rnd, c.to_dict())
                    new += store.add_hit(run_id, c.video_id, pid, c.source, query, rnd, c.relevance, float(f))
                store.record_query(run_id, pid, rnd, query, source.name, len(found), units,
                                   cached=(units == 0 and estimate > 0), error=None)
                self.d.decision("search_point", None, f"{pid}: {len(found)} found, {new} new for this point",
                               [f"{source.name}: {query!r}"], {"units": units})
                break
        return {"searched": [pid]}

    def _sources_for(self, run_id: str, point_id: str, rnd: int) -> list:
        """The sources a point's searches of round ``rnd`` may ask, in order: every source, less each closed
        library (local, urls) that already answered one of this point's searches in an earlier round: its
        whole catalogue was scored then, and a new phrasing has nothing new to find there. (A closed
        library never reached, because an earlier source answered, stays in the chain: a quota spent on
        youtube in round 2 still falls back to it.)"""
        from tools.search import is_closed

        answered = {q["source"] for q in self.d.store.queries(run_id, point_id)
                    if q["round"] < rnd and q["error"] is None}
        return [s for s in self.d.sources if not (is_closed(s) and s.name in answered)]

    def closed_library(self) -> bool:
        """True when every source of the run is a closed library (tools.search.is_closed): re-querying a
        short point cannot find anything new."""
        from tools.search import is_closed

        return bool(self.d.sources) and all(is_closed(s) for s in self.d.sources)

    def _need(self, run_id: str) -> tuple[dict[str, int], dict[str, int]]:
        """Per point: videos still wanted, and videos accepted or on their way (downloaded .. accepted)."""
        have: dict[str, int] = {}
        for c in self.d.store.candidates(run_id, list(HOLDS_SLOT)):
            have[c["point_id"]] = have.get(c["point_id"], 0) + 1
        points = [n["node_id"] for n in self.d.store.taxonomy(run_id) if n["level"] == "point"]
        return {p: max(0, self.d.cfg.per_point - have.get(p, 0)) for p in points}, have

    def _reassign(self, run_id: str) -> None:
        """Place every video not yet judged (and every judged-out one that another point found) at the
        point it fits best, filling empty points first (agents/assign.py)."""
        store = self.d.store
        movable = {c["video_id"]: c for c in store.candidates(run_id, [Status.FOUND, Status.METADATA_REJECTED])}
        if not movable:
            return
        hits = [assign.Hit(h["video_id"], h["point_id"], h["fit"], h["verdict"]) for h in store.hits(run_id)
                if h["video_id"] in movable]
        # a point counts what it has plus the videos waiting for its download
        need, _ = self._need(run_id)
        for c in store.candidates(run_id, Status.METADATA_ACCEPTED):
            need[c["point_id"]] = max(0, need.get(c["point_id"], 0) - 1)
        names = {n["node_id"]: n["name"] for n in store.taxonomy(run_id)}
        traced = store.event_videos(run_id, "assign")  # placed before: one read, not one per candidate
        for p in assign.assign(hits, need, self.d.cfg.min_fit):
            c = movable[p.video_id]
            if p.point_id is None:
                if c["status"] == Status.FOUND:
                    store.update_candidate(run_id, p.video_id, status=Status.METADATA_REJECTED,
                                           reason=f"fits no knowledge point (fit < {self.d.cfg.min_fit})")
                    self.d.decision("assign", p.video_id, "no point",
                                   [f"fit below {self.d.cfg.min_fit} for every point that found it"])
                continue
            if c["status"] == Status.METADATA_REJECTED and p.point_id == c["point_id"]:
                continue
            if c["status"] == Status.METADATA_REJECTED and p.why != "needed":
                continue  # judged out for its point; moved again only to serve a point that has nothing
            moved = p.point_id != c["point_id"]
            if moved or c["status"] == Status.METADATA_REJECTED:
                store.update_candidate(run_id, p.video_id, point_id=p.point_id, status=Status.FOUND, reason=None)
            if moved or c["status"] == Status.METADATA_REJECTED or p.video_id not in traced:
                self.d.decision("assign", p.video_id, p.point_id,
                               [f"fit {p.fit:.2f} to {names.get(p.point_id, p.point_id)!r} ({p.why})"]
                               + ([f"moved from {c['point_id']}"] if moved else []))

    def _accepted(self, run_id: str) -> dict[str, int]:
        out: dict[str, int] = {}
        for c in self.d.store.candidates(run_id, Status.ACCEPTED):
            out[c["point_id"]] = out.get(c["point_id"], 0) + 1
        return out

    def videos(self, state: BuildState) -> dict:
        """Every candidate as far as it goes, many at once, through the one flow (pipeline.flow): the metadata
        judge over every unjudged candidate (placement between passes), then per point the best-ranked
        accepted ones down download -> probe -> asr -> judge_transcripts -> keyframes -> ocr -> clips
        (agents/stages.py), a slot refilled as soon as its video drops (agents/slots.py)."""
        run_id, d = state["run_id"], self.d
        d.runner.start(run_id)
        ledger = BuildLedger(d)
        with ThreadPoolExecutor(d.workers(), thread_name_prefix="llm") as calls:
            self._judge_metadata(run_id, state["spec"], ledger, calls)
            stages = build_stages(d.runner.ctx, d, state["spec"], calls)
            admission = SlotAdmission(d.store, run_id, d.cfg, stages, candidate_video, self.rank(run_id))
            flow = d.runner.flow(stages, workers=d.workers(), ledger=ledger, before_step=d.budget.check_wall,
                                 on_progress=lambda v, done, total: d.progress("videos", done, total,
                                                                               v.video_id if v else None))
            outcomes = flow.admit(admission).outcomes
        return {"outcomes": dict(outcomes)} if outcomes else {}

    def _judge_metadata(self, run_id: str, spec: dict, ledger: BuildLedger, calls: ThreadPoolExecutor) -> None:
        """Every unjudged candidate judged at once; placement between passes (it ends: each pass judges
        videos for points they were not judged for)."""
        d, done = self.d, [0]
        judge = MetadataJudgeStage(d.runner.ctx, d, spec, calls)
        for _ in range(50):
            self._reassign(run_id)
            todo = [candidate_video(c) for c in d.store.candidates(run_id, Status.FOUND)]
            if not todo:
                return
            total = done[0] + len(todo)

            def progress(v, n, _total, total=total):
                if v is not None:
                    done[0] += 1
                    d.progress("judge_metadata", done[0], total)

            Flow([judge], workers=d.workers(), ledger=ledger, before_step=d.budget.check_wall,
                 on_progress=progress).run(todo)

    def after_videos(self, state: BuildState) -> Command[Literal["videos", "coverage"]]:
        """Back to ``videos`` when a human's review released work; else on to coverage."""
        if not state.get("stop") and has_work(self.d.store, state["run_id"], self.d.cfg):
            return Command(goto="videos")
        return Command(goto="coverage")

    def rank(self, run_id: str) -> Callable[[dict], tuple]:
        """The order in which a point's metadata-accepted videos take its slots: best judged first;
        among equals, the one that fits its knowledge point best; then by id (deterministic)."""
        scores = {j["video_id"]: j["score"] or 0 for j in self.d.store.judgments(run_id) if j["kind"] == "metadata"}
        fits = {(h["video_id"], h["point_id"]): h["fit"] for h in self.d.store.hits(run_id)}

        def key(c: dict) -> tuple:
            return -(scores.get(c["video_id"]) or 0), -(fits.get((c["video_id"], c["point_id"])) or 0), c["video_id"]
        return key

    def _outcomes(self, run_id: str) -> list[assign.PointOutcome]:
        store, per_point = self.d.store, self.d.cfg.per_point
        hits: dict[str, set[str]] = {}
        for h in store.hits(run_id):
            hits.setdefault(h["point_id"], set()).add(h["video_id"])
        queries: dict[str, list[dict]] = {}
        for q in store.queries(run_id):
            queries.setdefault(q["point_id"], []).append(q)
        by_point: dict[str, list[dict]] = {}
        for c in store.candidates(run_id):
            by_point.setdefault(c["point_id"], []).append(c)
        out, closed = [], self.closed_library()
        for n in store.taxonomy(run_id):
            if n["level"] != "point":
                continue
            pid = n["node_id"]
            cs = by_point.get(pid, [])
            qs = {(q["query"], q["round"]): q for q in queries.get(pid, [])}  # one search, several sources
            failed = sum(1 for key in qs if all(q["error"] for q in queries[pid]
                                                if (q["query"], q["round"]) == key))
            out.append(assign.PointOutcome(
                point_id=pid, wanted=per_point, accepted=sum(c["status"] == Status.ACCEPTED for c in cs),
                hits=len(hits.get(pid, ())), queries=len(qs), failed_queries=failed, assigned=len(cs),
                judged_out=sum(c["status"] in (Status.METADATA_REJECTED, Status.TRANSCRIPT_REJECTED, Status.REJECTED)
                               for c in cs),
                download_failed=sum(c["status"] == Status.DOWNLOAD_FAILED for c in cs),
                waiting=sum(c["status"] == Status.METADATA_ACCEPTED for c in cs), closed_library=closed,
                failed=sum(c["status"] == Status.ERROR for c in cs)))
        return out

    def _sources_failed(self, run_id: str) -> str | None:
        """One line when every search of the run failed (nothing was ever found), else None."""
        rows = self.d.store.queries(run_id)
        if not rows or any(q["error"] is None for q in rows) or self.d.store.candidates(run_id):
            return None
        by_source: dict[str, str] = {}
        for q in rows:
            by_source.setdefault(q["source"], q["error"])
        return "every search failed: " + "; ".join(f"{k}: {v}" for k, v in by_source.items())

    def coverage(self, state: BuildState) -> Command[Literal["plan_queries", "assemble"]]:
        """After a round's videos: re-query the short knowledge points (``plan_queries``, new phrasings for the
        open sources), or assemble: every point served, the rounds or a budget spent, every source failed,
        or every source a closed library (``library exhausted``: nothing new can be found)."""
        run_id, cfg = state["run_id"], self.d.cfg
        accepted = self._accepted(run_id)
        total = sum(accepted.values())
        points = [n["node_id"] for n in self.d.store.taxonomy(run_id) if n["level"] == "point"]
        short = [p for p in points if accepted.get(p, 0) < cfg.per_point]
        rnd = state.get("round", 1)
        failed = self._sources_failed(run_id)
        if state.get("stop"):
            why = f"stopped by budget {state['stop']}"
        elif failed:
            self.d.decision("coverage", None, "stop", [failed])
            return Command(goto="assemble", update={"points": [], "stop": "sources_failed", "coverage": failed})
        elif self.d.budget.videos_reached(total):
            why = f"budget videos spent: video target reached ({total})"
            self.d.on_event({"event": "budget", "node": "coverage", "budget": "videos", "detail": why})
            self.d.decision("coverage", None, "stop", [why], {"accepted": total, "short": len(short)})
            return Command(goto="assemble", update={"points": [], "stop": "videos", "coverage": why})
        elif not short:
            why = "every knowledge point has its videos"
        elif self.closed_library():
            names = ", ".join(dict.fromkeys(s.name for s in self.d.sources))
            why = (f"library exhausted: every source is a closed library ({names}): new phrasings find nothing "
                   f"new there; {len(short)} points short are not searched again")
        elif rnd >= cfg.max_rounds:
            why = f"{cfg.max_rounds} rounds done; {len(short)} points short"
        else:
            self.d.decision("coverage", None, "requery", [f"{len(short)} points short after round {rnd}"],
                           {"short": short})
            return Command(goto="plan_queries", update={"points": short, "round": rnd + 1})
        self.d.decision("coverage", None, "assemble", [why], {"accepted": total, "short": len(short)})
        return Command(goto="assemble", update={"points": [], "coverage": why})

    def assemble(self, state: BuildState) -> dict:
        """Pack the accepted videos into samples, export them, and summarize the run (funnel, short points,
        LLM totals, failures, warnings)."""
        run_id, store, runner = state["run_id"], self.d.store, self.d.runner
        accepted = store.candidates(run_id, Status.ACCEPTED)
        videos = [store.video(c["video_id"]) | {"video_id": c["video_id"]} for c in accepted]
        store.set_run_videos(run_id, [v["video_id"] for v in videos])
        samples = runner.pack(run_id, videos, videos) if videos else []
        reviewed = mark_lineage(store, run_id, runner.out_dir, runner.media, runner.export_samples) if videos else 0
        funnel: dict[str, int] = {}
        for c in store.candidates(run_id):
            funnel[c["status"]] = funnel.get(c["status"], 0) + 1
        names = {n["node_id"]: n["name"] for n in store.taxonomy(run_id)}
        short = []
        for o in self._outcomes(run_id):
            why = assign.shortfall(o, state.get("stop"))
            if why:
                short.append({"point_id": o.point_id, "point": names[o.point_id], "accepted": o.accepted,
                              "wanted": o.wanted, "why": why})
                self.d.decision("assemble", None, f"{o.point_id} short", [why], {"point": names[o.point_id]})
        points: dict[str, list[str]] = {}
        for c in accepted:
            points.setdefault(c["point_id"], []).append(c["video_id"])
        result = {"run_id": run_id, "accepted_videos": len(videos), "samples": len(samples),
                  "out_dir": str(runner.out_dir), "stop": state.get("stop"), "candidates": funnel,
                  "search_units": store.search_units(run_id), "llm": store.llm_totals(run_id),
                  "knowledge_points": sum(1 for n in store.taxonomy(run_id) if n["level"] == "point"),
                  "videos_by_point": {f"{p} {names[p]}": v for p, v in sorted(points.items())},
                  "short_points": short, "coverage": state.get("coverage"), "human_reviewed_videos": reviewed,
                  "failed": self._failed(run_id), "warnings": self._warnings(run_id)}
        checks = [c["rewrite"] for v in videos for c in store.clips(v["video_id"]) if c.get("rewrite")]
        if checks:
            result["rewrites"] = rewrite_counts(checks)
        if state.get("stop") == "sources_failed":
            result["error"] = self._sources_failed(run_id)
        return {"result": result}

    def _warnings(self, run_id: str) -> list[dict]:
        """The warnings the run's downloaded videos carry (a truncated file, ...): video, stage, kind,
        message, and the candidate's status (accepted, or where it stopped)."""
        return self.d.store.run_warnings(run_id)

    def _failed(self, run_id: str) -> list[dict]:
        """The run's faults, one per failed video: the node it failed in, the kind, the message."""
        out = []
        for c in self.d.store.candidates(run_id, Status.ERROR):
            node, _, kind = (c["reason"] or "").partition(": ")
            err = self.d.store.last_error(c["video_id"], stage=node)
            out.append({"video_id": c["video_id"], "node": node, "kind": kind,
                        "message": err["message"] if err else ""})
        return out

    # -- assembly ------------------------------------------------------------
    def compile(self, checkpointer=None):
        """The LangGraph graph of these nodes (review nodes where ``agent.review`` asks), compiled with
        ``checkpointer`` (store.checkpoint.DuckDBSaver: a killed build resumes)."""
        g = StateGraph(BuildState)
        t = self._traced
        review = ReviewNodes(self)  # the human review nodes asked for by agent.review (agents/review.py)
        g.add_node("interpret_goal", t("interpret_goal", self.interpret_goal))
        g.add_node("taxonomy", t("taxonomy", self.taxonomy))
        g.add_node("plan_queries", t("plan_queries", self.plan_queries))
        g.add_node("search_point", t("search_point", self.search_point))
        g.add_node("videos", t("videos", self.videos))
        g.add_node("after_videos", t("after_videos", self.after_videos), destinations=("videos", "coverage"))
        g.add_node("coverage", t("coverage", self.coverage), destinations=("plan_queries", "assemble"))
        g.add_node("assemble", t("assemble", self.assemble))
        g.add_edge(START, "interpret_goal")
        g.add_edge("interpret_goal", "taxonomy")
        g.add_edge("taxonomy", review.between(g, "taxonomy", "plan_queries"))
        g.add_conditional_edges("plan_queries", self.route_searches, ["search_point", "videos"])
        g.add_edge("search_point", "videos")
        g.add_edge("videos", review.between(g, "judge_metadata", review.between(g, "judge_transcripts",
                                                                                "after_videos")))
        g.add_edge("assemble", END)
        return g.compile(checkpointer=checkpointer)




def named_subjects(goal: str) -> list[str]:
    """The school subjects a goal names outright (KNOWN_SUBJECTS, in the goal's order); [] when it names none."""
    low = " " + " ".join(re.findall(r"[a-z]+", goal.lower())) + " "
    found = [s for s in KNOWN_SUBJECTS if f" {s} " in low or (s == "mathematics" and " math " in low)]
    return sorted(found, key=lambda s: low.find(f" {s} ") if f" {s} " in low else low.find(" math "))


def catalog_line(c) -> str:
    """A video at hand as the planner sees it: its title, and its sidecar's knowledge point if that differs."""
    point = str(c.extra.get("knowledge_point") or "")
    return c.title if not point or point.lower() == c.title.lower() else f"{c.title} ({point})"


def library_values(sources: list, limit: int = 40) -> dict:
    """The taxonomy prompt's view of the videos at hand: a local folder or URL list has a catalog (titles and
    topics of its files, untrusted), so the planner builds the taxonomy around them; web search has none."""
    titles: list[str] = []
    for source in sources:
        catalog = getattr(source, "catalog", None)
        if catalog is not None:
            titles += [catalog_line(c) for c in catalog()]
    titles = list(dict.fromkeys(t for t in titles if t.strip()))[:limit]
    if not titles:
        return {"library_note": "Videos will be searched for on the web; none are at hand yet:",
                "library": "(none)", "library_rule": "",
                "example": ' (for example "definition of irrational numbers" under Mathematics > Elementary '
                           'Mathematics > Rational and Irrational Numbers)'}
    return {"library_note": "These lesson videos are at hand, and the textbook can use only them (their titles):",
            "library": "\n".join(f"- {t}" for t in titles), "example": "",
            "library_rule": "Build the taxonomy around the videos at hand: for every video whose topic belongs "
                            "to one of the subjects, one sub-course of that subject is the video's topic and one "
                            "of its knowledge points is exactly what the video teaches."}


def _video_text(m: dict) -> str:
    """What a video's fit to a knowledge point is measured on (its metadata, untrusted)."""
    extra = m.get("extra") or {}
    return ". ".join(x for x in [m.get("title") or "", (m.get("description") or "")[:500],
                                 ", ".join(m.get("tags") or []),
                                 *(str(extra.get(k) or "") for k in ("subject", "course", "knowledge_point"))] if x)


def _search_units(source, max_results: int) -> int:
    """Quota units one search may cost: YouTube's search and details pages plus comments per video."""
    if hasattr(source, "estimate_units"):
        return source.estimate_units(max_results)
    if getattr(source, "name", None) != "youtube":
        return 0
    from tools.search import UNIT_COST

    pages = -(-max_results // 50)
    comments = max_results * UNIT_COST["commentThreads.list"] if getattr(source, "comments", 0) > 0 else 0
    return pages * (UNIT_COST["search.list"] + UNIT_COST["videos.list"]) + comments


def _trim(tax: schemas.Taxonomy, size) -> schemas.Taxonomy:
    """Hold the taxonomy to the configured size (a model without schema-constrained decoding may write more)."""
    for s in tax.subjects:
        s.courses = s.courses[: size.courses]
        for c in s.courses:
            c.subcourses = c.subcourses[: size.subcourses]
            for u in c.subcourses:
                u.points = u.points[: size.points]
    return tax
