"""`textbook export` on the real sample-lesson run: every format, the dataset card's figures, bad input."""

from __future__ import annotations

import json

import pytest

from pipeline.figures import TABLE7_COLUMNS, table7_cell
from tests.conftest import run_cli
from tests.pipeline.test_export import llava_obelics_getitem

pytestmark = pytest.mark.e2e

TARGETS = {"jsonl": "samples.jsonl", "json": "samples.json", "parquet": "samples.parquet",
           "obelics": "obelics.parquet", "released": "multimodal_textbook.json",
           "idefics2": "textbook_video_clip_format.json", "webdataset": "webdataset", "hf": "README.md"}


def _export(processed, out, *args: str):
    return run_cli("export", "--db", str(processed["db"]), "--out", str(out), *args)


def test_every_format_from_the_lessons_run(processed, tmp_path):
    out = tmp_path / "all"
    for fmt, target in TARGETS.items():
        proc = _export(processed, out, "--format", fmt, "--image-root", "/data/textbook/images", "--json")
        assert proc.returncode == 0, proc.stderr
        result = json.loads(proc.stdout)
        assert result["samples"] == 2 and (out / target).exists(), result
    released = json.loads((out / "multimodal_textbook.json").read_text())
    for sample in released:  # their loader, with the prefix rewritten to where the images are here
        local = {**sample, "images": [i and i.replace("/data/textbook/images", str(out / "images"))
                                      for i in sample["images"]]}
        images, text = llava_obelics_getitem(local)
        assert len(images) == sample["image_num"] == text.count("<image>") > 0
    needle = str(tmp_path).encode()
    assert not [p for p in out.rglob("*") if p.is_file() and needle in p.read_bytes()]


def test_the_dataset_card_reports_the_run(processed, tmp_path):
    proc = _export(processed, tmp_path / "hf", "--format", "hf")
    assert proc.returncode == 0, proc.stderr
    card = (tmp_path / "hf" / "README.md").read_text()
    stats = json.loads(run_cli("stats", "--db", str(processed["db"]), "--json").stdout)
    t1 = stats["table1"]
    assert f"{t1['samples']} samples." in card
    for label, key in (("images/sample", "images_per_sample"), ("text tokens/sample (ASR + OCR)", "tokens_per_sample"),
                       ("ASR tokens/sample (text_num)", "asr_tokens_per_sample")):
        assert f"| {label} | {t1[key]['min']} | {t1[key]['max']} | {t1[key]['avg']} |" in card
    for row in stats["table7"]:  # the figures `stats` gives, shown as `stats` and the viewer show them
        assert "| " + " | ".join(table7_cell(row, c) for c in TABLE7_COLUMNS) + " |" in card
    assert "| unknown | 2 |" in card  # the lessons' sidecars name no license
    assert '"model": "whisper-base-offline"' in card and "license: other" in card
    assert "physics_newton.mp4" in card and str(processed["dir"]) not in card


def test_curriculum_order_and_bad_input(processed, tmp_path):
    proc = _export(processed, tmp_path / "c", "--order", "curriculum")
    assert proc.returncode == 0, proc.stderr
    plain = [json.loads(x) for x in (processed["out"] / "samples.jsonl").read_text().splitlines()]
    ordered = [json.loads(x) for x in (tmp_path / "c" / "samples.jsonl").read_text().splitlines()]
    assert ordered == plain  # no difficulty known: the pack order stays
    for args, expect in ((["--format", "csv"], "unknown format 'csv'"),
                         (["--format", "released", "--image-root", "rel/images"], "not an absolute path"),
                         (["--order", "hardest"], "unknown order"),
                         (["--run", "run-nope"], "no run run-nope")):
        proc = _export(processed, tmp_path / "bad", *args)
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        assert proc.returncode == 2 and len(lines) == 1 and expect in lines[0], proc.stderr
