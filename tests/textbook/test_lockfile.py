"""The locked environment: the venv the tests run in is exactly requirements.lock, and drift is named."""

from __future__ import annotations

import importlib.metadata as md
import subprocess
import sys

from textbook.lockfile import LOCK_PATH, Drift, compare, locked_versions, main


def test_this_environment_is_exactly_the_lock():
    # make setup and .ci/run install requirements.lock with --no-deps into a new venv: every pin, nothing newer
    pins = locked_versions()
    assert len(pins) > 150 and pins["av"] and pins["torch"].startswith("2.13.0")
    assert compare() == [], "the venv drifted from requirements.lock: run `make setup` (it makes a new venv)"


def test_every_pin_is_hashed():
    # --require-hashes refuses a lock with an unhashed pin: a line `name==version` must carry --hash entries
    text = LOCK_PATH.read_text()
    blocks = [b for b in text.split("\n") if b and not b.startswith((" ", "#"))]
    assert blocks, "no pins"
    for pin in blocks:
        assert pin.endswith("\\"), f"pin without a hash: {pin}"


def test_drift_is_named(tmp_path):
    lock = tmp_path / "requirements.lock"
    have = md.version("duckdb")
    lock.write_text(
        f"duckdb=={have} \\\n    --hash=sha256:00\n"
        "av==0.0.1 \\\n    --hash=sha256:00\n"
        "no-such-package-here==1.0 \\\n    --hash=sha256:00\n"
    )
    drift = compare(lock)
    assert drift == [Drift("av", "0.0.1", md.version("av")), Drift("no-such-package-here", "1.0", None)]
    assert str(drift[1]) == "no-such-package-here missing (locked 1.0)"
    assert main([str(lock)]) == 1
    assert main([str(tmp_path / "nothing.lock")]) == 2


def test_a_cuda_build_of_the_locked_torch_is_accepted(tmp_path, monkeypatch):
    # the README's GPU set-up replaces the CPU wheel with the CUDA build of the same release
    lock = tmp_path / "requirements.lock"
    lock.write_text("torch==2.13.0+cpu \\\n    --hash=sha256:00\n")
    monkeypatch.setattr(md, "version", lambda name: "2.13.0+cu128")
    assert compare(lock) == []
    monkeypatch.setattr(md, "version", lambda name: "2.14.0+cu128")
    assert compare(lock) == [Drift("torch", "2.13.0+cpu", "2.14.0+cu128")]


def test_module_entry_point_reports_drift_in_one_line_each(tmp_path):
    lock = tmp_path / "requirements.lock"
    lock.write_text("av==0.0.1 \\\n    --hash=sha256:00\n")
    proc = subprocess.run([sys.executable, "-m", "textbook.lockfile", str(lock)], capture_output=True, text=True)
    assert proc.returncode == 1
    assert proc.stderr.strip() == f"not as locked: av {md.version('av')} (locked 0.0.1)"
    assert "Traceback" not in proc.stderr
