"""The viewer in a real headless chromium: runs, a run, a video, samples (images in order, loaded),
hostile text shown literally with no script run. Screenshots are saved as test artefacts."""

from __future__ import annotations

import time

import pytest
from selenium.common.exceptions import NoAlertPresentException
from selenium.webdriver.common.by import By

from tests.web import seed

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def open_page(browser, url: str, shots, name: str) -> None:
    browser.get(url)
    wait_images(browser)
    browser.save_screenshot(str(shots / f"{name}.png"))
    assert_no_alert(browser)


def wait_images(browser, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if browser.execute_script("return Array.from(document.images).every(i => i.complete)"):
            return
        time.sleep(0.1)
    raise AssertionError("images did not finish loading")


def assert_no_alert(browser) -> None:
    try:
        alert = browser.switch_to.alert
    except NoAlertPresentException:
        return
    text = alert.text
    alert.dismiss()
    raise AssertionError(f"a script ran: alert({text!r})")


def test_runs_run_video_and_samples_pages(browser, web_store, viewer, screenshots):
    v = viewer(web_store["db"])
    run, base = web_store["build_run"], v.url.rstrip("/")
    open_page(browser, v.url, screenshots, "runs")
    assert {e.get_attribute("data-run") for e in browser.find_elements(By.CSS_SELECTOR, "#runs tr[data-run]")} == \
        {run, web_store["process_run"]}
    browser.find_element(By.LINK_TEXT, run).click()
    wait_images(browser)
    browser.save_screenshot(str(screenshots / "run.png"))
    assert browser.find_element(By.CSS_SELECTOR, '[data-step="accepted"]').text == "2"
    assert browser.find_element(By.CSS_SELECTOR, '[data-node="taxonomy"]').text.startswith("1×")

    open_page(browser, f"{base}/runs/{web_store['process_run']}/videos/{web_store['chem']}", screenshots, "video")
    frames = browser.find_elements(By.CSS_SELECTOR, "#keyframes img")
    assert len(frames) >= 3 and all(browser.execute_script("return arguments[0].naturalWidth", f) > 0 for f in frames)
    player = browser.find_element(By.ID, "player")
    deadline = time.monotonic() + 20
    while browser.execute_script("return arguments[0].readyState", player) < 1 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert browser.execute_script("return arguments[0].duration", player) > 30  # the lesson, playable
    # a jump link seeks the player in place (view.js), without loading another page
    seek = browser.find_elements(By.CSS_SELECTOR, "#keyframes a[data-seek]")[1]
    target = float(seek.get_attribute("data-seek"))
    url_before = browser.current_url
    browser.execute_script("arguments[0].muted = true", player)
    seek.click()
    time.sleep(0.5)
    assert browser.current_url == url_before
    assert abs(browser.execute_script("return arguments[0].currentTime", player) - target) < 1.5

    open_page(browser, f"{base}/runs/{run}/samples", screenshots, "samples")
    articles = browser.find_elements(By.CSS_SELECTOR, "article.sample")
    assert len(articles) == len(web_store["samples"])
    for article, sample in zip(articles, web_store["samples"], strict=True):
        imgs = article.find_elements(By.CSS_SELECTOR, "li.pos-image img")
        # the images in the sample's order, at their positions, each loaded
        assert [i.get_attribute("data-path") for i in imgs] == [p for p in sample["images"] if p]
        positions = [int(i.get_attribute("data-pos")) for i in imgs]
        assert positions == [k for k, p in enumerate(sample["images"]) if p]
        assert all(browser.execute_script("return arguments[0].naturalWidth", i) > 0 for i in imgs)
        items = article.find_elements(By.CSS_SELECTOR, "ol.positions > li")
        kinds = ["image" if "pos-image" in li.get_attribute("class") else "text" for li in items]
        assert kinds == ["image" if p else "text" for p in sample["images"]]
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert errors == [], errors


def test_hostile_text_shows_literally_and_runs_nothing(browser, web_store, viewer, screenshots):
    v = viewer(web_store["db"])
    base = v.url.rstrip("/")
    browser.get(f"{base}/runs/{web_store['build_run']}/videos/{web_store['xss']}")
    browser.save_screenshot(str(screenshots / "hostile_video.png"))
    assert_no_alert(browser)
    assert browser.find_element(By.ID, "video-title").text == seed.XSS_TITLE
    assert browser.find_element(By.ID, "description").text == seed.XSS_DESCRIPTION
    assert seed.XSS_DESCRIPTION in browser.find_element(By.CSS_SELECTOR, "ul.comments").text
    assert browser.execute_script("return document.querySelectorAll('img[src=\"x\"], main script').length") == 0
    assert browser.execute_script("return document.scripts.length") == 1  # /static/view.js only
    # the run page and the search page show the same title as text, and nothing runs there either
    browser.get(f"{base}/runs/{web_store['build_run']}")
    assert_no_alert(browser)
    assert seed.XSS_TITLE in browser.find_element(By.ID, "videos-table").text
    browser.get(f"{base}/search?text=onerror")
    assert_no_alert(browser)
    assert seed.XSS_TITLE in browser.find_element(By.ID, "hits").text
    logs = browser.get_log("browser")
    assert not [e for e in logs if "alert" in e["message"]], logs
