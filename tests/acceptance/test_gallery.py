"""`runner gallery` rendered from a real campaign and opened in headless Chromium (selenium).

Needs Debian's `chromium` and `chromium-driver`. Without them the tests skip, except on CI
(`CI` set), where a missing browser is a failure. `RUNNER_UPDATE_DOCS=1` also saves the
screenshot as docs/gallery.png (the one in the README).
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
from collections.abc import Iterator
from html import unescape
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit
from urllib.request import url2pathname

import pytest
from PIL import Image
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from tests.acceptance.conftest import db_rows, run_cli, start_simulator
from tests.acceptance.test_reports import (
    ALL,
    DONE,
    FAILED,
    MODERATED,
    Built,
    build_campaign,
    stop_simulator,
)

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Built]:
    folder = tmp_path_factory.mktemp("gallery")
    sim = start_simulator(folder, {"duration_median": 0.2, "duration_sigma": 0.2})
    try:
        jobfile = build_campaign(folder, sim)
        yield Built(folder, jobfile, folder / "runner.db", sim)
    finally:
        stop_simulator(sim)


@pytest.fixture(scope="module")
def page(built: Built) -> Path:
    result = run_cli("gallery", "accept", cwd=built.folder, timeout=60)
    assert result.returncode == 0, result.stderr
    path = built.folder / "out" / "gallery.html"
    assert f"{len(ALL)} job(s) in {path}" in result.stdout
    return path


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not Path(p).exists()]
    if missing:
        reason = f"{' and '.join(missing)} missing: apt-get install -y chromium chromium-driver"
        if os.environ.get("CI"):
            pytest.fail(f"CI needs a browser for the gallery tests; {reason}")
        pytest.skip(reason)
    options = Options()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",  # root in a container
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1280,1000",
        "--hide-scrollbars",
    ):
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    driver.set_page_load_timeout(30)
    driver.set_script_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def rows(db: Path) -> list[dict[str, Any]]:
    return [dict(r) for r in db_rows(db, "SELECT * FROM jobs ORDER BY id")]


def visible_cards(driver: WebDriver) -> list[str]:
    """The states of the cards shown on the page, in order."""
    states: list[str] = driver.execute_script(
        "return Array.from(document.querySelectorAll('main .card'))"
        ".filter((c) => c.offsetParent !== null).map((c) => c.dataset.state)"
    )
    return states


def full_page_png(driver: Any) -> bytes:
    """The whole page, beyond the viewport (Chrome DevTools' captureScreenshot)."""
    size = driver.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
    clip = {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1}
    shot = driver.execute_cdp_cmd(
        "Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True, "clip": clip}
    )
    return base64.b64decode(shot["data"])


def click_state(driver: WebDriver, state: str) -> None:
    driver.find_element(By.CSS_SELECTOR, f".states input[value='{state}']").click()


def search_for(driver: WebDriver, text: str) -> None:
    box = driver.find_element(By.ID, "search")
    box.clear()
    box.send_keys(text)
    driver.execute_script(  # clear() fires no input event on an emptied box
        "document.getElementById('search').dispatchEvent(new Event('input'))"
    )


@pytest.mark.timeout(120)
def test_gallery_shows_images_prompts_and_reasons(
    built: Built, page: Path, browser: WebDriver, tmp_path: Path
) -> None:
    browser.get(page.as_uri())
    db = rows(built.db)
    assert browser.title == "accept: gallery"  # the prompts' markup did not run

    widths = browser.execute_script(
        "return Array.from(document.querySelectorAll('main img'))"
        ".map((i) => (i.complete ? i.naturalWidth : 0))"
    )
    assert len(widths) == len(DONE) and all(w > 0 for w in widths), widths
    assert all(img.is_displayed() for img in browser.find_elements(By.CSS_SELECTOR, "main img"))

    captions = [e.text for e in browser.find_elements(By.CSS_SELECTOR, "main .prompt")]
    assert captions == ALL  # prompts as text, markup included, nothing interpreted
    assert browser.execute_script("return typeof window.pwned") == "undefined"
    assert not browser.find_elements(By.CSS_SELECTOR, "main b, main script, img[src='x']")

    for state, prompts in (("failed", FAILED), ("moderated", MODERATED)):
        cards = browser.find_elements(By.CSS_SELECTOR, f"main .card[data-state='{state}']")
        assert len(cards) == len(prompts)
        errors = [r["error"] for r in db if r["state"] == state]
        for card, error in zip(cards, errors, strict=True):
            assert card.is_displayed()
            assert card.find_element(By.CSS_SELECTOR, ".reason").text == error
            assert card.find_element(By.CSS_SELECTOR, ".badge").text == state

    # Each thumbnail links to its full-size image, relative to the page.
    hrefs = [a.get_attribute("href") for a in browser.find_elements(By.CSS_SELECTOR, "a.frame")]
    paths = [url2pathname(urlsplit(str(h)).path) for h in hrefs]
    assert paths == [json.loads(r["files"])[0]["path"] for r in db if r["state"] == "done"]
    # Nothing was fetched: thumbnails are inline, and the page's policy forbids the network.
    assert browser.execute_script("return performance.getEntriesByType('resource').length") == 0

    shot = tmp_path / "gallery.png"
    shot.write_bytes(full_page_png(browser))
    with Image.open(shot) as image:
        assert image.width >= 1000 and image.height >= 900  # every card, not just the viewport
    if os.environ.get("RUNNER_UPDATE_DOCS") == "1":
        (ROOT / "docs").mkdir(exist_ok=True)
        shutil.copyfile(shot, ROOT / "docs" / "gallery.png")


@pytest.mark.timeout(120)
def test_state_filters_and_search_hide_and_show_cards(page: Path, browser: WebDriver) -> None:
    browser.get(page.as_uri())
    everything = ["done"] * len(DONE) + ["failed"] * len(FAILED) + ["moderated"]
    assert visible_cards(browser) == everything
    shown = browser.find_element(By.ID, "shown")
    assert shown.text == f"{len(ALL)} of {len(ALL)} shown"
    counts = [e.text for e in browser.find_elements(By.CSS_SELECTOR, ".states .n")]
    assert counts == [str(len(DONE)), str(len(FAILED)), str(len(MODERATED))]

    click_state(browser, "done")
    assert visible_cards(browser) == ["failed", "failed", "moderated"]
    click_state(browser, "failed")
    assert visible_cards(browser) == ["moderated"]
    assert shown.text == f"1 of {len(ALL)} shown"
    click_state(browser, "done")
    click_state(browser, "failed")
    assert visible_cards(browser) == everything

    lighthouse = [p for p in ALL if "lighthouse" in p.lower()]
    search_for(browser, "LightHouse")
    assert len(visible_cards(browser)) == len(lighthouse) == 3
    search_for(browser, "lighthouse  glass")  # every word must appear
    assert visible_cards(browser) == ["failed"]
    search_for(browser, "war & peace")
    assert visible_cards(browser) == ["done"]
    search_for(browser, "lighthouse")
    click_state(browser, "failed")  # filters combine
    assert visible_cards(browser) == ["done", "moderated"]
    click_state(browser, "failed")

    search_for(browser, "no such prompt")
    assert visible_cards(browser) == []
    assert browser.find_element(By.ID, "empty").is_displayed()
    search_for(browser, "")
    assert visible_cards(browser) == everything
    assert not browser.find_element(By.ID, "empty").is_displayed()


@pytest.mark.timeout(60)
def test_gallery_in_another_folder_links_back_to_the_images(built: Built) -> None:
    result = run_cli("gallery", "accept", "-o", "pages/accept", cwd=built.folder, timeout=60)
    assert result.returncode == 0, result.stderr
    page = built.folder / "pages" / "accept" / "gallery.html"
    html = page.read_text(encoding="utf-8")
    hrefs = [unescape(h) for h in re.findall(r'<a class="frame" href="([^"]*)"', html)]
    assert hrefs and all(h.startswith("../../out/") for h in hrefs), hrefs
    done = [r for r in rows(built.db) if r["state"] == "done"]
    for href, row in zip(hrefs, done, strict=True):
        target = (page.parent / unquote(href)).resolve()
        assert str(target) == json.loads(row["files"])[0]["path"] and target.is_file()
    unknown = run_cli("gallery", "nope", cwd=built.folder)
    assert unknown.returncode == 2 and "no campaign named 'nope'" in unknown.stderr
