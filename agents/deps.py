"""What the build's nodes and stages share (:class:`Deps`): the store, the gateway, the runner, the
config, and the three ways a build speaks: a decision in the trace, a progress line, a warning."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agents import assign
from agents.budget import BudgetTracker
from agents.config import AgentConfig
from agents.llm import Gateway
from pipeline.runner import Runner


@dataclass
class Deps:
    """What the nodes use; not part of the checkpointed state.

    ``enforce``: per judge (metadata, transcript, clip), True drops what it rejects, False records it as
    advisory; ``embed``: texts -> unit rows (fit, relevance); ``rewrite_use``: "used" (an accepted rewrite
    replaces the raw paragraph) or "advisory: WHY" (checked and stored; the raw text kept, with its slide
    fixes when grounded: agents.rewrite.Rewrite.kept)."""

    store: Any
    gateway: Gateway
    cfg: AgentConfig
    runner: Runner
    sources: list
    budget: BudgetTracker
    downloads: Path | str  # the media root's downloads/: a folder or an object-store URI (tools.storage)
    enforce: dict[str, bool] = field(default_factory=lambda: dict.fromkeys(("metadata", "transcript", "clip"), True))
    on_event: Callable[[dict], None] = lambda e: None
    embed: Callable | None = field(default=assign.embed_texts, repr=False)
    rewrite_use: str = "used"
    _taxonomies: dict = field(default_factory=dict, repr=False, compare=False)  # run_id -> (changes, by id, paths)

    def embedder(self):
        """The shared sentence embedder (agents.assign.shared_embedder)."""
        return assign.shared_embedder()

    @property
    def enforce_judges(self) -> bool:
        """True when every judge is enforced."""
        return all(self.enforce.values())

    @property
    def run_id(self) -> str:
        """The build's run id."""
        return self.gateway.run_id

    def workers(self) -> int:
        """Items worked on at once by a node (videos, points): ``agent.video_workers``, else the gateway's
        request limit per endpoint (LLM requests stay bounded by the gateway either way)."""
        return self.cfg.video_workers or self.gateway.cfg.concurrency

    # -- how a build speaks ---------------------------------------------------------------------------------
    def decision(self, node: str, video_id: str | None, decision: str, reasons: list[str],
                 detail: dict | None = None) -> None:
        """One event per decision on one item, with its reasons: what `textbook trace` prints (one store
        write: ``Store.event_decided``)."""
        self.store.event_decided(self.run_id, node, video_id, decision, reasons, detail)

    def progress(self, node: str, done: int, total: int, item: str | None = None) -> None:
        """A progress event (the console shows ``node done/total``)."""
        self.on_event({"event": "progress", "node": node, "done": done, "total": total, "item": item})

    def warn(self, node: str, message: str, detail: dict | None = None) -> None:
        """A fault the run survives (a source failed, ...): an event in the trace and a line on screen."""
        ev = self.store.event_start(self.run_id, node, None, None)
        self.store.event_end(ev, detail, decision="warning", reasons=[message])
        self.on_event({"event": "warning", "node": node, "message": message})

    # -- the taxonomy ---------------------------------------------------------------------------------------
    def taxonomy(self, run_id: str) -> dict[str, dict]:
        """The run's taxonomy nodes by id (shared: do not change them). Read once per run and kept until
        the store's taxonomy changes (``Store.taxonomy_changes``, moved by ``save_taxonomy``); a store
        without that counter is read each time."""
        return self._taxonomy(run_id)[0]

    def _taxonomy(self, run_id: str) -> tuple[dict[str, dict], dict[str, tuple[str, list[str]]]]:
        changes = getattr(self.store, "taxonomy_changes", None)
        kept = self._taxonomies.get(run_id)
        if changes is not None and kept is not None and kept[0] == changes:
            return kept[1], kept[2]
        by_id = {n["node_id"]: n for n in self.store.taxonomy(run_id)}
        paths: dict[str, tuple[str, list[str]]] = {}
        if changes is not None:
            self._taxonomies[run_id] = (changes, by_id, paths)
        return by_id, paths

    def path(self, run_id: str, point_id: str) -> tuple[str, list[str]]:
        """A knowledge point's name and its chain of names from the subject down (subject, course, ...).
        Raises KeyError for a node the run's taxonomy lacks."""
        by_id, paths = self._taxonomy(run_id)
        found = paths.get(point_id)
        if found is None:
            chain, node = [], by_id[point_id]
            while node:
                chain.append(node["name"])
                node = by_id.get(node["parent_id"]) if node["parent_id"] else None
            chain.reverse()
            found = paths[point_id] = (chain[-1], chain)
        return found[0], list(found[1])
