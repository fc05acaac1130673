"""Slide-grounded term correction (pipeline.grounding): misheard words that sound like a slide term are
fixed, words the slide does not show are left as they were, and correct narration is not touched."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline import grounding
from pipeline.grounding import correct, key_distance, phonetic_key, slide_terms, sounds_like

LESSONS = Path(__file__).resolve().parents[1] / "data" / "lessons"

# the issue's mishearings: (heard, the slide's term)
MISHEARD = [("in operation", "Evaporation"), ("vent wrinkles", "ventricles"), ("age rear", "atria"),
            ("pre sixths", "three sixths")]


def test_phonetic_key_maps_spellings_that_sound_alike_together():
    assert phonetic_key("ventricles") == "FNTRKLS" and phonetic_key("vent wrinkles") == "FNTRNKLS"
    assert phonetic_key("phone") == phonetic_key("fone") == "FN"
    assert phonetic_key("knight") == phonetic_key("night")
    assert phonetic_key("Evaporation")[0] == phonetic_key("in operation")[0] == "A"  # a leading vowel is A
    assert phonetic_key("") == phonetic_key("!!") == ""


@pytest.mark.parametrize(("heard", "term"), MISHEARD)
def test_the_issues_mishearings_sound_like_their_terms(heard, term):
    assert sounds_like(heard, term), (heard, term, key_distance(heard, term))


@pytest.mark.parametrize(("heard", "term"), [("later", "water"), ("mass", "acceleration"), ("force", "nucleus"),
                                             ("comes in operation", "evaporation"), ("atom", "at")])
def test_other_words_do_not(heard, term):
    assert not sounds_like(heard, term)


def test_slide_terms_are_content_words_and_their_adjacent_pairs():
    terms = slide_terms("The Water Cycle\nEvaporation: the sun heats water\n3/6 = three sixths")
    assert terms[:3] == ["Water", "Water Cycle", "Cycle"]
    assert "Evaporation" in terms and "three sixths" in terms and "sun heats" in terms
    assert "The" not in terms and "the" not in terms and "3" not in terms  # function words, bare numbers


def test_a_misheard_term_that_is_on_the_slide_is_fixed():
    text, fixes = correct("First comes in operation, when the sun heats the water.",
                          slide_terms("Evaporation\nThe sun heats water"))
    assert text == "First comes evaporation, when the sun heats the water."
    assert [(f.heard, f.term) for f in fixes] == [("in operation", "Evaporation")]
    text, _ = correct("Blood enters the age rear and then the vent wrinkles.",
                      slide_terms("The Heart\nTwo atria, two ventricles"))
    assert text == "Blood enters the atria and then the ventricles."
    text, _ = correct("We have pre-sixths of the pizza.", slide_terms("Fractions\nthree sixths = one half"))
    assert text == "We have three sixths of the pizza."


def test_a_misheard_word_that_is_not_on_the_slide_is_left_as_it_was():
    said = "Blood enters the age rear and then the vent wrinkles. The pump is gas-cold the heart."
    text, fixes = correct(said, slide_terms("The Heart\nBlood vessels"))
    assert text == said and fixes == []
    text, fixes = correct(said, slide_terms("The Heart\nTwo atria"))  # only what the slide shows is fixed
    assert text == said.replace("age rear", "atria") and len(fixes) == 1


def test_a_real_whisper_mishearing_of_a_slide_word_is_fixed():
    """whisper-base on tests/data/lessons/physics_newton hears "A cut has a mass of 2 kilograms"."""
    text, _ = correct("A cut has a mass of 2 kilograms.", slide_terms("Worked Example\nA cart has a mass of 2 kg"))
    assert text == "A cart has a mass of 2 kilograms."


def test_a_function_word_cannot_lend_its_sounds_to_a_term():
    said = "A heavier object needs a larger force to speed up."  # "force to" sounds like "first" (FRST)
    assert correct(said, slide_terms("The First Law\nAn object at rest stays at rest")) == (said, [])


def test_words_heard_right_are_never_replaced():
    said = "Later the water rises, and the sun heats the water again."
    assert correct(said, slide_terms("Evaporation\nThe sun heats water\nWater rises")) == (said, [])


@pytest.mark.parametrize("name", ["physics_newton", "chemistry_atoms", "physics_truncated", "math_quiet_tone"])
def test_correct_narration_under_its_own_slides_gets_no_correction(name):
    """Every proposal on the true narration is a false one (it was said right)."""
    truth = json.loads((LESSONS / f"{name}.truth.json").read_text())
    for slide in truth["slides"]:
        ocr = "\n".join([slide["title"], *slide["lines"], slide["formula"] or ""])
        assert grounding.propose(slide["narration"], slide_terms(ocr)) == [], slide["narration"]


def test_a_slide_lines_word_heard_in_another_inflection_takes_the_lines_form():
    """whisper-base on tests/data/lessons: "an object at rest stay at rest", "one quarter plus two quarter"."""
    ocr = "The First Law\nAn object at rest stays at rest\nA moving object keeps moving"
    text, fixes = grounding.correct_from_slide("The first law says that an object at rest stay at rest, so.", ocr)
    assert text == "The first law says that an object at rest stays at rest, so."
    assert [(f.heard, f.term) for f in fixes] == [("stay", "stays")]
    text, _ = grounding.correct_from_slide("For example, one quarter plus two quarter equals three quarters.",
                                           "Example\nOne quarter plus two quarters\n1/4 + 2/4 = 3/4")
    assert text == "For example, one quarter plus two quarters equals three quarters."
    text, _ = grounding.correct_from_slide("An object at rest STAY at rest", "AN OBJECT AT REST STAYS AT REST")
    assert text == "An object at rest STAYS at rest"  # the heard word's case


@pytest.mark.parametrize("said", [
    "the object stay at rest",                     # the line not said in full: no evidence
    "an object at rest can stay at rest",          # another word inside the line's words
    "rest at object an stay",                      # the line's words out of order
])
def test_an_inflection_is_taken_only_where_the_whole_line_is_said_in_order(said):
    assert grounding.inflections(said, "An object at rest stays at rest") == []


def test_a_short_line_gives_no_inflection():
    assert grounding.inflections("two quarter", "Two quarters") == []  # under MIN_LINE words


def test_a_variant_of_a_slide_word_is_not_a_mishearing_of_it():
    """Qwen2.5-Coder-1.5B rewrote "summarize." under the slide "Summary" as "Summary."; the check took it for a
    fix because the two sound alike. Two forms of one word (same root) are the speaker's choice."""
    from pipeline import faithfulness

    assert grounding.variant("summarize", "Summary") and not grounding.sounds_like("summarize", "Summary")
    assert not grounding.variant("sixths", "three sixths") and grounding.sounds_like("pre sixths", "three sixths")
    raw = "To summarize. Atoms build elements, and molecules are groups of atoms."
    check = faithfulness.check(raw, raw.replace("summarize", "Summary"), "Summary\nAtoms build elements")
    assert check.text == raw and check.reverted == (("summarize", "Summary"),)


@pytest.mark.parametrize("name", ["physics_newton", "chemistry_atoms", "physics_truncated", "math_quiet_tone"])
def test_correct_narration_under_its_own_slides_is_left_as_it_is(name):
    """correct_from_slide (sound-alike terms and line inflections) on the true narration: no change."""
    truth = json.loads((LESSONS / f"{name}.truth.json").read_text())
    for slide in truth["slides"]:
        ocr = "\n".join([slide["title"], *slide["lines"], slide["formula"] or ""])
        assert grounding.correct_from_slide(slide["narration"], ocr) == (slide["narration"], []), slide["narration"]
