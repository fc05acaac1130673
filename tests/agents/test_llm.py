"""The LLM gateway against a scripted chat model and a real DuckDB store: validation, re-asks,
the response cache, the llm_calls log, costs and budgets, and keys that never reach the store."""

from __future__ import annotations

import json
import socket

import pytest
from pydantic import ValidationError

import prompts
from agents import schemas
from agents.budget import BudgetTracker
from agents.config import Budgets, LLMConfig, RoleConfig
from agents.llm import BudgetExceeded, Gateway, LLMOutputInvalid, LLMTimeout, LLMUnavailable
from store import open_store
from tests.agents.scripted import ScriptedChatModel, models_for, points

RUN = "run-llm-test"
GOOD = {"verdict": "accept", "score": 8, "reasons": ["teaches the point"]}


@pytest.fixture
def store(tmp_path):
    s = open_store(tmp_path / "llm.duckdb")
    yield s
    s.close()


def judge_values(title: str = "Newton's laws of motion") -> dict:
    p = prompts.load("metadata_judge")
    values = {v: "unknown" for v in p.variables()}
    return {**values, "point": "Newton's laws of motion", "path": "Physics > Mechanics", "level": "middle school",
            "language": "en", "title": title, "description": "A lesson.", "comments": "- great"}


def gateway(store, model: ScriptedChatModel, budget=None, **cfg) -> Gateway:
    return Gateway(store, RUN, LLMConfig(model="scripted-model", **cfg), models=models_for(model), budget=budget)


def judge(gw: Gateway, title: str = "Newton's laws of motion"):
    return gw.call("metadata_judge", "judge_metadata", "metadata_judge", judge_values(title),
                   schemas.MetadataVerdict, video_id="vid1")


def test_valid_answer_is_validated_logged_and_cached(store):
    model = ScriptedChatModel(script={"MetadataVerdict": lambda t: GOOD}, tokens=(321, 45))
    gw = gateway(store, model)

    first = judge(gw)
    assert isinstance(first.value, schemas.MetadataVerdict) and first.value.score == 8 and not first.cached
    assert len(model.requests) == 1 and model.requests[0]["tool"] == "MetadataVerdict"

    rows = store.llm_calls(RUN)
    assert len(rows) == 1
    row = rows[0]
    p = prompts.load("metadata_judge")
    assert row["call_id"] == first.call_id and row["node"] == "judge_metadata" and row["role"] == "metadata_judge"
    assert row["prompt_name"] == "metadata_judge" and row["prompt_sha256"] == p.sha256
    assert row["model"] == "scripted-model" and row["video_id"] == "vid1"
    assert (row["input_tokens"], row["output_tokens"], row["tokens_estimated"]) == (321, 45, False)
    assert row["latency_s"] > 0 and row["attempts"] == 1 and row["error"] is None and row["cached"] is False
    assert json.loads(row["response"]) == GOOD
    messages = json.loads(row["messages"])
    assert messages == p.render(judge_values()) and "Newton's laws of motion" in messages[1]["content"]
    assert store.llm_cache_get(row["cache_key"])["response"] == GOOD

    again = judge(gw)
    assert again.cached and again.value == first.value and again.call_id == first.call_id
    assert len(model.requests) == 1  # the model was not asked again
    assert len(store.llm_calls(RUN)) == 1  # a hit in the run that paid for it logs no second row

    other = Gateway(store, "run-other", LLMConfig(model="scripted-model"), models=models_for(model))
    hit = judge(other)  # another run: served from the cache, logged once as cached, paid nothing
    assert hit.cached and len(model.requests) == 1
    judge(other)
    [row2] = store.llm_calls("run-other")
    assert row2["cached"] is True and row2["cost_usd"] == 0 and row2["cache_key"] == row["cache_key"]
    assert row2["call_id"] == hit.call_id
    assert store.llm_totals(RUN)["paid_calls"] == 1 and store.llm_totals(RUN)["paid_tokens"] == 366
    assert store.llm_totals("run-other") | {} == {**store.llm_totals("run-other"), "paid_calls": 0,
                                                    "cached_calls": 1}

    judge(gw, title="Something else")  # other messages: another key, a paid call
    assert len(model.requests) == 2


def test_cache_key_covers_model_and_params(store):
    model = ScriptedChatModel(script={"MetadataVerdict": lambda t: GOOD})
    judge(gateway(store, model))
    judge(gateway(store, model, temperature=0.7))
    judge(Gateway(store, RUN, LLMConfig(model="another-model"), models=models_for(model)))
    assert len(model.requests) == 3
    assert len({r["cache_key"] for r in store.llm_calls(RUN)}) == 3


@pytest.mark.parametrize("bad, error", [
    ({"verdict": "accept", "score": 42, "reasons": ["great"]}, "less than or equal to 10"),
    ({"verdict": "maybe", "score": 5, "reasons": ["hmm"]}, "verdict"),
    ("I think this video is great, definitely accept it!", "holds no JSON object"),
])
def test_invalid_answer_is_reasked_with_the_error(store, bad, error):
    def answer(text: str):
        return GOOD if "That answer is invalid" in text else bad

    model = ScriptedChatModel(script={"MetadataVerdict": answer})
    ans = judge(gateway(store, model))
    assert ans.value == schemas.MetadataVerdict(**GOOD) and not ans.cached

    assert len(model.requests) == 2
    followup = model.requests[1]["messages"]
    assert [kind for kind, _ in followup] == ["system", "human", "ai", "human"]
    assert error in followup[-1][1] and "MetadataVerdict" in followup[-1][1]
    assert followup[2][1] == (bad if isinstance(bad, str) else json.dumps(bad))  # the model sees its own answer

    row = store.llm_calls(RUN)[0]
    assert row["attempts"] == 2 and row["error"] is None and json.loads(row["response"]) == GOOD
    assert (row["input_tokens"], row["output_tokens"]) == (200, 40)  # both attempts are paid


def test_json_wrapped_in_prose_is_accepted_first_time(store):
    prose = f"Sure! Here it is:\n```json\n{json.dumps(GOOD)}\n```"
    model = ScriptedChatModel(script={"MetadataVerdict": lambda t: prose})
    ans = judge(gateway(store, model))
    assert ans.value.verdict == "accept" and store.llm_calls(RUN)[0]["attempts"] == 1


def test_never_valid_raises_logs_the_error_and_is_asked_again(store):
    model = ScriptedChatModel(script={"MetadataVerdict": lambda t: {"verdict": "accept", "score": 42,
                                                                     "reasons": ["x"]}})
    gw = gateway(store, model, retries=2)
    with pytest.raises(LLMOutputInvalid) as err:
        judge(gw)
    assert "score" in str(err.value) and "\n" not in str(err.value) and err.value.kind == "invalid_output"
    assert len(model.requests) == 3

    rows = store.llm_calls(RUN)
    assert len(rows) == 1 and rows[0]["call_id"] == err.value.call_id
    row = rows[0]
    assert row["attempts"] == 3 and row["cached"] is False and "less than or equal to 10" in row["error"]
    assert row["error_kind"] == "invalid_output"
    assert row["input_tokens"] == 300  # failures are paid and counted
    assert store.llm_cache_get(row["cache_key"]) is None  # a failure is never cached

    with pytest.raises(LLMOutputInvalid) as again:
        judge(gw)  # a rerun asks again (the endpoint may have been fixed meanwhile)
    assert len(model.requests) == 6
    assert again.value.call_id != err.value.call_id and len(store.llm_calls(RUN)) == 2

    # a failure cached by an older version is asked again too
    store.llm_cache_put(row["cache_key"], "scripted-model", {"__invalid__": "old", "raw": None}, 1, 1)
    with pytest.raises(LLMOutputInvalid):
        judge(gw)
    assert len(model.requests) == 9


def test_cost_is_tokens_times_price(store):
    model = ScriptedChatModel(script={"MetadataVerdict": lambda t: GOOD}, tokens=(1000, 200))
    gw = gateway(store, model, price_in_per_mtok=2.5, price_out_per_mtok=10.0)
    judge(gw)
    row = store.llm_calls(RUN)[0]
    assert row["cost_usd"] == pytest.approx((1000 * 2.5 + 200 * 10.0) / 1e6)
    judge(gw)  # cached: free
    assert store.llm_totals(RUN)["cost_usd"] == pytest.approx(0.0045)


@pytest.mark.parametrize("budgets, name, paid", [
    (Budgets(max_llm_tokens=250), "llm_tokens", 3),   # 120 tokens a call: 0, 120, 240 < 250, then 360
    (Budgets(max_usd=0.001), "usd", 3),               # $0.0004 a call: 0.0008 < 0.001, then 0.0012
])
def test_budget_raises_before_a_call_once_spent(store, budgets, name, paid):
    model = ScriptedChatModel(script={"MetadataVerdict": lambda t: GOOD}, tokens=(100, 20))
    budget = BudgetTracker(store, RUN, budgets)
    gw = gateway(store, model, budget=budget, price_in_per_mtok=2.0, price_out_per_mtok=10.0)
    for i in range(paid):
        judge(gw, title=f"lesson {i}")
    with pytest.raises(BudgetExceeded) as err:
        judge(gw, title="one more")
    assert err.value.name == name
    assert len(model.requests) == paid  # the refused call never reached the model
    assert len(store.llm_calls(RUN)) == paid
    assert judge(gw, title="lesson 0").cached  # a cached answer costs nothing, so it is still served


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _all_text(store) -> list[str]:
    cols = store.rows("SELECT table_name, column_name FROM information_schema.columns "
                      "WHERE table_schema = 'main' AND data_type IN ('VARCHAR', 'BLOB', 'JSON')")
    assert {"llm_calls", "llm_cache", "runs", "events"} <= {c["table_name"] for c in cols}
    out = []
    for c in cols:
        for (value,) in store.con.execute(f'SELECT "{c["column_name"]}" FROM "{c["table_name"]}"').fetchall():
            if value is not None:
                out.append(value.decode("latin-1") if isinstance(value, bytes) else str(value))
    return out


def test_api_key_never_reaches_the_store_and_unavailable_is_one_line(store, monkeypatch):
    key = "sk-proj-TESTKEY0123456789abcdefSECRET"
    role_key = "role-key-0123456789-ANOTHER-SECRET"
    monkeypatch.setenv("TEXTBOOK_TEST_LLM_KEY", key)
    monkeypatch.setenv("TEXTBOOK_TEST_ROLE_KEY", role_key)
    url = f"http://127.0.0.1:{_free_port()}/v1"
    cfg = LLMConfig(base_url=url, model="gpt-test", api_key_env="TEXTBOOK_TEST_LLM_KEY", timeout_s=5, http_retries=0,
                    roles={"clip_judge": RoleConfig(api_key_env="TEXTBOOK_TEST_ROLE_KEY")})
    scripted = ScriptedChatModel(script={"MetadataVerdict": lambda t: GOOD})
    gw = Gateway(store, RUN, cfg, models={"planner": scripted})  # the other roles get real ChatOpenAI clients

    # the clients do hold the keys (so the checks below could fail)
    assert gw.model("metadata_judge").openai_api_key.get_secret_value() == key
    assert gw.model("clip_judge").openai_api_key.get_secret_value() == role_key

    for role, prompt, values, schema in [
        ("metadata_judge", "metadata_judge", judge_values(), schemas.MetadataVerdict),
        ("clip_judge", "clip_judge", {v: "1" for v in prompts.load("clip_judge").variables()},
         schemas.ClipDecision),
    ]:
        with pytest.raises(LLMUnavailable) as err:
            gw.call(role, "node", prompt, values, schema)
        text = str(err.value)
        assert "\n" not in text and url in text and len(text) < 400
        assert key not in text and role_key not in text
    ok = gw.call("planner", "node", "metadata_judge", judge_values(), schemas.MetadataVerdict)
    assert not ok.cached

    rows = store.llm_calls(RUN)
    assert len(rows) == 3
    failed = [r for r in rows if r["error"]]
    assert len(failed) == 2 and all(r["error"].startswith("LLM endpoint") for r in failed)
    assert all(r["attempts"] == 1 and r["cached"] is False for r in failed)

    texts = _all_text(store)
    assert any("LLM endpoint" in t for t in texts)  # the scan does read the log
    for t in texts:
        assert key not in t and role_key not in t
    store.con.execute("CHECKPOINT")
    raw = store.path.read_bytes()
    assert key.encode() not in raw and role_key.encode() not in raw


def test_unknown_role_is_refused(store):
    with pytest.raises(ValueError, match="unknown role"):
        gateway(store, ScriptedChatModel(script={})).model("critic")


# -- schemas -----------------------------------------------------------------------------

def _taxonomy(points: list[str], subcourses: list[str] | None = None) -> dict:
    subs = subcourses or ["Forces"]
    return {"subjects": [{"name": "Physics", "courses": [{"name": "Mechanics", "subcourses": [
        {"name": s, "points": [{"name": p, "difficulty": 1} for p in points]} for s in subs]}]}]}


def test_taxonomy_nodes_have_stable_ids():
    tax = schemas.Taxonomy.model_validate({"subjects": [
        {"name": "Physics", "courses": [
            {"name": "Mechanics", "subcourses": [{"name": "Forces", "points": points("Newton's laws",
                                                                                      "Friction  forces")},
                                                 {"name": "Energy", "points": points("Kinetic energy")}]}]},
        {"name": "Chemistry", "courses": [{"name": "Matter", "subcourses": [
            {"name": "Atoms", "points": points("Atomic structure")}]}]}]})
    nodes = tax.nodes()
    assert [n["node_id"] for n in nodes] == [
        "s1", "s1.c1", "s1.c1.u1", "s1.c1.u1.p1", "s1.c1.u1.p2", "s1.c1.u2", "s1.c1.u2.p1",
        "s2", "s2.c1", "s2.c1.u1", "s2.c1.u1.p1"]
    by_id = {n["node_id"]: n for n in nodes}
    assert by_id["s1.c1.u1.p2"] == {"node_id": "s1.c1.u1.p2", "parent_id": "s1.c1.u1", "level": "point",
                                    "name": "Friction forces", "position": 4, "difficulty": 2}
    assert by_id["s1.c1.u1"]["difficulty"] is None
    assert by_id["s2"]["parent_id"] is None and by_id["s2"]["level"] == "subject"
    assert [n["position"] for n in nodes] == list(range(len(nodes)))


@pytest.mark.parametrize("data, message", [
    (_taxonomy(["Newton's laws", "newton's  LAWS"]), "duplicate"),
    (_taxonomy(["Newton's laws"], ["Forces", "FORCES"]), "duplicate"),
    (_taxonomy(["Newton's laws", ""]), "not a name"),
    (_taxonomy(["Newton's laws", "  "]), "not a name"),
    (_taxonomy([]), "at least 1"),
    (_taxonomy(["<b>injected</b>"]), "plain name"),
    ({"subjects": []}, "at least 1"),
    ({"subjects": [{"name": "Physics", "courses": []}]}, "at least 1"),
])
def test_taxonomy_rejects_duplicates_and_empty_levels(data, message):
    with pytest.raises(ValidationError, match=message):
        schemas.Taxonomy.model_validate(data)


def test_same_point_under_two_subcourses_is_a_duplicate():
    data = {"subjects": [{"name": "Physics", "courses": [{"name": "Mechanics", "subcourses": [
        {"name": "Forces", "points": points("Friction")}, {"name": "Motion", "points": points("FRICTION")}]}]}]}
    with pytest.raises(ValidationError, match="duplicate"):
        schemas.Taxonomy.model_validate(data)


def test_other_validators():
    with pytest.raises(ValidationError):
        schemas.GoalSpec(title="x", subjects=["Physics"], level="middle school", language="english")
    assert schemas.GoalSpec(title="x", subjects=["Physics"], level="ms", language=" EN ").language == "en"
    assert schemas.Queries(queries=["a  b", "a b", "c"]).queries == ["a b", "c"]
    with pytest.raises(ValidationError):
        schemas.Queries(queries=["  "])
    with pytest.raises(ValidationError):
        schemas.MetadataVerdict(verdict="accept", score=11, reasons=["x"])
    with pytest.raises(ValidationError):
        schemas.ClipDecision(decision="keep", reasons=[])


# -- structured modes, timeouts, interrupts ------------------------------------------------

def test_response_format_modes_send_the_schema_and_read_json_content(store):
    from agents.llm import grammar_schema, schema_hint, strict_schema

    model = ScriptedChatModel(script={"MetadataVerdict": lambda t: GOOD})
    ans = judge(gateway(store, model, structured="json_schema"))
    assert ans.value.verdict == "accept"
    [req] = model.requests
    rf = req["response_format"]
    assert rf["type"] == "json_schema" and rf["json_schema"]["strict"] is True
    assert rf["json_schema"]["schema"]["additionalProperties"] is False
    assert set(rf["json_schema"]["schema"]["required"]) == {"verdict", "score", "reasons"}
    system = req["messages"][0][1]
    assert 'Answer with one JSON object' in system and '"verdict": "accept" or "reject"' in system

    judge(gateway(store, model, structured="llamacpp"), title="another lesson")
    rf = model.requests[-1]["response_format"]
    assert rf["type"] == "json_object" and rf["schema"]["properties"]["score"]["enum"] == list(range(11))
    assert rf["schema"]["properties"]["reasons"]["maxItems"] == schemas.MAX_REASONS
    # different modes are different cache entries
    assert len({c["cache_key"] for c in store.llm_calls(RUN)}) == 2

    assert strict_schema(schemas.GoalSpec)["required"] == ["title", "subjects", "level", "language"]
    tax = grammar_schema(schemas.sized_taxonomy(2, 1, 1, 3))
    assert tax["properties"]["subjects"]["minItems"] == tax["properties"]["subjects"]["maxItems"] == 2
    assert tax["$defs"]["SubCourse"]["properties"]["points"]["maxItems"] == 3
    assert tax["$defs"]["KnowledgePoint"]["properties"]["difficulty"]["enum"] == [1, 2, 3, 4, 5]
    assert "exactly 2 {" in schema_hint(schemas.sized_taxonomy(2, 1, 1, 3))


def test_a_call_past_its_timeout_is_cut_and_recorded(store):
    import time

    def slow(t):
        time.sleep(3)
        return GOOD

    model = ScriptedChatModel(script={"MetadataVerdict": slow})
    gw = gateway(store, model, timeout_s=0.3, http_retries=0)  # re-sent timeouts: test_llm_concurrency.py
    t0 = time.monotonic()
    with pytest.raises(LLMTimeout) as err:
        judge(gw)
    assert time.monotonic() - t0 < 2.0  # cut at the timeout, not after the answer
    assert err.value.call_id and "timeout" in str(err.value)
    [row] = store.llm_calls(RUN)
    assert row["call_id"] == err.value.call_id and row["error"].startswith("no answer within")
    assert row["error_kind"] == "timeout"
    assert store.llm_cache_get(row["cache_key"]) is None  # a timeout is not an answer: asked again next time
    assert isinstance(err.value, LLMOutputInvalid) and err.value.kind == "timeout"


def test_streamed_answers_report_progress(store):
    seen = []
    model = ScriptedChatModel(script={"MetadataVerdict": lambda t: GOOD})
    gw = Gateway(store, RUN, LLMConfig(model="scripted-model", stream=True, structured="json_schema"),
                 models=models_for(model), on_progress=lambda role, n: seen.append((role, n)))
    assert judge(gw).value.verdict == "accept"
    assert seen and seen[-1][0] == "metadata_judge"


def test_sigint_while_the_answer_arrives_saves_it_first(store):
    import os
    import signal
    import threading
    import time

    from agents import interrupts

    def answer_then_interrupted(t):
        # the user presses Ctrl-C while the answer is on its way back
        threading.Timer(0.05, os.kill, (os.getpid(), signal.SIGINT)).start()
        time.sleep(0.3)
        return GOOD

    old = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    interrupts.install()
    try:
        model = ScriptedChatModel(script={"MetadataVerdict": answer_then_interrupted})
        with pytest.raises(KeyboardInterrupt):
            judge(gateway(store, model))
    finally:
        signal.signal(signal.SIGINT, old[0])
        signal.signal(signal.SIGTERM, old[1])
    assert len(model.requests) == 1
    [row] = store.llm_calls(RUN)
    assert row["error"] is None and store.llm_cache_get(row["cache_key"])["response"] == GOOD
    again = judge(gateway(store, ScriptedChatModel(script={})))  # a model that cannot answer: the cache does
    assert again.cached and again.value.verdict == "accept"


def test_protected_blocks_hold_signals_until_they_end():
    import os
    import signal

    from agents import interrupts

    old = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    interrupts.install()
    done = []
    try:
        with pytest.raises(interrupts.Interrupted) as err:
            with interrupts.protected():
                os.kill(os.getpid(), signal.SIGTERM)
                with interrupts.protected():
                    done.append("inner")
                done.append("outer")  # still runs: the signal waits for the block to end
        assert err.value.code == 143
    finally:
        signal.signal(signal.SIGINT, old[0])
        signal.signal(signal.SIGTERM, old[1])
    assert done == ["inner", "outer"]


def test_same_model_for_two_roles(store):
    cfg = LLMConfig(model="m", base_url="http://127.0.0.1:9/v1")
    gw = Gateway(store, RUN, cfg)
    assert gw.same_model("transcript_judge_a", "transcript_judge_b")
    gw.model("transcript_judge_a")  # creating one role's client changes nothing
    assert gw.same_model("transcript_judge_a", "transcript_judge_b")
    other = Gateway(store, RUN, cfg.model_copy(update={"roles": {"transcript_judge_b": RoleConfig(model="m2")}}))
    assert not other.same_model("transcript_judge_a", "transcript_judge_b")
    hot = Gateway(store, RUN, cfg.model_copy(update={"temperature": 0.7}))
    assert not hot.same_model("transcript_judge_a", "transcript_judge_b")  # sampled answers may differ
    a, b = ScriptedChatModel(script={}), ScriptedChatModel(script={})
    assert not Gateway(store, RUN, cfg, models={"transcript_judge_a": a, "transcript_judge_b": b}).same_model(
        "transcript_judge_a", "transcript_judge_b")
