"""A half download (index first, media data cut at 55% of its bytes) through `textbook process`: its
duration, clips and stats are what decodes, it carries a `truncated` warning in the summary, the
stats and the trace, and the policy (pipeline.filters.truncated) decides whether it is kept."""

import json
import shutil
import subprocess

import duckdb
import pytest

from tests.conftest import LESSONS, run_cli
from tools import media

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.fixture(scope="module")
def half(tmp_path_factory) -> dict:
    """physics_newton remuxed with its index first (as a streamed download has it), cut at 55% of its
    bytes, then processed once."""
    work = tmp_path_factory.mktemp("half")
    whole = work / "whole.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-i", str(LESSONS / "physics_newton.mp4"), "-c", "copy",
                    "-movflags", "+faststart", str(whole)], check=True)
    inputs = work / "in"
    inputs.mkdir()
    cut = inputs / "newton_half.mp4"
    data = whole.read_bytes()
    cut.write_bytes(data[:int(len(data) * 0.55)])
    shutil.copy(LESSONS / "physics_newton.json", inputs / "newton_half.json")
    proc = run_cli("process", str(cut), "--db", str(work / "db.duckdb"), "--out", str(work / "out"), "--json")
    assert proc.returncode == 0, proc.stderr
    return {"work": work, "cut": cut, "db": work / "db.duckdb", "summary": json.loads(proc.stdout),
            "header": media.probe(whole).duration, "decodes": media.probe(cut).duration}


def test_duration_and_clips_are_what_decodes(half):
    assert half["header"] > 50 and 20 < half["decodes"] < 35  # 51.5 s in the header, about 25 s in the file
    (video,) = half["summary"]["videos"]
    assert video["status"] == "kept" and video["clips"] > 0
    con = duckdb.connect(str(half["db"]), read_only=True)
    try:
        duration, header, source = con.execute("SELECT duration, header_duration, duration_source FROM videos "
                                               "WHERE video_id = ?", [video["video_id"]]).fetchone()
        last_clip_end = con.execute("SELECT max(end_s) FROM clips WHERE video_id = ?",
                                    [video["video_id"]]).fetchone()[0]
        warning = con.execute("SELECT stage, kind, message FROM warnings WHERE video_id = ?",
                              [video["video_id"]]).fetchall()
    finally:
        con.close()
    assert (duration, header, source) == (half["decodes"], half["header"], "measured")
    assert duration - 5 < last_clip_end <= duration + 0.05  # before: the last clip ran to the header's 51.5 s
    assert warning == [("probe", "truncated", f"the file ends early: {duration:.1f}s decode of the "
                                              f"{header:.1f}s its header claims")]


def test_the_warning_is_in_the_summary_stats_and_trace(half):
    summary = half["summary"]
    (video,) = summary["videos"]
    assert summary["warnings"] == {"truncated": 1}
    assert [w.split(":", 1)[0] for w in video["warnings"]] == ["truncated"]
    shown = run_cli("process", str(half["cut"]), "--db", str(half["db"]), "--out", str(half["work"] / "out"))
    assert shown.returncode == 0, shown.stderr
    assert "warnings: 1 of 1 videos (truncated 1)" in shown.stdout
    assert f"{video['video_id']}: truncated: the file ends early: {half['decodes']:.1f}s decode" in shown.stdout

    stats = json.loads(run_cli("stats", "--db", str(half["db"]), "--json").stdout)
    assert stats["funnel"]["warnings"] == {"truncated": 1}
    assert stats["table7"][-1]["hours"] == round(half["decodes"] / 3600, 4)  # not the header's 51.5 s
    assert "warnings: truncated 1" in run_cli("stats", "--db", str(half["db"])).stdout

    trace = run_cli("trace", summary["run_id"], "--db", str(half["db"]))
    assert trace.returncode == 0, trace.stderr
    lines = [line for line in trace.stdout.splitlines() if "probe [" in line]
    assert len(lines) == 1 and f"probe [{video['video_id']}]  -> warning  because truncated: the file ends early" \
        in lines[0] and "filters.truncated = keep: what decodes is used" in lines[0]


def test_policy_drop_rejects_it(half):
    cfg = half["work"] / "drop.toml"
    cfg.write_text('[pipeline.filters]\ntruncated = "drop"\n')
    proc = run_cli("process", str(half["cut"]), "--db", str(half["db"]), "--out", str(half["work"] / "out-drop"),
                   "--config", str(cfg), "--json")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    (video,) = summary["videos"]
    assert (video["status"], video["reason"], video["clips"]) == ("rejected", "truncated", 0)
    assert summary["warnings"] == {"truncated": 1} and summary["dropped"] == {"probe": {"truncated": 1}}
    trace = run_cli("trace", summary["run_id"], "--db", str(half["db"])).stdout
    assert "filters.truncated = drop: the video is dropped" in trace
