"""Content duplicates, empty files and awkward names through `textbook process` (real tools, real DuckDB)."""

import json
import shutil

import duckdb
import pytest

from tests.conftest import LESSONS, run_cli


@pytest.fixture(scope="module")
def names(tmp_path_factory):
    folder = tmp_path_factory.mktemp("names")
    shutil.copy(LESSONS / "chemistry_atoms.mp4", folder / 'Atoms ｜ "Part 1" — résumé？.mp4')
    shutil.copy(LESSONS / "chemistry_atoms.mp4", folder / "atoms_reupload.mp4")
    (folder / "empty download.mp4").write_bytes(b"")
    work = tmp_path_factory.mktemp("names-run")
    proc = run_cli("process", str(folder), "--db", str(work / "db.duckdb"), "--out", str(work / "out"), "--json")
    return {"folder": folder, "work": work, "proc": proc, "summary": json.loads(proc.stdout)}


@pytest.mark.slow
def test_one_copy_kept_the_other_points_to_it_and_costs_no_work(names):
    videos = {v["source"].rsplit("/", 1)[-1]: v for v in names["summary"]["videos"]}
    kept = videos['Atoms ｜ "Part 1" — résumé？.mp4']
    copy = videos["atoms_reupload.mp4"]
    assert kept["status"] == "kept" and kept["samples"] == 1
    assert copy["status"] == "duplicate" and copy["reason"] == f"duplicate of {kept['video_id']}"
    assert copy["samples"] == 0
    assert names["summary"]["stages_run"]["asr"] == 1 and names["summary"]["samples"] == 1
    con = duckdb.connect(str(names["work"] / "db.duckdb"), read_only=True)
    try:
        assert con.execute("SELECT duplicate_of FROM videos WHERE video_id = ?",
                           [copy["video_id"]]).fetchone()[0] == kept["video_id"]
        work = con.execute("SELECT count(*) FROM stage_status WHERE video_id = ?", [copy["video_id"]]).fetchone()[0]
        assert work == 0
        funnel = json.loads(run_cli("stats", "--db", str(names["work"] / "db.duckdb"), "--json").stdout)["funnel"]
        assert funnel["dropped"] == {"duplicate": 1} and funnel["errors"] == {"empty": 1}
        # the command's own summary counts them the same way: the copy dropped at registration, the empty
        # file a failure (never a drop)
        assert names["summary"]["dropped"] == {"register": {"duplicate": 1}}
        assert names["summary"]["failed"] == {"probe empty": 1}
    finally:
        con.close()


@pytest.mark.slow
def test_an_empty_file_is_an_error_that_says_so(names):
    empty = next(v for v in names["summary"]["videos"] if v["source"].endswith("empty download.mp4"))
    assert (empty["status"], empty["reason"]) == ("error", "empty")
    assert "empty download.mp4 is empty (0 bytes)" in names["proc"].stderr
    assert names["proc"].returncode == 1  # one input failed, the others finished


@pytest.mark.slow
def test_the_copy_alone_later_reuses_the_kept_video(names, tmp_path):
    db = names["work"] / "db.duckdb"
    proc = run_cli("process", str(names["folder"] / "atoms_reupload.mp4"), "--db", str(db), "--out",
                   str(tmp_path / "out"), "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["stages_run"] == {"pack": 1} and result["samples"] == 1
    assert result["videos"][0]["status"] == "duplicate"
    sample = json.loads((tmp_path / "out" / "samples.jsonl").read_text())
    kept = next(v for v in names["summary"]["videos"] if v["status"] == "kept")
    assert sample["metadata"][0]["video_id"] == kept["video_id"]
