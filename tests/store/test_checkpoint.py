"""DuckDBSaver against real LangGraph graphs on a real DuckDB file: persistence, history,
resume after a crash (no finished node re-runs), interrupts across a reopen, async."""

from __future__ import annotations

import asyncio
import operator
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Annotated, TypedDict

import duckdb
import pytest
from langgraph.channels.delta import DeltaChannel
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, StateGraph
from langgraph.types import Command, interrupt

from store.checkpoint import DuckDBSaver

ROOT = Path(__file__).resolve().parents[2]
CALLS: Counter = Counter()  # node name -> calls in this process
FAIL_ONCE: set[str] = set()  # nodes that raise on their next call
KILL_AT = "TEXTBOOK_TEST_KILL_AT"  # env: the node that kills its process


class Flaky(RuntimeError):
    pass


class State(TypedDict, total=False):
    log: Annotated[list, operator.add]
    left: str
    answer: str


def _node(name: str):
    def run(state: State) -> State:
        CALLS[name] += 1
        if os.environ.get(KILL_AT) == name:
            os._exit(3)  # no cleanup, no close: a killed process
        if name in FAIL_ONCE:
            FAIL_ONCE.discard(name)
            raise Flaky(f"{name} failed")
        return {"log": [name]}

    return run


def chain_graph() -> StateGraph:
    """START -> a -> b -> c -> END, each appending its name to ``log``."""
    g = StateGraph(State)
    for name in "abc":
        g.add_node(name, _node(name))
    g.add_edge(START, "a")
    g.add_edge("a", "b")
    g.add_edge("b", "c")
    g.add_edge("c", END)
    return g


@pytest.fixture(autouse=True)
def _reset():
    CALLS.clear()
    FAIL_ONCE.clear()


def cfg(thread: str) -> dict:
    return {"configurable": {"thread_id": thread}}


def test_state_and_history_persist(tmp_path):
    db = tmp_path / "cp.duckdb"
    with DuckDBSaver.from_path(db) as saver:
        graph = chain_graph().compile(checkpointer=saver)
        assert graph.invoke({"log": ["in"]}, cfg("t1")) == {"log": ["in", "a", "b", "c"]}

    con = duckdb.connect(str(db))  # a new connection sees it all
    saver = DuckDBSaver(con)
    graph = chain_graph().compile(checkpointer=saver)
    assert graph.get_state(cfg("t1")).values == {"log": ["in", "a", "b", "c"]}
    assert graph.get_state(cfg("t1")).next == ()
    history = list(graph.get_state_history(cfg("t1")))
    assert [h.metadata["step"] for h in history] == [3, 2, 1, 0, -1]  # newest first
    assert [h.next for h in history] == [(), ("c",), ("b",), ("a",), ("__start__",)]
    ids = [h.config["configurable"]["checkpoint_id"] for h in history]
    assert ids == sorted(ids, reverse=True)
    assert history[1].parent_config["configurable"]["checkpoint_id"] == ids[2]

    assert [t.metadata["step"] for t in saver.list(cfg("t1"), limit=2)] == [3, 2]
    assert [t.metadata["step"] for t in saver.list(cfg("t1"), before=history[1].config)] == [1, 0, -1]
    assert [t.metadata["step"] for t in saver.list(cfg("t1"), before=history[1].config, limit=1)] == [1]
    assert [t.metadata["step"] for t in saver.list(cfg("t1"), filter={"source": "input"})] == [-1]
    assert [t.metadata["step"] for t in saver.list(cfg("t1"), filter={"source": "loop"}, limit=2)] == [3, 2]
    assert list(saver.list(cfg("t1"), filter={"source": "nope"})) == []
    assert [t.checkpoint["id"] for t in saver.list(history[2].config)] == [ids[2]]
    assert list(saver.list(cfg("other"))) == []

    # a past checkpoint by id, with its own channel values
    old = saver.get_tuple(history[2].config)
    assert old.checkpoint["channel_values"]["log"] == ["in", "a"]
    assert saver.get_tuple(cfg("nope")) is None
    assert saver.get_tuple({"configurable": {"thread_id": "t1", "checkpoint_id": "nope"}}) is None
    con.close()


def test_resume_after_a_failed_node_skips_finished_nodes(tmp_path):
    db = tmp_path / "cp.duckdb"
    FAIL_ONCE.add("b")
    con = duckdb.connect(str(db))
    graph = chain_graph().compile(checkpointer=DuckDBSaver(con))
    with pytest.raises(Flaky):
        graph.invoke({"log": []}, cfg("t1"))
    con.close()

    con = duckdb.connect(str(db))
    graph = chain_graph().compile(checkpointer=DuckDBSaver(con))
    assert graph.get_state(cfg("t1")).next == ("b",)
    assert graph.invoke(None, cfg("t1")) == {"log": ["a", "b", "c"]}
    assert CALLS == {"a": 1, "b": 2, "c": 1}
    con.close()


# durability "sync": a's checkpoint is on disk before b starts
CRASH_SCRIPT = """
import sys
import tests.store.test_checkpoint as t
from store.checkpoint import DuckDBSaver
with DuckDBSaver.from_path(sys.argv[1]) as saver:
    t.chain_graph().compile(checkpointer=saver).invoke({"log": []}, t.cfg("t1"), durability="sync")
"""


def test_resume_after_a_killed_process(tmp_path):
    db = tmp_path / "cp.duckdb"
    env = {**os.environ, "PYTHONPATH": str(ROOT), KILL_AT: "b"}
    proc = subprocess.run([sys.executable, "-c", CRASH_SCRIPT, str(db)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 3, proc.stderr
    with DuckDBSaver.from_path(db) as saver:
        graph = chain_graph().compile(checkpointer=saver)
        assert graph.get_state(cfg("t1")).values == {"log": ["a"]}
        assert graph.invoke(None, cfg("t1")) == {"log": ["a", "b", "c"]}
    assert CALLS == {"b": 1, "c": 1}  # a finished in the killed process


def fan_out_graph(db: Path) -> StateGraph:
    """START -> (left, right) -> join; right waits until left's writes are stored, then may fail."""

    def left(state: State) -> State:
        CALLS["left"] += 1
        return {"log": ["left"], "left": "done"}

    def right(state: State) -> State:
        CALLS["right"] += 1
        if "right" in FAIL_ONCE:
            FAIL_ONCE.discard("right")
            with duckdb.connect(str(db)) as probe:  # same process: a second connection to one instance
                deadline = time.monotonic() + 10
                while not probe.execute("SELECT count(*) FROM checkpoint_writes WHERE channel = 'left'").fetchone()[0]:
                    assert time.monotonic() < deadline, "left's writes were never stored"
                    time.sleep(0.01)
            raise Flaky("right failed")
        return {"log": ["right"]}

    def join(state: State) -> State:
        CALLS["join"] += 1
        return {"log": ["join"]}

    g = StateGraph(State)
    g.add_node("left", left)
    g.add_node("right", right)
    g.add_node("join", join)
    g.add_edge(START, "left")
    g.add_edge(START, "right")
    g.add_edge(["left", "right"], "join")
    g.add_edge("join", END)
    return g


def test_pending_writes_of_a_finished_sibling_survive(tmp_path):
    db = tmp_path / "cp.duckdb"
    FAIL_ONCE.add("right")
    con = duckdb.connect(str(db))
    saver = DuckDBSaver(con)
    graph = fan_out_graph(db).compile(checkpointer=saver)
    with pytest.raises(Flaky):
        graph.invoke({"log": []}, cfg("t1"))
    pending = saver.get_tuple(cfg("t1")).pending_writes
    assert ("left", "done") in [(c, v) for _, c, v in pending]
    assert "__error__" in [c for _, c, _ in pending]  # the failure is a write too (index -1)
    con.close()

    con = duckdb.connect(str(db))
    graph = fan_out_graph(db).compile(checkpointer=DuckDBSaver(con))
    out = graph.invoke(None, cfg("t1"))
    assert sorted(out["log"][:2]) == ["left", "right"] and out["log"][2:] == ["join"]
    assert out["left"] == "done"
    assert CALLS == {"left": 1, "right": 2, "join": 1}
    con.close()


def interrupt_graph() -> StateGraph:
    def ask(state: State) -> State:
        CALLS["ask"] += 1
        return {"answer": interrupt({"question": "which subject?"})}

    g = StateGraph(State)
    g.add_node("a", _node("a"))
    g.add_node("ask", ask)
    g.add_edge(START, "a")
    g.add_edge("a", "ask")
    g.add_edge("ask", END)
    return g


def test_interrupt_and_resume_across_a_reopen(tmp_path):
    db = tmp_path / "cp.duckdb"
    with DuckDBSaver.from_path(db) as saver:
        out = interrupt_graph().compile(checkpointer=saver).invoke({"log": []}, cfg("t1"))
        assert out["__interrupt__"][0].value == {"question": "which subject?"}

    with DuckDBSaver.from_path(db) as saver:
        graph = interrupt_graph().compile(checkpointer=saver)
        state = graph.get_state(cfg("t1"))
        assert state.next == ("ask",)
        assert state.interrupts[0].value == {"question": "which subject?"}
        assert graph.invoke(Command(resume="chemistry"), cfg("t1")) == {"log": ["a"], "answer": "chemistry"}
        assert graph.get_state(cfg("t1")).next == ()
    assert CALLS == {"a": 1, "ask": 2}  # ask re-runs up to interrupt(), which now returns the answer


def test_delete_thread(tmp_path):
    with DuckDBSaver.from_path(tmp_path / "cp.duckdb") as saver:
        graph = interrupt_graph().compile(checkpointer=saver)
        graph.invoke({"log": []}, cfg("t1"))  # leaves pending writes (the interrupt)
        graph.invoke({"log": []}, cfg("t2"))

        def rows(thread: str) -> list[int]:
            return [saver._cur.execute(f"SELECT count(*) FROM {table} WHERE thread_id = ?", [thread]).fetchone()[0]
                    for table in ("checkpoints", "checkpoint_blobs", "checkpoint_writes")]

        assert all(rows("t1")) and all(rows("t2"))
        saver.delete_thread("t1")
        assert rows("t1") == [0, 0, 0]
        assert all(rows("t2"))
        assert saver.get_tuple(cfg("t1")) is None
        assert graph.get_state(cfg("t2")).next == ("ask",)


def test_put_writes_keeps_regular_writes_once_and_replaces_special_ones(tmp_path):
    with DuckDBSaver.from_path(tmp_path / "cp.duckdb") as saver:
        chain_graph().compile(checkpointer=saver).invoke({"log": []}, cfg("t1"))
        config = saver.get_tuple(cfg("t1")).config
        saver.put_writes(config, [("log", ["x"]), ("__error__", "first")], "task1", "~a")
        saver.put_writes(config, [("log", ["y"]), ("__error__", "second")], "task1", "~a")  # a retry
        saver.put_writes(config, [("log", ["z"])], "task0", "~b")
        assert saver.get_tuple(config).pending_writes == [
            ("task1", "__error__", "second"), ("task1", "log", ["x"]), ("task0", "log", ["z"])]


def test_async_invoke(tmp_path):
    async def main(saver: DuckDBSaver) -> tuple[dict, list[int], dict]:
        graph = chain_graph().compile(checkpointer=saver)
        out = await graph.ainvoke({"log": []}, cfg("t1"))
        steps = [t.metadata["step"] async for t in saver.alist(cfg("t1"), limit=3)]
        FAIL_ONCE.add("c")
        with pytest.raises(Flaky):
            await graph.ainvoke({"log": ["again"]}, cfg("t2"))
        resumed = await graph.ainvoke(None, cfg("t2"))
        await saver.adelete_thread("t1")
        assert await saver.aget_tuple(cfg("t1")) is None
        return out, steps, resumed

    with DuckDBSaver.from_path(tmp_path / "cp.duckdb") as saver:
        out, steps, resumed = asyncio.run(main(saver))
    assert out == {"log": ["a", "b", "c"]}
    assert steps == [3, 2, 1]
    assert resumed == {"log": ["again", "a", "b", "c"]}
    assert CALLS == {"a": 2, "b": 2, "c": 3}


def _extend(state: list | None, writes: list[list]) -> list:
    return [*(state or []), *(x for w in writes for x in w)]


class DeltaState(TypedDict, total=False):
    log: Annotated[list, operator.add]
    delta: Annotated[list, DeltaChannel(_extend, snapshot_frequency=2)]  # stored as writes between snapshots


def _history_after_a_fork(saver, durability: str) -> list[tuple]:
    g = StateGraph(DeltaState)
    for name in "abcd":
        g.add_node(name, lambda s, name=name: {"log": [name], "delta": [name]})
    g.add_edge(START, "a")
    for x, y in ["ab", "bc", "cd"]:
        g.add_edge(x, y)
    g.add_edge("d", END)
    graph = g.compile(checkpointer=saver)
    graph.invoke({"log": ["in"], "delta": ["in"]}, cfg("t1"), durability=durability)
    graph.invoke({"log": ["in2"], "delta": ["in2"]}, cfg("t1"), durability=durability)
    history = list(graph.get_state_history(cfg("t1")))
    fork = graph.update_state(history[len(history) // 2].config, {"log": ["u"], "delta": ["u"]})
    graph.invoke(None, fork, durability=durability)
    return [(h.values, h.next, h.metadata["step"], h.metadata["source"]) for h in graph.get_state_history(cfg("t1"))]


@pytest.mark.parametrize("durability", ["sync", "exit"])
def test_same_history_as_langgraphs_in_memory_saver(tmp_path, durability):
    """Two runs, a fork by update_state, delta channels: every checkpoint reads back as InMemorySaver's."""
    expected = _history_after_a_fork(InMemorySaver(), durability)
    with DuckDBSaver.from_path(tmp_path / "cp.duckdb") as saver:
        assert _history_after_a_fork(saver, durability) == expected
    assert expected[0][0]["delta"] == expected[0][0]["log"]
