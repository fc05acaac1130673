"""Slide-grounded correction of misheard words (pipeline.grounding): its thresholds, and what it does to the
ASR of the narrated lessons. Every figure is a rate from this one run.

1. Thresholds: the sound-key distance (``THRESHOLD``) and spelling distance (``CHAR_THRESHOLD``) swept
   over a grid. Recall: the issue's mishearings, each in a sentence under its slide, fixed to the slide's
   term. False proposals: corrections proposed on the true narration of every lesson under its own slides
   (said right, so each one is wrong), per 1,000 words.
2. ``--asr``: whisper-base (tools.asr, the pipeline's default) on the narrated English lessons; per slide,
   the ASR words whose middle falls in the slide's time. WER against the narration, and the slide-term
   error rate (the slide's content words that the narration says, missing from the text), for the raw
   ASR and the ASR grounded in the slide (``grounding.correct`` with the slide's text as its OCR: the truth
   lines, i.e. perfect OCR; no LLM). Each grounded text also goes through ``faithfulness.check``.
3. ``--pipeline``: the same lessons through ``textbook process`` (keyframes, tesseract OCR, clips); each clip
   grounded in its own kept OCR lines (real OCR, as the build's rewrite sees them).
   The LLM rewrites (plain and grounded) are not run here: the embedded 1.5B model is too heavy for a
   shared CPU; ``textbook build`` records each rewrite's check, and ``textbook stats`` counts them.

    python bench/bench_grounding.py [--asr] [--pipeline]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pipeline import faithfulness, grounding  # noqa: E402
from pipeline.textnorm import normalize, wer  # noqa: E402

LESSON_DIRS = [ROOT / "tests/data/lessons", ROOT / "examples/lessons"]
NARRATED = ["physics_newton", "chemistry_atoms", "earth_water_cycle", "math_fractions"]
MARGINS = (0.0, 3.0, 6.0, 15.0)  # seconds around a clip whose keyframes' OCR grounds it

# the mishearings (sentence heard, slide text, the sentence as said)
MISHEARD = [
    ("First comes in operation, when the sun heats the water.", "The Water Cycle\nEvaporation",
     "First comes evaporation, when the sun heats the water."),
    ("Blood flows from the age rear into the vent wrinkles.", "The Heart\nTwo atria and two ventricles",
     "Blood flows from the atria into the ventricles."),
    ("Shade pre-sixths of the bar.", "Equivalent Fractions\nthree sixths = one half",
     "Shade three sixths of the bar."),
    ("Each upper chamber is an age rear.", "Chambers of the heart\natria", "Each upper chamber is an atria."),
    ("The lower chambers are the vent wrinkles.", "Chambers\nventricles", "The lower chambers are the ventricles."),
    ("A cut has a mass of 2 kg.", "Worked Example\nA cart has a mass of 2 kg", "A cart has a mass of 2 kg."),
]


def _truths() -> list[dict]:
    out = []
    for d in LESSON_DIRS:
        for p in sorted(d.glob("*.truth.json")):
            t = json.loads(p.read_text())
            if t.get("voice") == "en":
                out.append({**t, "path": p.with_name(p.name.replace(".truth.json", ".mp4"))})
    return out


def slide_text(slide: dict) -> str:
    return "\n".join([slide["title"], *slide["lines"], slide.get("formula") or ""])


def sweep(truths: list[dict]) -> None:
    narration = [(s["narration"], slide_text(s)) for t in truths for s in t["slides"] if s.get("narration")]
    n_words = sum(len(grounding.words(n)) for n, _ in narration)
    print(f"1. thresholds: {len(MISHEARD)} misheard sentences; {len(narration)} narrated slides, {n_words} words "
          f"said right")
    print(f"{'key':>5} {'chars':>5} {'fixed':>6} {'false/1k words':>15}  false proposals")
    for key in (0.15, 0.2, 0.25, 0.3, 0.34, 0.4, 0.45):
        for chars in (0.4, 0.5, 0.58, 0.65, 0.75, 1.0):
            fixed = sum(grounding.correct(h, grounding.slide_terms(s), key, chars)[0] == said
                        for h, s, said in MISHEARD)
            false = [(c.heard, c.term) for n, s in narration
                     for c in grounding.propose(n, grounding.slide_terms(s), key, chars)]
            mark = " <- default" if (key, chars) == (grounding.THRESHOLD, grounding.CHAR_THRESHOLD) else ""
            print(f"{key:>5} {chars:>5} {fixed:>3}/{len(MISHEARD)} {1000 * len(false) / n_words:>15.2f}  "
                  f"{'; '.join(f'{h}->{t}' for h, t in false[:3])}{mark}")


def term_errors(reference: str, hypothesis: str, slide: str) -> tuple[int, int]:
    """(missed, said): the slide's content words that the reference says, and how many of them (counted with
    their repeats) the hypothesis lacks; words compared normalized (pipeline.textnorm)."""
    terms = {w for w in normalize(slide) if grounding.is_content(w)}
    ref = Counter(w for w in normalize(reference) if w in terms)
    hyp = Counter(w for w in normalize(hypothesis) if w in terms)
    return sum((ref - hyp).values()), sum(ref.values())


def asr(truths: list[dict]) -> None:
    from tools.asr import Transcriber

    model = Transcriber()
    rows = []
    for t in truths:
        if t["name"] not in NARRATED:
            continue
        tr = model.transcribe(t["path"], languages=("en",))
        for s in t["slides"]:
            if not s.get("narration"):
                continue
            heard = " ".join(w.word.strip() for g in tr.segments for w in g.words
                             if s["start"] <= (w.start + w.end) / 2 < s["end"])
            fixed, found = grounding.correct(heard, grounding.slide_terms(slide_text(s)))
            verdict = faithfulness.check(heard, fixed, slide_text(s))
            rows.append({"lesson": t["name"], "said": s["narration"], "raw": heard, "grounded": fixed,
                         "fixes": [(c.heard, c.term) for c in found], "check": verdict.status, "slide": slide_text(s)})
    said = " ".join(r["said"] for r in rows)
    print(f"\n2. whisper-base on {len({r['lesson'] for r in rows})} narrated lessons, {len(rows)} slides, "
          f"{len(normalize(said))} words; OCR = the slide's truth text")
    for name in ("raw", "grounded"):
        hyp = " ".join(r[name] for r in rows)
        missed = sum(term_errors(r["said"], r[name], r["slide"])[0] for r in rows)
        total = sum(term_errors(r["said"], r[name], r["slide"])[1] for r in rows)
        print(f"   {name:<9} WER {wer(said, hyp):.2%}   slide-term error rate {missed}/{total} = "
              f"{missed / max(total, 1):.2%}")
    fixes = [(r["lesson"], f) for r in rows for f in r["fixes"]]
    print(f"   corrections made: {len(fixes)}; checks refused: {sum(r['check'] == 'refused' for r in rows)}")
    for lesson, (h, t) in fixes:
        print(f"     {lesson}: {h!r} -> {t!r}")
    for r in rows:
        if r["raw"] and wer(r["said"], r["raw"]) > 0:
            print(f"   raw ASR error ({r['lesson']}): {r['raw']!r}\n      said: {r['said']!r}")


def pipeline_ocr(truths: list[dict]) -> None:
    """The real pipeline (``textbook process``: whisper-base, keyframes, tesseract OCR, clips) on the narrated
    lessons; each clip's ASR paragraph grounded in its own kept OCR lines, as the build's rewrite sees them.
    WER and slide-term error rate per lesson text (clips joined) against the narration."""
    import tempfile

    from agents.rewrite import slide_text_near
    from pipeline.config import PipelineConfig
    from pipeline.runner import Runner
    from store import open_store

    paths = {t["name"]: t for t in truths if t["name"] in NARRATED}
    with tempfile.TemporaryDirectory() as tmp:
        store = open_store(Path(tmp) / "bench.duckdb")
        Runner(store, PipelineConfig(), Path(tmp) / "out").run([str(t["path"]) for t in paths.values()])
        said, raw, slides, n_clips = [], [], [], 0
        grounded: dict[float, list[str]] = {}
        fixes: dict[float, list] = {m: [] for m in MARGINS}
        refused = dict.fromkeys(MARGINS, 0)
        for v in store.rows("SELECT video_id, source FROM videos"):
            name = Path(v["source"]).stem
            if name not in paths:
                continue
            frames = {f["idx"]: f for f in store.keyframes(v["video_id"])}
            clips = store.clips(v["video_id"])
            said.append(paths[name]["narration"])
            raw.append(" ".join(c["text"] for c in clips))
            slides.append("\n".join(slide_text(s) for s in paths[name]["slides"]))
            n_clips += len(clips)
            for margin in MARGINS:
                g_text = []
                for c in clips:
                    ocr = slide_text_near(frames, c["keyframes"], c["start_s"], c["end_s"], margin)
                    text, found = grounding.correct(c["text"], grounding.slide_terms(ocr))
                    refused[margin] += faithfulness.check(c["text"], text, ocr).refused
                    fixes[margin] += [(name, f.heard, f.term) for f in found]
                    g_text.append(text)
                grounded.setdefault(margin, []).append(" ".join(g_text))
        store.close()
    print(f"\n3. the pipeline (whisper-base, tesseract OCR of its keyframes) on {len(said)} narrated lessons, "
          f"{n_clips} clips; each clip grounded in the kept OCR lines of its keyframes and those within MARGIN s of it")
    for label, hyps in (("raw", raw), *((f"margin {m:g} s", grounded[m]) for m in MARGINS)):
        errs = [term_errors(s, h, sl) for s, h, sl in zip(said, hyps, slides, strict=True)]
        missed, total = sum(e[0] for e in errs), sum(e[1] for e in errs)
        extra = "" if label == "raw" else f"   fixes {len(fixes[float(label.split()[1])])}"
        print(f"   {label:<13} WER {wer(' '.join(said), ' '.join(hyps)):.2%}   slide-term error rate "
              f"{missed}/{total} = {missed / max(total, 1):.2%}{extra}")
    for m in MARGINS:
        print(f"   margin {m:g} s: checks refused {refused[m]}; " +
              "; ".join(f"{n}: {h!r} -> {t!r}" for n, h, t in fixes[m]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--asr", action="store_true", help="also transcribe the narrated lessons (whisper-base)")
    ap.add_argument("--pipeline", action="store_true", help="also run the pipeline (keyframes, real OCR) on them")
    args = ap.parse_args()
    truths = _truths()
    sweep(truths)
    if args.asr:
        asr(truths)
    if args.pipeline:
        pipeline_ocr(truths)


if __name__ == "__main__":
    main()
