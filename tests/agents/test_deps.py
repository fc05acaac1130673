"""Deps' taxonomy (agents/deps.py): read once per run, kept while the store's taxonomy stays the same, read
again once ``save_taxonomy`` changed it (a review that renames a point, a rerun's new taxonomy). A DuckDB
file in a temporary folder."""

from __future__ import annotations

import pytest

from agents.deps import Deps
from store import open_store


def _nodes(point_name: str) -> list[dict]:
    return [{"node_id": "s1", "parent_id": None, "level": "subject", "name": "Physics", "position": 0,
             "difficulty": None},
            {"node_id": "c1", "parent_id": "s1", "level": "course", "name": "Mechanics", "position": 1,
             "difficulty": None},
            {"node_id": "p1", "parent_id": "c1", "level": "point", "name": point_name, "position": 2,
             "difficulty": 2}]


@pytest.fixture
def store(tmp_path):
    s = open_store(tmp_path / "deps.duckdb")
    yield s
    s.close()


def _deps(store, tmp_path) -> Deps:
    return Deps(store=store, gateway=None, cfg=None, runner=None, sources=[], budget=None, downloads=tmp_path)


def test_a_points_path_is_read_once_and_again_after_the_taxonomy_changes(store, tmp_path, monkeypatch):
    reads = []
    real = store.taxonomy
    monkeypatch.setattr(store, "taxonomy", lambda run_id: reads.append(run_id) or real(run_id))
    store.save_taxonomy("run", _nodes("Newton's laws"))
    d = _deps(store, tmp_path)
    for _ in range(50):
        assert d.path("run", "p1") == ("Newton's laws", ["Physics", "Mechanics", "Newton's laws"])
    assert d.taxonomy("run")["p1"]["difficulty"] == 2
    assert reads == ["run"]  # one read for 50 paths
    d.path("run", "p1")[1].append("changed by a caller")  # a caller's list is its own
    assert d.path("run", "p1")[1] == ["Physics", "Mechanics", "Newton's laws"]

    store.save_taxonomy("run", _nodes("Newton's three laws"))  # renamed: the kept copy is stale
    assert d.path("run", "p1") == ("Newton's three laws", ["Physics", "Mechanics", "Newton's three laws"])
    assert reads == ["run", "run"]
    store.save_taxonomy("other", _nodes("Energy"))  # another run's taxonomy: read again, still right
    assert d.path("run", "p1")[0] == "Newton's three laws" and d.path("other", "p1")[0] == "Energy"
    with pytest.raises(KeyError):
        d.path("run", "p9")
