"""The gateway under concurrency and faults, against the real stand-in server over HTTP with the real
ChatOpenAI client: slots per endpoint, re-sends of timeouts, 429 and 503, garbage that fails one
item only, failures never cached, preflight, and the stand-in's answers in every structured mode."""

from __future__ import annotations

import json
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

import prompts
from agents import schemas
from agents.config import LLMConfig, RoleConfig
from agents.llm import Gateway, LLMOutputInvalid, LLMRequestFailed, LLMTimeout, LLMUnavailable, strict_schema
from agents.standin import Fault, StandIn, fake_value, parse_choices, parse_fault
from store import open_store
from tests.agents.scripted import judge_values as values

RUN = "run-concurrency"


@pytest.fixture
def store(tmp_path):
    s = open_store(tmp_path / "llm.duckdb")
    yield s
    s.close()


def cfg(url: str, **over) -> LLMConfig:
    base = {"base_url": url, "model": "standin", "structured": "json_schema", "timeout_s": 1.0,
            "backoff_s": 0.05, "backoff_max_s": 0.2, "http_retries": 2}
    return LLMConfig(**(base | over))


def judge(gw: Gateway, title: str):
    return gw.call("metadata_judge", "judge_metadata", "metadata_judge", values(title), schemas.MetadataVerdict,
                   video_id=title)


def judge_many(gw: Gateway, titles: list[str]) -> list:
    """Each title judged on its own thread, all at once; returns the answers or the exceptions."""
    def one(title):
        try:
            return judge(gw, title)
        except Exception as exc:  # noqa: BLE001 - the test looks at each outcome
            return exc

    with ThreadPoolExecutor(len(titles)) as pool:
        return list(pool.map(one, titles))


def test_sixteen_threads_keep_the_endpoint_busy_and_counts_stay_exact(store):
    with StandIn(latency_s=0.3) as srv:
        gw = Gateway(store, RUN, cfg(srv.base_url))
        out = judge_many(gw, [f"lesson {i}" for i in range(16)])
        assert all(not isinstance(a, Exception) and a.value.verdict == "accept" for a in out), out
        assert srv.peak >= 8 and srv.requests == 16
        flight = gw.in_flight()[srv.base_url]
        assert (flight.limit, flight.current, flight.sent) == (16, 0, 16) and flight.peak >= 8
        stats = gw.stats()
        assert (stats.calls, stats.cached, stats.failed, stats.requests, stats.resends) == (16, 0, 0, 16, 0)
        rows = store.llm_calls(RUN)
        assert len(rows) == 16 and len({r["call_id"] for r in rows}) == 16
        totals = store.llm_totals(RUN)
        assert totals["paid_tokens"] == stats.input_tokens + stats.output_tokens > 0


def test_the_concurrency_limit_holds_per_endpoint_and_per_role(store):
    with StandIn(latency_s=0.15) as srv:
        gw = Gateway(store, RUN, cfg(srv.base_url, concurrency=3))
        judge_many(gw, [f"lesson {i}" for i in range(12)])
        assert srv.peak == 3 and gw.in_flight()[srv.base_url].peak == 3
    with StandIn(latency_s=0.15) as srv, StandIn(latency_s=0.15) as other:
        # the planner has its own endpoint with 2 slots; the judges keep the default endpoint's 16
        gw = Gateway(store, RUN, cfg(srv.base_url, roles={"planner": RoleConfig(base_url=other.base_url,
                                                                                 concurrency=2)}))
        assert gw.endpoint_limit(other.base_url) == 2 and gw.endpoint_limit(srv.base_url) == 16

        def plan(i):
            return gw.call("planner", "plan", "metadata_judge", values(f"plan {i}"), schemas.MetadataVerdict)

        with ThreadPoolExecutor(16) as pool:
            list(pool.map(plan, range(8)))
            judge_many(gw, [f"judge {i}" for i in range(8)])
        assert other.peak == 2 and other.requests == 8 and srv.requests == 8


def test_a_timeout_a_429_and_a_503_are_resent_and_succeed(store):
    faults = [Fault("timeout", match="slow lesson", times=1, delay_s=5),
              Fault("429", match="busy lesson", times=1, retry_after_s=0.4),
              Fault("503", match="broken lesson", times=1)]
    with StandIn(latency_s=0.1, faults=faults) as srv:
        gw = Gateway(store, RUN, cfg(srv.base_url))
        out = judge_many(gw, ["slow lesson", "busy lesson", "broken lesson", "calm lesson"])
        assert all(not isinstance(a, Exception) and a.value.verdict == "accept" for a in out), out
        assert srv.fired == {"timeout": 1, "429": 1, "503": 1} and srv.requests == 7
        rows = {r["video_id"]: r for r in store.llm_calls(RUN)}
        assert {k: r["attempts"] for k, r in rows.items()} == {"slow lesson": 2, "busy lesson": 2,
                                                               "broken lesson": 2, "calm lesson": 1}
        assert all(r["error"] is None and store.llm_cache_get(r["cache_key"]) for r in rows.values())
        assert rows["busy lesson"]["latency_s"] >= 0.4 + 0.2  # waited the Retry-After, then the answer
        assert gw.stats().resends == 3


def test_resends_spent_fail_the_item_with_its_kind_and_nothing_is_cached(store):
    faults = [Fault("503", match="broken lesson"), Fault("429", match="busy lesson", retry_after_s=0.05),
              Fault("timeout", match="slow lesson", delay_s=3)]
    with StandIn(latency_s=0.05, faults=faults) as srv:
        gw = Gateway(store, RUN, cfg(srv.base_url, http_retries=1, timeout_s=0.5))
        broken, busy, slow, fine = judge_many(gw, ["broken lesson", "busy lesson", "slow lesson", "fine lesson"])
        assert isinstance(broken, LLMRequestFailed) and broken.kind == "server_error"
        assert isinstance(busy, LLMRequestFailed) and busy.kind == "rate_limited"
        assert isinstance(slow, LLMTimeout) and slow.kind == "timeout"
        assert all(isinstance(e, LLMOutputInvalid) for e in (broken, busy, slow))  # item failures, go on
        assert "\n" not in str(broken) and "2 tries" in str(broken)
        assert fine.value.verdict == "accept"
        rows = {r["video_id"]: r for r in store.llm_calls(RUN)}
        assert {k: r["error_kind"] for k, r in rows.items()} == {
            "broken lesson": "server_error", "busy lesson": "rate_limited", "slow lesson": "timeout",
            "fine lesson": None}
        assert rows["broken lesson"]["call_id"] == broken.call_id and rows["broken lesson"]["attempts"] == 2
        for k in ("broken lesson", "busy lesson", "slow lesson"):
            assert store.llm_cache_get(rows[k]["cache_key"]) is None
        srv.faults.clear()  # the endpoint recovers: a rerun asks again and succeeds
        assert judge(gw, "broken lesson").value.verdict == "accept"


def test_garbage_for_one_prompt_fails_that_call_only(store):
    with StandIn(latency_s=0.05, faults=[Fault("garbage", match="odd lesson")]) as srv:
        gw = Gateway(store, RUN, cfg(srv.base_url, retries=1))
        out = judge_many(gw, ["odd lesson"] + [f"lesson {i}" for i in range(5)])
        assert isinstance(out[0], LLMOutputInvalid) and out[0].kind == "invalid_output"
        assert all(a.value.verdict == "accept" for a in out[1:])
        [row] = store.llm_calls(RUN, video_id="odd lesson")
        assert row["error_kind"] == "invalid_output" and row["attempts"] == 2 and "JSON" in row["error"]
        assert store.llm_cache_get(row["cache_key"]) is None
        asked = srv.requests
        with pytest.raises(LLMOutputInvalid):
            judge(gw, "odd lesson")  # not cached: asked again
        assert srv.requests == asked + 2


def test_cache_hits_take_no_slot_and_the_same_call_at_once_is_paid_once(store):
    with StandIn(latency_s=0.2) as srv:
        gw = Gateway(store, RUN, cfg(srv.base_url))
        out = judge_many(gw, ["same lesson"] * 8)  # eight threads, one cache key
        assert srv.requests == 1 and sum(not a.cached for a in out) == 1
        assert len({a.call_id for a in out}) == 1 and len(store.llm_calls(RUN)) == 1
        again = judge_many(gw, ["same lesson"] * 8)
        assert srv.requests == 1 and all(a.cached for a in again)
        assert gw.in_flight()[srv.base_url].sent == 1 and gw.stats().cached == 15


def test_preflight_fails_fast_in_one_line_on_a_closed_port(store):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    gw = Gateway(store, RUN, cfg(f"http://127.0.0.1:{port}/v1"))
    t0 = time.monotonic()
    with pytest.raises(LLMUnavailable) as err:
        gw.preflight()
    assert time.monotonic() - t0 < 2
    assert err.value.kind == "down" and "\n" not in str(err.value) and f"127.0.0.1:{port}" in str(err.value)
    with StandIn() as srv:
        Gateway(store, RUN, cfg(srv.base_url)).preflight()  # answers: no error, no chat request
        assert srv.requests == 0


def test_an_endpoint_down_mid_run_is_unavailable_and_a_run_of_failures_trips_it(store):
    with StandIn() as srv:
        url = srv.base_url
    gw = Gateway(store, RUN, cfg(url, http_retries=1))
    with pytest.raises(LLMUnavailable) as err:
        judge(gw, "lesson")
    assert err.value.kind == "connection" and store.llm_calls(RUN)[0]["error_kind"] == "connection"
    with StandIn(latency_s=0.02, faults=[Fault("503")]) as srv:
        gw = Gateway(store, RUN, cfg(srv.base_url, http_retries=0, down_after=3))
        kinds = [type(judge_many(gw, [f"lesson {i}"])[0]).__name__ for i in range(4)]
        assert kinds == ["LLMRequestFailed", "LLMRequestFailed", "LLMUnavailable", "LLMUnavailable"]


@pytest.mark.parametrize("mode, stream", [("tools", False), ("json_schema", True), ("llamacpp", False),
                                          ("llamacpp", True)])
def test_the_standin_answers_every_structured_mode(store, mode, stream):
    with StandIn(latency_s=0.01) as srv:
        gw = Gateway(store, RUN, cfg(srv.base_url, structured=mode, stream=stream))
        ans = judge(gw, "a lesson")
        assert ans.value.verdict == "accept" and ans.value.score == 10
        row = store.llm_calls(RUN)[0]
        assert row["input_tokens"] > 0 and not row["tokens_estimated"]
        tax = schemas.sized_taxonomy(1, 2, 1, 2)
        p = prompts.load("taxonomy")
        t = gw.call("planner", "plan", "taxonomy", {**{v: "x" for v in p.variables()}, "subjects": "Physics"},
                    tax).value
        assert t.subjects[0].name == "Physics" and len(t.nodes()) == 1 + 2 + 2 + 4


def test_fake_values_validate_every_schema_of_the_agent():
    for model in (schemas.GoalSpec, schemas.sized_taxonomy(2, 2, 2, 3), schemas.sized_queries(3),
                  schemas.MetadataVerdict, schemas.TranscriptVerdict, schemas.ClipDecision):
        value = fake_value(strict_schema(model), choices={"language": "en"})
        model.model_validate(value)
    text = 'Rewrite this:\n<untrusted name="paragraph">\nforce is mass times acceleration\n</untrusted>'
    assert fake_value(schemas.Polished.model_json_schema(), text) == {"text": "force is mass times acceleration"}
    assert fake_value(strict_schema(schemas.MetadataVerdict), choices={"verdict": "reject"})["verdict"] == "reject"
    assert parse_fault("429@3,7*2") == Fault("429", requests=(3, 7), times=2)
    assert parse_fault("garbage~Newton").match == "Newton" and parse_fault("503%10").every == 10
    with pytest.raises(ValueError):
        parse_fault("teapot@1")
    choices = parse_choices(["verdict=reject", "score=3", "decision=drop_frames"])
    assert choices == {"verdict": "reject", "score": 3, "decision": "drop_frames"}
    value = fake_value(strict_schema(schemas.MetadataVerdict), choices=choices)
    assert value["verdict"] == "reject" and value["score"] == 3
    with pytest.raises(ValueError):
        parse_choices(["verdict"])


def test_interrupt_held_in_a_worker_thread_reaches_the_main_thread():
    import os
    import signal

    from agents import interrupts

    old = signal.getsignal(signal.SIGINT)
    interrupts.install()
    entered, release = threading.Event(), threading.Event()

    def worker():
        with interrupts.protected():
            entered.set()
            release.wait(5)

    try:
        t = threading.Thread(target=worker)
        t.start()
        entered.wait(5)
        os.kill(os.getpid(), signal.SIGINT)  # held: a worker is saving an answer
        time.sleep(0.1)
        release.set()
        with pytest.raises(KeyboardInterrupt):
            t.join(5)
            time.sleep(1)  # the re-sent signal is raised here, in the main thread
    finally:
        signal.signal(signal.SIGINT, old)
    assert not t.is_alive()


@pytest.mark.e2e
def test_standin_command_line_serves_and_reports(tmp_path):
    import subprocess
    import sys
    import urllib.request

    from tests.conftest import ROOT

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "agents.standin", "--port", str(port), "--latency", "0.01",
                             "--fault", "503@1"], cwd=ROOT, stdout=subprocess.PIPE, text=True,
                            env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    try:
        assert f"127.0.0.1:{port}/v1" in proc.stdout.readline()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=5) as r:
            assert json.load(r)["data"][0]["id"] == "standin"
        body = json.dumps({"model": "standin", "messages": [{"role": "user", "content": "hi"}]}).encode()
        req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/chat/completions", body,
                                     {"Content-Type": "application/json"})
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(req, timeout=5)
        assert err.value.code == 503
        with urllib.request.urlopen(req, timeout=5) as r:
            assert json.load(r)["choices"][0]["message"]["content"]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/stats", timeout=5) as r:
            assert json.load(r) == {"requests": 2, "current": 0, "peak": 1, "faults": {"503": 1}}
    finally:
        proc.terminate()
        proc.wait(10)
