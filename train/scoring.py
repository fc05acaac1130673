"""Scoring of the few-shot benchmarks: VQA accuracy, multiple-choice letters, math answers.

* OKVQA / TextVQA: the VQA accuracy of the official evaluation (GT-Vision-Lab/VQA
  ``vqaEval.py``): a prediction scores ``min(#humans who gave it / 3, 1)`` against each
  leave-one-out subset of the human answers (10 choose 9), averaged. Prediction and human
  answers go through the official normalization (punctuation, lower case, number words to
  digits, articles dropped, contractions restored). Unlike the official script, the human
  answers are always normalized (the official annotation files ship them normalized; raw hub
  rows do not), which leaves scores on the official files unchanged.
* ScienceQA: the option letter is extracted from the generated text ("B", "(B)", "b) text",
  "The answer is (B).", or the option's own text) and compared with the gold letter.
* MathVista / MathVision / MathVerse: multiple-choice items as above; free-form items by the
  last number in the prediction (integers exactly, floats at the item's precision, else a
  small tolerance), fractions ``a/b`` and ``\\frac{a}{b}`` included, and otherwise by the
  normalized text. The official MathVista/MathVerse scripts extract answers with an LLM;
  this rule-based extraction is the offline stand-in.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"

# --- VQA answer normalization (after the official evaluation) ---------------------------------

_NUMBER_WORDS = {"none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
                 "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10"}
_ARTICLES = {"a", "an", "the"}
# apostrophe-less spellings -> the contraction (both sides of a comparison are normalized alike)
_CONTRACTIONS = {w.replace("'", ""): w for w in (
    "ain't aren't can't could've couldn't couldn't've didn't doesn't don't hadn't hadn't've hasn't haven't "
    "he'd he'd've he's how'd how'll how's i'd've i'm i've isn't it'd it'd've it'll ma'am mightn't mightn't've "
    "might've mustn't must've needn't not've o'clock oughtn't shan't she'd've should've shouldn't shouldn't've "
    "somebody'd've somebody'll somebody's someone'd someone'd've someone'll someone's something'd "
    "something'd've something'll that's there'd there'd've there're there's they'd they'd've they'll they're "
    "they've 'twas wasn't we'd've we've weren't what'll what're what's what've when's where'd where's "
    "where've who'd who'd've who'll who's who've why'll why're why's won't would've wouldn't wouldn't've "
    "y'all y'all'll y'all'd've you'd you'd've you'll you're you've").split()}
_PUNCT = [";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",", "?", "!",
          ":", "'"]
_PERIOD_STRIP = re.compile(r"(?!<=\d)(\.)(?!\d)")
_COMMA_STRIP = re.compile(r"(\d)(,)(\d)")


def _process_punctuation(text: str) -> str:
    out = text
    for p in _PUNCT:
        # a mark next to a space (or inside a number like 1,000) is dropped; elsewhere it splits words
        if (p + " " in text or " " + p in text) or _COMMA_STRIP.search(text) is not None:
            out = out.replace(p, "")
        else:
            out = out.replace(p, " ")
    return _PERIOD_STRIP.sub("", out)


def _process_digit_article(text: str) -> str:
    words = [_NUMBER_WORDS.get(w, w) for w in text.lower().split()]
    words = [w for w in words if w not in _ARTICLES]
    return " ".join(_CONTRACTIONS.get(w, w) for w in words)


def normalize_vqa_answer(answer: str) -> str:
    """The official VQA normalization: "Two dogs." -> "2 dogs", "the Dont" -> "don't"."""
    text = answer.replace("\n", " ").replace("\t", " ").strip()
    return _process_digit_article(_process_punctuation(text))


def vqa_accuracy(prediction: str, answers: Sequence[str]) -> float:
    """VQA accuracy in [0, 1]: the mean over leave-one-out subsets of min(#matches / 3, 1)."""
    if not answers:
        return 0.0
    pred = normalize_vqa_answer(prediction)
    gts = [normalize_vqa_answer(a) for a in answers]
    matches = sum(g == pred for g in gts)
    # leaving out answer i removes one match exactly when answer i itself matches
    scores = [min(1.0, (matches - (g == pred)) / 3) for g in gts]
    return sum(scores) / len(scores)


# --- multiple choice ------------------------------------------------------------------------


def _normalize_text(text: str) -> str:
    text = text.lower().strip()
    text = re.sub(r"[\s.,;:!?'\"()\[\]{}$]+", " ", text)
    return " ".join(w for w in text.split() if w not in _ARTICLES)


_LEAD = r"(?i:answer)\s*(?:is|:)\s*:?\s*(?i:option\s*)?"
_ANSWER_IS = [re.compile(_LEAD + r"\(([A-Za-z])\)"),  # "The answer is (b)"
              re.compile(_LEAD + r"([A-Z])\b"),  # "Answer: C"
              re.compile(_LEAD + r"([a-z])(?:[.):]|\s*$)")]  # "answer is b." but not "answer is a cat"


def extract_choice(prediction: str, choices: Sequence[str] = (), n_choices: int | None = None) -> str | None:
    """The option letter a generated answer picks, or None.

    Accepted, in this order: a bare letter ("B", "b") or a leading letter with a mark ("(B)",
    "b) text", "B. text", "B:"); "answer is (B)" / "Answer: C" / "answer is b." anywhere; a
    capital letter in parentheses anywhere; the text of exactly one option ("yes" when the options
    are yes/no). A letter followed by a word ("a cat", "A cat") is not a letter.
    """
    n = n_choices if n_choices is not None else (len(choices) or 5)
    valid = LETTERS[:n]
    text = prediction.strip()
    first = text.splitlines()[0].strip() if text else ""
    m = re.match(r"^\(?([A-Za-z])\)?\s*$", first) or re.match(r"^\(?([A-Za-z])[.):\]](?:\s|$)", first) \
        or re.match(r"^\(([A-Za-z])\)", first)
    if m and m.group(1).upper() in valid:
        return m.group(1).upper()
    for pattern in _ANSWER_IS:
        m = pattern.search(text)
        if m and m.group(1).upper() in valid:
            return m.group(1).upper()
    m = re.search(r"\(([A-Z])\)", text)
    if m and m.group(1) in valid:
        return m.group(1)
    if choices:
        norm = _normalize_text(text)
        opts = [_normalize_text(str(c)) for c in choices]
        exact = [i for i, o in enumerate(opts) if o and o == norm]
        if len(exact) == 1:
            return LETTERS[exact[0]]
        contained = [i for i, o in enumerate(opts) if o and re.search(rf"\b{re.escape(o)}\b", norm)]
        if len(contained) == 1:
            return LETTERS[contained[0]]
    return None


# --- math free-form answers -------------------------------------------------------------------

_NUMBER = re.compile(r"-?\d+(?:,\d{3})*(?:\.\d+)?|-?\.\d+")
_FRAC = re.compile(r"\\[dt]?frac\{(-?[\d.]+)\}\{(-?[\d.]+)\}|(-?\d+(?:\.\d+)?)\s*/\s*(\d+(?:\.\d+)?)")


def parse_number(text: str) -> float | None:
    """The number an answer states: its last fraction or number ("x = 3/4" -> 0.75, "1,200 m" -> 1200)."""
    text = str(text)
    fracs = list(_FRAC.finditer(text))
    nums = list(_NUMBER.finditer(text))
    last_frac = fracs[-1] if fracs else None
    last_num = nums[-1] if nums else None
    if last_frac and (not last_num or last_frac.end() >= last_num.end()):
        a, b = (last_frac.group(1), last_frac.group(2)) if last_frac.group(1) else (last_frac.group(3),
                                                                                      last_frac.group(4))
        try:
            return float(a) / float(b) if float(b) else None
        except ValueError:
            return None
    if last_num:
        try:
            return float(last_num.group(0).replace(",", ""))
        except ValueError:
            return None
    return None


def math_correct(prediction: str, gold: str, answer_type: str = "", precision: int | None = None) -> bool:
    """A free-form math answer against the gold answer (see the module docstring)."""
    gold_text = str(gold).strip().strip("$").replace(" ", "")
    numeric = _NUMBER.fullmatch(gold_text) or _FRAC.fullmatch(gold_text)
    gold_num = parse_number(gold_text) if numeric else None
    if gold_num is not None and answer_type != "text":
        pred_num = parse_number(prediction)
        if pred_num is None:
            return False
        if answer_type == "integer":
            return math.isclose(pred_num, round(gold_num)) and float(pred_num).is_integer()
        if precision is not None and answer_type == "float":
            return round(pred_num, precision) == round(gold_num, precision)
        return math.isclose(pred_num, gold_num, rel_tol=1e-4, abs_tol=1e-6)
    return _normalize_text(prediction) == _normalize_text(str(gold))
