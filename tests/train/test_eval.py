"""The few-shot harness on the local benchmark fixtures (tests/data/bench, see make_bench.py)."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest

from tests.conftest import ROOT, run_cli
from tests.data.bench.make_bench import NEAREST
from tests.train._inproc import one_line_error, textbook
from train.benchmarks import SUFFIX, BenchmarkError, load_benchmark
from train.clip import tiny_clip_encoder
from train.eval import (
    EvalError,
    FixedPredictor,
    Rices,
    build_prompts,
    evaluate,
    format_tables,
    parse_shots,
    random_demos,
    score,
)
from train.scoring import extract_choice, math_correct, normalize_vqa_answer, parse_number, vqa_accuracy

BENCH = ROOT / "tests" / "data" / "bench"


def bench(name: str):
    return load_benchmark(str(BENCH / name))


# --- adapters ------------------------------------------------------------------------------------


def test_each_layout_loads_in_its_own_fields():
    ok = bench("okvqa")
    assert (ok.name, ok.layout, ok.kind, ok.leave_one_out) == ("okvqa", "okvqa", "vqa", False)
    assert [i.id for i in ok.items] == ["v0", "v1", "v2", "v3"] and len(ok.pool) == 5
    assert ok.items[1].answers[:3] == ["Two", "2", "two"] and len(ok.items[1].answers) == 10
    assert ok.items[2].target() == "a dog"  # "dog" after normalization is the most common answer (4 of 10)

    tv = bench("textvqa")  # the official TextVQA_0.5.1_val.json: {"data": [...]}, images found by image_id
    assert (tv.layout, len(tv.items), tv.leave_one_out) == ("textvqa", 3, True)
    assert tv.items[0].image.name == "0a1b2c.jpg" and tv.items[0].target() == "stop"

    sqa = bench("scienceqa-img")  # the official problems.json: split test asked, split train the pool
    assert sqa.layout == "scienceqa-img" and sqa.kind == "choice"
    assert [i.id for i in sqa.items] == ["11", "12", "13"]  # 14 has no image: not in the IMG subset
    assert [i.id for i in sqa.pool] == ["21", "22", "23"]
    first = sqa.items[0]
    assert (first.answer, first.choices) == ("B", ["cat", "dog", "bird"])
    assert first.prompt_text() == ("Context: A pet.\nWhich animal is shown?\nOptions:\nA. cat\nB. dog\nC. bird\n"
                                   + SUFFIX)

    mv = bench("mathvista")
    assert [(i.answer, i.choices, i.answer_type) for i in mv.items] == [
        ("B", ["the square", "the circle"], "text"), ("3", [], "integer"), ("1.5", [], "float"),
        ("C", ["30", "45", "60", "90"], "integer")]
    assert mv.items[2].precision == 1

    mvi = bench("mathvision")  # items in data/testmini.jsonl, images relative to the benchmark folder
    assert [i.answer for i in mvi.items] == ["C", "7", "B"] and "<image1>" not in mvi.items[0].question

    mve = bench("mathverse")  # the options are written in the question
    assert mve.items[0].choices == ["25°", "30°", "40°", "50°"] and mve.items[0].answer == "C"
    assert mve.items[0].prompt_text().count("A:25°") == 1


def test_layout_override_and_items_file(tmp_path):
    rows = [{"id": 1, "question": "q?", "answers": ["x"] * 10, "image": str(BENCH / "okvqa/images/val_0.png")}]
    path = tmp_path / "mine.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    b = load_benchmark(str(path), layout="textvqa")
    assert (b.layout, b.name, len(b.items)) == ("textvqa", tmp_path.name, 1)
    with pytest.raises(BenchmarkError, match="unknown layout"):
        load_benchmark(str(path), layout="gqa")


@pytest.mark.parametrize("make, message", [
    (lambda d: (d / "val.jsonl").write_text('{"question": "q", "answers": ["a"], "image": "i.png"}\n{oops\n'),
     "val.jsonl:2: malformed JSON line"),
    (lambda d: (d / "val.jsonl").write_text('{"question": "q", "answers": ["a"], "image": "gone.png"}\n'),
     "image not found"),
    (lambda d: (d / "val.jsonl").write_text('{"prompt": "q", "label": 1}\n'), "cannot tell the benchmark layout"),
    (lambda d: None, "holds no JSON or JSONL file"),
])
def test_bad_local_benchmarks(tmp_path, make, message):
    make(tmp_path)
    with pytest.raises(BenchmarkError, match=message) as info:
        load_benchmark(str(tmp_path))
    assert "\n" not in str(info.value)


def test_unknown_names():
    with pytest.raises(BenchmarkError, match="unknown benchmark 'gqa'.*okvqa"):
        load_benchmark("gqa")
    with pytest.raises(BenchmarkError, match="no such file or folder"):
        load_benchmark("tests/data/bench/nope")


# --- demonstrations ------------------------------------------------------------------------------


def test_random_demonstrations_follow_the_seeded_rule_in_order():
    b = bench("okvqa")
    for k in (1, 2, 4):
        prompts = build_prompts(b, k, "random", seed=3)
        for p in prompts:
            expected = random.Random(f"3:{p.item.id}").sample(b.pool, min(len(b.pool), 8))[:k]
            assert [d.id for d in p.demos] == [d.id for d in expected]
    one = {p.item.id: [d.id for d in p.demos] for p in build_prompts(b, 1, seed=3)}
    four = {p.item.id: [d.id for d in p.demos] for p in build_prompts(b, 4, seed=3)}
    assert all(four[i][:1] == one[i] for i in one)  # the 1-shot demonstration leads the 4-shot ones
    other = {p.item.id: [d.id for d in p.demos] for p in build_prompts(b, 4, seed=4)}
    assert other != four
    assert build_prompts(b, 0)[0].demos == []


def test_prompt_messages_interleave_demonstrations_then_the_item():
    b = bench("okvqa")
    p = build_prompts(b, 2, seed=0)[1]
    messages, images = p.messages()
    assert [m["role"] for m in messages] == ["user", "assistant", "user", "assistant", "user"]
    for turn, demo in zip(messages[0:4:2], p.demos, strict=True):
        assert turn["content"][0] == {"type": "image"}
        assert turn["content"][1]["text"] == f"{demo.question}\n{SUFFIX}"
    assert [m["content"][0]["text"] for m in messages[1:4:2]] == [d.target() for d in p.demos]
    assert messages[-1]["content"][1]["text"] == f"Question 1 about the image?\n{SUFFIX}"
    assert len(images) == 3
    for im, it in zip(images, [*p.demos, p.item], strict=True):
        assert np.array_equal(np.asarray(im), np.asarray(it.load_image()))


def test_leave_one_out_pools_never_show_the_item():
    b = bench("mathvista")
    for p in build_prompts(b, 3, seed=0):
        assert p.item.id not in [d.id for d in p.demos] and len(p.demos) == 3
    with pytest.raises(EvalError, match="4-shot needs 4 demonstrations, the pool has 3"):
        build_prompts(b, 4)


def test_rices_picks_the_nearest_image_last():
    b = bench("okvqa")
    rices = Rices(b, tiny_clip_encoder(seed=0))
    for p in build_prompts(b, 1, "rices", rices=rices):
        assert [d.id for d in p.demos] == [NEAREST[p.item.id]]
    for p in build_prompts(b, 3, "rices", rices=rices):
        assert p.demos[-1].id == NEAREST[p.item.id] and len({d.id for d in p.demos}) == 3
    with pytest.raises(EvalError, match="image encoder"):
        build_prompts(b, 1, "rices")
    loo = bench("mathvista")  # leave one out: an item's own image (similarity 1) is never picked
    for p in build_prompts(loo, 2, "rices", rices=Rices(loo, tiny_clip_encoder())):
        assert p.item.id not in [d.id for d in p.demos]


def test_cheat_prompts_show_the_item_itself():
    b = bench("okvqa")
    for p in build_prompts(b, 1, cheat=True, seed=5):
        assert p.demos == [p.item] and p.cheat
        messages, images = p.messages()
        assert messages[1]["content"][0]["text"] == p.item.target()
        assert messages[0]["content"][1]["text"] == messages[2]["content"][1]["text"]
        assert np.array_equal(np.asarray(images[0]), np.asarray(images[1]))
    for p in build_prompts(b, 2, cheat=True, seed=5):
        assert [d.id for d in p.demos] == [random_demos(b, p.item, 1, seed=5)[0].id, p.item.id]
    with pytest.raises(EvalError, match="at least 1 shot"):
        build_prompts(b, 0, cheat=True)


# --- scoring -------------------------------------------------------------------------------------


@pytest.mark.parametrize("raw, norm", [
    ("Two dogs.", "2 dogs"), ("The Cat", "cat"), ("an apple", "apple"), ("yes!", "yes"), ("dont", "don't"),
    ("1,000", "1000"), ("3.5", "3.5"), ("red, white", "red white"), ("t-shirt", "t shirt"), ("  None ", "0"),
])
def test_vqa_normalization(raw, norm):
    assert normalize_vqa_answer(raw) == norm


def test_vqa_ten_answer_rule():
    answers = ["Two", "2", "two", "2", "3", "3", "3", "three", "4", "2"]  # after normalization: 2 x5, 3 x4, 4 x1
    assert vqa_accuracy("two", answers) == 1.0
    assert vqa_accuracy("3", answers) == 1.0  # 4 humans: every 9-subset has >= 3
    assert vqa_accuracy("4", answers) == pytest.approx(0.3)  # 9 subsets with 1 match (1/3), 1 with none
    dogs = ["a dog", "dog", "dog", "puppy", "puppy", "the dog", "dogs", "puppy", "cat", "animal"]
    assert vqa_accuracy("puppy", dogs) == pytest.approx(0.9)  # 3 subsets with 2 matches, 7 with 3
    assert vqa_accuracy("The dog.", dogs) == 1.0
    assert vqa_accuracy("yes", ["yes"] * 2 + ["no"] * 8) == pytest.approx(0.6)  # (2 * 1/3 + 8 * 2/3) / 10
    assert vqa_accuracy("bird", dogs) == 0.0


@pytest.mark.parametrize("text, letter", [
    ("The answer is (B).", "B"), ("B", "B"), ("b", "B"), ("b) whale", "B"), ("(c)", "C"), ("C. bird", "C"),
    ("Answer: A", "A"), ("answer is b.", "B"), ("I think (B) is right", "B"), ("dog", "B"), ("a cat", "A"),
    ("a fish", None), ("A fish", None), ("the answer is a dog", "B"), ("E", None), ("", None), ("cat or dog", None),
])
def test_choice_letter_extraction(text, letter):
    assert extract_choice(text, ["cat", "dog", "bird"]) == letter


def test_math_answers():
    assert parse_number("x = 3/4") == 0.75 and parse_number("1,200 m") == 1200 and parse_number("none") is None
    assert math_correct("There are 3 blocks.", "3", "integer")
    assert not math_correct("3.5", "3", "integer")
    assert math_correct("1.46", "1.5", "float", 1) and not math_correct("1.44", "1.5", "float", 1)
    assert math_correct("\\frac{1}{2}", "0.5") and math_correct("0.5", "1/2")
    assert math_correct("Red.", "red", "text") and not math_correct("blue", "red", "text")
    assert math_correct("3\\sqrt{2}", "3\\sqrt{2}") and not math_correct("2", "3\\sqrt{2}")


def test_scores_match_hand_computed_accuracies():
    benches = [bench("okvqa"), bench("scienceqa-img"), bench("mathvista")]
    predictor = FixedPredictor({
        "v0": "Red.", "v1": "4", "v2": "puppy", "v3": "yes",  # 1.0, 0.3, 0.9, 0.6 -> 70.0
        "11": "The answer is (B).", "12": "b) whale", "13": "A",  # 2 of 3 -> 66.67
        "1": "the circle", "2": "There are 3 blocks.", "3": "1.46", "4": "D",  # 3 of 4 -> 75.0
    })
    result = evaluate(benches, predictor, shots=(0, 2), seed=1)
    assert result.table == {"okvqa": {0: 70.0, 2: 70.0}, "scienceqa-img": {0: 66.67, 2: 66.67},
                            "mathvista": {0: 75.0, 2: 75.0}}
    assert result.items == {"okvqa": 4, "scienceqa-img": 3, "mathvista": 4} and result.cheat == {}
    assert len(predictor.seen) == 2 * 11 and [p.shots for p in predictor.seen[:8]] == [0] * 4 + [2] * 4
    rec = next(r for r in result.records if r["id"] == "v1" and r["shots"] == 2)
    assert rec["score"] == 0.3 and rec["prediction"] == "4" and len(rec["demos"]) == 2
    assert score(benches[1].items[2], "C") == 1.0

    text = format_tables(result).splitlines()
    assert text[0] == "accuracy (%)" and text[1].split() == ["benchmark", "0-shot", "2-shot"]
    assert [r.split() for r in text[2:6]] == [["okvqa", "70.0", "70.0"], ["scienceqa-img", "66.7", "66.7"],
                                             ["mathvista", "75.0", "75.0"], ["average", "70.6", "70.6"]]


def test_cheat_table_with_a_model_that_copies_its_context():
    def copy_the_item(prompt):
        return next((d.target() for d in prompt.demos if d.id == prompt.item.id), "no idea")

    result = evaluate([bench("okvqa"), bench("mathvista")], FixedPredictor(copy_the_item), shots=(0, 1, 2),
                      cheat=True, limit=3)
    assert result.table == {"okvqa": {0: 0.0, 1: 0.0, 2: 0.0}, "mathvista": {0: 0.0, 1: 0.0, 2: 0.0}}
    assert result.cheat == {"okvqa": {1: 100.0, 2: 100.0}, "mathvista": {1: 100.0, 2: 100.0}}
    assert result.items == {"okvqa": 3, "mathvista": 3}
    out = result.to_json()
    assert out["cheat"] == {"okvqa": {"1": 100.0, "2": 100.0}, "mathvista": {"1": 100.0, "2": 100.0}}
    lines = format_tables(result).splitlines()
    cheat_at = lines.index("cheat test: the item itself is a demonstration (%)")
    assert lines[cheat_at + 1].split() == ["benchmark", "1-shot", "2-shot"]


def test_parse_shots():
    assert parse_shots("4,0, 1,2") == (0, 1, 2, 4)
    for bad in ("one", "", "-1", "0,64"):
        with pytest.raises(EvalError, match="--shots"):
            parse_shots(bad)


# --- the command ---------------------------------------------------------------------------------


def test_eval_bad_input_is_one_line(capsys, monkeypatch, tmp_path):
    line = one_line_error(textbook(capsys, monkeypatch, "eval", "--model", "tiny", "--bench", "gqa"))
    assert "unknown benchmark 'gqa'" in line
    line = one_line_error(textbook(capsys, monkeypatch, "eval", "--model", "tiny", "--bench", str(tmp_path / "x")))
    assert "no such file or folder" in line
    (tmp_path / "val.jsonl").write_text("{not json\n")
    line = one_line_error(textbook(capsys, monkeypatch, "eval", "--model", "tiny", "--bench", str(tmp_path)))
    assert "val.jsonl:1: malformed JSON line" in line
    line = one_line_error(textbook(capsys, monkeypatch, "eval", "--model", "tiny", "--bench",
                                   str(BENCH / "okvqa"), "--shots", "0,x"))
    assert "--shots" in line
    line = one_line_error(textbook(capsys, monkeypatch, "eval", "--model", str(tmp_path / "ckpt"), "--bench",
                                   str(BENCH / "okvqa")))
    assert "ckpt" in line
    # a missing checkpoint fails before a hub benchmark is fetched (offline: no hub warnings, no wait)
    line = one_line_error(textbook(capsys, monkeypatch, "eval", "--model", str(tmp_path / "ckpt"), "--bench",
                                   "okvqa"))
    assert line == f"error: no model at {tmp_path / 'ckpt'} (not a folder, and not a hub id like org/name)"
    (tmp_path / "notamodel").mkdir()
    line = one_line_error(textbook(capsys, monkeypatch, "eval", "--model", str(tmp_path / "notamodel"), "--bench",
                                   "okvqa"))
    assert "is not a model folder (no config.json)" in line


@pytest.mark.slow
def test_eval_end_to_end_with_a_tiny_random_idefics3(tmp_path):
    """Only the plumbing: a random model's answers are noise, but every prompt is generated and scored."""
    preds = tmp_path / "preds.jsonl"
    proc = run_cli("eval", "--model", "tiny", "--bench", str(BENCH / "okvqa"), "--shots", "0,1", "--cheat",
                   "--max-new-tokens", "3", "--json", "--predictions", str(preds), timeout=300)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert set(out["table"]) == {"okvqa"} and set(out["table"]["okvqa"]) == {"0", "1"}
    assert set(out["cheat"]["okvqa"]) == {"1"} and out["items"] == {"okvqa": 4}
    assert all(0.0 <= v <= 100.0 for row in (out["table"]["okvqa"], out["cheat"]["okvqa"]) for v in row.values())
    records = [json.loads(line) for line in preds.read_text().splitlines()]
    assert len(records) == 4 * 3
    assert {(r["shots"], r["cheat"]) for r in records} == {(0, False), (1, False), (1, True)}
    assert all(r["demos"] == [r["id"]] for r in records if r["cheat"])
    assert all(isinstance(r["prediction"], str) for r in records)
