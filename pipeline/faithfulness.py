"""Is a rewrite of an ASR paragraph faithful to it? Checked word by word, not hoped for.

A model's rewrite of a transcript paragraph may fix misheard words and fluency, nothing else. ``check``
aligns the rewrite with the raw paragraph (difflib's SequenceMatcher over folded words) and:

1. keeps a changed span that brings in a slide word (the clip's kept OCR lines) only when the words it
   replaced sound like it (``pipeline.grounding.sounds_like``); otherwise that span gets the raw words back
   ("reverted": the original words stay);
2. refuses the rewrite (the raw paragraph is kept) when it
   - ``adds``: brings content words that are neither in the raw paragraph nor on the slide,
   - ``numbers``: changes the numbers said (digits and number words, compared as values),
   - ``negation``: changes how many negations there are (not, no, never, -n't, without, ...),
   - ``length``: is shorter or longer than the bounds on its word count over the raw paragraph's,
   - ``drops``: keeps fewer than ``min_overlap`` of the raw paragraph's content words.

The result is a typed ``RewriteCheck``: the text to use, and the reasons (each "kind: detail").
"""

from __future__ import annotations

import difflib
import re
from collections import Counter
from dataclasses import dataclass, field

from pipeline import grounding
from pipeline.grounding import is_content, stem, words

VERSION = 1  # bump when a check changes what it accepts (part of the build's clip policy hash)

NEGATIONS = frozenset("not no never none nobody nothing nowhere neither nor cannot without".split())
_UNITS = {w: i for i, w in enumerate("zero one two three four five six seven eight nine ten eleven twelve "
                                     "thirteen fourteen fifteen sixteen seventeen eighteen nineteen".split())}
_TENS = {w: 10 * i for i, w in enumerate("_ _ twenty thirty forty fifty sixty seventy eighty ninety".split())
         if w != "_"}
_SCALES = {"hundred": 100, "thousand": 1000, "million": 10**6, "billion": 10**9}
_ORDINALS = {"half": "2", "halves": "2", "third": "3", "thirds": "3", "quarter": "4", "quarters": "4"}


@dataclass(frozen=True)
class Limits:
    """The bounds a rewrite must keep: ``min_ratio``..``max_ratio`` of its word count over the raw
    paragraph's, ``min_overlap`` of the raw content words kept, and the ``threshold`` (key distance) under
    which replaced words "sound like" a slide term."""

    min_ratio: float = 0.6
    max_ratio: float = 1.3
    min_overlap: float = 0.5
    threshold: float = grounding.THRESHOLD


@dataclass(frozen=True)
class RewriteCheck:
    """The verdict on one rewrite.

    ``status``: "accepted" (``text`` is the rewrite, with any ungrounded term swap reverted) or "refused"
    (``text`` is the raw paragraph); ``reasons``: why refused, each "kind: detail" (kinds: adds, numbers,
    negation, length, drops); ``corrections``: the slide-term swaps kept, as (heard, term);
    ``reverted``: the swaps put back to the raw words, as (heard, written); ``rewrite``: what the model
    wrote.
    """

    status: str
    text: str
    rewrite: str
    reasons: tuple[str, ...] = ()
    corrections: tuple[tuple[str, str], ...] = ()
    reverted: tuple[tuple[str, str], ...] = ()
    kinds: tuple[str, ...] = field(default=())

    @property
    def refused(self) -> bool:
        """Whether the rewrite was refused (the raw paragraph stands)."""
        return self.status == "refused"

    def as_dict(self) -> dict:
        """JSON-safe: what the store keeps in ``clips.rewrite``."""
        return {"status": self.status, "version": VERSION, "reasons": list(self.reasons),
                "kinds": list(self.kinds), "corrections": [list(c) for c in self.corrections],
                "reverted": [list(r) for r in self.reverted], "rewrite": self.rewrite}


def numbers(text: str) -> Counter:
    """The numbers said in ``text`` as a multiset of value strings: digit runs ("2.5", "1,000" -> "1000")
    and English number words ("twenty one" -> "21", "three sixths" -> "3", "6"; halves/thirds/quarters as
    the denominators they name)."""
    out: Counter = Counter()
    toks = re.findall(r"\d+(?:[.,]\d+)*|[A-Za-z]+", text.replace("-", " "))
    run: list[int] = []

    def flush() -> None:
        if run:
            total, cur = 0, 0
            for v in run:
                if v in _SCALES.values():
                    cur = max(cur, 1) * v
                    if v >= 1000:
                        total, cur = total + cur, 0
                else:
                    cur += v
            out[str(total + cur)] += 1
            run.clear()

    for t in toks:
        w = t.lower()
        if t[0].isdigit():
            flush()
            out[t.replace(",", "") if re.fullmatch(r"\d{1,3}(,\d{3})+", t) else t] += 1
        elif w in _UNITS or w in _TENS or (w in _SCALES and run):
            run.append(_UNITS.get(w, _TENS.get(w, _SCALES.get(w, 0))))
        elif w.rstrip("s") in ("sixth", "fifth", "fourth", "seventh", "eighth", "ninth", "tenth"):
            flush()
            out[str({"fourth": 4, "fifth": 5, "sixth": 6, "seventh": 7, "eighth": 8, "ninth": 9,
                     "tenth": 10}[w.rstrip("s")])] += 1
        elif w in _ORDINALS:
            flush()
            out[_ORDINALS[w]] += 1
        else:
            flush()
    flush()
    return out


def negations(text: str) -> int:
    """How many negations ``text`` has: NEGATIONS words and -n't contractions."""
    ws = [w.lower().replace("’", "'") for w in words(text)]
    return sum(w in NEGATIONS or w.endswith("n't") for w in ws)


def check(raw: str, rewrite: str, ocr: str = "", limits: Limits = Limits()) -> RewriteCheck:
    """Check ``rewrite`` of the ASR paragraph ``raw`` against it and the clip's slide text ``ocr`` (kept
    OCR lines, "" when none). Returns a RewriteCheck (see the module docstring for the rules)."""
    raw_w, new_w = words(raw), words(rewrite)
    if not raw_w:
        return RewriteCheck("accepted" if not new_w else "refused", raw, rewrite,
                            () if not new_w else ("adds: the raw paragraph is empty",),
                            kinds=() if not new_w else ("adds",))
    slide = {stem(w) for w in words(ocr)}
    said = {stem(w) for w in raw_w}
    a, b = [stem(w) for w in raw_w], [stem(w) for w in new_w]
    added: list[str] = []
    corrections: list[tuple[str, str]] = []
    reverted: list[tuple[str, str]] = []
    put_back: list[tuple[int, int, str]] = []  # (start, end) character span of the rewrite -> raw words
    at = [m.span() for m in grounding.word_spans(rewrite)]
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(a=a, b=b, autojunk=False).get_opcodes():
        if op in ("equal", "delete"):
            continue
        fresh = [new_w[j] for j in range(j1, j2)
                 if (is_content(new_w[j]) or _number_word(new_w[j])) and b[j] not in said]
        invented = [w for w in fresh if stem(w) not in slide and not _number_word(w)]
        grounded = [w for w in fresh if stem(w) in slide]
        added += invented  # numbers not on the slide are left to the numbers check
        if invented or not grounded:
            continue
        heard, written = " ".join(raw_w[i1:i2]), " ".join(new_w[j1:j2])
        if i2 > i1 and _sounds_alike(raw_w, new_w, (i1, i2), (j1, j2), grounded, limits.threshold):
            corrections.append((heard, written))
            continue
        reverted.append((heard, written))  # a slide word that does not sound like what was said: put back
        put_back.append((at[j1][0], at[j2 - 1][1], heard))
    text = rewrite
    for start, end, heard in sorted(put_back, reverse=True):
        text = text[:start] + heard + text[end:]
    text = re.sub(r"\s+", " ", text).strip()
    reasons: list[tuple[str, str]] = []
    if added:
        reasons.append(("adds", f"adds {', '.join(dict.fromkeys(added))}: neither said nor on the slide"))
    said_numbers = numbers(raw) + numbers(" ".join(t for _, t in corrections))
    got = numbers(text)
    if +(got - said_numbers) or +(numbers(raw) - got):
        reasons.append(("numbers", f"numbers changed: said {_fmt(numbers(raw))}, rewrite {_fmt(got)}"))
    if negations(raw) != negations(text):
        reasons.append(("negation", f"negations changed: said {negations(raw)}, rewrite {negations(text)}"))
    ratio = len(words(text)) / len(raw_w)
    if not limits.min_ratio <= ratio <= limits.max_ratio:
        reasons.append(("length", f"length {ratio:.2f} of the raw paragraph's (bounds {limits.min_ratio}-"
                                  f"{limits.max_ratio})"))
    content = {x for x, w in zip(a, raw_w, strict=True) if is_content(w)}
    kept = {stem(w) for w in words(text)} | {stem(w) for h, _ in corrections for w in words(h)}
    share = len(content & kept) / len(content) if content else 1.0
    if share < limits.min_overlap:
        reasons.append(("drops", f"keeps only {share:.0%} of the content words"))
    if reasons:
        return RewriteCheck("refused", raw, rewrite, tuple(r for _, r in reasons), tuple(corrections),
                            tuple(reverted), tuple(k for k, _ in reasons))
    return RewriteCheck("accepted", text, rewrite, (), tuple(corrections), tuple(reverted))


def _number_word(w: str) -> bool:
    return bool(numbers(w))


def _sounds_alike(raw_w: list[str], new_w: list[str], old: tuple[int, int], new: tuple[int, int],
                  grounded: list[str], threshold: float) -> bool:
    """Whether a changed span's new words sound like the words they replaced: the whole spans, the spans
    widened by one shared word on either side ("pre sixths" -> "three sixths"), or each new slide word
    against some run of 1-3 replaced words."""
    (i1, i2), (j1, j2) = old, new
    for left in (0, 1):
        for right in (0, 1):
            if i1 - left < 0 or j1 - left < 0:
                continue
            heard = " ".join(raw_w[i1 - left:i2 + right])
            if grounding.sounds_like(heard, " ".join(new_w[j1 - left:j2 + right]), threshold):
                return True
    heard_w = raw_w[i1:i2]
    runs = [" ".join(heard_w[i:j]) for i in range(len(heard_w))
            for j in range(i + 1, min(i + 3, len(heard_w)) + 1)]
    return all(any(grounding.sounds_like(r, w, threshold) for r in runs) for w in grounded)


def _fmt(c: Counter) -> str:
    return "[" + ", ".join(sorted(c.elements())) + "]"
