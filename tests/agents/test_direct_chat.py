"""The gateway's direct path (agents/direct_chat.py): the body it sends is the one ChatOpenAI sends, in
every structured mode, and its answers read back the same; one endpoint keeps hundreds of requests in
flight through its pooled client (the stand-in over real HTTP)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

import prompts
from agents import schemas
from agents.config import LLMConfig
from agents.direct_chat import DirectChat
from agents.llm import Gateway, _to_lc
from agents.standin import StandIn
from store import open_store
from tests.agents.fake_openai import FakeOpenAI
from tests.agents.scripted import judge_values as values

RUN = "run-direct"


@pytest.fixture
def store(tmp_path):
    s = open_store(tmp_path / "direct.duckdb")
    yield s
    s.close()


@pytest.mark.parametrize("mode", ["tools", "json_schema", "llamacpp"])
def test_the_direct_body_is_chatopenais_and_the_answer_reads_the_same(store, mode):
    with FakeOpenAI() as srv:
        cfg = LLMConfig(base_url=srv.base_url, model="scripted", structured=mode,
                        legacy_max_tokens=mode == "llamacpp")
        gw = Gateway(store, RUN, cfg)
        direct = gw._bind("metadata_judge", schemas.MetadataVerdict, mode)
        assert isinstance(direct, DirectChat)
        lc = gw._lc_bound("metadata_judge", schemas.MetadataVerdict, mode)
        convo = _to_lc(prompts.load("metadata_judge").render(values("a lesson")))
        a, b = direct.invoke(convo), lc.invoke(convo)
        sent_direct, sent_lc = srv.requests
        assert sent_direct == sent_lc  # the same JSON body, key for key
        assert (a.content, a.tool_calls and a.tool_calls[0]["args"], a.usage_metadata["input_tokens"],
                a.usage_metadata["output_tokens"]) == \
            (b.content, b.tool_calls and b.tool_calls[0]["args"], b.usage_metadata["input_tokens"],
             b.usage_metadata["output_tokens"])
        answer = gw.call("metadata_judge", "judge_metadata", "metadata_judge", values("another"),
                         schemas.MetadataVerdict)
        assert answer.value.verdict in ("accept", "reject") and not answer.cached
        gw.close()


def test_one_endpoint_keeps_two_hundred_requests_in_flight(store):
    n = 200
    with StandIn(latency_s=2.0) as srv:
        cfg = LLMConfig(base_url=srv.base_url, model="standin", structured="json_schema", timeout_s=30,
                        concurrency=n)
        gw = Gateway(store, RUN, cfg)

        def judge(i: int):
            return gw.call("metadata_judge", "judge_metadata", "metadata_judge", values(f"lesson {i}"),
                           schemas.MetadataVerdict, video_id=f"v{i}")

        with ThreadPoolExecutor(n) as pool:
            answers = list(pool.map(judge, range(n)))
        assert all(a.value.verdict == "accept" and not a.cached for a in answers)
        assert srv.requests == n and srv.peak == n  # all at once: the pool held a connection for each
        flight = gw.in_flight()[srv.base_url]
        assert (flight.limit, flight.peak, flight.current, flight.sent) == (n, n, 0, n)
        assert store.llm_totals(RUN)["paid_calls"] == n and len({a.call_id for a in answers}) == n
        gw.close()
