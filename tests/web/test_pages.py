"""The viewer's pages over a real store (made by `textbook process`, plus build rows), through the app.

Tests on that store are `slow` (the session's `textbook process` run makes it); the rest are unit tests."""

from __future__ import annotations

import http.client
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from store import open_store
from tests.web import seed
from textbook.web import queries as q
from textbook.web.app import CSP, create_app, mark_terms, media_url, node_label, safe_media_path, word_diff
from textbook.web.backend import FileBackend


@pytest.fixture(scope="module")
def client(web_store):
    return TestClient(create_app(FileBackend(web_store["db"])))


@pytest.mark.slow
def test_runs_page_lists_both_runs_with_counts(client, web_store):
    r = client.get("/")
    assert r.status_code == 200
    assert r.headers["content-security-policy"] == CSP
    assert "script-src 'self'" in CSP and "unsafe-inline" not in CSP
    rows = re.findall(r'<tr data-run="([^"]+)">(.*?)</tr>', r.text, re.S)
    assert {run for run, _ in rows} == {web_store["build_run"], web_store["process_run"]}
    build = dict(rows)[web_store["build_run"]]
    assert re.search(r'class="num videos">2<', build) and f'class="num samples">{len(web_store["samples"])}<' in build
    assert "build a &lt;b&gt;physics&lt;/b&gt; textbook" in build  # the goal, escaped
    assert 'http-equiv="refresh"' not in r.text  # nothing running


@pytest.mark.slow
def test_run_page_shows_graph_funnel_taxonomy_budgets(client, web_store):
    r = client.get(f"/runs/{web_store['build_run']}")
    assert r.status_code == 200
    assert re.search(r'data-node="judge_metadata">1×  · 3 decisions', r.text.replace("\n", " ")) or \
        'data-node="judge_metadata">1× · 3 decisions' in r.text
    assert re.search(r'data-step="found">3<', r.text) and re.search(r'data-step="accepted">2<', r.text)
    assert 'data-node-id="s1.c1.u1.p2"' in r.text and "Atoms and molecules" in r.text
    assert "accepted videos" in r.text and "of 4" in r.text
    assert "judged_out" in r.text  # the failure table and the video list
    assert "&lt;img src=x onerror=alert(1)&gt;" in r.text and "<img src=x" not in r.text


@pytest.mark.slow
def test_process_run_page_and_video_page(client, web_store):
    run = web_store["process_run"]
    r = client.get(f"/runs/{run}")
    assert r.status_code == 200 and "corrupt" in r.text and "language:es" in r.text
    r = client.get(f"/runs/{run}/videos/{web_store['chem']}")
    assert r.status_code == 200
    assert r.text.count('class="keyframe') >= 3
    frames = re.findall(r'<img src="(/media/frames/[^"]+)"', r.text)
    assert frames and all(client.get(u).status_code == 200 for u in frames)
    assert f'src="/runs/{run}/videos/{web_store["chem"]}/file"' in r.text  # the input file of the process run
    video = client.get(f"/runs/{run}/videos/{web_store['chem']}/file", headers={"Range": "bytes=0-99"})
    assert video.status_code == 206 and len(video.content) == 100


@pytest.mark.slow
def test_video_page_of_a_build_shows_the_llm_call_escaped(client, web_store):
    r = client.get(f"/runs/{web_store['build_run']}/videos/{web_store['xss']}")
    assert r.status_code == 200
    assert "<script>alert" not in r.text and "<img src=x" not in r.text
    assert "&lt;/script&gt;&lt;script&gt;alert(2)&lt;/script&gt;" in r.text
    assert "metadata_judge@abababababab" in r.text and "tokens 120+30" in r.text
    assert "No local file of this video" in r.text
    assert client.get(f"/runs/{web_store['build_run']}/videos/{web_store['xss']}/file").status_code == 404


@pytest.mark.slow
def test_video_page_has_one_duration_row_and_says_whether_it_has_audio(client, web_store):
    # the candidate's metadata reports duration_s 35.0; the probe measured the file: one row, the probe's
    r = client.get(f"/runs/{web_store['build_run']}/videos/{web_store['chem']}")
    assert r.status_code == 200
    assert len(re.findall(r"<th>duration", r.text)) == 1 and "duration s" not in r.text
    row = re.search(r'<td id="duration">([^<]*)</td>', r.text).group(1)
    assert re.fullmatch(r"3\d\.\ds · 854×480 · 25\.0 fps · with audio", row), row
    assert "audio True" not in r.text


def test_graph_node_labels():
    assert node_label(0, 2, 0) == "2 decisions"  # a per-video node: decisions, no batch run ("0× · 2" before)
    assert node_label(1, 3, 0) == "1× · 3 decisions"
    assert node_label(2, 0, 1) == "2× · 1 error"
    assert node_label(0, 1, 2) == "1 decision · 2 errors"
    assert node_label(0, 0, 0) == "not run"


@pytest.mark.slow
def test_samples_page_filters(client, web_store):
    run = web_store["build_run"]
    r = client.get(f"/runs/{run}/samples")
    assert r.status_code == 200 and r.text.count('<article class="sample"') == len(web_store["samples"])
    r = client.get(f"/runs/{run}/samples", params={"video": web_store["newton"]})
    assert r.text.count('<article class="sample"') == 1 and web_store["newton"] in r.text
    r = client.get(f"/runs/{run}/samples", params={"point": "s1.c1.u1.p2"})
    assert r.text.count('<article class="sample"') == 1 and web_store["chem"] in r.text
    r = client.get(f"/runs/{run}/samples", params={"subject": "no such subject"})
    assert r.text.count('<article class="sample"') == 0 and "matches the filter" in r.text


@pytest.mark.slow
def test_stats_page(client, web_store):
    r = client.get(f"/runs/{web_store['process_run']}/stats")
    assert r.status_code == 200 and 'id="table7"' in r.text and "total" in r.text
    assert "no_audio" in r.text and "textbook stats --data OUT --sim" in r.text


@pytest.mark.slow
def test_search_ranks_transcripts_and_ocr(client, web_store):
    r = client.get("/search", params={"text": "protons nucleus"})
    assert r.status_code == 200
    hits = re.findall(r'<span class="field">(\w+)</span>', r.text)
    assert "transcript" in hits and "ocr" in hits
    assert "<mark>nucleus</mark>" in r.text or "<mark>Nucleus</mark>" in r.text
    r = client.get("/search", params={"text": "<script>alert(3)</script>"})
    assert "<script>alert(3)" not in r.text and "&lt;script&gt;alert(3)&lt;/script&gt;" in r.text


@pytest.mark.slow
def test_search_folds_plurals(web_store):
    store = open_store(web_store["db"], read_only=True)
    try:
        assert q.terms("Atoms, LAWS of motion class") == ["atom", "law", "of", "motion", "class"]
        fields = {(h["field"], h["video_id"]) for h in q.search(store, "atom")}
    finally:
        store.close()
    assert ("title", web_store["chem"]) in fields  # "Atoms and Molecules"


@pytest.mark.slow
def test_unknown_run_and_video_are_404(client):
    assert client.get("/runs/nope").status_code == 404
    assert client.get("/runs/nope/videos/x").status_code == 404
    assert client.get("/videos/nope").status_code == 404


@pytest.mark.slow
def test_review_post_needs_the_csrf_token_and_same_origin(client, web_store):
    run = web_store["build_run"]
    r = client.post(f"/runs/{run}/review", data={"key": "taxonomy", "action": "approve"}, follow_redirects=False)
    assert r.status_code == 403 and "CSRF" in r.text
    page = client.get(f"/runs/{run}/review")
    assert page.status_code == 200 and "Nothing waits for review" in page.text
    r = client.post(f"/runs/{run}/review", data={"key": "taxonomy", "action": "approve", "csrf": "0" * 64},
                    follow_redirects=False)
    assert r.status_code == 403
    r = client.post(f"/runs/{run}/review", data={"key": "taxonomy", "action": "approve"},
                    headers={"Origin": "http://attacker.example"}, follow_redirects=False)
    assert r.status_code == 403 and "cross-origin" in r.text


@pytest.mark.slow
def test_foreign_host_header_is_refused(web_store):
    from textbook.web.app import LOOPBACK

    c = TestClient(create_app(FileBackend(web_store["db"]), allowed_hosts=LOOPBACK), base_url="http://127.0.0.1")
    assert c.get("/").status_code == 200
    assert c.get("/", headers={"Host": "attacker.example:8765"}).status_code == 400


@pytest.mark.e2e
@pytest.mark.slow
def test_path_traversal_gets_404_over_http(web_store, viewer):
    v = viewer(web_store["db"])
    media = web_store["dir"] / "runs_media"
    inside = next(media.rglob("*.jpg")).relative_to(media).as_posix()
    outside = web_store["dir"] / "secret.txt"
    outside.write_text("not for the browser")
    conn = http.client.HTTPConnection("127.0.0.1", v.port, timeout=10)

    def status(raw_path: str) -> int:
        conn.request("GET", raw_path)  # sent as written: no client-side normalization
        resp = conn.getresponse()
        resp.read()
        return resp.status

    from urllib.parse import quote

    assert status("/media/" + quote(inside)) == 200
    for raw in ("/media/../secret.txt", "/media/..%2fsecret.txt", "/media/%2e%2e/secret.txt",
                "/media/%2e%2e%2fsecret.txt", "/media/frames/..%2f..%2fsecret.txt", "/media/..%5csecret.txt",
                "/media/%2fetc%2fpasswd", "/media//etc/passwd", "/media/../../../../etc/passwd",
                "/media/..%2f..%2f..%2f..%2f..%2fetc%2fpasswd", "/media/../runs.duckdb", "/media/%00",
                "/media/" + quote(str(outside))):
        assert status(raw) == 404, raw
    conn.close()


def test_safe_media_path(tmp_path):
    media = tmp_path / "db_media"
    (media / "images").mkdir(parents=True)
    (media / "images" / "a@0.0_1.0#0.jpg").write_bytes(b"x")
    (tmp_path / "outside.txt").write_text("x")
    (media / "link.txt").symlink_to(tmp_path / "outside.txt")
    assert safe_media_path(media, "images/a@0.0_1.0#0.jpg") == (media / "images" / "a@0.0_1.0#0.jpg").resolve()
    for bad in ("../outside.txt", "images/../../outside.txt", "/etc/passwd", "link.txt", "images", "", "a\x00b",
                "C:/windows"):
        assert safe_media_path(media, bad) is None, bad
    assert media_url(media, str(media / "images" / "a@0.0_1.0#0.jpg")) == "/media/images/a%400.0_1.0%230.jpg"
    assert media_url(media, str(tmp_path / "outside.txt")) is None


def test_word_diff_and_marks():
    assert word_diff("the cat sat on mat", "the cat sat on the mat") == [(" ", "the cat sat on"), ("+", "the"),
                                                                         (" ", "mat")]
    assert word_diff("um so atoms are uh small", "so atoms are small") == [
        ("-", "um"), (" ", "so atoms are"), ("-", "uh"), (" ", "small")]
    runs = mark_terms("Electrons move around the nucleus.", ["nucleu"])
    assert (True, "nucleus") in runs and "".join(t for _, t in runs) == "Electrons move around the nucleus."


def test_pagination_of_a_large_build(tmp_path):
    """Pages of 50: the run page's video list and the samples page (the benchmark times them)."""
    store = open_store(tmp_path / "big.duckdb")
    try:
        run = seed.synthetic(store, candidates=1_230, samples=120, points=10)
    finally:
        store.close()
    c = TestClient(create_app(FileBackend(tmp_path / "big.duckdb")))
    r = c.get(f"/runs/{run}")
    assert r.status_code == 200
    assert len(re.findall(r'<tr><td><a href="/runs/[^"]+/videos/syn-', r.text)) == 50
    assert "page 1 of 25 (1,230)" in r.text and 'rel="next" href="/runs/' in r.text
    last = c.get(f"/runs/{run}", params={"page": 25})
    assert len(re.findall(r'<tr><td><a href="/runs/[^"]+/videos/syn-', last.text)) == 30
    assert 'rel="next"' not in last.text and "41 accepted" in last.text and "and 36 more" in last.text
    accepted = c.get(f"/runs/{run}", params={"status": "accepted"})
    assert "page 1 of 5 (205)" in accepted.text and "status=accepted" in accepted.text
    s1 = c.get(f"/runs/{run}/samples")
    assert s1.text.count('<article class="sample"') == 50 and "page 1 of 3 (120)" in s1.text
    s3 = c.get(f"/runs/{run}/samples", params={"page": 3})
    assert re.findall(r'data-idx="(\d+)"', s3.text) == [str(i) for i in range(100, 120)]
    assert c.get("/", params={"page": 1}).status_code == 200


@pytest.mark.e2e
@pytest.mark.slow
def test_store_held_by_a_writer_gives_a_503_page(web_store, tmp_path):
    """While another process holds the file (a build), `textbook view` says so instead of failing."""
    db = tmp_path / "held.duckdb"
    open_store(db).close()
    holder = subprocess.Popen([sys.executable, "-c", "import duckdb, sys, time; c = duckdb.connect(sys.argv[1]); "
                               "print('held', flush=True); time.sleep(60)", str(db)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        c = TestClient(create_app(FileBackend(db)))
        r = c.get("/")
        assert r.status_code == 503 and "in use by another process" in r.text and "--view" in r.text
    finally:
        holder.kill()
        holder.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if TestClient(create_app(FileBackend(db))).get("/").status_code == 200:
            break
        time.sleep(0.2)
    else:
        raise AssertionError("the viewer did not recover once the writer was gone")
    assert Path(db).is_file()


def test_pages_refresh_themselves_while_a_run_runs(tmp_path):
    store = open_store(tmp_path / "live.duckdb")
    try:
        store.start_run("build-live00000001", "build", ["build a live textbook"], {"agent": {}}, "live")
    finally:
        store.close()
    c = TestClient(create_app(FileBackend(tmp_path / "live.duckdb")))
    for url in ("/", "/runs/build-live00000001"):
        page = c.get(url).text
        assert '<meta http-equiv="refresh" content="3">' in page and "refreshes every 3 s" in page
    store = open_store(tmp_path / "live.duckdb")
    try:
        store.finish_run("build-live00000001", "finished", {})
    finally:
        store.close()
    assert 'http-equiv="refresh"' not in c.get("/").text


def test_samples_page_marks_positions_a_human_decided(tmp_path):
    review = [{"stage": "metadata", "by": "human", "decision": "accept", "model_verdict": "reject",
               "model_score": 5.0}]
    meta = {"video_id": "v1", "source": "s", "subject": "Physics", "clip_start": 0.0, "clip_end": 9.0,
            "review": review}
    sample = {"images": [None], "texts": ["a paragraph"], "text_ocr_list": ["a paragraph"], "metadata": [meta],
              "image_num": 0, "text_num": 1, "token_num": 3}
    store = open_store(tmp_path / "r.duckdb")
    try:
        store.start_run("build-rev000000001", "build", ["goal"], {"agent": {}}, "h")
        store.save_samples("build-rev000000001", "h", [sample])
        store.finish_run("build-rev000000001", "finished", {})
    finally:
        store.close()
    page = TestClient(create_app(FileBackend(tmp_path / "r.duckdb"))).get("/runs/build-rev000000001/samples").text
    assert '<span class="human">human accept at metadata (model: reject, 5.0)</span>' in page
