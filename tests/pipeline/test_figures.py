"""One definition per figure (pipeline/figures.py): `textbook stats`, the viewer, the hf export's card and
the samples give the same tokens, topics and hours for one small store (issue 17)."""

from __future__ import annotations

import html
import json
import re

import pytest
from fastapi.testclient import TestClient

from pipeline.figures import TABLE7_COLUMNS, fmt_hours, sample_tokens, samples_tokens, table7_cell, topics_by_subject
from pipeline.tokens import count_tokens
from store import open_store
from tests.conftest import run_cli
from textbook.web.app import create_app
from textbook.web.backend import FileBackend


def test_fmt_hours():
    assert [fmt_hours(s) for s in (0, 37.04, 59.94, 60, 125.4, 3599.4, 3600, 3725, 22697 * 3600)] == \
        ["0.0s", "37.0s", "59.9s", "1m 00s", "2m 05s", "59m 59s", "1h 00m", "1h 02m", "22697h 00m"]
    assert fmt_hours(None) == ""


def test_sample_tokens_split_asr_and_ocr():
    asr, ocr = "Force is mass times acceleration.", "Newton's second law\nF = m a"
    meta = {"video_id": "v1", "subject": "physics", "type": "text"}
    sample = {"images": ["a.jpg", None, None, None], "texts": [None, asr, "<|endofvideo|>", "Then inertia."],
              "text_ocr_list": [None, f"{ocr}\n{asr}", None, "Then inertia."],
              "metadata": [{"type": "image"}, meta, {"type": "eov"}, meta]}
    got = sample_tokens(sample)
    assert got.asr == count_tokens(asr) + count_tokens("Then inertia.")  # the end-of-video marker left out
    assert got.ocr == count_tokens(ocr) and got.text == got.asr + got.ocr
    assert [(p.index, p.asr, p.ocr) for p in got.positions] == [(1, count_tokens(asr), count_tokens(ocr)),
                                                                (3, count_tokens("Then inertia."), 0)]
    # a foreign layout (OCR after the ASR): the entry's tokens less the ASR text's
    foreign = {**sample, "text_ocr_list": [None, f"{asr} {ocr}", None, None]}
    assert sample_tokens(foreign).ocr == count_tokens(f"{asr} {ocr}") - count_tokens(asr)
    assert samples_tokens([]) == []


def test_topics_are_knowledge_points_with_a_kept_video_or_a_duplicate_of_one():
    videos = [
        {"video_id": "a", "subject": "physics", "knowledge_point": "forces", "status": "kept"},
        # the same file found for a second point: a duplicate of a kept video, its point is in the corpus
        {"video_id": "b", "subject": "physics", "knowledge_point": "inertia", "status": "duplicate",
         "duplicate_of": "a"},
        {"video_id": "c", "subject": "physics", "knowledge_point": "energy", "status": "rejected"},
        {"video_id": "d", "subject": "chemistry", "knowledge_point": "atoms", "status": "kept"},
        {"video_id": "e", "subject": "chemistry", "knowledge_point": "atoms", "status": "kept"},
        {"video_id": "f", "subject": None, "knowledge_point": None, "status": "kept"},
    ]
    assert topics_by_subject(videos) == {"physics": 2, "chemistry": 1, "unknown": 0}
    # a build: the taxonomy node each candidate was assigned to, not the video's own field
    assert topics_by_subject(videos, {"d": "s2.p1", "e": "s2.p2"}) == {"physics": 2, "chemistry": 2, "unknown": 0}


def _cells(row_html: str) -> dict[str, str]:
    return {c: html.unescape(v) for c, v in re.findall(r'<td[^>]*data-col="([^"]+)">([^<]*)</td>', row_html)}


@pytest.mark.slow
def test_stats_viewer_card_and_samples_give_the_same_figures(relative_store, tmp_path):
    db, elsewhere = relative_store["db"], relative_store["elsewhere"]
    proc = run_cli("stats", "--db", "../made/rel/x.duckdb", "--json", cwd=elsewhere)
    assert proc.returncode == 0, proc.stderr
    stats = json.loads(proc.stdout)
    store = open_store(db, read_only=True)
    try:
        run = stats["run_id"]
        samples = store.samples(run)
        durations = {r["subject"]: r["duration"] for r in store.rows("SELECT subject, duration FROM videos")}
    finally:
        store.close()
    text_num = [s["text_num"] for s in samples]
    counted = samples_tokens(samples)
    assert [t.asr for t in counted] == text_num  # ASR tokens are the samples' own text_num
    t1, t7 = stats["table1"], {r["subject"]: r for r in stats["table7"]}
    assert (t1["asr_tokens_per_sample"]["min"], t1["asr_tokens_per_sample"]["max"]) == (min(text_num), max(text_num))
    assert t1["tokens_per_sample"]["max"] == max(t.asr + t.ocr for t in counted)
    assert t7["total"]["asr_tokens"] == sum(text_num) and t7["total"]["ocr_tokens"] == sum(t.ocr for t in counted)
    assert t7["total"]["ocr_tokens"] > 0
    assert set(t7) == {"chemistry", "physics", "total"}
    for subject in ("chemistry", "physics"):  # one lesson each, each with its knowledge point
        assert t7[subject]["topics"] == 1 and t7[subject]["videos"] == 1
        assert t7[subject]["seconds"] == pytest.approx(durations[subject], abs=1e-3) and 30 < durations[subject] < 60
        assert table7_cell(t7[subject], "hours") == fmt_hours(durations[subject]) == f"{durations[subject]:.1f}s"
    shown = {r["subject"]: [table7_cell(r, c) for c in TABLE7_COLUMNS] for r in stats["table7"]}

    # `textbook stats` as text
    human = run_cli("stats", "--db", "../made/rel/x.duckdb", cwd=elsewhere)
    assert human.returncode == 0, human.stderr
    for cells in shown.values():
        assert all(c in human.stdout for c in cells)
    assert f"of which ASR (text_num) min {min(text_num)} max {max(text_num)}" in human.stdout

    # the viewer: its stats page and each sample's counts
    client = TestClient(create_app(FileBackend(db)))
    page = client.get(f"/runs/{run}/stats").text
    rows = dict(re.findall(r'<tr data-subject="([^"]+)">(.*?)</tr>', page, re.S))
    assert {s: [_cells(r)[c] for c in TABLE7_COLUMNS] for s, r in rows.items()} == shown
    for key in ("tokens_per_sample", "asr_tokens_per_sample", "ocr_tokens_per_sample"):
        row = re.search(rf'<tr data-row="{key}">(.*?)</tr>', page, re.S).group(1)
        assert re.findall(r'class="num">([^<]*)<', row) == [str(t1[key][k]) for k in ("min", "max", "avg")]
    page = client.get(f"/runs/{run}/samples").text
    asr = [int(x.replace(",", "")) for x in re.findall(r'<span data-count="asr">([^<]*)</span>', page)]
    ocr = [int(x.replace(",", "")) for x in re.findall(r'<span data-count="ocr">([^<]*)</span>', page)]
    assert asr == text_num and ocr == [t.ocr for t in counted]
    assert " texts " not in page

    # the hf export's dataset card
    out = tmp_path / "hf"
    proc = run_cli("export", "--db", "../made/rel/x.duckdb", "--format", "hf", "--out", str(out), cwd=elsewhere)
    assert proc.returncode == 0, proc.stderr
    card = (out / "README.md").read_text()
    for cells in shown.values():
        assert "| " + " | ".join(cells) + " |" in card
    a = t1["asr_tokens_per_sample"]
    assert f"| ASR tokens/sample (text_num) | {a['min']} | {a['max']} | {a['avg']} |" in card
    assert str(relative_store["made"]) not in card and str(elsewhere) not in card
