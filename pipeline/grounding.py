"""Slide-grounded correction of misheard words: ASR words that sound like a term shown on screen.

ASR mishears exactly the subject words a slide shows ("in operation" under a slide titled
"Evaporation", "vent wrinkles" for "ventricles", "pre-sixths" for "three sixths"), while the OCR of the
same clip has them right. This module compares the two by sound, with no model:

- ``phonetic_key``: a small Metaphone-like key (documented below): consonant sounds only, so spellings that
  sound alike get the same or a near key ("ventricles" FNTRKLS, "vent wrinkles" FNTRNKLS).
- ``key_distance``: the Levenshtein distance of two keys over the longer key's length (0: same sound).
- ``slide_terms``: the terms a clip's kept OCR lines show (content words, and adjacent pairs of them).
- ``char_distance``: the same over the folded spellings, a second guard for short keys.
- ``propose`` / ``correct``: replacements of 1-3 word ASR spans by a slide term within ``THRESHOLD`` of the
  span's key and ``CHAR_THRESHOLD`` of its spelling; a span already on the slide, or only function words,
  is never replaced.
- ``inflections``: a slide line of ``MIN_LINE`` or more words said in order, with a word heard in another
  inflection ("an object at rest stay at rest" under "An object at rest stays at rest"): the slide's form.
- ``correct_from_slide``: both, from the clip's OCR text (what agents/rewrite.py applies before the model).

``THRESHOLD`` was measured by ``bench/bench_grounding.py`` on the issue's misheard examples and on the
narration of tests/data/lessons (correct text, where every proposal is a false one): see that script.
Words are English; text in another script yields empty keys and no proposals.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass

# the largest key distance accepted as "sounds like", and the largest spelling distance (char_distance)
# beside it; bench/bench_grounding.py measures both on the issue's mishearings and the lessons' narration
THRESHOLD = 0.34
CHAR_THRESHOLD = 0.58
# a span with a function word at an edge ("in operation", "force to") must also be spelled closer: the
# short word lends sounds that the term may not have ("force to" FRST is "first" FRST by sound)
PADDED_CHAR_THRESHOLD = 0.45
MAX_SPAN = 3  # ASR words one term may replace
MIN_KEY = 3  # a term whose key is shorter is too short to match by sound
MIN_LINE = 4  # words of a slide line that must be said in order before its inflections are taken

STOPWORDS = frozenset("""
a about above after again against all also am an and any are as at be because been before being below
between both but by can could did do does doing down during each few for from further had has have having
he her here hers herself him himself his how i if in into is it its itself just let lets me more most my
myself no nor not now of off on once only or other our ours ourselves out over own same she should so
some such than that thats the their theirs them themselves then there these they this those through to
too under until up very was we were what when where which while who whom why will with would you your
yours yourself yourselves um uh er ah oh okay ok well like yeah yes right really actually basically
going gonna wanna kind sort thing things get got go here's there's it's that's we're they're you're
i'm let's one ones way lot also just even still
""".split())

_WORD = re.compile(r"[A-Za-z0-9]+(?:['’-][A-Za-z0-9]+)*")  # "pre-sixths" is one word, as ASR wrote it

# ordered rewrite rules on a lower-case letter string (Metaphone's main rules, simplified)
_RULES: tuple[tuple[re.Pattern[str], str], ...] = tuple((re.compile(a), b) for a, b in (
    (r"^(kn|gn|pn)", "n"), (r"^wr", "r"), (r"^ps", "s"), (r"^wh", "w"), (r"^x", "s"),
    (r"mb$", "m"), (r"tch", "ch"), (r"sch", "sk"), (r"ti(?=[ao])", "sh"), (r"si(?=[ao])", "sh"),
    (r"ch", "X"), (r"sh", "X"), (r"th", "0"), (r"ph", "f"), (r"gh(?![aeiou])", ""), (r"ck", "k"),
    (r"dg(?=[eiy])", "j"), (r"c(?=[eiy])", "s"), (r"c", "k"), (r"q", "k"), (r"x", "ks"), (r"z", "s"),
    (r"g(?=[eiy])", "j"), (r"v", "f"), (r"w(?![aeiou])", ""), (r"y(?![aeiou])", ""), (r"h(?![aeiou])", ""),
))


def phonetic_key(text: str) -> str:
    """A Metaphone-like sound key of ``text`` (any number of words, read as one run of letters).

    Method (after L. Philips' Metaphone, 1990, simplified): lower-case letters only; silent initial
    clusters dropped (kn, gn, pn, wr, ps); digraphs mapped to one sound (ch/sh X, th 0, ph f, ck k, tio/tia
    X); soft c and g (before e, i, y) to s and j, hard c and q to k, x to ks, z to s, v to f; w, y, h
    dropped before a consonant; then a leading vowel becomes A, every other vowel is dropped, and runs of
    one sound collapse. Returns upper case ("" for text without letters); digits are kept as they are.
    """
    s = re.sub(r"[^a-z0-9]", "", text.lower())
    if not s:
        return ""
    for pat, rep in _RULES:
        s = pat.sub(rep, s)
    head = "A" if s[0] in "aeiouy" else s[0]
    body = re.sub(r"[aeiouy]", "", s[1:])
    out = []
    for ch in (head + body).upper():
        if not out or out[-1] != ch:
            out.append(ch)
    return "".join(out)


def levenshtein(a: Sequence, b: Sequence) -> int:
    """Edit distance (insertions, deletions, substitutions, each 1) between two sequences."""
    if len(a) < len(b):
        a, b = b, a
    prev = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        cur = [i]
        for j, y in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x != y)))
        prev = cur
    return prev[-1]


def key_distance(heard: str, term: str) -> float:
    """Distance in [0, 1] between the sounds of two texts: the Levenshtein distance of their
    ``phonetic_key``, plus one when their first sounds differ (a listener rarely mishears the onset: "later"
    is not "water"), over the longer key's length, capped at 1; 1.0 when either has no key."""
    a, b = phonetic_key(heard), phonetic_key(term)
    if not a or not b:
        return 1.0
    return min(1.0, (levenshtein(a, b) + (a[0] != b[0])) / max(len(a), len(b)))


def char_distance(heard: str, term: str) -> float:
    """Distance in [0, 1] between two spellings: Levenshtein of the folded letters (``norm``, spaces and
    punctuation dropped) over the longer one's length; 1.0 when either is empty."""
    a, b = norm(heard), norm(term)
    return levenshtein(a, b) / max(len(a), len(b)) if a and b else 1.0


def sounds_like(heard: str, term: str, threshold: float = THRESHOLD, char_threshold: float = CHAR_THRESHOLD) -> bool:
    """Whether ``heard`` (ASR words) may be a mishearing of ``term``: a term key of at least ``MIN_KEY``
    sounds, key distance within ``threshold`` and spelling distance within ``char_threshold`` (the sound
    key alone confuses short words: "force" FRS and "first" FRST are one sound apart)."""
    return (len(phonetic_key(term)) >= MIN_KEY and key_distance(heard, term) <= threshold
            and char_distance(heard, term) <= char_threshold and not variant(heard, term))


def variant(heard: str, term: str) -> bool:
    """Whether a word of ``heard`` and a word of ``term`` are two forms of one word (same ``root``, not the
    same ``stem``: "summarize" and "Summary"): another word the speaker chose, never a mishearing of it."""
    return any(root(a) and root(a) == root(b) and stem(a) != stem(b) for a in words(heard) for b in words(term))


def norm(word: str) -> str:
    """A word folded for comparison: lower case, letters and digits only."""
    return re.sub(r"[^a-z0-9]", "", word.lower())


def stem(word: str) -> str:
    """A crude English stem for "is this the same word": folded, one of -ing -ed -es -s -ly stripped, then a
    final e ("cycles", "cycle" -> "cycl")."""
    w = norm(word)
    for suffix in ("ing", "ed", "es", "s", "ly"):
        if w.endswith(suffix) and len(w) - len(suffix) >= 3:
            w = w[: -len(suffix)]
            break
    return w[:-1] if w.endswith("e") and len(w) > 3 else w


def root(word: str) -> str:
    """The first five letters of a word of five or more ("summarize", "summary" -> "summa"; "" when shorter):
    words of one root are variants of one word, never mishearings of each other."""
    w = norm(word)
    return w[:5] if len(w) >= 5 else ""


def words(text: str) -> list[str]:
    """The words of ``text`` in order (letters/digits with inner apostrophes and hyphens)."""
    return _WORD.findall(text)


def word_spans(text: str) -> list[re.Match[str]]:
    """The matches of ``words`` in ``text`` (their ``span()`` gives character offsets)."""
    return list(_WORD.finditer(text))


def is_content(word: str) -> bool:
    """Whether a word carries content: not a function or filler word, and longer than two letters or a
    number."""
    w = norm(word)
    return (w.isdigit() or len(w) > 2) and w not in STOPWORDS


def slide_terms(ocr: str) -> list[str]:
    """The terms of a clip's slide text (its kept OCR lines, one per line): each content word, and each
    pair of adjacent content words on one line ("water cycle", "three sixths"), in first-seen order, once
    each (case-folded). Shapes: str -> list[str]."""
    out: dict[str, str] = {}
    for line in ocr.splitlines():
        ws = words(line)
        for i, w in enumerate(ws):
            if not is_content(w) or not re.search(r"[A-Za-z]", w):
                continue
            out.setdefault(norm(w), w)
            if i + 1 < len(ws) and is_content(ws[i + 1]) and re.search(r"[A-Za-z]", ws[i + 1]):
                pair = f"{w} {ws[i + 1]}"
                out.setdefault(norm(pair), pair)
    return list(out.values())


@dataclass(frozen=True)
class Correction:
    """One replacement of ASR words by a slide term: word indexes ``start``..``end`` (end exclusive) of the
    paragraph's ``words``, the words ``heard`` there, the ``term`` and their ``distance`` (key_distance)."""

    start: int
    end: int
    heard: str
    term: str
    distance: float

    def as_dict(self) -> dict:
        """The correction as a plain dict of its fields."""
        return asdict(self)


def propose(text: str, terms: Iterable[str], threshold: float = THRESHOLD,
            char_threshold: float = CHAR_THRESHOLD) -> list[Correction]:
    """Replacements of 1-``MAX_SPAN`` word spans of ``text`` by slide ``terms`` that sound like them.

    A span is a candidate only when it holds a content word that is not on the slide; it is not the term
    already; each of its words that is itself a slide word (stem-equal: heard right) is a word of the term
    too ("sixths" alone is never replaced by another term); none of its words shares a slide word's
    ``root`` ("summarize" under "Summary"); and not every word of the term was heard already ("first law
    says" is not "First Law"). The words span and term share are left out of the comparison ("atoms held"
    vs "Atoms build" compares "held" with "build"). A span with a function word at an edge must be spelled
    within ``PADDED_CHAR_THRESHOLD`` too. Among overlapping candidates the closest (then the
    longer term) wins. Returns them in text order; ``threshold`` and ``char_threshold`` are the largest
    key and spelling distances accepted (``sounds_like``).
    """
    ws = words(text)
    terms = [t for t in dict.fromkeys(terms) if len(phonetic_key(t)) >= MIN_KEY]
    on_slide = {stem(w) for t in terms for w in words(t)}
    roots = {root(w) for t in terms for w in words(t) if root(w)}
    cands: list[tuple[float, int, Correction]] = []
    for i in range(len(ws)):
        for j in range(i + 1, min(i + MAX_SPAN, len(ws)) + 1):
            span = ws[i:j]
            if not any(is_content(w) for w in span):
                continue
            right = {stem(w) for w in span if stem(w) in on_slide}
            if all(stem(w) in right for w in span if is_content(w)) or \
                    any(root(w) in roots and stem(w) not in right for w in span):
                continue  # heard right: every content word on the slide, or a word of a slide word's root
            if not is_content(span[0]) and not is_content(span[-1]) and j - i > 1:
                continue  # a function word at both ends: the span is padded, not misheard
            heard = " ".join(span)
            for t in terms:
                term_words = {stem(w) for w in words(t)}
                if norm(heard) == norm(t) or not right <= term_words or term_words <= right:
                    continue  # a slide word outside the term, or every word of the term heard already
                # words the span and the term share are no evidence: compare the rest ("held" to "build")
                a = " ".join(w for w in span if stem(w) not in right)
                b = " ".join(w for w in words(t) if stem(w) not in right)
                d = key_distance(a, b)
                padded = not (is_content(span[0]) and is_content(span[-1]))
                spelled = min(char_threshold, PADDED_CHAR_THRESHOLD) if padded else char_threshold
                if d <= threshold and char_distance(a, b) <= spelled and len(phonetic_key(b)) >= MIN_KEY:
                    cands.append((d, -len(words(t)), Correction(i, j, heard, t, round(d, 3))))
    taken: set[int] = set()
    out = []
    for _, _, c in sorted(cands, key=lambda x: (x[0], x[1], x[2].start)):
        if taken.isdisjoint(range(c.start, c.end)):
            taken.update(range(c.start, c.end))
            out.append(c)
    return sorted(out, key=lambda c: c.start)


def apply(text: str, corrections: Sequence[Correction]) -> str:
    """``text`` with each correction's words replaced by its term (the rest, punctuation included, kept).
    The term's first letter takes the case of the first word it replaces, unless the term is an acronym
    (its second letter upper case too)."""
    spans = list(_WORD.finditer(text))
    out, pos = [], 0
    for c in sorted(corrections, key=lambda c: c.start):
        a, b = spans[c.start], spans[c.end - 1]
        term = c.term
        if not (len(term) > 1 and term[1].isupper()):
            term = (term[0].upper() if a.group()[0].isupper() else term[0].lower()) + term[1:]
        out += [text[pos:a.start()], term]
        pos = b.end()
    out.append(text[pos:])
    return "".join(out)


def inflections(text: str, ocr: str, min_line: int = MIN_LINE) -> list[Correction]:
    """Words of ``text`` heard in another inflection than a slide line shows: where the ``words`` of one
    line of ``ocr`` (``min_line`` or more) are said in order, each one ``stem``-equal to the line's and at
    least one spelled differently ("stay" for "stays", "quarter" for "quarters": ASR drops and adds a final
    s), a Correction per differing word to the line's form (``distance`` 0). A line said word for word
    gives none. Returns them in text order, one per word."""
    said = words(text)
    ws = [norm(w) for w in said]
    stems = [stem(w) for w in ws]
    out: dict[int, Correction] = {}
    for line in ocr.splitlines():
        lw = words(line)
        if len(lw) < min_line:
            continue
        ls = [stem(w) for w in lw]
        for i in range(len(ws) - len(lw) + 1):
            if stems[i:i + len(lw)] != ls:
                continue
            for k, w in enumerate(lw):
                if ws[i + k] != norm(w) and i + k not in out:
                    heard = said[i + k]  # the line's form in the heard word's case (all caps stays all caps)
                    term = w.upper() if heard.isupper() and len(heard) > 1 else w.lower() if w.isupper() else w
                    out[i + k] = Correction(i + k, i + k + 1, heard, term, 0.0)
    return [out[i] for i in sorted(out)]


def correct_from_slide(text: str, ocr: str, threshold: float = THRESHOLD,
                       char_threshold: float = CHAR_THRESHOLD) -> tuple[str, list[Correction]]:
    """``text`` corrected from the clip's slide text ``ocr`` (kept OCR lines, one per line): a slide
    line's inflections (``inflections``) first, then the misheard words that sound like a slide term
    (``propose`` on ``slide_terms``) where they do not overlap. Returns the text and the corrections."""
    found = inflections(text, ocr)
    taken = {i for c in found for i in range(c.start, c.end)}
    found += [c for c in propose(text, slide_terms(ocr), threshold, char_threshold)
              if taken.isdisjoint(range(c.start, c.end))]
    found.sort(key=lambda c: c.start)
    return (apply(text, found) if found else text), found


def correct(text: str, terms: Iterable[str], threshold: float = THRESHOLD,
            char_threshold: float = CHAR_THRESHOLD) -> tuple[str, list[Correction]]:
    """``text`` with the misheard words that sound like a slide term replaced by it (``propose`` then
    ``apply``), and the corrections made."""
    found = propose(text, terms, threshold, char_threshold)
    return (apply(text, found) if found else text), found
