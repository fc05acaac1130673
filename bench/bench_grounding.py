"""Slide-grounded correction of misheard words (pipeline.grounding): its thresholds, and what it does to the
ASR of the narrated lessons. Every figure is a rate from this one run.

1. Thresholds: the sound-key distance (``THRESHOLD``) and spelling distance (``CHAR_THRESHOLD``) swept
   over a grid. Recall: the issue's mishearings, each in a sentence under its slide, fixed to the slide's
   term. False proposals: corrections proposed on the true narration of every lesson under its own slides
   (said right, so each one is wrong), per 1,000 words.
2. ``--asr``: whisper-base (tools.asr, the pipeline's default) on the narrated English lessons; per slide,
   the ASR words whose middle falls in the slide's time. WER against the narration, and the slide-term
   error rate (the slide's content words that the narration says, missing from the text), for the raw
   ASR and the ASR grounded in the slide (``grounding.correct_from_slide`` with the slide's text as its OCR:
   the truth lines, i.e. perfect OCR; no LLM). Each grounded text also goes through ``faithfulness.check``.
3. ``--pipeline``: the same lessons through ``textbook process`` (keyframes, tesseract OCR, clips); each clip
   grounded in its own kept OCR lines (real OCR, as the build's rewrite sees them).
4. ``llm``: the LLM rewrite measured (agents.rewrite.polish, the build's call, through the real gateway and
   the embedded llama.cpp server) on a labelled set of ASR paragraphs: the narrated lessons (espeak-ng
   speech, one paragraph per slide) and real speech with a reference (tests/data/rewrite_eval/
   real_speech.json: the lecture and the MIT-license reading of ../shared/cases/media, by time window).
   Each paragraph is whisper-base's words in its window; its slide text stands for the clip's OCR. Per
   setting, one run: WER against the reference, the slide-term error rate, and for the model's rewrites
   the faithfulness check's refusals (by kind), the answers never valid, and the invented words (content
   words the model wrote that are neither in the ASR paragraph nor on the slide). Settings: raw ASR; the
   correction alone (grounding.correct_from_slide, no LLM); the plain rewrite (no slide terms in the
   prompt) and the grounded rewrite (the paragraph corrected from the slide, then the model given the
   terms), each as the model wrote it and as kept (``Rewrite.polished``, what the corpus gets: the check's
   text; refused or never valid: the raw paragraph with its slide corrections when grounded, the raw
   paragraph when plain). The last row is not what the corpus gets: the grounded rewrite kept by rewrite
   VERSION 2's rule (a refused or never valid answer kept the bare raw paragraph), for comparison. ``--write``
   stores the kept grounded rewrite's WER (``wer_rewrite``) beside the raw ASR's, the correction's alone
   (``wer_corrected``) and the kept plain rewrite's (``wer_plain``) in agents/judge_accuracy.json (key
   ``polish``), which decides whether the build uses the embedded model's rewrite (agents.build.rewrite_use).

    python bench/bench_grounding.py [--asr] [--pipeline]
    python bench/bench_grounding.py llm [--model qwen2.5-coder-1.5b] [--sets lessons,real] [--limit N] [--write]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pipeline import faithfulness, grounding  # noqa: E402
from pipeline.textnorm import normalize, wer  # noqa: E402

LESSON_DIRS = [ROOT / "tests/data/lessons", ROOT / "examples/lessons"]
REAL_SET = ROOT / "tests/data/rewrite_eval/real_speech.json"
# ../shared/cases/media beside the project (a checkout in /work/main; a worktree one level deeper)
MEDIA_DIRS = [ROOT.parent / "shared/cases/media", ROOT.parent.parent / "shared/cases/media"]
ACCURACY = ROOT / "agents" / "judge_accuracy.json"
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


def heard_in(transcript, start: float, end: float) -> str:
    """The ASR words of ``transcript`` (tools.asr.Transcript) whose middle falls in [start, end) seconds."""
    return " ".join(w.word.strip() for g in transcript.segments for w in g.words
                    if start <= (w.start + w.end) / 2 < end)


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
            heard = heard_in(tr, s["start"], s["end"])
            fixed, found = grounding.correct_from_slide(heard, slide_text(s))
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
                    text, found = grounding.correct_from_slide(c["text"], ocr)
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


def media_dir(given: Path | None) -> Path:
    """Where the real-speech set's media are: ``given``, or ../shared/cases/media beside the project.
    Exits with one line when none is there."""
    for d in [given] if given else MEDIA_DIRS:
        if d and d.is_dir():
            return d
    sys.exit(f"bench_grounding: no media folder ({given or ' or '.join(map(str, MEDIA_DIRS))}); pass --media DIR")


def labelled_paragraphs(sets: set[str], media: Path | None = None) -> list[dict]:
    """The labelled set of ASR paragraphs: per paragraph its ``set`` (lessons: espeak-ng narration; real:
    real speech), ``name``, knowledge ``point``, the reference ``said``, whisper-base's words ``raw`` in its
    window, and the ``slide`` text that stands for its OCR."""
    from tools.asr import Transcriber

    model = Transcriber()
    rows = []
    if "lessons" in sets:
        for t in _truths():
            if t["name"] not in NARRATED:
                continue
            tr = model.transcribe(t["path"], languages=("en",))
            point = t.get("spec", {}).get("knowledge_point") or t["name"]
            for i, s in enumerate(t["slides"]):
                if s.get("narration"):
                    rows.append({"set": "lessons", "name": f"{t['name']}#{i}", "point": point, "said": s["narration"],
                                 "raw": heard_in(tr, s["start"], s["end"]), "slide": slide_text(s)})
    if "real" in sets:
        folder = media_dir(media)
        for item in json.loads(REAL_SET.read_text())["items"]:
            path = folder / item["media"]
            if not path.is_file():
                sys.exit(f"bench_grounding: {path} is missing (the real-speech set names it)")
            tr = model.transcribe(path, languages=("en",))
            for i, s in enumerate(item["segments"]):
                rows.append({"set": "real", "name": f"{Path(item['media']).stem}#{i}", "point": item["point"],
                             "said": s["reference"], "raw": heard_in(tr, s["start"], s["end"]), "slide": s["slide"]})
    return rows


def invented(raw: str, written: str, slide: str) -> list[str]:
    """Content words of ``written`` (stem-compared) that are neither in ``raw`` nor on ``slide``."""
    known = {grounding.stem(w) for w in grounding.words(raw + " " + slide)}
    return [w for w in grounding.words(written) if grounding.is_content(w) and grounding.stem(w) not in known
            and not faithfulness.numbers(w)]


def _embedded_cfg(url: str, alias: str, timeout: float):
    from agents.config import LLMConfig

    # what agents/build.py sets for the embedded server (one request at a time, schema grammar, streamed)
    return LLMConfig(base_url=url, model=alias, legacy_max_tokens=True, http_retries=0, concurrency=1,
                     structured="llamacpp", stream=True, timeout_s=timeout)


def rewrite_all(gw, rows: list[dict]) -> None:
    """Each paragraph's plain and grounded rewrite (agents.rewrite.polish, checked), into ``rows``: per mode
    the model's text (``MODE_written``), the text kept (``MODE``: agents.rewrite.Rewrite.polished or the raw
    paragraph), which it is (``MODE_kept``), the text rewrite VERSION 2 kept (``MODE_v2``), ``MODE_status``
    (accepted, refused, invalid) and ``MODE_kinds``."""
    from agents import rewrite
    from agents.llm import LLMOutputInvalid

    for n, r in enumerate(rows, 1):
        req = rewrite.RewriteRequest(r["point"], r["raw"], r["slide"], r["name"])
        for mode in ("plain", "grounded"):
            t0 = time.perf_counter()
            try:
                done = rewrite.polish(gw, req, grounded=mode == "grounded")
                r[mode], r[f"{mode}_written"] = done.polished or r["raw"], done.check.rewrite
                r[f"{mode}_status"], r[f"{mode}_kinds"] = done.check.status, list(done.check.kinds)
            except LLMOutputInvalid as exc:
                done = rewrite.unanswered(req, str(exc), grounded=mode == "grounded")
                r[mode], r[f"{mode}_written"] = done.polished or r["raw"], r["raw"]
                r[f"{mode}_status"], r[f"{mode}_kinds"] = "invalid", []
            r[f"{mode}_kept"] = done.kept
            r[f"{mode}_v2"] = r[mode] if done.kept == rewrite.KEPT_REWRITE else r["raw"]  # VERSION 2's rule
            r[f"{mode}_s"] = round(time.perf_counter() - t0, 1)
        print(f"   {n:2d}/{len(rows)} {r['name']:<22} plain {r['plain_status']:<8} ({r['plain_s']:5.1f} s)  grounded "
              f"{r['grounded_status']:<8} ({r['grounded_s']:5.1f} s)", flush=True)


def _measure(rows: list[dict], key: str) -> tuple[float, int, int]:
    said = " ".join(r["said"] for r in rows)
    hyp = " ".join(r[key] for r in rows)
    errs = [term_errors(r["said"], r[key], r["slide"]) for r in rows]
    return wer(said, hyp), sum(e[0] for e in errs), sum(e[1] for e in errs)


def llm_table(rows: list[dict], label: str) -> dict:
    """Print the settings' table for ``rows``; return the figures (for --write)."""
    words_said = sum(len(normalize(r["said"])) for r in rows)
    print(f"\n   {label}: {len(rows)} paragraphs, {words_said} words said")
    print("   | setting | WER | slide-term error rate | refused (kinds) | never valid | invented words "
          "| kept: rewrite / raw + slide fixes / raw |", flush=True)
    print("   |---|---|---|---|---|---|---|")
    out = {}
    settings = [("raw ASR", "raw", None), ("correction only (no LLM)", "corrected", None),
                ("plain rewrite, as written", "plain_written", "plain"), ("plain rewrite, kept", "plain", "plain"),
                ("grounded rewrite, as written", "grounded_written", "grounded"),
                ("grounded rewrite, kept", "grounded", "grounded"),
                ("(grounded, kept by rewrite v2: refused -> raw paragraph)", "grounded_v2", "grounded")]
    for name, key, mode in settings:
        w, missed, total = _measure(rows, key)
        out[key] = {"wer": round(w, 4), "term_missed": missed, "terms": total}
        refused = inv = invalid = kept = "-"
        if mode:
            kinds = Counter(k for r in rows for k in r[f"{mode}_kinds"])
            n_ref = sum(r[f"{mode}_status"] == "refused" for r in rows)
            refused = f"{n_ref} ({', '.join(f'{k} {v}' for k, v in kinds.most_common()) or '-'})" \
                if key == mode else "-"
            invalid = str(sum(r[f"{mode}_status"] == "invalid" for r in rows))
            inv = str(sum(len(invented(r["raw"], r[key], r["slide"])) for r in rows))
            n_kept = Counter(r[f"{mode}_kept"] for r in rows)
            out[key] |= {"refused": n_ref, "invalid": int(invalid), "kept": dict(n_kept)}
            if key == mode:
                kept = " / ".join(str(n_kept[k]) for k in ("rewrite", "slide_fixed", "raw"))
        print(f"   | {name} | {w:.2%} | {missed}/{total} = {missed / max(total, 1):.1%} | {refused} | {invalid} "
              f"| {inv} | {kept} |")
    return out


def llm(args) -> None:
    """The ``llm`` subcommand: see the module docstring (4)."""
    import prompts
    from agents import rewrite
    from agents.llm import Gateway
    from agents.local_llm import MODELS, embedded_server
    from store import open_store

    model = MODELS[args.model]
    sets = set(args.sets.split(","))
    t0 = time.perf_counter()
    rows = labelled_paragraphs(sets, args.media)
    if args.limit:  # a subset: the first N paragraphs of each set
        rows = [r for s in ("lessons", "real") for r in [x for x in rows if x["set"] == s][:args.limit]]
    for r in rows:
        r["corrected"] = grounding.correct_from_slide(r["raw"], r["slide"])[0]
    print(f"4. the LLM rewrite: {model.key} on 127.0.0.1 ({args.threads or 'every core but one'} threads), "
          f"{len(rows)} paragraphs (whisper-base ASR, {time.perf_counter() - t0:.0f} s); prompt polish "
          f"{prompts.load('polish').sha256[:12]}", flush=True)
    store = open_store(args.cache)
    t1 = time.perf_counter()
    log = Path(f"/tmp/textbook-rewrite-eval-{model.key}.log")
    with embedded_server(key=model.key, threads=args.threads, log_file=log) as url:
        gw = Gateway(store, f"rewrite-eval-{model.key}", _embedded_cfg(url, model.alias, args.timeout))
        rewrite_all(gw, rows)
    store.close()
    figures = {s: llm_table([r for r in rows if r["set"] == s], {"lessons": "narrated lessons (espeak-ng)",
                                                                 "real": "real speech (tests/data/rewrite_eval)"}[s])
               for s in ("lessons", "real") if any(r["set"] == s for r in rows)}
    figures["all"] = llm_table(rows, "all")
    print(f"   ({time.perf_counter() - t1:.0f} s of rewrites, {os.cpu_count()} cores, load average "
          f"{os.getloadavg()[1]:.1f} over the last 5 min)")
    for r in rows:
        if r["grounded"] != r["raw"] or r["grounded_status"] != "accepted":
            print(f"   {r['name']}: {r['grounded_status']} {r['grounded_kinds']} (kept: {r['grounded_kept']})\n"
                  f"      raw:      {r['raw']!r}\n      written:  {r['grounded_written']!r}\n"
                  f"      kept:     {r['grounded']!r}\n      said:     {r['said']!r}")
    if args.out:
        args.out.write_text(json.dumps(rows, indent=1))
    if args.write:
        if args.limit or sets != {"lessons", "real"}:
            sys.exit("bench_grounding: --write needs the whole set (no --limit, both sets)")
        data = json.loads(ACCURACY.read_text())
        a = figures["all"]
        data["models"].setdefault(model.alias, {})["polish"] = {
            "wer_raw": a["raw"]["wer"], "wer_rewrite": a["grounded"]["wer"], "n": len(rows),
            "slide_term_error_raw": round(a["raw"]["term_missed"] / max(a["raw"]["terms"], 1), 4),
            "slide_term_error_rewrite": round(a["grounded"]["term_missed"] / max(a["grounded"]["terms"], 1), 4),
            "wer_plain": a["plain"]["wer"], "wer_corrected": a["corrected"]["wer"],
            "slide_term_error_corrected": round(a["corrected"]["term_missed"] / max(a["corrected"]["terms"], 1), 4),
            "refused": a["grounded"]["refused"], "rewrite_version": rewrite.VERSION,
            "prompt_sha256": prompts.load("polish").sha256}
        ACCURACY.write_text(json.dumps(data, indent=2) + "\n")
        print(f"wrote {ACCURACY.relative_to(ROOT)}")


def main() -> None:
    from agents.local_llm import DEFAULT_MODEL, MODELS

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--asr", action="store_true", help="also transcribe the narrated lessons (whisper-base)")
    ap.add_argument("--pipeline", action="store_true", help="also run the pipeline (keyframes, real OCR) on them")
    sub = ap.add_subparsers(dest="command")
    p = sub.add_parser("llm", help="the LLM rewrite (plain and grounded) on the labelled set")
    p.add_argument("--model", choices=list(MODELS), default=DEFAULT_MODEL, help="embedded model")
    p.add_argument("--sets", default="lessons,real", help="lessons, real (comma-separated)")
    p.add_argument("--limit", type=int, help="the first N paragraphs of each set")
    p.add_argument("--media", type=Path, help="the real-speech media folder (default ../shared/cases/media)")
    p.add_argument("--threads", type=int, default=0, help="server threads (0: every core but one)")
    p.add_argument("--timeout", type=float, default=600.0, help="per-call timeout in seconds")
    p.add_argument("--cache", type=Path, default=Path("/tmp/textbook-rewrite-eval.duckdb"),
                   help="answer cache (a rerun with the same prompt pays nothing)")
    p.add_argument("--out", type=Path, help="write every paragraph's texts here (JSON)")
    p.add_argument("--write", action="store_true", help="store the figures in agents/judge_accuracy.json")
    args = ap.parse_args()
    if args.command == "llm":
        llm(args)
        return
    truths = _truths()
    sweep(truths)
    if args.asr:
        asr(truths)
    if args.pipeline:
        pipeline_ocr(truths)


if __name__ == "__main__":
    main()
