"""The clip rewrite (agents.rewrite) through the real gateway and store, with scripted polishers: the slide
terms reach the prompt fenced as data, a grounded fix is kept, an invented or number-flipping rewrite is
refused with the reason, and what the corpus keeps then is the raw paragraph with its slide fixes only
(grounded) or the raw paragraph (not grounded, or nothing on the slide to fix)."""

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


def polisher(store, answer, name: str = "scripted-polisher") -> tuple[Gateway, ScriptedChatModel]:
    """A gateway whose polisher answers ``answer(paragraph)``; ``name``: its model (the answer cache's key)."""
    model = ScriptedChatModel(script={"Polished": lambda t: {"text": answer(fenced(t, "paragraph") or "")}})
    return Gateway(store, "run-rewrite", LLMConfig(model=name), models=models_for(model)), model


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
    assert done.polished == RAW and "slide_fixes" not in done.record() and done.kept == rewrite.KEPT_REWRITE


def test_a_term_not_on_the_slide_is_left_as_it_was(store):
    gw, _ = polisher(store, lambda p: p.replace("in operation", "condensation"))
    done = rewrite.polish(gw, rewrite.RewriteRequest("the water cycle", RAW, "The Water Cycle\nThe sun heats water",
                                                     "vid1"))
    assert done.polished is None and done.check.text == RAW  # refused, nothing on the slide to fix: the raw stays
    assert done.record()["kinds"] == ["adds"] and "condensation" in done.record()["reasons"][0]
    assert done.kept == rewrite.KEPT_RAW and done.record()["kept"] == "raw"


@pytest.mark.parametrize(("answer", "kind"), [
    (lambda p: "The water cycle begins with tiny droplets. " + p, "adds"),
    (lambda p: p.replace("two", "three"), "numbers"),
    (lambda p: p.replace("Then two clouds form", "Then two clouds do not form"), "negation"),
])
def test_a_rewrite_that_adds_a_fact_or_flips_a_number_is_refused(store, answer, kind):
    """Refused: nothing of the model's answer is kept. The paragraph has a misheard slide term ("in operation"
    under "Evaporation"), so the corpus keeps the raw paragraph with that fix and nothing else changed."""
    gw, _ = polisher(store, answer)
    done = rewrite.polish(gw, rewrite.RewriteRequest("the water cycle", RAW, OCR, "vid1"))
    assert done.check.text == RAW and done.polished == FIXED == RAW.replace("in operation", "evaporation")
    assert done.kept == rewrite.KEPT_SLIDE
    rec = done.record()
    assert rec["status"] == "refused" and kind in rec["kinds"] and rec["rewrite"] != RAW
    assert rec["kept"] == "slide_fixed" and rec["slide_fixes"] == [["in operation", "Evaporation"]]
    assert "the raw text with its slide fixes (in operation -> Evaporation)" == done.why_kept()


def test_a_refused_rewrite_of_a_paragraph_with_no_slide_term_near_keeps_the_raw_exactly(store):
    raw = "Then the clouds form high up, and they drift with the wind."
    gw, _ = polisher(store, lambda p: p + " Rain falls in 1687.")
    done = rewrite.polish(gw, rewrite.RewriteRequest("the water cycle", raw, OCR, "vid1"))
    assert done.check.refused and done.slide_fixes == ()
    assert done.polished is None and done.kept == rewrite.KEPT_RAW  # the raw paragraph, exactly


def test_with_grounding_off_a_refused_rewrite_keeps_the_raw_paragraph(store):
    gw, _ = polisher(store, lambda p: "The water cycle begins with tiny droplets. " + p)
    done = rewrite.polish(gw, rewrite.RewriteRequest("the water cycle", RAW, OCR, "vid1"), grounded=False)
    assert done.check.refused and done.polished is None and done.kept == rewrite.KEPT_RAW
    assert "slide_fixes" not in done.record() and done.record()["kept"] == "raw"


def test_no_valid_answer_keeps_the_slide_fixes_when_grounded_and_the_raw_when_not(store):
    req = rewrite.RewriteRequest("the water cycle", RAW, OCR, "vid1")
    done = rewrite.unanswered(req, "no valid answer: garbage", "call-1")
    assert done.polished == FIXED and done.kept == rewrite.KEPT_SLIDE
    rec = done.record()
    assert rec["status"] == "no_answer" and rec["reasons"] == ["no valid answer: garbage"] and rec["rewrite"] is None
    assert rec["call_id"] == "call-1" and rec["kept"] == "slide_fixed"
    plain = rewrite.unanswered(req, "no valid answer: garbage", grounded=False)
    assert plain.polished is None and plain.record()["kept"] == "raw"


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


def test_the_embedded_rewrite_must_beat_what_is_kept_without_it():
    """Advisory, the corpus keeps the ASR corrected from the slide (grounded) or the raw ASR (plain); the
    model's rewrite is used only when it beats that. bench/bench_grounding.py llm measured SmolLM2-135M's
    kept grounded rewrite at 3.26% (raw 3.44%, the correction alone 2.58%): better than the raw only through
    the corrections it keeps on refusal."""
    from agents.build import rewrite_use
    from agents.config import AgentConfig

    sha = prompts.load("polish").sha256
    smol = {"smol": {"polish": {"wer_raw": 0.0344, "wer_rewrite": 0.0326, "wer_corrected": 0.0258,
                                "wer_plain": 0.0378, "prompt_sha256": sha}}}
    assert rewrite_use(AgentConfig(), "smol", smol) == \
        "advisory: its rewrite's WER 3.3% does not beat the ASR corrected from the slide's 2.6%"
    assert rewrite_use(AgentConfig(polish_terms=False), "smol", smol) == \
        "advisory: its rewrite's WER 3.8% does not beat the raw ASR's 3.4%"  # the plain rewrite's, kept
    good = {"big": {"polish": {"wer_raw": 0.0344, "wer_rewrite": 0.02, "wer_corrected": 0.0258,
                               "wer_plain": 0.03, "prompt_sha256": sha}}}
    assert rewrite_use(AgentConfig(), "big", good) == "used"
    assert rewrite_use(AgentConfig(polish_terms=False), "big", good) == "used"


def test_new_rewrite_settings_at_their_defaults_keep_a_runs_id():
    from agents.build import run_id_for
    from agents.config import AgentConfig
    from pipeline.config import PipelineConfig

    same = run_id_for("build a textbook", AgentConfig(), PipelineConfig())
    assert run_id_for("build a textbook", AgentConfig(polish_terms=True, use_rewrite="auto"), PipelineConfig()) == same
    assert run_id_for("build a textbook", AgentConfig(polish_terms=False), PipelineConfig()) != same


def test_an_advisory_rewrite_is_checked_and_recorded_but_not_kept(store):
    gw, _ = polisher(store, lambda p: p.replace("evaporation,", "evaporation:"))
    done = rewrite.polish(gw, rewrite.RewriteRequest("the water cycle", RAW, OCR, "vid1"),
                          use="advisory: not measured")
    assert done.check.status == "accepted" and done.polished == FIXED  # the slide fix, not the model's colon
    assert done.record()["advisory"] == "advisory: not measured" and done.record()["kept"] == "slide_fixed"


def test_a_clip_is_grounded_in_its_own_keyframes_and_those_just_around_it():
    def kf(t: float, text: str, kept: bool = True) -> dict:
        return {"time_s": t, "ocr_text": text, "ocr_kept": kept}

    frames = {0: kf(0.0, "The Water Cycle"), 1: kf(9.5, "Evaporation"), 2: kf(14.0, "Condensation", kept=False),
              3: kf(30.0, "Precipitation")}
    # the clip 1.0-8.0 s shows keyframe 0; "Evaporation" comes up 1.5 s after it ends, "Precipitation" far later
    assert rewrite.slide_text_near(frames, [0], 1.0, 8.0, margin_s=6.0) == "The Water Cycle\nEvaporation"
    assert rewrite.slide_text_near(frames, [0], 1.0, 8.0, margin_s=0.0) == "The Water Cycle"
    assert rewrite.slide_text_near(frames, [2], 20.0, 23.0, margin_s=6.0) == ""  # OCR not kept: no terms


def test_the_funnel_counts_which_text_each_clip_kept(store):
    """pipeline.stats.rewrite_counts over the records of real outcomes: accepted and used, refused with a slide
    fix, refused with none, no valid answer, advisory; plus a record stored before ``kept`` existed."""
    from pipeline.stats import rewrite_counts

    req = rewrite.RewriteRequest("the water cycle", RAW, OCR, "vid1")
    plain = rewrite.RewriteRequest("the water cycle", "Then the clouds drift with the wind.", OCR, "vid1")
    echo, _ = polisher(store, lambda p: p)
    invent, _ = polisher(store, lambda p: p + " Rain falls in 1687.", "scripted-inventor")
    records = [rewrite.polish(echo, req).record(), rewrite.polish(invent, req).record(),
               rewrite.polish(invent, plain).record(), rewrite.unanswered(req, "no valid answer: x").record(),
               rewrite.polish(echo, req, use="advisory: not measured").record()]
    old = {k: v for k, v in records[0].items() if k != "kept"}
    got = rewrite_counts([*records, old])
    assert got["kept"] == {"rewrite": 2, "slide_fixed": 3, "raw": 1}
    assert (got["accepted"], got["refused"], got["no_answer"], got["advisory"]) == (3, 2, 1, 1)
    assert got["refused_by"] == {"adds": 2, "length": 1, "numbers": 2}  # the short paragraph grew too much
    assert got["term_fixes"] == 5  # one slide fix in each of the five texts kept with it (the rewrites' own too)
