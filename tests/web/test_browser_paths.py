"""Images load in a real headless chromium whatever folder the store was made in and is viewed from
(issue 17): a store made by `textbook process --db rel/x.duckdb` in one folder, viewed from another, and
a copy holding the paths an older version recorded (relative to the working directory of its run).
Every <img> on the video pages and the samples page answers 200 and is drawn."""

from __future__ import annotations

import os
import shutil
import urllib.error
import urllib.request
from pathlib import Path

import duckdb
import pytest
from selenium.webdriver.common.by import By

from store import open_store
from tests.web.test_browser import open_page

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def _status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            r.read()
            return r.status
    except urllib.error.HTTPError as exc:
        return exc.code


def _pages(db: Path) -> tuple[str, list[str]]:
    store = open_store(db, read_only=True)
    try:
        run = store.latest_run()
        vids = [r["video_id"] for r in store.rows("SELECT video_id FROM run_videos WHERE run_id = ? AND status = "
                                                  "'kept' ORDER BY position", [run])]
    finally:
        store.close()
    return run, vids


def _check_images(browser, viewer, db: Path, screenshots, name: str) -> int:
    """Open each kept video's page and the samples page; every <img> answers 200 and has a width."""
    v = viewer(db)
    run, vids = _pages(db)
    assert len(vids) == 2
    pages = {f"{name}-video-{vid}": f"/runs/{run}/videos/{vid}" for vid in vids}
    pages[f"{name}-samples"] = f"/runs/{run}/samples"
    seen = 0
    for shot, page in pages.items():
        open_page(browser, v.url.rstrip("/") + page, screenshots, shot)
        imgs = browser.find_elements(By.TAG_NAME, "img")
        if "video" in shot:
            assert len(browser.find_elements(By.CSS_SELECTOR, "#keyframes img")) >= 3, page
        else:
            assert len(imgs) >= 4, page
        srcs = [i.get_attribute("src") for i in imgs]
        assert {s: _status(s) for s in srcs} == {s: 200 for s in srcs}, page
        assert all(browser.execute_script("return arguments[0].naturalWidth", i) > 0 for i in imgs), page
        seen += len(srcs)
    return seen


def test_every_image_answers_200_viewed_from_another_folder(browser, relative_store, viewer, screenshots,
                                                             monkeypatch, tmp_path):
    monkeypatch.chdir(relative_store["elsewhere"])
    db = Path(os.path.relpath(relative_store["db"]))  # ../made/rel/x.duckdb, relative to this other folder
    con = duckdb.connect(str(db), read_only=True)
    recorded = [r[0] for r in con.execute("SELECT path FROM keyframes").fetchall()]
    con.close()
    # recorded relative to the store's folder, not to the folder `process` ran in (rel/x_media/...)
    assert recorded and all(p.startswith("x_media/frames/") for p in recorded), recorded[:3]
    assert _check_images(browser, viewer, db, screenshots, "relative") >= 10

    # a store an older version wrote from `made`: keyframe paths relative to that working directory
    old = tmp_path / "old"
    shutil.copytree(relative_store["db"].parent, old / "rel", ignore=shutil.ignore_patterns("out"))
    con = duckdb.connect(str(old / "rel" / "x.duckdb"))
    con.execute("UPDATE keyframes SET path = 'rel/' || path")
    con.close()
    assert _check_images(browser, viewer, Path(os.path.relpath(old / "rel" / "x.duckdb")), screenshots,
                         "cwd-relative") >= 10
