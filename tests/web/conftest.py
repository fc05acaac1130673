"""Fixtures of the viewer's tests: a real store made by the pipeline plus agent rows, a viewer on a free
port, and a headless Debian chromium driven by Selenium (screenshots kept as test artefacts)."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from store import open_store
from tests.web import seed
from textbook.web.backend import FileBackend
from textbook.web.server import Viewer

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


@pytest.fixture(scope="session")
def web_store(processed, tmp_path_factory) -> dict:
    """A copy of the session's `textbook process` store (and its media folder) with a build run seeded
    into the agent tables: candidates, judgments, LLM calls, events, and a video with a hostile title."""
    work = tmp_path_factory.mktemp("web")
    db = work / "runs.duckdb"
    shutil.copy(processed["db"], db)
    shutil.copytree(processed["db"].parent / "runs_media", work / "runs_media")
    store = open_store(db)
    try:
        info = seed.build_run(store)
        info["process_run"] = store.rows("SELECT run_id FROM runs WHERE command = 'process'")[0]["run_id"]
    finally:
        store.close()
    return {"db": db, "dir": work, **info}


@pytest.fixture()
def viewer(request):
    """start(db) -> a Viewer on 127.0.0.1 and a free port, stopped after the test."""
    started: list[Viewer] = []

    def start(db: Path) -> Viewer:
        v = Viewer(FileBackend(db), "127.0.0.1", 0).start()
        started.append(v)
        return v

    yield start
    for v in started:
        v.stop()


@pytest.fixture(scope="session")
def screenshots(tmp_path_factory) -> Path:
    """Where browser tests save their screenshots (printed at the end of the session)."""
    folder = Path(os.environ.get("TEXTBOOK_SCREENSHOTS") or tmp_path_factory.mktemp("screenshots"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="session")
def browser():
    """Debian's chromium, headless, with a fresh profile; fails loudly when it is missing."""
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not Path(p).is_file()]
    if missing:
        pytest.fail(f"missing {', '.join(missing)} (run `make system`: apt-get install chromium chromium-driver)",
                    pytrace=False)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="textbook-chromium-")
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", f"--user-data-dir={profile}", "--window-size=1300,1600"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)
