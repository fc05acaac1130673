"""The clip rewrite (agents.rewrite) through the real gateway and store, with scripted polishers: the slide
terms reach the prompt fenced as data, a grounded fix is kept, an invented or number-flipping rewrite is
refused and the raw paragraph kept, with the reason."""

from __future__ import annotations

import pytest

import prompts
from agents import rewrite
from agents.config import LLMConfig
from agents.llm import Gateway
from store import open_store
from tests.agents.scripted import ScriptedChatModel, fenced, models_for

RAW = "First comes in operation, when the sun heats the water. Then two clouds form."
OCR = "The Water Cycle\nEvaporation: the sun heats water"


@pytest.fixture
def store(tmp_path):
    s = open_store(tmp_path / "rewrite.duckdb")
    yield s
    s.close()


def polisher(store, answer) -> tuple[Gateway, ScriptedChatModel]:
    model = ScriptedChatModel(script={"Polished": lambda t: {"text": answer(fenced(t, "paragraph") or "")}})
    return Gateway(store, "run-rewrite", LLMConfig(model="scripted-polisher"), models=models_for(model)), model


def test_the_polisher_sees_the_slide_terms_fenced_as_data(store):
    gw, model = polisher(store, lambda p: p)
    rewrite.polish(gw, rewrite.RewriteRequest("the water cycle", RAW, OCR, "vid1"))
    [req] = model.requests
    prompt = dict(req["messages"])["human"]
    terms = fenced(prompt, "terms")
    assert terms is not None and "Evaporation" in terms.splitlines() and "Water Cycle" in terms.splitlines()
    assert "Do not add anything the speaker did not say" in prompt
    [call] = store.llm_calls("run-rewrite")
    assert call["prompt_name"] == "polish" and call["prompt_sha256"] == prompts.load("polish").sha256


def test_plain_mode_shows_no_terms(store):
    gw, model = polisher(store, lambda p: p)
    rewrite.polish(gw, rewrite.RewriteRequest("the water cycle", RAW, OCR, "vid1"), grounded=False)
    assert fenced(dict(model.requests[0]["messages"])["human"], "terms") == rewrite.NO_TERMS


FIXED = "First comes evaporation, when the sun heats the water. Then two clouds form."


def test_a_misheard_term_on_the_slide_is_fixed(store):
    gw, _ = polisher(store, lambda p: p.replace("evaporation,", "evaporation:"))
    done = rewrite.polish(gw, rewrite.RewriteRequest("the water cycle", RAW, OCR, "vid1"))
    assert done.polished == "First comes evaporation: when the sun heats the water. Then two clouds form."
    rec = done.record()
    assert rec["status"] == "accepted" and rec["corrections"] == [["in operation", "evaporation"]]
    assert rec["slide_fixes"] == [["in operation", "Evaporation"]] and rec["call_id"]


def test_the_model_gets_the_paragraph_corrected_from_the_slide_and_need_not_use_the_terms(store):
    """bench/bench_grounding.py llm: the embedded Qwen given the terms alone left "in operation" as it was;
    the paragraph it gets is corrected first, so a model that only copies it still gives the fix."""
    gw, model = polisher(store, lambda p: p)
    done = rewrite.polish(gw, rewrite.RewriteRequest("the water cycle", RAW, OCR, "vid1"))
    assert fenced(dict(model.requests[0]["messages"])["human"], "paragraph") == FIXED
    assert done.polished == FIXED and done.check.status == "accepted"


def test_the_plain_rewrite_gets_the_raw_paragraph(store):
    gw, model = polisher(store, lambda p: p)
    done = rewrite.polish(gw, rewrite.RewriteRequest("the water cycle", RAW, OCR, "vid1"), grounded=False)
    assert fenced(dict(model.requests[0]["messages"])["human"], "paragraph") == RAW
    assert done.polished == RAW and "slide_fixes" not in done.record()


def test_a_term_not_on_the_slide_is_left_as_it_was(store):
    gw, _ = polisher(store, lambda p: p.replace("in operation", "condensation"))
    done = rewrite.polish(gw, rewrite.RewriteRequest("the water cycle", RAW, "The Water Cycle\nThe sun heats water",
                                                     "vid1"))
    assert done.polished is None and done.check.text == RAW  # refused: the raw paragraph stays
    assert done.record()["kinds"] == ["adds"] and "condensation" in done.record()["reasons"][0]


@pytest.mark.parametrize(("answer", "kind"), [
    (lambda p: "The water cycle begins with tiny droplets. " + p, "adds"),
    (lambda p: p.replace("two", "three"), "numbers"),
    (lambda p: p.replace("Then two clouds form", "Then two clouds do not form"), "negation"),
])
def test_a_rewrite_that_adds_a_fact_or_flips_a_number_is_refused(store, answer, kind):
    gw, _ = polisher(store, answer)
    done = rewrite.polish(gw, rewrite.RewriteRequest("the water cycle", RAW, OCR, "vid1"))
    assert done.polished is None and done.check.text == RAW  # the raw paragraph, not the corrected one
    rec = done.record()
    assert rec["status"] == "refused" and kind in rec["kinds"] and rec["rewrite"] != RAW


def test_an_echoed_fence_is_not_part_of_the_rewrite(store):
    """SmolLM2-135M (bench/bench_grounding.py llm) ends some answers with the prompt's "</untrusted>"."""
    gw, _ = polisher(store, lambda p: p + " </untrusted>")
    done = rewrite.polish(gw, rewrite.RewriteRequest("the water cycle", RAW, OCR, "vid1"))
    assert done.check.status == "accepted" and done.polished == FIXED


def test_the_embedded_models_rewrite_is_advisory_unless_measured_to_beat_the_raw_asr():
    from agents.build import rewrite_use
    from agents.config import AgentConfig

    auto = AgentConfig()
    assert rewrite_use(auto, None) == "used"  # a configured endpoint
    assert rewrite_use(auto, "qwen").startswith("advisory: the rewrite of qwen is not measured")
    sha = prompts.load("polish").sha256
    better = {"qwen": {"polish": {"wer_raw": 0.062, "wer_rewrite": 0.05, "prompt_sha256": sha}}}
    worse = {"qwen": {"polish": {"wer_raw": 0.062, "wer_rewrite": 0.089, "prompt_sha256": sha}}}
    stale = {"qwen": {"polish": {"wer_raw": 0.062, "wer_rewrite": 0.05, "prompt_sha256": "0" * 64}}}
    assert rewrite_use(auto, "qwen", better) == "used"
    assert rewrite_use(auto, "qwen", worse) == "advisory: its rewrite's WER 8.9% does not beat the raw ASR's 6.2%"
    assert "prompt changed" in rewrite_use(auto, "qwen", stale)
    assert rewrite_use(AgentConfig(use_rewrite="no"), None) == "advisory: agent.use_rewrite = no"
    assert rewrite_use(AgentConfig(use_rewrite="yes"), "qwen", worse) == "used"


def test_new_rewrite_settings_at_their_defaults_keep_a_runs_id():
    from agents.build import run_id_for
    from agents.config import AgentConfig
    from pipeline.config import PipelineConfig

    same = run_id_for("build a textbook", AgentConfig(), PipelineConfig())
    assert run_id_for("build a textbook", AgentConfig(polish_terms=True, use_rewrite="auto"), PipelineConfig()) == same
    assert run_id_for("build a textbook", AgentConfig(polish_terms=False), PipelineConfig()) != same


def test_an_advisory_rewrite_is_checked_and_recorded_but_the_raw_text_kept(store):
    gw, _ = polisher(store, lambda p: p.replace("evaporation,", "evaporation:"))
    done = rewrite.polish(gw, rewrite.RewriteRequest("the water cycle", RAW, OCR, "vid1"),
                          use="advisory: not measured")
    assert done.check.status == "accepted" and done.polished is None
    assert done.record()["advisory"] == "advisory: not measured"


def test_a_clip_is_grounded_in_its_own_keyframes_and_those_just_around_it():
    def kf(t: float, text: str, kept: bool = True) -> dict:
        return {"time_s": t, "ocr_text": text, "ocr_kept": kept}

    frames = {0: kf(0.0, "The Water Cycle"), 1: kf(9.5, "Evaporation"), 2: kf(14.0, "Condensation", kept=False),
              3: kf(30.0, "Precipitation")}
    # the clip 1.0-8.0 s shows keyframe 0; "Evaporation" comes up 1.5 s after it ends, "Precipitation" far later
    assert rewrite.slide_text_near(frames, [0], 1.0, 8.0, margin_s=6.0) == "The Water Cycle\nEvaporation"
    assert rewrite.slide_text_near(frames, [0], 1.0, 8.0, margin_s=0.0) == "The Water Cycle"
    assert rewrite.slide_text_near(frames, [2], 20.0, 23.0, margin_s=6.0) == ""  # OCR not kept: no terms
