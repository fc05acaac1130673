"""The local, process and Ray executors map one function to the same results by index,
and a task's ToolError comes back with its kind."""

from __future__ import annotations

import os

import pytest

from pipeline.executors import LocalExecutor, ProcessExecutor, RayExecutor, make_executor
from tests.pipeline._tasks import square
from tools.errors import ToolError

TASKS = [(x, 1.0 if x == 0 else 0.0) for x in range(6)]  # the first task is the slowest


@pytest.fixture(scope="module")
def ray_executor():
    """One local Ray for the module: starting it takes seconds on a small machine."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray

    assert not ray.is_initialized()
    executor = RayExecutor(workers=2)
    yield executor
    executor.close()
    assert not ray.is_initialized()


@pytest.fixture(params=["local", "process", pytest.param("ray", marks=pytest.mark.slow)])
def executor(request):
    if request.param == "ray":
        yield request.getfixturevalue("ray_executor")
        return
    executor = make_executor(request.param, workers=2)
    yield executor
    executor.close()


def test_same_results_by_index(executor):
    out = list(executor.map_unordered(square, TASKS))
    assert sorted(i for i, _ in out) == list(range(len(TASKS)))
    assert {i: r[0] for i, r in out} == {i: x * x for i, (x, _) in enumerate(TASKS)}
    pids = {r[1] for _, r in out}
    if isinstance(executor, LocalExecutor):
        assert pids == {os.getpid()}
    else:
        assert os.getpid() not in pids  # really ran elsewhere
        assert out[0][0] != 0  # yielded as they finish, not in order


def test_tool_error_keeps_its_kind(executor):
    out = dict(executor.map_unordered(square, [(2,), (-1,), (3,)]))
    assert out[0][0] == 4 and out[2][0] == 9
    assert type(out[1]) is ToolError
    assert (out[1].kind, out[1].message) == ("corrupt", "bad input -1")


@pytest.mark.slow
def test_close_leaves_a_ray_it_did_not_start(ray_executor):
    import ray

    list(ray_executor.map_unordered(square, [(1,)]))  # the module's executor started Ray
    other = make_executor("ray", workers=2)
    assert isinstance(other, RayExecutor) and other.address is None
    assert dict(other.map_unordered(square, [(5,)]))[0][0] == 25
    other.close()
    assert ray.is_initialized()


def test_make_executor():
    assert isinstance(make_executor("local"), LocalExecutor)
    assert isinstance(make_executor("process", workers=3), ProcessExecutor)
    with pytest.raises(ValueError, match="local, process or ray"):
        make_executor("nope")
