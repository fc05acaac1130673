"""Bad input: one clear line on stderr, a non-zero exit, no traceback, nothing recorded lost."""

import pytest

from tests.conftest import LESSONS, run_cli
from tests.pipeline.test_process import _counts


def _one_line_error(proc) -> str:
    assert proc.returncode != 0
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert lines[0].startswith("error: ")
    return lines[0]


@pytest.fixture()
def recorded(processed):
    return _counts(processed["db"])


@pytest.mark.e2e
def test_missing_path(processed, recorded, tmp_path):
    line = _one_line_error(run_cli("process", str(tmp_path / "nope.mp4"), "--db", str(processed["db"])))
    assert "no such file or folder" in line
    assert _counts(processed["db"]) == recorded


@pytest.mark.e2e
def test_folder_without_videos(processed, recorded, tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    line = _one_line_error(run_cli("process", str(tmp_path), "--db", str(processed["db"])))
    assert "no video files" in line
    assert _counts(processed["db"]) == recorded


def test_text_file_named_mp4(tmp_path):
    fake = tmp_path / "lesson.mp4"
    fake.write_text("this is not a video\n")
    proc = run_cli("process", str(fake), "--db", str(tmp_path / "db.duckdb"), "--out", str(tmp_path / "out"), "-q")
    line = _one_line_error(proc)
    assert "lesson.mp4" in line and "corrupt" in line


@pytest.mark.e2e
def test_unwritable_out(processed, recorded, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    proc = run_cli("process", str(LESSONS / "chemistry_atoms.mp4"), "--db", str(processed["db"]),
                   "--out", str(blocker / "out"))
    line = _one_line_error(proc)
    assert "cannot write to" in line
    assert _counts(processed["db"]) == recorded
    assert (processed["out"] / "samples.jsonl").is_file()


@pytest.mark.e2e
def test_bad_input_leaves_no_store_behind(tmp_path):
    """A missing path or an unwritable --out is refused before a new store file is created."""
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    for args in ([str(tmp_path / "nope.mp4")], [str(LESSONS / "chemistry_atoms.mp4"), "--out", str(blocker / "out")]):
        line = _one_line_error(run_cli("process", *args, "--db", str(tmp_path / "new.duckdb")))
        assert "no such file or folder" in line or "cannot write to" in line
        assert not (tmp_path / "new.duckdb").exists()


@pytest.mark.e2e
def test_unknown_export_format_and_missing_db(processed, tmp_path):
    assert "unknown format" in _one_line_error(run_cli("export", "--db", str(processed["db"]), "--format", "xml"))
    assert "no database" in _one_line_error(run_cli("stats", "--db", str(tmp_path / "none.duckdb")))


def test_malformed_config_file(tmp_path):
    cfg = tmp_path / "bad.toml"
    cfg.write_text("pipeline = [unclosed")
    line = _one_line_error(run_cli("process", str(LESSONS), "--config", str(cfg), "--db", str(tmp_path / "d.duckdb")))
    assert "malformed" in line
    cfg.write_text("[pipeline.pack]\nmode = 'bogus'\n")
    line = _one_line_error(run_cli("process", str(LESSONS), "--config", str(cfg), "--db", str(tmp_path / "d.duckdb")))
    assert "pipeline.pack.mode" in line


def test_a_setting_a_validator_refuses_is_one_line_in_its_own_words(tmp_path):
    """A value a validator refuses (an unknown pool preset) is one line with the validator's words, without
    pydantic's "Value error," prefix; exit 2, no store written."""
    proc = run_cli("process", str(LESSONS), "--pools", "tpu", "--db", str(tmp_path / "runs.duckdb"),
                   "--out", str(tmp_path / "out"))
    assert proc.returncode == 2
    assert proc.stderr.strip() == "error: invalid setting pipeline.pools: unknown pool preset 'tpu' (cpu, gpu1, gpu8)"
    assert not (tmp_path / "runs.duckdb").exists()
