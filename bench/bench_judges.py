"""How right are the embedded models' judges? Accuracy on the labelled set in examples/judge_eval.

- metadata.jsonl: (knowledge point, title, description, tags, channel, duration) with the right
  verdict; the verdict counted is the graph's (an accept below agent.min_metadata_score is a reject).
- transcripts.jsonl: (knowledge point, raw transcript) with the right transcript verdict.
- goals.jsonl: goals whose taxonomy must be valid: it validates under the sized schema (no
  fallback), its subjects are the goal's, no name is generic, every point has a difficulty, and
  where the goal comes with a library (the titles of a local folder, as `make demo` has), each
  title fits one of its knowledge points (agents.assign.fit >= 0.5).

Each model runs on the embedded llama.cpp server with the build's settings (schema-constrained
decoding, the same prompts and values as agents/graph.py). A call that gives no valid answer or
times out counts as wrong. Answers are cached in --cache (a DuckDB file), so a rerun after a prompt
change pays only for the changed prompt. ``--write`` stores each judge's accuracy with its prompt's
sha256 in agents/judge_accuracy.json: ``enforce_judges = auto`` enforces the embedded judges that
reach agent.judge_bar (85%) there.

    python bench/bench_judges.py [--model qwen2.5-coder-1.5b --model smollm2-135m] [--only metadata]
                                 [--limit N] [--threads N] [--write]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import prompts  # noqa: E402
from agents import schemas  # noqa: E402
from agents.assign import embed_texts, fit, point_text  # noqa: E402
from agents.config import AgentConfig, LLMConfig, RoleConfig  # noqa: E402
from agents.graph import library_values  # noqa: E402
from agents.llm import Gateway, LLMOutputInvalid  # noqa: E402
from agents.local_llm import MODELS, embedded_server  # noqa: E402
from agents.stages import metadata_judge_values, transcript_judge_values  # noqa: E402
from store import open_store  # noqa: E402
from tools.search import lexical_relevance, words  # noqa: E402

SET = ROOT / "examples" / "judge_eval"
ACCURACY = ROOT / "agents" / "judge_accuracy.json"
# a name that names no topic: only generic words ("Introduction", "Overview", "Topic 1", "Basics")
GENERIC = re.compile(r"^\s*(?:(?:an? |the )?(?:introduction|overview|basics|fundamentals|general|miscellaneous|"
                     r"other|topic|unit|chapter|part|lesson|module)s?\s*\d*\s*)+$", re.I)


def _load(name: str, limit: int | None) -> list[dict]:
    rows = [json.loads(x) for x in (SET / name).read_text().splitlines() if x.strip()]
    return rows[:limit] if limit else rows


def _cfg(url: str, alias: str, timeout: float) -> LLMConfig:
    # what agents/build.py sets for the embedded server
    return LLMConfig(base_url=url, model=alias, legacy_max_tokens=True, http_retries=0, structured="llamacpp",
                     stream=True, timeout_s=timeout, max_tokens=256, retries=1,
                     roles={"planner": RoleConfig(max_tokens=700)})


def eval_metadata(gw: Gateway, cases: list[dict], min_score: int) -> list[dict]:
    out = []
    for i, case in enumerate(cases, 1):
        chain = case["path"].split(" > ")
        values = metadata_judge_values(chain, {"level": case["level"], "language": case["language"]},
                                       case["video"], 5)
        t0 = time.perf_counter()
        try:
            v = gw.call("metadata_judge", "eval", "metadata_judge", values, schemas.MetadataVerdict).value
            got = "accept" if v.verdict == "accept" and v.score >= min_score else "reject"
            detail = f"{v.verdict} {v.score} {v.reasons}"
        except LLMOutputInvalid as exc:
            got, detail = "invalid", str(exc)[:120]
        ok = got == case["expected"]
        out.append({"id": case["id"], "expected": case["expected"], "got": got, "ok": ok, "detail": detail,
                    "seconds": round(time.perf_counter() - t0, 1)})
        print(f"  metadata {i:2d}/{len(cases)} {case['id']:<16} want {case['expected']:<6} got {got:<7} "
              f"{'ok ' if ok else 'BAD'} {out[-1]['seconds']:6.1f}s  {detail[:110]}", flush=True)
    return out


def eval_transcripts(gw: Gateway, cases: list[dict]) -> list[dict]:
    out = []
    for i, case in enumerate(cases, 1):
        values = transcript_judge_values(case["path"].split(" > "), case["transcript"], 6000)
        t0 = time.perf_counter()
        try:
            v = gw.call("transcript_judge_a", "eval", "transcript_judge", values, schemas.TranscriptVerdict).value
            got, detail = v.verdict, f"{v.verdict} r{v.relevance} d{v.density} q{v.quality} {v.reasons}"
        except LLMOutputInvalid as exc:
            got, detail = "invalid", str(exc)[:120]
        ok = got == case["expected"]
        out.append({"id": case["id"], "expected": case["expected"], "got": got, "ok": ok, "detail": detail,
                    "seconds": round(time.perf_counter() - t0, 1)})
        print(f"  transcript {i:2d}/{len(cases)} {case['id']:<12} want {case['expected']:<6} got {got:<7} "
              f"{'ok ' if ok else 'BAD'} {out[-1]['seconds']:6.1f}s  {detail[:110]}", flush=True)
    return out


class _Library:
    """A source with a catalog, as a local folder is (the taxonomy prompt lists its titles)."""

    def __init__(self, titles: list[str]):
        self.titles = titles

    def catalog(self) -> list:
        from tools.search import Candidate

        return [Candidate(video_id=f"v{i}", source="local", url="", title=t) for i, t in enumerate(self.titles)]


def taxonomy_problems(tax: schemas.Taxonomy, subjects: list[str], library: list[str] | None = None) -> list[str]:
    """Why a validated taxonomy is still not a good one for its goal (empty: it is valid)."""
    problems = []
    if library:
        paths = [point_text(p[:3] + [p[3].rsplit(" (d", 1)[0]]) for p in _paths(tax)]
        scores = fit(library, paths, embed_texts)
        for title, row in zip(library, scores, strict=True):
            if row.max() < 0.5:
                problems.append(f"no point for the library's {title!r} (best fit {row.max():.2f})")
    names = [s.name for s in tax.subjects]
    for want in subjects:  # the subject itself, not "A computer science textbook for middle school"
        if not any(lexical_relevance(want, n) >= 0.5 and len(words(n) - words(want)) <= 1 for n in names):
            problems.append(f"subject {want!r} missing (got {names})")
    for node in tax.nodes():
        if GENERIC.search(node["name"]):
            problems.append(f"generic name {node['name']!r}")
        if node["level"] == "point" and node["difficulty"] is None:
            problems.append(f"no difficulty for {node['name']!r}")
    return problems


def eval_taxonomy(gw: Gateway, goals: list[dict], size) -> list[dict]:
    out = []
    for i, g in enumerate(goals, 1):
        values = {"level": g["level"], "title": g["goal"].removeprefix("build ").capitalize(),
                  "subjects": ", ".join(g["subjects"]), "courses": size.courses, "subcourses": size.subcourses,
                  "points": size.points, **library_values([_Library(g.get("library") or [])])}
        shape = schemas.sized_taxonomy(len(g["subjects"]), size.courses, size.subcourses, size.points)
        t0 = time.perf_counter()
        try:
            tax = gw.call("planner", "eval", "taxonomy", values, shape).value
            problems = taxonomy_problems(tax, g["subjects"], g.get("library"))
            paths = [" > ".join(p) for p in _paths(tax)]
        except LLMOutputInvalid as exc:
            problems, paths = [f"invalid: {str(exc)[:120]}"], []
        ok = not problems
        out.append({"goal": g["goal"], "ok": ok, "problems": problems, "paths": paths,
                    "seconds": round(time.perf_counter() - t0, 1)})
        print(f"  taxonomy {i}/{len(goals)} {'ok ' if ok else 'BAD'} {out[-1]['seconds']:6.1f}s {g['goal']!r}: "
              f"{'; '.join(problems) or ' | '.join(paths)}", flush=True)
    return out


def _paths(tax: schemas.Taxonomy) -> list[list[str]]:
    return [[s.name, c.name, u.name, f"{p.name} (d{p.difficulty})"] for s in tax.subjects for c in s.courses
            for u in c.subcourses for p in u.points]


def _acc(rows: list[dict]) -> float | None:
    return round(sum(r["ok"] for r in rows) / len(rows), 3) if rows else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", action="append", choices=list(MODELS), help="embedded model (repeatable)")
    ap.add_argument("--only", default="metadata,transcript,taxonomy", help="which sets, comma-separated")
    ap.add_argument("--limit", type=int, help="first N cases of each set")
    ap.add_argument("--threads", type=int, default=0, help="server threads (0: every core but one)")
    ap.add_argument("--timeout", type=float, default=300.0, help="per-call timeout in seconds")
    ap.add_argument("--cache", type=Path, default=Path("/tmp/textbook-judge-eval.duckdb"), help="answer cache")
    ap.add_argument("--out", type=Path, default=Path("/tmp/textbook-judge-eval.json"), help="results (JSON)")
    ap.add_argument("--write", action="store_true", help="store the accuracies in agents/judge_accuracy.json")
    args = ap.parse_args()
    only = set(args.only.split(","))
    agent = AgentConfig()
    size = agent.taxonomy.model_copy(update={"courses": 1, "subcourses": 1, "points": 2})  # examples/demo.toml's
    store = open_store(args.cache)
    results: dict = json.loads(args.out.read_text()) if args.out.is_file() else {}
    t_all = time.perf_counter()
    for key in args.model or list(MODELS):
        model = MODELS[key]
        print(f"{key} ({model.alias}), {args.threads or 'every core but one'} threads", flush=True)
        with embedded_server(key=key, threads=args.threads, log_file=Path(f"/tmp/textbook-judge-eval-{key}.log"),
                             n_ctx=4096) as url:
            gw = Gateway(store, f"eval-{key}", _cfg(url, model.alias, args.timeout))
            r = results.setdefault(model.alias, {})
            if "metadata" in only:
                r["metadata"] = eval_metadata(gw, _load("metadata.jsonl", args.limit), agent.min_metadata_score)
            if "transcript" in only:
                r["transcript"] = eval_transcripts(gw, _load("transcripts.jsonl", args.limit))
            if "taxonomy" in only:
                r["taxonomy"] = eval_taxonomy(gw, _load("goals.jsonl", args.limit), size)
        args.out.write_text(json.dumps(results, indent=1))
    store.close()
    print("\n| model | metadata judge | transcript judge | taxonomy valid | seconds per answered call (mean) |")
    print("|---|---|---|---|---|")
    for alias, r in results.items():
        cells = []
        for kind in ("metadata", "transcript", "taxonomy"):
            rows = r.get(kind) or []
            cells.append(f"{sum(x['ok'] for x in rows)}/{len(rows)} ({_acc(rows):.0%})" if rows else "-")
        # answers served by --cache take ~0 s: the mean is over the calls this run paid for
        secs = [x["seconds"] for k in ("metadata", "transcript", "taxonomy") for x in r.get(k) or []
                if x["seconds"] >= 0.5]
        print(f"| {alias} | {' | '.join(cells)} | {sum(secs) / len(secs):.1f} |" if secs else
              f"| {alias} | {' | '.join(cells)} | (all cached) |")
    print(f"(bench {time.perf_counter() - t_all:.0f} s, {os.cpu_count()} cores, load average "
          f"{os.getloadavg()[1]:.1f} over the last 5 min)")
    if args.write:
        data = json.loads(ACCURACY.read_text())
        for alias, r in results.items():
            entry = data["models"].setdefault(alias, {})
            for kind, prompt in (("metadata", "metadata_judge"), ("transcript", "transcript_judge")):
                rows = r.get(kind) or []
                if rows and not args.limit:
                    entry[kind] = {"accuracy": _acc(rows), "n": len(rows), "prompt_sha256": prompts.load(prompt).sha256}
            rows = r.get("taxonomy") or []
            if rows and not args.limit:
                entry["taxonomy"] = {"valid": sum(x["ok"] for x in rows), "n": len(rows),
                                     "prompt_sha256": prompts.load("taxonomy").sha256}
        ACCURACY.write_text(json.dumps(data, indent=2) + "\n")
        print(f"wrote {ACCURACY.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
