"""Benchmark adapters for the paper's few-shot evaluation (PAPER.md section 7).

A benchmark is a list of test items plus a pool of demonstrations. It loads from the
HF hub (``load_benchmark("okvqa")``; needs ``pip install datasets`` and a network) or from
a local folder in the benchmark's own field layout (``load_benchmark("path/to/folder")``).

Local folders: the items are the one JSON / JSONL file in the folder (or in its ``data/``
subfolder); when there are several, ``test*``, ``testmini*``, ``val*`` and ``problems.json`` win.
A ``train.json(l)`` or ``demos.json(l)`` beside it is the demonstration pool; without one,
demonstrations come from the test items themselves, never the item being asked (leave one out).
A JSON file may hold a list of items, a dict of items keyed by id, or a ``{"data": [...]}`` /
``{"questions": [...]}`` wrapper. Image paths are relative to the items file's folder, the
benchmark folder, or its parent. The layout is told from the first item's fields
(``--layout`` overrides it):

=============  =================================================================================
layout         fields (hub dataset)
=============  =================================================================================
okvqa,         ``question``, ``answers`` (the 10 human answers: strings, or dicts with an
textvqa        ``answer``), ``image`` (a path) or ``image_id`` (found by name among the folder's
               images: ``COCO_val2014_000000000042.jpg`` or ``42.jpg``), ``question_id``.
               TextVQA's official ``TextVQA_0.5.1_val.json`` ({"data": [...]}, images in
               ``train_images/``) and OKVQA's official pair ``OpenEnded_mscoco_val2014_questions
               .json`` + ``mscoco_val2014_annotations.json`` also load. (HuggingFaceM4/OK-VQA,
               lmms-lab/textvqa)
scienceqa-img  ``question``, ``choices`` (list), ``answer`` (index into choices), ``hint``,
               ``image``; the official ``problems.json`` (dict by pid with ``split``; images at
               ``{split}/{pid}/image.png``) loads too: split "test" is asked, split "train" is
               the pool; items without an image are left out (the IMG subset).
               (derek-thomas/ScienceQA)
mathvista      ``pid``, ``question``, ``image``, ``choices`` (list or null), ``answer`` (the
               choice text or the value), ``question_type`` (multi_choice / free_form),
               ``answer_type`` (integer / float / text / list), ``precision``, ``unit``.
               (AI4Math/MathVista, split testmini)
mathvision     ``id``, ``question``, ``options`` (list, empty for free-form), ``answer`` (a
               letter, or the value), ``image``, ``level``, ``subject``. (MathLLMs/MathVision,
               split testmini)
mathverse      ``sample_index``, ``problem_version``, ``question`` (multiple-choice options are
               written in it: "Choices:\\nA:...\\nB:..."), ``answer`` (a letter, or the value),
               ``question_type`` (multi-choice / free-form), ``image``. (AI4Math/MathVerse,
               testmini)
=============  =================================================================================
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from PIL import Image

from train.scoring import LETTERS, normalize_vqa_answer

SUFFIX = "Answer the question using a single word or phrase."
BENCHMARKS = ("scienceqa-img", "okvqa", "textvqa", "mathvista", "mathvision", "mathverse")
LAYOUTS = BENCHMARKS
KIND = {"okvqa": "vqa", "textvqa": "vqa", "scienceqa-img": "choice", "mathvista": "math", "mathvision": "math",
        "mathverse": "math"}
_LAYOUT_ALIASES = {"vqa": "okvqa", "scienceqa": "scienceqa-img", "sqa": "scienceqa-img"}


@dataclass(frozen=True)
class HubSpec:
    """Where a benchmark lives on the HF hub: the dataset repo, its config, the split evaluated and the split the
    demonstrations come from."""

    repo: str
    config: str | None
    split: str  # the items asked
    pool_split: str | None  # the demonstration pool (None: leave one out of ``split``)


HUB = {
    "scienceqa-img": HubSpec("derek-thomas/ScienceQA", None, "test", "train"),
    "okvqa": HubSpec("HuggingFaceM4/OK-VQA", None, "validation", "train"),
    "textvqa": HubSpec("lmms-lab/textvqa", None, "validation", "train"),
    "mathvista": HubSpec("AI4Math/MathVista", None, "testmini", None),
    "mathvision": HubSpec("MathLLMs/MathVision", None, "testmini", None),
    "mathverse": HubSpec("AI4Math/MathVerse", "testmini", "testmini", None),
}


class BenchmarkError(Exception):
    """A benchmark that cannot be loaded; the message is one line for the user."""


@lru_cache(maxsize=256)
def _open_image(path: str) -> Image.Image:
    with Image.open(path) as im:
        return im.convert("RGB")


@dataclass
class BenchItem:
    """One question: the image, the text shown, and what counts as right.

    ``kind`` is "vqa" (scored against ``answers``), "choice" (gold option letter in ``answer``)
    or "math" (a letter when ``choices`` is set, else the value in ``answer``).
    """

    id: str
    question: str
    image: Any  # a path, a PIL image, or None
    kind: str
    answer: str
    answers: list[str] = field(default_factory=list)
    choices: list[str] = field(default_factory=list)
    show_choices: bool = True  # False where the question text already lists the options (MathVerse)
    context: str = ""
    answer_type: str = ""
    precision: int | None = None
    meta: dict = field(default_factory=dict)

    def load_image(self) -> Image.Image | None:
        """The item's image in RGB, or None when it has none. Raises BenchmarkError when the file cannot be read."""
        if self.image is None:
            return None
        if isinstance(self.image, Image.Image):
            return self.image.convert("RGB") if self.image.mode != "RGB" else self.image
        try:
            return _open_image(str(self.image))
        except OSError as exc:
            raise BenchmarkError(f"cannot read the image of item {self.id}: {self.image} ({exc})") from exc

    def prompt_text(self, suffix: str = SUFFIX) -> str:
        """The user turn's text: context, question, lettered options, and the paper's suffix."""
        parts = []
        if self.context:
            parts.append(f"Context: {self.context}")
        parts.append(self.question)
        if self.choices and self.show_choices:
            parts.append("Options:\n" + "\n".join(f"{LETTERS[i]}. {c}" for i, c in enumerate(self.choices)))
        if suffix:
            parts.append(suffix)
        return "\n".join(p for p in parts if p)

    def target(self) -> str:
        """The answer a demonstration shows: the most common human answer, or the gold letter/value."""
        return self.answer


@dataclass
class Benchmark:
    """One loaded benchmark: its items, the pool demonstrations are drawn from, and where both came from
    (``source``)."""

    name: str
    layout: str
    items: list[BenchItem]
    pool: list[BenchItem]
    leave_one_out: bool  # the pool is the items themselves; an item is never its own demonstration
    source: str

    @property
    def kind(self) -> str:
        """How answers are scored: ``vqa`` (10-answer accuracy), ``choice`` (the option letter) or ``math``."""
        return KIND[self.layout]


# --- rows -> items -----------------------------------------------------------------------------


def _text(value) -> str:
    return "" if value is None else str(value).strip()


def _answers(raw) -> list[str]:
    if raw is None:
        return []
    out = []
    for a in raw:
        out.append(_text(a.get("answer", a.get("raw_answer")) if isinstance(a, dict) else a))
    return out


_CHOICE_LINE = re.compile(r"^\s*\(?([A-H])\)?\s*[:.)]\s*(.+?)\s*$")


def _parse_choices(question: str) -> list[str]:
    """Options written into a question ("Choices:\\nA:1\\nB:2"), in order, or []."""
    if "choice" not in question.lower():
        return []
    tail = re.split(r"(?i)choices\s*:?", question)[-1]
    found = []
    for line in tail.splitlines():
        m = _CHOICE_LINE.match(line)
        if m and m.group(1) == LETTERS[len(found)]:
            found.append(m.group(2))
    return found


def consensus_answer(answers: list[str]) -> str:
    """The human answer the most annotators agree on (after VQA normalization; the first one given wins
    a tie), as written by its first annotator."""
    norms = [normalize_vqa_answer(a) for a in answers]
    top = Counter(norms).most_common(1)[0][0]
    return answers[norms.index(top)]


def _letter_of(answer: str, choices: list[str]) -> str:
    """The gold letter of a multiple-choice answer given as a letter or as the option's text."""
    ans = _text(answer)
    if len(ans) == 1 and ans.upper() in LETTERS[: len(choices) or 26]:
        return ans.upper()
    for i, c in enumerate(choices):
        if _text(c) == ans:
            return LETTERS[i]
    for i, c in enumerate(choices):
        if _text(c).lower() == ans.lower():
            return LETTERS[i]
    raise BenchmarkError(f"answer {ans!r} is not one of the options {choices}")


def row_to_item(layout: str, row: dict, index: int, image=None) -> BenchItem | None:
    """One dataset row in ``layout``'s fields -> a BenchItem (None: not part of the benchmark)."""
    img = image if image is not None else row.get("decoded_image") or row.get("image")
    if layout in ("okvqa", "textvqa"):
        qid = row.get("question_id", row.get("id", index))
        answers = _answers(row.get("answers"))
        if not answers:
            raise BenchmarkError(f"item {qid} has no human answers (the field 'answers')")
        return BenchItem(id=str(qid), question=_text(row.get("question")), image=img, kind="vqa",
                         answer=consensus_answer(answers), answers=answers,
                         meta={k: row[k] for k in ("image_id", "question_type", "answer_type") if k in row})
    if layout == "scienceqa-img":
        pid = row.get("pid", row.get("id", index))
        if img is None or img == "":
            return None
        choices = [_text(c) for c in row.get("choices") or []]
        try:
            answer = LETTERS[int(row["answer"])]
        except (KeyError, ValueError, TypeError, IndexError) as exc:
            raise BenchmarkError(f"item {pid}: 'answer' must be the index of the right choice") from exc
        return BenchItem(id=str(pid), question=_text(row.get("question")), image=img, kind="choice", answer=answer,
                         choices=choices, context=_text(row.get("hint")),
                         meta={k: row[k] for k in ("subject", "grade", "split") if k in row})
    if layout == "mathvista":
        pid = row.get("pid", index)
        choices = [_text(c) for c in row.get("choices") or []]
        mc = row.get("question_type") == "multi_choice" and bool(choices)
        answer = _letter_of(row.get("answer"), choices) if mc else _text(row.get("answer"))
        precision = row.get("precision")
        return BenchItem(id=str(pid), question=_text(row.get("question")), image=img, kind="math", answer=answer,
                         choices=choices if mc else [], answer_type=_text(row.get("answer_type")),
                         precision=int(precision) if precision not in (None, "") else None,
                         meta={"question_type": row.get("question_type"), "unit": row.get("unit")})
    if layout == "mathvision":
        pid = row.get("id", index)
        options = [_text(c) for c in row.get("options") or []]
        question = re.sub(r"<image\d*>", "", _text(row.get("question"))).strip()
        answer = _letter_of(row.get("answer"), options) if options else _text(row.get("answer"))
        return BenchItem(id=str(pid), question=question, image=img, kind="math", answer=answer, choices=options,
                         meta={k: row[k] for k in ("level", "subject") if k in row})
    if layout == "mathverse":
        pid = row.get("sample_index", index)
        question = _text(row.get("question"))
        mc = "choice" in _text(row.get("question_type")).lower()
        choices = _parse_choices(question) if mc else []
        answer = _text(row.get("answer"))
        if mc:
            answer = answer.strip("()").upper() if len(answer.strip("()")) == 1 else _letter_of(answer, choices)
        return BenchItem(id=str(pid), question=question, image=img, kind="math", answer=answer, choices=choices,
                         show_choices=False,
                         meta={k: row[k] for k in ("problem_version", "question_type") if k in row})
    raise BenchmarkError(f"unknown layout {layout!r} (one of {', '.join(LAYOUTS)})")


def detect_layout(row: dict, where: str = "") -> str:
    """The layout of a row, told from its fields."""
    keys = set(row)
    if keys & {"problem_version", "question_for_eval", "query_wo", "query_cot"}:
        return "mathverse"
    if isinstance(row.get("answers"), list) and "question" in keys:
        return "okvqa"
    if isinstance(row.get("options"), list) and keys & {"level", "subject", "solution"}:
        return "mathvision"
    if {"question_type", "answer_type"} <= keys and keys & {"pid", "precision", "unit", "choices"}:
        return "mathvista"
    if isinstance(row.get("choices"), list) and "answer" in keys:
        return "scienceqa-img"
    fields = ", ".join(sorted(keys)[:12])
    raise BenchmarkError(f"cannot tell the benchmark layout of {where or 'the items'} from its fields ({fields}); "
                         f"pass --layout ({', '.join(LAYOUTS)})")


def _layout_name(layout: str | None) -> str | None:
    if layout is None:
        return None
    name = _LAYOUT_ALIASES.get(layout, layout)
    if name not in LAYOUTS:
        raise BenchmarkError(f"unknown layout {layout!r} (one of {', '.join(LAYOUTS)})")
    return name


# --- local folders ----------------------------------------------------------------------------

_TEST_STEMS = ("test", "testmini", "val", "validation", "problems")
_POOL_STEMS = ("train", "demos")


def _read_rows(path: Path) -> list[dict]:
    """Rows of a JSON / JSONL file, with one-line errors naming the file and line."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise BenchmarkError(f"cannot read {path}: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise BenchmarkError(f"{path} is not UTF-8 text") from exc
    if path.suffix == ".jsonl":
        rows = []
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise BenchmarkError(f"{path}:{n}: malformed JSON line ({exc.msg})") from exc
            if not isinstance(row, dict):
                raise BenchmarkError(f"{path}:{n}: expected a JSON object, got {type(row).__name__}")
            rows.append(row)
        return rows
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise BenchmarkError(f"{path}:{exc.lineno}: malformed JSON ({exc.msg})") from exc
    if isinstance(data, dict):
        for key in ("data", "questions", "annotations", "items"):
            if isinstance(data.get(key), list):
                return data[key]
        if data and all(isinstance(v, dict) for v in data.values()):  # keyed by id (ScienceQA, MathVista)
            return [{"pid": k, **v} if "pid" not in v else v for k, v in data.items()]
    if isinstance(data, list) and all(isinstance(r, dict) for r in data):
        return data
    raise BenchmarkError(f"{path}: expected a list of items, a dict of items by id, or {{\"data\": [...]}}")


def _json_files(folder: Path) -> list[Path]:
    files = sorted(p for p in folder.iterdir() if p.suffix in (".json", ".jsonl") and p.is_file())
    if not files and (folder / "data").is_dir():
        files = sorted(p for p in (folder / "data").iterdir() if p.suffix in (".json", ".jsonl") and p.is_file())
    return [p for p in files if not p.name.startswith("pid_splits")]


def _pick(files: list[Path], stems: tuple[str, ...]) -> Path | None:
    for stem in stems:
        for p in files:
            if p.stem.lower() == stem or p.stem.lower().startswith(stem + "_") or p.stem.lower().startswith(stem + "-"):
                return p
    return None


class _ImageIndex:
    """Finds images named by id: ``42.jpg``, ``COCO_val2014_000000000042.jpg``, ``train_images/ab12.jpg``."""

    def __init__(self, roots: list[Path]):
        self.roots = roots
        self._by_stem: dict[str, Path] | None = None

    def by_id(self, image_id) -> Path | None:
        if self._by_stem is None:
            self._by_stem = {}
            for root in self.roots:
                for p in root.rglob("*"):
                    if p.suffix.lower() in (".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp"):
                        self._by_stem.setdefault(p.stem, p)
                        m = re.search(r"_(\d+)$", p.stem)
                        if m:
                            self._by_stem.setdefault(str(int(m.group(1))), p)
        return self._by_stem.get(str(image_id))

    def resolve(self, rel: str) -> Path | None:
        rel_path = Path(rel)
        if rel_path.is_absolute():
            return rel_path if rel_path.is_file() else None
        for root in self.roots:
            if (root / rel_path).is_file():
                return root / rel_path
        return None


def _vqa_official_pair(files: list[Path]) -> tuple[list[dict], list[dict] | None] | None:
    """OKVQA's official questions + annotations files, merged by question id (test, pool)."""
    questions = [p for p in files if "questions" in p.name.lower()]
    annotations = [p for p in files if "annotations" in p.name.lower()]
    if not questions or not annotations:
        return None

    def merged(split_word: str) -> list[dict] | None:
        q = next((p for p in questions if split_word in p.name.lower()), None)
        a = next((p for p in annotations if split_word in p.name.lower()), None)
        if q is None or a is None:
            return None
        by_id = {r["question_id"]: r for r in _read_rows(a)}
        return [{**by_id.get(r["question_id"], {}), **r} for r in _read_rows(q)]

    test = merged("val") or merged("test")
    if test is None:
        return None
    return test, merged("train")


def _items_from_rows(layout: str, rows: list[dict], where: Path, images: _ImageIndex) -> list[BenchItem]:
    items = []
    for i, row in enumerate(rows):
        img = row.get("image")
        path = None
        if layout == "scienceqa-img" and img and "split" in row and not isinstance(img, dict):
            pid = row.get("pid", row.get("id", i))
            path = images.resolve(str(img)) or images.resolve(f"{row['split']}/{pid}/{img}") \
                or images.resolve(f"images/{row['split']}/{pid}/{img}")
        elif isinstance(img, str) and img:
            path = images.resolve(img)
        elif isinstance(img, dict) and img.get("path"):
            path = images.resolve(img["path"])
        elif img is None and row.get("image_id") is not None:
            path = images.by_id(row["image_id"])
            if path is None:
                raise BenchmarkError(f"{where}: no image file for image_id {row['image_id']} (item "
                                     f"{row.get('question_id', i)})")
        if (img or row.get("image_id") is not None) and path is None:
            raise BenchmarkError(f"{where}: image not found for item {row.get('question_id', row.get('pid', i))}: "
                                 f"{img}")
        item = row_to_item(layout, {**row, "image": None, "decoded_image": None}, i, image=path)
        if item is not None:
            items.append(item)
    return items


def load_local(path: Path, layout: str | None = None, name: str | None = None) -> Benchmark:
    """A benchmark from a folder (or one items file) in the benchmark's own field layout."""
    path = Path(path)
    if not path.exists():
        raise BenchmarkError(f"no such file or folder: {path}")
    if path.is_file():
        folder, files, test_file = path.parent, _json_files(path.parent), path
    else:
        folder, files = path, _json_files(path)
        if not files:
            raise BenchmarkError(f"{path} holds no JSON or JSONL file of benchmark items")
        test_file = None
    items_dir = (test_file or files[0]).parent
    images = _ImageIndex(list(dict.fromkeys([items_dir, folder, folder.parent])))
    layout = _layout_name(layout)
    pool_rows = None
    pair = None if test_file else _vqa_official_pair(files)
    if pair:
        test_rows, pool_rows = pair
        source = str(folder)
    else:
        if test_file is None:
            candidates = [p for p in files if _pick([p], _POOL_STEMS) is None]
            test_file = candidates[0] if len(candidates) == 1 else _pick(candidates, _TEST_STEMS)
            if test_file is None:
                names = ", ".join(p.name for p in candidates) or "none"
                raise BenchmarkError(f"{path}: cannot tell which file holds the test items ({names}); "
                                     "pass the file itself as --bench")
        test_rows = _read_rows(test_file)
        pool_file = _pick([p for p in files if p != test_file], _POOL_STEMS)
        pool_rows = _read_rows(pool_file) if pool_file else None
        source = str(test_file)
    if not test_rows:
        raise BenchmarkError(f"{source} holds no items")
    layout = layout or detect_layout(test_rows[0], source)
    if pool_rows is None and "split" in test_rows[0]:  # ScienceQA's problems.json holds every split
        splits = {r.get("split") for r in test_rows}
        if "test" in splits and "train" in splits:
            pool_rows = [r for r in test_rows if r.get("split") == "train"]
            test_rows = [r for r in test_rows if r.get("split") == "test"]
        elif "test" in splits:
            test_rows = [r for r in test_rows if r.get("split") == "test"]
    items = _items_from_rows(layout, test_rows, Path(source), images)
    if not items:
        raise BenchmarkError(f"{source}: no items with an image")
    pool = _items_from_rows(layout, pool_rows, Path(source), images) if pool_rows else items
    if name is None:
        folder_name = folder.name.lower()
        name = folder_name if folder_name in BENCHMARKS else (_LAYOUT_ALIASES.get(folder_name) or folder.name)
    if KIND[layout] == "vqa" and name in ("okvqa", "textvqa"):  # one field layout, two benchmarks
        layout = name
    return Benchmark(name=name, layout=layout, items=items, pool=pool, leave_one_out=pool is items, source=source)


# --- the hub ----------------------------------------------------------------------------------


def load_hub(name: str, pool_limit: int | None = None) -> Benchmark:  # pragma: no cover - needs a network
    """A benchmark from the HF hub through ``datasets`` (streamed, so only what is used is fetched)."""
    spec = HUB[name]
    try:
        import datasets
    except ImportError as exc:
        raise BenchmarkError(f"loading {name} from the HF hub needs the datasets package: pip install datasets "
                             "(or pass a local folder as --bench)") from exc
    try:
        test = datasets.load_dataset(spec.repo, spec.config, split=spec.split)
        pool_rows = datasets.load_dataset(spec.repo, spec.config, split=spec.pool_split) if spec.pool_split else None
    except Exception as exc:  # noqa: BLE001 - network, auth and missing splits all end the same way
        raise BenchmarkError(f"cannot load {spec.repo} from the HF hub: {str(exc).splitlines()[0][:200]}") from exc
    items = [it for i, row in enumerate(test) if (it := row_to_item(name, dict(row), i)) is not None]
    if pool_rows is not None:
        if pool_limit:
            pool_rows = pool_rows.shuffle(seed=0).select(range(min(pool_limit, len(pool_rows))))
        pool = [it for i, row in enumerate(pool_rows) if (it := row_to_item(name, dict(row), i)) is not None]
    else:
        pool = items
    return Benchmark(name=name, layout=name, items=items, pool=pool, leave_one_out=pool is items,
                     source=f"hf://{spec.repo}/{spec.split}")


def load_benchmark(name_or_path: str, layout: str | None = None, pool_limit: int | None = None) -> Benchmark:
    """A benchmark by name (the HF hub) or path (a local folder or items file).

    An existing path wins over a name, so a folder called ``okvqa`` loads locally.
    """
    path = Path(name_or_path)
    if path.exists():
        bench = load_local(path, layout)
        if pool_limit and not bench.leave_one_out and len(bench.pool) > pool_limit:
            import random

            bench.pool = random.Random(0).sample(bench.pool, pool_limit)
        return bench
    key = name_or_path.lower()
    if key in HUB:
        return load_hub(key, pool_limit)
    if "/" in name_or_path or name_or_path.startswith(".") or Path(name_or_path).suffix:
        raise BenchmarkError(f"no such file or folder: {name_or_path}")
    raise BenchmarkError(f"unknown benchmark {name_or_path!r} (one of {', '.join(BENCHMARKS)}, or a folder)")
