"""Human review of a build: the taxonomy before any search, and borderline judgments (issue 12).

- ``--review taxonomy`` (``agent.review.taxonomy``): a ``review_taxonomy`` node after ``taxonomy``
  pauses the graph with LangGraph's ``interrupt``; the answer approves the taxonomy or edits it
  (rename, remove, add points, reorder), the edited tree replaces the run's taxonomy, and only the
  points that remain are searched. The edit is an event in the trace.
- ``--review borderline`` (``agent.review.borderline``): a metadata or transcript judgment whose
  score falls in ``agent.review.band`` (0-10, ends included) is queued (candidate status
  ``review_meta`` / ``review_transcript``) instead of acted on; ``review_metadata`` /
  ``review_transcripts`` nodes after the judges pause for the human, who accepts or rejects each.
  A human decision is a ``human:<stage>`` judgment, an event saying whose verdict it overrides, a
  line in ``textbook stats``, and a ``review`` entry in the exported samples' metadata (lineage).

Answers reach the graph as ``Command(resume=answer)`` (``drive``). They come from the viewer's form
or ``textbook review``, recorded as ``answered`` review events, or, while ``textbook build --view``
waits, through a ``ReviewInbox`` from the viewer's thread to the build's. The checkpoint holds the
interrupt, so a build waiting for review survives a restart: ``textbook build --resume RUN_ID``
continues it once the answer is recorded.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from collections.abc import Callable
from typing import Any

from langgraph.errors import GraphInterrupt
from langgraph.types import Command, interrupt

from pipeline.records import Status
from pipeline.stage import Drop

STATUS = {"metadata": Status.REVIEW_METADATA, "transcript": Status.REVIEW_TRANSCRIPT}
NODE = {"metadata": "review_metadata", "transcript": "review_transcripts"}
_BAD_NAME = re.compile(r"[{}\[\]<>&\"\n]")


def parse_review_flag(text: str) -> dict:
    """``--review taxonomy,borderline`` as ``agent.review`` settings."""
    parts = {p.strip() for p in text.split(",") if p.strip()}
    unknown = sorted(parts - {"taxonomy", "borderline"})
    if unknown or not parts:
        raise ValueError(f"--review takes taxonomy and/or borderline, not {', '.join(unknown) or repr(text)}")
    return {"taxonomy": "taxonomy" in parts, "borderline": "borderline" in parts}


class ReviewInbox:
    """Hands review answers from the viewer's threads to the build's thread (the one store writer)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._waiting: dict[tuple[str, str], dict] = {}
        self._answers: dict[tuple[str, str], dict] = {}

    def wait(self, run_id: str, payload: dict) -> dict:
        """Block the build until an answer for ``payload`` arrives (Ctrl-C raises KeyboardInterrupt)."""
        key = (run_id, payload["key"])
        with self._cond:
            self._waiting[key] = payload
            try:
                while key not in self._answers:
                    self._cond.wait(0.5)
                return self._answers.pop(key)
            finally:
                self._waiting.pop(key, None)

    def waiting(self, run_id: str, key: str) -> dict | None:
        """The payload run ``run_id`` waits on for review ``key``, or None."""
        with self._cond:
            return self._waiting.get((run_id, key))

    def put(self, run_id: str, key: str, answer: dict) -> None:
        """Hand a human's answer to the waiting build; ValueError when nothing waits on that key."""
        with self._cond:
            if (run_id, key) not in self._waiting:
                raise ValueError(f"{run_id} is not waiting for the review {key!r}")
            self._answers[(run_id, key)] = answer
            self._cond.notify_all()


# -- the store side: waiting, answered, pending ---------------------------------------------------------
def _review_events(store, run_id: str, decision: str) -> list[dict]:
    return [json.loads(r["output"]) for r in store.events(run_id, "review")
            if r["decision"] == decision and r["output"]]


def pending_all(store, run_id: str) -> list[dict]:
    """The payloads of the run's reviews that wait for an answer, oldest first."""
    answered = {a["key"] for a in _review_events(store, run_id, "answered")}
    return [p for p in _review_events(store, run_id, "waiting") if p["key"] not in answered]


def pending(store, run_id: str, key: str) -> dict | None:
    """The payload of review ``key`` if it still waits for an answer, else None."""
    return next((p for p in pending_all(store, run_id) if p["key"] == key), None)


def answered(store, run_id: str, key: str) -> dict | None:
    """The recorded answer of review ``key``, or None."""
    found = [a for a in _review_events(store, run_id, "answered") if a["key"] == key]
    return found[-1]["answer"] if found else None


def _waiting_payload(store, run_id: str, key: str) -> dict | None:
    found = [p for p in _review_events(store, run_id, "waiting") if p["key"] == key]
    return found[0] if found else None


def record_answer(store, run_id: str, key: str, answer: dict, via: str) -> None:
    """An ``answered`` review event: what a human decided, through which window."""
    payload = _waiting_payload(store, run_id, key) or {"kind": "?"}
    ev = store.event_start(run_id, "review", None, None)
    store.event_end(ev, {"key": key, "kind": payload["kind"], "answer": answer, "via": via}, decision="answered",
                    reasons=[f"a human answered the {payload['kind']} review in the {via}"])


# -- answers: from a form, checked against the payload ---------------------------------------------------
def answer_from_form(fields: dict[str, str], adds: dict[str, list[str]] | None = None) -> dict:
    """The answer a review form posted: ``action`` approve | edit | decide, with ``name:ID``,
    ``order:ID``, ``remove:ID``, ``add:SUBCOURSE_ID`` (names, one per line) or ``decide:VIDEO_ID``."""
    action = fields.get("action", "")
    if action == "approve":
        return {"action": "approve"}
    if action == "decide":
        return {"action": "decide", "decisions": {k[7:]: v for k, v in fields.items() if k.startswith("decide:")}}
    if action != "edit":
        raise ValueError(f"unknown review action {action!r}")
    order = {}
    for k, v in fields.items():
        if k.startswith("order:") and v.strip():
            try:
                order[k[6:]] = int(v)
            except ValueError:
                raise ValueError(f"the order of {k[6:]} must be a whole number, not {v[:20]!r}") from None
    added = {}
    for k, values in (adds or {}).items():
        names = [line.strip() for v in values for line in v.splitlines() if line.strip()]
        if names:
            added[k[4:]] = names
    return {"action": "edit", "names": {k[5:]: v for k, v in fields.items() if k.startswith("name:")},
            "order": order, "remove": [k[7:] for k in fields if k.startswith("remove:")], "add": added}


def check_answer(payload: dict, answer: dict) -> list[str]:
    """What is wrong with ``answer`` to ``payload`` (empty: it can be taken)."""
    if not isinstance(answer, dict):
        return ["an answer is a mapping"]
    try:
        if payload["kind"] == "taxonomy":
            apply_taxonomy(payload["nodes"], answer)
        elif payload["kind"] == "borderline":
            _decisions(payload, answer)
        else:
            return [f"unknown review kind {payload['kind']!r}"]
    except ValueError as exc:
        return [str(exc)]
    return []


def _clean(name: str) -> str:
    return " ".join(str(name).split())


def _check_name(name: str, what: str) -> str:
    name = _clean(name)
    if sum(ch.isalpha() for ch in name) < 3:
        raise ValueError(f"{what}: {name!r} is not a name (fewer than 3 letters)")
    if len(name) > 100 or _BAD_NAME.search(name):
        raise ValueError(f"{what}: {name[:40]!r} is not a short plain name (no brackets, quotes, < > &)")
    return name


def with_order(nodes: list[dict]) -> list[dict]:
    """Taxonomy rows in tree order, each with ``order``: its place among its siblings, from 1."""
    seen: dict[str | None, int] = {}
    out = []
    for n in sorted(nodes, key=lambda n: n["position"]):
        seen[n["parent_id"]] = seen.get(n["parent_id"], 0) + 1
        out.append({k: n[k] for k in ("node_id", "parent_id", "level", "name", "position")} |
                   {"order": seen[n["parent_id"]]})
    return out


def apply_taxonomy(nodes: list[dict], answer: dict) -> tuple[list[dict], list[str]]:
    """The taxonomy after ``answer`` and the changes, one line each. ``answer``: ``{"action": "approve"}``
    or ``{"action": "edit", "names": {id: name}, "remove": [id], "add": {subcourse_id: [name]},
    "order": {id: n}}`` (any part may be missing). Removing a node removes what is under it; new
    points get ids after the sub-course's last. Raises ValueError on an unknown id, a bad or duplicate
    name, or an edit that leaves no knowledge point."""
    nodes = with_order(nodes)
    if answer.get("action") == "approve":
        return nodes, []
    if answer.get("action") != "edit":
        raise ValueError(f"unknown taxonomy action {answer.get('action')!r} (approve or edit)")
    by_id = {n["node_id"]: dict(n) for n in nodes}
    changes: list[str] = []
    for part in ("names", "order", "remove", "add"):
        for nid in answer.get(part) or []:
            if nid not in by_id:
                raise ValueError(f"no taxonomy node {nid!r}")
    for nid, name in (answer.get("names") or {}).items():
        new = _check_name(name, f"the name of {nid}")
        if new != by_id[nid]["name"]:
            changes.append(f"renamed {nid} {by_id[nid]['name']!r} to {new!r}")
            by_id[nid]["name"] = new
    for nid, order in (answer.get("order") or {}).items():
        if int(order) != by_id[nid]["order"]:
            changes.append(f"moved {nid} {by_id[nid]['name']!r} from place {by_id[nid]['order']} to {int(order)}")
            by_id[nid]["order"] = int(order) - 0.5 if int(order) < by_id[nid]["order"] else int(order) + 0.5
    removed = set()
    for nid in answer.get("remove") or []:
        changes.append(f"removed {nid} {by_id[nid]['name']!r}")
        removed.add(nid)
    for sub, names in (answer.get("add") or {}).items():
        if by_id[sub]["level"] != "subcourse":
            raise ValueError(f"knowledge points are added under a sub-course, and {sub} is a {by_id[sub]['level']}")
        taken = [int(m.group(1)) for n in by_id if (m := re.fullmatch(re.escape(sub) + r"\.p(\d+)", n))]
        last = max(taken, default=0)
        for i, name in enumerate(names, 1):
            nid = f"{sub}.p{last + i}"
            by_id[nid] = {"node_id": nid, "parent_id": sub, "level": "point",
                          "name": _check_name(name, f"a new point under {sub}"), "position": 10**9,
                          "order": 10**6 + i}
            changes.append(f"added {nid} {by_id[nid]['name']!r}")
    # drop removed subtrees, then lay the tree out again: siblings by their order, then old position
    children: dict[str | None, list[dict]] = {}
    for n in by_id.values():
        children.setdefault(n["parent_id"], []).append(n)
    out: list[dict] = []

    def walk(parent: str | None) -> None:
        for n in sorted(children.get(parent, []), key=lambda n: (n["order"], n["position"])):
            if n["node_id"] in removed:
                continue
            out.append({"node_id": n["node_id"], "parent_id": n["parent_id"], "level": n["level"],
                        "name": n["name"], "position": len(out)})
            walk(n["node_id"])

    walk(None)
    points = [n for n in out if n["level"] == "point"]
    if not points:
        raise ValueError("the edited taxonomy has no knowledge point left")
    seen: dict[str, str] = {}
    for n in points:
        if n["name"].lower() in seen:
            raise ValueError(f"two knowledge points are named {n['name']!r} ({seen[n['name'].lower()]}, "
                             f"{n['node_id']})")
        seen[n["name"].lower()] = n["node_id"]
    return out, changes


def _decisions(payload: dict, answer: dict) -> dict[str, str]:
    decisions = answer.get("decisions") or {}
    items = {i["video_id"] for i in payload["items"]}
    unknown = sorted(set(decisions) - items)
    if unknown:
        raise ValueError(f"not in this review: {', '.join(unknown)}")
    missing = sorted(items - set(decisions))
    if missing:
        raise ValueError(f"decide every video (accept or reject): {', '.join(missing)} left")
    bad = {v for v in decisions.values() if v not in ("accept", "reject")}
    if bad:
        raise ValueError(f"a decision is accept or reject, not {sorted(bad)[0]!r}")
    return decisions


# -- the graph side ------------------------------------------------------------------------------------
def in_band(cfg, score: float | None) -> bool:
    """True when borderline review is on and ``score`` (0-10) falls in ``agent.review.band`` (ends included)."""
    lo, hi = cfg.review.band
    return bool(cfg.review.borderline) and score is not None and lo <= float(score) <= hi


def borderline(deps, run_id: str, video_id: str, stage: str, verdict: str, score: float | None) -> Drop | None:
    """A judgment scored in the review band waits for a human instead of being acted on: its trace event and
    the Drop that parks the candidate (status ``review_meta`` or ``review_transcript``); None outside the band.
    ``deps``: agents.deps.Deps; ``stage``: metadata or transcript; ``score``: 0-10."""
    cfg = deps.cfg
    if not in_band(cfg, score):
        return None
    lo, hi = cfg.review.band
    deps.decision(f"judge_{'metadata' if stage == 'metadata' else 'transcripts'}", video_id, "queued for review",
                  [f"model {verdict}, score {score} in the review band {lo:g}-{hi:g}"], {"score": score})
    return Drop(STATUS[stage], f"borderline: model {verdict} with score {score}; waits for review", traced=True)


class ReviewNodes:
    """The review nodes of a build graph, added where ``agent.review`` asks for them."""

    def __init__(self, agent):
        self.a = agent

    def between(self, graph, before: str, after: str) -> str:
        """Add the review node that follows ``before`` when enabled (with its edge to ``after``);
        return the node ``before`` leads to."""
        cfg = self.a.d.cfg.review
        if before == "taxonomy" and cfg.taxonomy:
            name, fn = "review_taxonomy", self.taxonomy
        elif before in ("judge_metadata", "judge_transcripts") and cfg.borderline:
            stage = "metadata" if before == "judge_metadata" else "transcript"
            name, fn = NODE[stage], (lambda state, stage=stage: self.borderline(state, stage))
        else:
            return after
        graph.add_node(name, self._traced(name, fn))
        graph.add_edge(name, after)
        return name

    def _traced(self, name: str, fn: Callable) -> Callable:
        """A node event like the graph's own tracing; a pause for review ends the event, not as an error."""
        def node(state: dict):
            store = self.a.d.store
            if state.get("stop"):
                return {}
            ev = store.event_start(state["run_id"], name, None, {"round": state.get("round")})
            self.a.d.on_event({"event": "node_start", "node": name})
            try:
                out = fn(state)
            except GraphInterrupt:
                store.event_end(ev, {"paused": "waits for a human"})
                raise
            except Exception as exc:
                store.event_end(ev, None, error=f"{type(exc).__name__}: {exc}"[:500])
                raise
            store.event_end(ev, out)
            self.a.d.on_event({"event": "node_end", "node": name})
            return out
        return node

    def _wait(self, run_id: str, payload: dict) -> Any:
        """Record that the run waits (once), then pause; returns the human's answer on resume."""
        store = self.a.d.store
        if _waiting_payload(store, run_id, payload["key"]) is None:
            ev = store.event_start(run_id, "review", None, None)
            store.event_end(ev, payload, decision="waiting", reasons=[f"waits for a human: {payload['kind']} review"])
        return interrupt(payload)

    def taxonomy(self, state: dict) -> dict:
        """The review_taxonomy node: wait for the human's edit of the proposed taxonomy, apply it, trace it."""
        run_id, store = state["run_id"], self.a.d.store
        # the snapshot shown to the human, not the store's current rows: re-running after a crash
        # applies the same edit to the same tree
        payload = _waiting_payload(store, run_id, "taxonomy") or {
            "kind": "taxonomy", "key": "taxonomy", "nodes": with_order(store.taxonomy(run_id))}
        answer = self._wait(run_id, payload)
        nodes, changes = apply_taxonomy(payload["nodes"], answer)
        if changes:
            store.save_taxonomy(run_id, nodes)
        points = [n["node_id"] for n in nodes if n["level"] == "point"]
        self.a.d.decision("review_taxonomy", None, "edited by a human" if changes else "approved by a human",
                         changes or ["the proposed taxonomy, unchanged"], {"points": len(points), "by": "human"})
        return {"points": points}

    def borderline(self, state: dict, stage: str) -> dict:
        """A review node for ``stage`` (metadata or transcript): wait for the human's verdicts on the queued
        candidates, apply each (agents/review.py ``_apply``), trace them."""
        run_id, store = state["run_id"], self.a.d.store
        queued = store.candidates(run_id, STATUS[stage])
        if not queued:
            return {}
        ids = sorted(c["video_id"] for c in queued)
        key = f"borderline:{stage}:r{state.get('round', 1)}:" + hashlib.sha256(",".join(ids).encode()).hexdigest()[:8]
        payload = _waiting_payload(store, run_id, key) or self._borderline_payload(run_id, stage, key, queued)
        answer = self._wait(run_id, payload)
        decisions = _decisions(payload, answer)
        for item in payload["items"]:
            vid, human = item["video_id"], decisions[item["video_id"]]
            self._apply(run_id, stage, vid, human)
            model = f"model {item['verdict']}, score {item['score']}"
            why = (f"a human {human}ed it, overriding the model ({model})" if human != item["verdict"]
                   else f"a human {human}ed it, as the model did ({model})")
            store.save_judgment(run_id, vid, f"human:{stage}", human, None, [why],
                                {"by": "human", "model_verdict": item["verdict"], "model_score": item["score"]})
            self.a.d.decision(NODE[stage], vid, f"human {human}", [why],
                             {"by": "human", "overrides": human != item["verdict"]})
        return {}

    def _borderline_payload(self, run_id: str, stage: str, key: str, queued: list[dict]) -> dict:
        store, names = self.a.d.store, {n["node_id"]: n["name"] for n in self.a.d.store.taxonomy(run_id)}
        items = []
        for c in queued:
            js = {j["kind"]: j for j in store.judgments(run_id, c["video_id"])}
            if stage == "metadata":
                j = js.get("metadata") or {}
                verdict, score, reasons = j.get("verdict"), j.get("score"), j.get("reasons") or []
            else:
                pair = [js[k] for k in ("transcript_a", "transcript_b") if k in js]
                verdict = "reject" if pair and all(j["verdict"] == "reject" for j in pair) else "accept"
                scores = [j["score"] for j in pair if j["score"] is not None]
                score = round(sum(scores) / len(scores), 2) if scores else None
                reasons = [f"{j['kind']}: {j['verdict']}: {'; '.join(j['reasons'])}" for j in pair]
            items.append({"video_id": c["video_id"], "title": c["metadata"].get("title"), "point_id": c["point_id"],
                          "point": names.get(c["point_id"], c["point_id"]), "verdict": verdict, "score": score,
                          "reasons": reasons})
        return {"kind": "borderline", "key": key, "stage": stage, "band": list(self.a.d.cfg.review.band),
                "items": items}

    def _apply(self, run_id: str, stage: str, vid: str, human: str) -> None:
        store = self.a.d.store
        if stage == "metadata":
            store.update_candidate(run_id, vid, reason=f"human review: {human}",
                                   status=Status.METADATA_ACCEPTED if human == "accept" else Status.METADATA_REJECTED)
        elif human == "accept":
            store.update_candidate(run_id, vid, status=Status.TRANSCRIPT_ACCEPTED, reason="human review: accept")
        else:
            store.update_candidate(run_id, vid, status=Status.TRANSCRIPT_REJECTED, reason="human review: reject")
            store.update_run_video(run_id, vid, status=Status.TRANSCRIPT_REJECTED, reason="human_review")


# -- driving the graph through its pauses -----------------------------------------------------------------
def drive(graph, inputs: dict | None, config: dict, store, run_id: str,
          wait: Callable[[str, dict], dict] | None = None, on_event: Callable[[dict], None] = lambda e: None) -> dict:
    """Invoke the graph until it ends or pauses for a review nobody has answered.

    At each pause the recorded answer (an ``answered`` event) resumes it with ``Command(resume=...)``;
    with ``wait`` (the viewer of ``build --view``) the build blocks until the human answers. Returns the
    final state, or ``{"waiting_for_review": payload}`` with the run marked ``waiting``."""
    value: Any = inputs
    while True:
        if value is None:
            paused = graph.get_state(config).interrupts
            if paused:
                payload = paused[0].value
                answer = answered(store, run_id, payload["key"])
                if answer is None and wait is not None:
                    store.finish_run(run_id, "waiting", {"waiting_for_review": payload["kind"]})
                    on_event({"event": "review_wait", "run_id": run_id, "kind": payload["kind"], "key": payload["key"]})
                    try:
                        answer = wait(run_id, payload)
                    except KeyboardInterrupt:
                        answer = None
                    if answer is not None:
                        record_answer(store, run_id, payload["key"], answer, via="viewer of the running build")
                        store.finish_run(run_id, "running", {})
                if answer is None:
                    store.finish_run(run_id, "waiting", {"waiting_for_review": payload["kind"]})
                    return {"waiting_for_review": payload}
                on_event({"event": "review_answered", "run_id": run_id, "kind": payload["kind"]})
                value = Command(resume=answer)
        final = graph.invoke(value, config)
        if not final.get("__interrupt__"):
            return final
        value = None


# -- lineage in the export -----------------------------------------------------------------------------------
def mark_lineage(store, run_id: str, out_dir, media_dir, export=None) -> int:
    """Mark every sample position of a video a human decided on with ``metadata["review"]`` (stage,
    human decision, the model's verdict and score); rewrite the stored samples and the export when
    that changes them (``export(run_id, samples)``, the runner's, names the file as the run's first export
    did; without it, samples.jsonl in ``out_dir``). Returns the number of videos marked."""
    from pipeline.export import export_samples

    marks: dict[str, list[dict]] = {}
    for j in sorted((j for j in store.judgments(run_id) if j["kind"].startswith("human:")), key=lambda j: j["kind"]):
        d = j["detail"] if isinstance(j["detail"], dict) else json.loads(j["detail"] or "{}")
        marks.setdefault(j["video_id"], []).append(
            {"stage": j["kind"].split(":", 1)[1], "by": "human", "decision": j["verdict"],
             "model_verdict": d.get("model_verdict"), "model_score": d.get("model_score")})
    if not marks:
        return 0
    samples = store.samples(run_id)
    changed = False
    for s in samples:
        for m in s["metadata"]:
            mark = marks.get(m.get("video_id"))
            if mark and m.get("review") != mark:
                m["review"] = mark
                changed = True
    if changed:
        store.update_samples(run_id, samples)
        if export is not None:
            export(run_id, samples)
        else:
            export_samples(samples, out_dir, "jsonl", media_dir)
    return sum(1 for vid in marks if any(m.get("video_id") == vid for s in samples for m in s["metadata"]))
