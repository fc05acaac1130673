"""Regenerate the tiny local benchmark fixtures (each folder in its benchmark's own field layout).

    .venv/bin/python tests/data/bench/make_bench.py

Images are 32x32 PNGs (JPEG for TextVQA): a coloured block on a coloured ground. The OKVQA test
images are the train images 2, 0, 4, 1 plus a little noise, so RICES's nearest demonstration of
test item i is known (``NEAREST``).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent
NEAREST = {"v0": "t2", "v1": "t0", "v2": "t4", "v3": "t1"}


def scene(j: int) -> np.ndarray:
    rng = np.random.default_rng(100 + j)
    img = np.empty((32, 32, 3), np.uint8)
    img[:] = rng.integers(0, 256, 3)
    y, x = (j * 7) % 20, (j * 11) % 20
    img[y:y + 12, x:x + 12] = rng.integers(0, 256, 3)
    img[(j * 5) % 28:(j * 5) % 28 + 4, :] = 255 - img[0, 0]
    return img


def noisy(img: np.ndarray, seed: int) -> np.ndarray:
    noise = np.random.default_rng(seed).integers(-4, 5, img.shape)
    return np.clip(img.astype(int) + noise, 0, 255).astype(np.uint8)


def save(arr: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def okvqa() -> None:
    d = HERE / "okvqa"
    train = []
    for j in range(5):
        save(scene(j), d / "images" / f"train_{j}.png")
        train.append({"question_id": f"t{j}", "question": f"What is shown in picture {j}?",
                      "answers": [f"thing {j}"] * 8 + ["object", "stuff"], "image": f"images/train_{j}.png"})
    write_jsonl(d / "train.jsonl", train)
    answers = [["red"] * 10,
               ["Two", "2", "two", "2", "3", "3", "3", "three", "4", "2"],
               ["a dog", "dog", "dog", "puppy", "puppy", "the dog", "dogs", "puppy", "cat", "animal"],
               ["yes"] * 2 + ["no"] * 8]
    test = []
    for i, src in enumerate([2, 0, 4, 1]):
        save(noisy(scene(src), i), d / "images" / f"val_{i}.png")
        test.append({"question_id": f"v{i}", "question": f"Question {i} about the image?", "answers": answers[i],
                     "image": f"images/val_{i}.png"})
    write_jsonl(d / "val.jsonl", test)


def textvqa() -> None:
    d = HERE / "textvqa"
    data = []
    for i, (image_id, word) in enumerate([("0a1b2c", "stop"), ("3d4e5f", "exit"), ("6a7b8c", "open")]):
        path = d / "train_images" / f"{image_id}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(scene(10 + i)).save(path, quality=95)
        data.append({"question_id": 100 + i, "image_id": image_id, "question": "what does the sign say?",
                     "answers": [word] * 9 + ["sign"], "image_classes": ["Sign"], "set_name": "val"})
    (d / "TextVQA_0.5.1_val.json").write_text(json.dumps({"dataset_type": "val", "dataset_name": "textvqa",
                                                          "dataset_version": "0.5.1", "data": data}))


def scienceqa() -> None:
    d = HERE / "scienceqa-img"
    problems = {}
    rows = [("11", "test", "Which animal is shown?", ["cat", "dog", "bird"], 1, "A pet.", True),
            ("12", "test", "Which is a mammal?", ["trout", "whale"], 1, "", True),
            ("13", "test", "What color is the block?", ["red", "green", "blue", "yellow"], 2, "", True),
            ("14", "test", "Which word comes first in the dictionary?", ["apple", "zebra"], 0, "", False),
            ("21", "train", "Which is a solid?", ["ice", "steam"], 0, "", True),
            ("22", "train", "Which is hotter?", ["sun", "moon"], 0, "", True),
            ("23", "train", "Which is a planet?", ["Mars", "Sirius", "Vega"], 0, "", True)]
    for j, (pid, split, q, choices, answer, hint, has_image) in enumerate(rows):
        problems[pid] = {"question": q, "choices": choices, "answer": answer, "hint": hint,
                         "image": "image.png" if has_image else None, "task": "closed choice", "grade": "grade3",
                         "subject": "natural science", "split": split, "lecture": "", "solution": ""}
        if has_image:
            save(scene(20 + j), d / split / pid / "image.png")
    (d / "problems.json").write_text(json.dumps(problems, indent=1))


def mathvista() -> None:
    d = HERE / "mathvista"
    items = [
        {"pid": "1", "question": "Which shape is larger?", "choices": ["the square", "the circle"],
         "answer": "the circle", "question_type": "multi_choice", "answer_type": "text", "precision": None,
         "unit": None},
        {"pid": "2", "question": "How many blocks are there?", "choices": None, "answer": "3",
         "question_type": "free_form", "answer_type": "integer", "precision": None, "unit": None},
        {"pid": "3", "question": "What is the slope of the line?", "choices": None, "answer": "1.5",
         "question_type": "free_form", "answer_type": "float", "precision": 1, "unit": None},
        {"pid": "4", "question": "What is the angle at B?", "choices": ["30", "45", "60", "90"], "answer": "60",
         "question_type": "multi_choice", "answer_type": "integer", "precision": None, "unit": "degrees"},
    ]
    for j, it in enumerate(items):
        it["image"] = f"images/{it['pid']}.png"
        it["metadata"] = {"source": "fixture", "task": "math word problem"}
        save(scene(30 + j), d / it["image"])
    (d / "testmini.json").write_text(json.dumps(items, indent=1))


def mathvision() -> None:
    d = HERE / "mathvision"
    items = [
        {"id": "1", "question": "<image1> Which figure has the most sides?", "options": ["A", "B", "C", "D", "E"],
         "answer": "C", "solution": None, "level": 2, "subject": "metric geometry - angle"},
        {"id": "2", "question": "How many dots are there?", "options": [], "answer": "7", "solution": None,
         "level": 1, "subject": "counting"},
        {"id": "3", "question": "What is the area?", "options": ["4", "6", "8", "12", "16"], "answer": "B",
         "solution": None, "level": 3, "subject": "metric geometry - area"},
    ]
    rows = []
    for j, it in enumerate(items):
        it["image"] = f"images/{it['id']}.png"
        save(scene(40 + j), d / it["image"])
        rows.append(it)
    (d / "data").mkdir(parents=True, exist_ok=True)
    write_jsonl(d / "data" / "testmini.jsonl", rows)  # the official repo keeps its items in data/


def mathverse() -> None:
    d = HERE / "mathverse"
    items = [
        {"sample_index": "1", "problem_index": "1", "problem_version": "Text Lite",
         "question": "As shown in the figure, find angle C.\nChoices:\nA:25°\nB:30°\nC:40°\nD:50°",
         "answer": "C", "question_type": "multi-choice", "question_for_eval": "", "query_wo": "", "query_cot": ""},
        {"sample_index": "2", "problem_index": "2", "problem_version": "Vision Dominant",
         "question": "Find the length of AB.", "answer": "10", "question_type": "free-form",
         "question_for_eval": "", "query_wo": "", "query_cot": ""},
        {"sample_index": "3", "problem_index": "3", "problem_version": "Text Dominant",
         "question": "Which is the radius?\nChoices:\nA:3\nB:4\nC:5\nD:6", "answer": "A",
         "question_type": "multi-choice", "question_for_eval": "", "query_wo": "", "query_cot": ""},
    ]
    for j, it in enumerate(items):
        it["image"] = f"images/{it['sample_index']}.png"
        it["metadata"] = {"split": "testmini", "source": "fixture"}
        save(scene(50 + j), d / it["image"])
    (d / "testmini.json").write_text(json.dumps(items, indent=1))


if __name__ == "__main__":
    for make in (okvqa, textvqa, scienceqa, mathvista, mathvision, mathverse):
        make()
    print(f"wrote fixtures under {HERE}")
