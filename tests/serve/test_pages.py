"""The gateway's pages in a real headless browser (Debian's chromium, driven by Selenium):
a person compares two answers and picks one, and the dashboard shows the round. Model
text must stay text: the fake endpoint echoes the question, markup included."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as seen
from selenium.webdriver.support.ui import Select, WebDriverWait

import multisample
from tests.engine.fake_openai import FakeOpenAIServer, server  # noqa: F401 (a fixture)
from tests.serve.helpers import serve_config

QUESTION = "Is <b>this</b> bold? <img src=x onerror=alert(1)>"
PATIENCE_S = 600
"""How long a page may take to show what the test waits for, at the most (a bound on a
hung browser, not a pause: every wait ends as soon as its condition holds)."""


CHROMIUM_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-dev-shm-usage",
    "--disable-gpu",
    # No calls home: on a machine without a network they fail, many at a time, at start.
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--no-first-run",
)


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[webdriver.Chrome]:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    assert chromium and driver, "the page tests need chromium and chromedriver: make browser"
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in CHROMIUM_FLAGS:
        options.add_argument(argument)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium')}")
    chrome = webdriver.Chrome(options=options, service=Service(driver))
    yield chrome
    chrome.quit()


async def in_browser(function: Callable[[], Any]) -> Any:
    """Run blocking browser steps off the loop that serves the pages."""
    return await asyncio.to_thread(function)


async def test_a_person_compares_two_answers_and_the_dashboard_counts_the_round(
    browser: webdriver.Chrome,
    server: FakeOpenAIServer,  # noqa: F811
    tmp_path: Path,
) -> None:
    async with multisample.serving(serve_config(server, str(tmp_path)), name="pages") as url:
        wait = WebDriverWait(browser, PATIENCE_S)

        def ask() -> tuple[str, str, int]:
            browser.get(f"{url}/compare")
            wait.until(
                lambda b: (
                    "duel"
                    in [
                        o.get_attribute("value")
                        for o in Select(b.find_element(By.ID, "model")).options
                    ]
                )
            )
            Select(browser.find_element(By.ID, "model")).select_by_value("duel")
            browser.find_element(By.ID, "prompt").send_keys(QUESTION)
            browser.find_element(By.ID, "ask").click()
            wait.until(seen.visibility_of_element_located((By.ID, "answers")))
            first = browser.find_element(By.ID, "answer0")
            second = browser.find_element(By.ID, "answer1")
            markup = len(first.find_elements(By.TAG_NAME, "b")) + len(
                browser.find_elements(By.CSS_SELECTOR, "#answers img")
            )
            return first.text, second.text, markup

        first, second, markup = await in_browser(ask)
        assert QUESTION in first and QUESTION in second and first != second
        assert markup == 0  # shown as text, never as HTML

        def prefer() -> str:
            browser.find_element(By.ID, "prefer1").click()
            wait.until(seen.text_to_be_present_in_element((By.ID, "status"), "Recorded"))
            return browser.find_element(By.ID, "status").text

        assert "answer 2" in await in_browser(prefer)

        def dashboard() -> str:
            browser.get(f"{url}/dashboard")
            wait.until(seen.presence_of_element_located((By.ID, "route-duel")))
            return browser.find_element(By.ID, "route-duel").text

        shown = await in_browser(dashboard)
        assert "Rounds: 1." in shown and "Win rate" in shown
