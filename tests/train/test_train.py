"""Continual pretraining of the tiny Idefics3 on the sample-lesson textbook, and `textbook train`."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
import torch

from train.loop import TrainConfig, lr_factor, train
from train.model import load_model

FAST = {"model": "tiny", "cpu_threads": 1, "warmup": 0.0}  # one thread: the CI machine's cores are shared


def _cfg(processed, out: Path, **kw) -> TrainConfig:
    return TrainConfig(data=processed["out"] / "samples.jsonl", out=out, **{**FAST, **kw})


@pytest.mark.slow
def test_tiny_model_overfits_two_samples(processed, tmp_path):
    result = train(_cfg(processed, tmp_path / "ckpt", lr=5e-3, max_steps=20, batch_size=2, shuffle=False,
                        save_every=0))
    assert result.steps == 20 and len(result.losses) == 20
    assert result.losses[-1] < 0.5 * result.losses[0], result.losses
    log = [json.loads(line) for line in (tmp_path / "ckpt" / "train_log.jsonl").read_text().splitlines()]
    assert [e["step"] for e in log] == list(range(1, 21)) and all(e["samples"] == 2 for e in log)
    assert result.reader["images_loaded"] > 0 and result.reader["images_missing"] == 0
    model, processor = load_model(tmp_path / "ckpt")  # the final model reloads
    assert type(model).__name__ == "Idefics3ForConditionalGeneration" and processor.image_seq_len == 4


@pytest.mark.slow
def test_checkpoint_resumes_with_the_loss_of_an_uninterrupted_run(processed, tmp_path):
    full = tmp_path / "full"
    ref = train(_cfg(processed, full, lr=3e-3, max_steps=4, batch_size=1, save_every=1, keep=10, shuffle=True))
    assert sorted(p.name for p in full.glob("checkpoint-*")) == [f"checkpoint-{i}" for i in range(1, 5)]
    state = torch.load(full / "checkpoint-1" / "trainer_state.pt", weights_only=False)
    assert (state["step"], state["epoch"], state["position"]) == (1, 0, 1)  # mid-epoch: 1 of 2 samples read

    for step in (1, 2):  # mid-epoch, and at the end of an epoch
        crashed = tmp_path / f"crashed{step}"
        shutil.copytree(full / f"checkpoint-{step}", crashed / f"checkpoint-{step}")
        resumed = train(_cfg(processed, crashed, lr=3e-3, max_steps=4, batch_size=1, save_every=1, keep=10,
                             shuffle=True, resume=True))
        assert resumed.resumed_from == step
        assert resumed.losses == ref.losses[step:]  # identical, not just close
    a, _ = load_model(full)
    b, _ = load_model(tmp_path / "crashed1")
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))


@pytest.mark.slow
def test_gradient_accumulation_weights_every_loss_token_the_same(processed, tmp_path):
    whole = train(_cfg(processed, tmp_path / "a", lr=3e-3, max_steps=2, batch_size=2, shuffle=False,
                       save_every=0))
    accum = train(_cfg(processed, tmp_path / "b", lr=3e-3, max_steps=2, batch_size=1, grad_accum=2,
                       shuffle=False, save_every=0))
    assert whole.losses == pytest.approx(accum.losses, rel=1e-4)


def test_schedules():
    assert [lr_factor(s, 100, 3, "constant") for s in (0, 1, 2, 3, 99)] == [1 / 3, 2 / 3, 1.0, 1.0, 1.0]
    assert lr_factor(3, 100, 3, "cosine") == 1.0 and lr_factor(100, 100, 3, "cosine") == pytest.approx(0.0)
    assert lr_factor(3 + 97 // 2, 100, 3, "linear") == pytest.approx(0.5, abs=0.02)


def _textbook(capsys, monkeypatch, *args: str) -> tuple[int, str, str]:
    """`textbook ARGS` in this process (torch and transformers are imported once)."""
    from textbook.cli import main

    monkeypatch.setattr(sys, "argv", ["textbook", *args])
    monkeypatch.delenv("TEXTBOOK_DEBUG", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    capsys.readouterr()
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.slow
def test_cli_trains_and_resumes(processed, tmp_path, capsys, monkeypatch):
    out = tmp_path / "ckpt"
    args = ["train", "--data", str(processed["out"]), "--model", "tiny", "--out", str(out), "--save-every", "1",
            "--cpu-threads", "1", "--lr", "1e-3"]
    code, stdout, stderr = _textbook(capsys, monkeypatch, *args, "--max-steps", "1")
    assert code == 0, stderr
    assert "1 of 1 steps" in stdout and (out / "checkpoint-1").is_dir() and (out / "model.safetensors").is_file()
    code, stdout, stderr = _textbook(capsys, monkeypatch, *args, "--max-steps", "2", "--resume", "--json")
    assert code == 0, stderr
    result = json.loads(stdout)
    assert result["resumed_from"] == 1 and result["steps"] == 2 and len(result["losses"]) == 1
    assert json.loads((out / "train_config.json").read_text())["lr"] == 1e-3


@pytest.mark.slow
def test_cli_bad_input_is_one_line_and_non_zero(processed, tmp_path, capsys, monkeypatch):
    bad = tmp_path / "bad.jsonl"
    good = (processed["out"] / "samples.jsonl").read_text().splitlines()[0]
    bad.write_text(good + "\n{\"images\": [null], \"texts\": \n")
    shutil.copytree(processed["out"] / "images", tmp_path / "images")
    cases = {
        "no data file": ["--data", str(tmp_path / "missing.jsonl"), "--model", "tiny"],
        "line 2": ["--data", str(bad), "--model", "tiny", "--shuffle", "--max-steps", "5"],
        "no model at": ["--data", str(processed["out"]), "--model", str(tmp_path / "no-such-model")],
        "not a model folder": ["--data", str(processed["out"]), "--model", str(tmp_path)],
        "unknown schedule": ["--data", str(processed["out"]), "--model", "tiny", "--schedule", "steep"],
    }
    for i, (expect, args) in enumerate(cases.items()):
        code, _, stderr = _textbook(capsys, monkeypatch, "train", *args, "--out", str(tmp_path / f"o{i}"),
                                    "--cpu-threads", "1", "--save-every", "0")
        lines = [line for line in stderr.splitlines() if line.strip()]
        assert code == 2 and len(lines) == 1 and lines[0].startswith("error: ") and expect in lines[0], stderr
    assert "bad.jsonl" in _textbook(capsys, monkeypatch, "train", *cases["line 2"], "--out", str(tmp_path / "o9"),
                                    "--cpu-threads", "1", "--save-every", "0")[2]


def test_cli_trains_on_the_released_layout_only_with_its_images(tmp_path, capsys, monkeypatch):
    """The released JSON's /mnt/workspace paths: training stops with one line before a model is loaded;
    with --image-prefix it trains on every image."""
    from tests.train.test_data import RELEASED_ROOT, released_fixture

    data, mine, n_images = released_fixture(tmp_path)
    base = ["train", "--data", str(data), "--model", "tiny", "--cpu-threads", "1", "--save-every", "0",
            "--max-steps", "2", "--json"]
    code, stdout, stderr = _textbook(capsys, monkeypatch, *base, "--out", str(tmp_path / "a"))
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and "images could not be loaded" in lines[0], stderr
    assert not (tmp_path / "a" / "model.safetensors").exists()
    code, stdout, stderr = _textbook(capsys, monkeypatch, *base, "--out", str(tmp_path / "b"), "--image-prefix",
                                     f"{RELEASED_ROOT}={mine}/", "--curriculum")
    assert code == 0, stderr
    reader = json.loads(stdout)["reader"]
    assert reader["images_loaded"] >= n_images and reader["images_missing"] == 0 and reader["masked_tokens"] > 0
    assert reader["order"] == "curriculum, shuffled within difficulty"


@pytest.mark.slow
def test_packed_training_starts(processed, tmp_path):
    result = train(_cfg(processed, tmp_path / "p", pack=True, max_length=2048, max_steps=1, save_every=0,
                        shuffle=False))
    assert result.steps == 1 and result.reader["samples"] == 2 and result.reader["sequences"] == 1
