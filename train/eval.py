"""The paper's few-shot evaluation (PAPER.md section 7): k-shot prompts, the cheat test, tables.

    bench = load_benchmark("tests/data/bench/okvqa")            # or "okvqa" from the HF hub
    model, processor = load_model("ckpt/")
    result = evaluate([bench], VLMPredictor(model, processor), shots=(0, 1, 2, 4), cheat=True)
    print(format_tables(result))

Prompts are chats in the model's own template: each demonstration is a user turn (its image,
its question, the paper's suffix "Answer the question using a single word or phrase.") and an
assistant turn (its answer); the test item is the last user turn, and the model answers greedily.

Demonstrations (never the test item itself, except in the cheat test):

* ``random``: per item, ``random.Random(f"{seed}:{item.id}").sample(candidates, max(k, 8))[:k]``, so
  the 1-shot demonstration is the first of the 2-shot ones, and a run with ``--limit`` picks the
  same ones.
* ``rices`` (retrieval-based in-context example selection): the k pool items whose image features
  (a CLIP vision encoder) are nearest the item's by cosine, ordered with the nearest last, closest to
  the question (as OpenFlamingo does).
* the cheat test, k-shot: k-1 random demonstrations (the rule above with k-1) and then the test item
  itself (image, question, answer) in the last slot: 1-shot is the item alone, 2-shot the item plus one
  random demonstration.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from train.benchmarks import SUFFIX, BenchItem, Benchmark
from train.scoring import extract_choice, math_correct, vqa_accuracy

log = logging.getLogger(__name__)

SHOTS = (0, 1, 2, 4, 8)
DEMOS = ("random", "rices")
_RANDOM_DRAW = 8  # a per-item draw of this many (or k, if more) whose prefixes are the k-shot demonstrations


class EvalError(Exception):
    """A bad evaluation request; the message is one line for the user."""


# --- prompts ----------------------------------------------------------------------------------


@dataclass
class Prompt:
    """A k-shot prompt: the demonstrations in order, then the test item."""

    item: BenchItem
    demos: list[BenchItem]
    cheat: bool = False
    suffix: str = SUFFIX

    @property
    def shots(self) -> int:
        """The number of demonstrations before the item."""
        return len(self.demos)

    def messages(self) -> tuple[list[dict], list]:
        """(chat messages, images in order) for ``processor.apply_chat_template``."""
        messages: list[dict] = []
        images: list = []
        for demo in self.demos:
            messages.append(_user_turn(demo, images, self.suffix))
            messages.append({"role": "assistant", "content": [{"type": "text", "text": demo.target()}]})
        messages.append(_user_turn(self.item, images, self.suffix))
        return messages, images


def _user_turn(item: BenchItem, images: list, suffix: str) -> dict:
    content: list[dict] = []
    image = item.load_image()
    if image is not None:
        content.append({"type": "image"})
        images.append(image)
    content.append({"type": "text", "text": item.prompt_text(suffix)})
    return {"role": "user", "content": content}


def _candidates(bench: Benchmark, item: BenchItem) -> list[BenchItem]:
    return [p for p in bench.pool if p.id != item.id] if bench.leave_one_out else list(bench.pool)


def random_demos(bench: Benchmark, item: BenchItem, k: int, seed: int = 0) -> list[BenchItem]:
    """k seeded random demonstrations for ``item`` (see the module docstring for the rule)."""
    if k == 0:
        return []
    cands = _candidates(bench, item)
    if len(cands) < k:
        raise EvalError(f"{bench.name}: {k}-shot needs {k} demonstrations, the pool has {len(cands)}")
    return random.Random(f"{seed}:{item.id}").sample(cands, min(len(cands), max(k, _RANDOM_DRAW)))[:k]


class Rices:
    """Nearest demonstrations by image features (the pool is encoded once, on first use)."""

    def __init__(self, bench: Benchmark, encoder):
        self.bench = bench
        self.encoder = encoder
        self._pool_feats: np.ndarray | None = None
        self._item_feats: dict[str, np.ndarray] = {}
        self._pool_index = {p.id: i for i, p in enumerate(bench.pool)}

    def _features(self, items: Sequence[BenchItem]) -> np.ndarray:
        images = []
        for it in items:
            im = it.load_image()
            if im is None:
                raise EvalError(f"{self.bench.name}: RICES needs images, item {it.id} has none")
            images.append(im)
        return self.encoder.encode(images)

    def demos(self, item: BenchItem, k: int) -> list[BenchItem]:
        """The ``k`` pool items whose image features are most similar (cosine) to the item's, the nearest last (just
        before the item); the item itself is left out when the benchmark says ``leave_one_out``. Raises EvalError
        when the pool has fewer than ``k`` (RICES, PAPER.md section 7)."""
        if k == 0:
            return []
        if self._pool_feats is None:
            self._pool_feats = self._features(self.bench.pool)
        if item.id not in self._item_feats:
            self._item_feats[item.id] = self._features([item])[0]
        sims = self._pool_feats @ self._item_feats[item.id]
        if self.bench.leave_one_out and item.id in self._pool_index:
            sims[self._pool_index[item.id]] = -np.inf
        available = int(np.isfinite(sims).sum())
        if available < k:
            raise EvalError(f"{self.bench.name}: {k}-shot needs {k} demonstrations, the pool has {available}")
        nearest = np.argsort(-sims, kind="stable")[:k]
        return [self.bench.pool[i] for i in reversed(nearest)]  # the nearest last


def build_prompts(bench: Benchmark, k: int, demos: str = "random", seed: int = 0, cheat: bool = False,
                  rices: Rices | None = None, items: Iterable[BenchItem] | None = None) -> list[Prompt]:
    """The k-shot prompts of a benchmark's items (``items`` defaults to all of them)."""
    if demos not in DEMOS:
        raise EvalError(f"unknown demonstration selection {demos!r} (one of {', '.join(DEMOS)})")
    prompts = []
    for item in bench.items if items is None else items:
        if cheat:
            if k < 1:
                raise EvalError("the cheat test needs at least 1 shot")
            chosen = [*random_demos(bench, item, k - 1, seed), item]
        elif demos == "rices":
            if rices is None:
                raise EvalError("RICES demonstrations need an image encoder")
            chosen = rices.demos(item, k)
        else:
            chosen = random_demos(bench, item, k, seed)
        prompts.append(Prompt(item=item, demos=chosen, cheat=cheat))
    return prompts


# --- predictors -------------------------------------------------------------------------------


class Predictor(Protocol):
    """Anything that answers prompts: ``predict(prompts) -> one generated answer per prompt``."""

    def predict(self, prompts: Sequence[Prompt]) -> list[str]:
        """One generated answer per prompt, in order."""


class FixedPredictor:
    """Answers from a table by item id (or from a function of the prompt): for tests and replays."""

    def __init__(self, answers: Mapping[str, str] | Callable[[Prompt], str], default: str = ""):
        self.answers = answers
        self.default = default
        self.seen: list[Prompt] = []

    def predict(self, prompts: Sequence[Prompt]) -> list[str]:
        """The table's answer for each prompt's item (``default`` when absent), or the function's; remembers the
        prompts."""
        self.seen.extend(prompts)
        if callable(self.answers):
            return [self.answers(p) for p in prompts]
        return [self.answers.get(p.item.id, self.default) for p in prompts]


class VLMPredictor:
    """Greedy generation with a transformers vision-language model that takes interleaved images
    through its chat template (Idefics3 / SmolVLM by default; any processor whose chat template
    accepts ``{"type": "image"}`` parts)."""

    def __init__(self, model, processor, max_new_tokens: int = 16, device: str | None = None):
        self.model = model.eval()
        self.processor = processor
        self.max_new_tokens = max_new_tokens
        self.device = device or str(next(model.parameters()).device)

    def render(self, prompt: Prompt) -> tuple[str, list]:
        """The chat-templated text of the prompt (generation prompt added) and its images in order."""
        messages, images = prompt.messages()
        text = self.processor.apply_chat_template(messages, add_generation_prompt=True)
        return text, images

    def predict(self, prompts: Sequence[Prompt]) -> list[str]:
        """Greedy answers of at most ``max_new_tokens`` tokens, one prompt at a time, decoded without special tokens."""
        import torch

        tok = getattr(self.processor, "tokenizer", self.processor)
        out = []
        for prompt in prompts:
            text, images = self.render(prompt)
            # a flat image list: Idefics3/SmolVLM split it by the prompt's image tokens, LLaVA-style ones take it as is
            inputs = self.processor(text=[text], images=images or None, return_tensors="pt")
            inputs = {k: v.to(self.device) for k, v in inputs.items()}
            if "pixel_values" in inputs:
                inputs["pixel_values"] = inputs["pixel_values"].to(next(self.model.parameters()).dtype)
            with torch.inference_mode():
                ids = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens, do_sample=False,
                                          pad_token_id=tok.pad_token_id)
            answer = tok.decode(ids[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
            out.append(clean_answer(answer))
        return out


def clean_answer(text: str) -> str:
    """The first line of a generation, without a leading "Assistant:" or "Answer:"."""
    text = text.strip()
    for prefix in ("Assistant:", "Answer:"):
        if text.startswith(prefix):
            text = text[len(prefix):].strip()
    return text.splitlines()[0].strip() if text else ""


# --- scoring and tables ----------------------------------------------------------------------


def score(item: BenchItem, prediction: str) -> float:
    """1.0 / 0.0 (VQA: the fractional 10-answer accuracy) for one prediction."""
    if item.kind == "vqa":
        return vqa_accuracy(prediction, item.answers)
    if item.kind == "choice" or item.choices:
        return float(extract_choice(prediction, item.choices) == item.answer)
    return float(math_correct(prediction, item.answer, item.answer_type, item.precision))


@dataclass
class EvalResult:
    """Accuracies in percent: ``table[bench][shots]`` and ``cheat[bench][shots]``, plus per-item records."""

    table: dict[str, dict[int, float]] = field(default_factory=dict)
    cheat: dict[str, dict[int, float]] = field(default_factory=dict)
    items: dict[str, int] = field(default_factory=dict)
    records: list[dict] = field(default_factory=list)
    options: dict = field(default_factory=dict)
    seconds: float = 0.0

    def to_json(self, records: bool = False) -> dict:
        """The result as JSON-ready values (shot counts as string keys); the per-item records only when ``records``."""
        out = {"options": self.options, "items": self.items,
               "table": {b: {str(k): v for k, v in row.items()} for b, row in self.table.items()},
               "cheat": {b: {str(k): v for k, v in row.items()} for b, row in self.cheat.items()},
               "seconds": self.seconds}
        if records:
            out["records"] = self.records
        return out


def parse_shots(text: str | Sequence[int]) -> tuple[int, ...]:
    """"0,1,2,4" -> (0, 1, 2, 4); one-line EvalError on anything else."""
    values = text.split(",") if isinstance(text, str) else list(text)
    try:
        shots = tuple(sorted({int(str(v).strip()) for v in values if str(v).strip()}))
    except ValueError as exc:
        raise EvalError(f"--shots takes numbers like 0,1,2,4 (got {text!r})") from exc
    if not shots or any(k < 0 or k > 32 for k in shots):
        raise EvalError(f"--shots takes numbers from 0 to 32 like 0,1,2,4 (got {text!r})")
    return shots


def evaluate(benches: Sequence[Benchmark], predictor: Predictor, shots: Sequence[int] = (0, 1, 2, 4),
             demos: str = "random", seed: int = 0, cheat: bool = False, encoder=None, limit: int | None = None,
             progress: Callable[[str], None] | None = None) -> EvalResult:
    """Every benchmark at every shot count (and the cheat test at each count >= 1 when ``cheat``)."""
    started = time.monotonic()
    result = EvalResult(options={"shots": list(shots), "demos": demos, "seed": seed, "cheat": cheat, "limit": limit,
                                 "encoder": getattr(encoder, "name", None) if demos == "rices" else None})
    runs = [(k, False) for k in shots] + ([(k, True) for k in shots if k >= 1] if cheat else [])
    for bench in benches:
        items = bench.items[:limit] if limit else bench.items
        result.items[bench.name] = len(items)
        rices = Rices(bench, encoder) if demos == "rices" and any(not c and k for k, c in runs) else None
        for k, is_cheat in runs:
            if progress:
                progress(f"{bench.name}: {k}-shot{' cheat' if is_cheat else ''} on {len(items)} items")
            prompts = build_prompts(bench, k, demos, seed, is_cheat, rices, items)
            predictions = predictor.predict(prompts)
            if len(predictions) != len(prompts):
                raise EvalError(f"the predictor returned {len(predictions)} answers for {len(prompts)} prompts")
            scores = [score(p.item, pred) for p, pred in zip(prompts, predictions, strict=True)]
            acc = round(100 * sum(scores) / len(scores), 2) if scores else 0.0
            (result.cheat if is_cheat else result.table).setdefault(bench.name, {})[k] = acc
            for p, pred, s in zip(prompts, predictions, scores, strict=True):
                result.records.append({"bench": bench.name, "shots": k, "cheat": is_cheat, "id": p.item.id,
                                       "demos": [d.id for d in p.demos], "prediction": pred,
                                       "gold": p.item.answers if p.item.kind == "vqa" else p.item.answer,
                                       "score": round(s, 4)})
    result.seconds = round(time.monotonic() - started, 2)
    return result


def table_rows(table: Mapping[str, Mapping[int, float]], shots: Sequence[int]) -> list[list[str]]:
    """Rows (benchmark, accuracy per shot count) plus an average row when there are several benchmarks."""
    rows = [[name, *(f"{row[k]:.1f}" if k in row else "-" for k in shots)] for name, row in table.items()]
    if len(table) > 1:
        avg = []
        for k in shots:
            vals = [row[k] for row in table.values() if k in row]
            avg.append(f"{sum(vals) / len(vals):.1f}" if vals else "-")
        rows.append(["average", *avg])
    return rows


def format_tables(result: EvalResult) -> str:
    """Plain-text tables shaped like the paper's Table 2 (shots) and its cheat table."""
    out = []
    shots = list(result.options.get("shots", []))
    for title, table, cols in (("accuracy (%)", result.table, shots),
                               ("cheat test: the item itself is a demonstration (%)", result.cheat,
                                [k for k in shots if k >= 1])):
        if not table:
            continue
        header = ["benchmark", *(f"{k}-shot" for k in cols)]
        rows = [header, *table_rows(table, cols)]
        widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
        out.append(title)
        for r in rows:
            cells = [c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True))]
            out.append("  ".join(cells))
        out.append("")
    return "\n".join(out).rstrip() + "\n"
