"""The operator's pages and the API docs in a real browser (Debian's chromium, driven by selenium).

One demo service (``python -m examples.demo --quick --serve``: real traffic, an A/B test that
promotes v2.2.0, a drift alert) and one browser session for every page. Each page must load
with no console error, show its charts, and leave a screenshot in the artifacts directory
(``$MLOPS_OTEL_ARTIFACTS`` or ``.artifacts/``). The browser runs with background networking
off: every asset must come from the service itself.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .services import require_binary

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parent.parent
READY = re.compile(r"The service keeps running: open (http://127\.0\.0\.1:\d+)/mlops/ui")
CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage", "--hide-scrollbars", "--window-size=1280,1200",
)


def artifacts_dir() -> Path:
    path = Path(os.environ.get("MLOPS_OTEL_ARTIFACTS") or ROOT / ".artifacts") / "ui"
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="module")
def demo_url() -> Iterator[str]:
    """The quick demo, left serving: the example service with the demo's traffic and decisions."""
    env = {**os.environ, "COLUMNS": "160", "TERM": "dumb", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "examples.demo", "--quick", "--serve"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    found: list[str] = []

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            match = READY.search(line)
            if match and not found:
                found.append(match.group(1))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    deadline = time.monotonic() + 300
    try:
        while not found:
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail("the demo did not start serving:\n" + "".join(lines[-60:]))
            time.sleep(0.2)
        yield found[0]
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    chromium = require_binary("chromium")
    driver_path = require_binary("chromedriver")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    with tempfile.TemporaryDirectory(prefix="mlops-chromium-") as profile:
        options = webdriver.ChromeOptions()
        options.binary_location = chromium
        for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}"):
            options.add_argument(flag)
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        driver = webdriver.Chrome(options=options, service=Service(executable_path=driver_path))
        driver.set_page_load_timeout(60)
        try:
            yield driver
        finally:
            driver.quit()


def console_errors(driver: Any) -> list[dict[str, Any]]:
    """The browser console's errors since the last call (reading the log empties it)."""
    return [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


def screenshot(driver: Any, name: str) -> Path:
    """A full-page screenshot (the window grown to the page's height) in the artifacts directory."""
    height = int(driver.execute_script("return document.documentElement.scrollHeight"))
    driver.set_window_size(1280, min(max(height, 800), 6000))
    path = artifacts_dir() / f"{name}.png"
    assert driver.save_screenshot(str(path))
    driver.set_window_size(1280, 1200)
    return path


def chart_sizes(driver: Any) -> list[tuple[str, float, float]]:
    """Each chart figure's name and the rendered size of its SVG."""
    return [(str(name), float(w), float(h)) for name, w, h in driver.execute_script(
        "return Array.from(document.querySelectorAll('figure.chart')).map(f => {"
        " const s = f.querySelector('svg'); const r = s ? s.getBoundingClientRect() : {width: 0, height: 0};"
        " return [f.dataset.chart, r.width, r.height]; })")]


PAGES = [
    # (screenshot name, path, charts expected, text that must be on the page)
    ("overview", "/mlops/ui", set(), ["v2.2.0", "gnn_v2.2_test", "Promote v2.2.0 to champion"]),
    ("experiment", "/mlops/ui/experiments/gnn_v2.2_test",
     {"evidence-error_rate", "evidence-latency_ms", "evidence-confidence", "split"},
     ["Promote v2.2.0 to champion", "Decision history", "promote"]),
    ("drift", "/mlops/ui/drift/gnn/v2.2.0", {"distribution-anomaly_score", "distribution-confidence", "score"},
     ["alert", "roll back to the previous champion v2.1.0"]),
    ("registry", "/mlops/ui/registry/gnn", set(), ["Promote v2.2.0 to champion", "first version registered"]),
]


def test_operator_pages_and_api_docs_render_offline(demo_url: str, browser: Any) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    console_errors(browser)
    for name, path, charts, texts in PAGES:
        browser.get(demo_url + path)
        body = browser.find_element(By.TAG_NAME, "body").text
        for text in texts:
            assert text in body, f"{name}: {text!r} not on the page"
        sizes = chart_sizes(browser)
        assert {c for c, _, _ in sizes} == charts, f"{name}: charts {sizes}"
        assert all(w > 200 and h > 100 for _, w, h in sizes), f"{name}: a chart did not render: {sizes}"
        assert browser.find_elements(By.TAG_NAME, "script") == [], f"{name}: the pages need no JavaScript"
        screenshot(browser, name)
        assert console_errors(browser) == [], name

    # The links between the pages work: overview -> experiment -> registry.
    browser.get(demo_url + "/mlops/ui")
    browser.find_element(By.LINK_TEXT, "gnn_v2.2_test").click()
    assert browser.current_url.endswith("/mlops/ui/experiments/gnn_v2.2_test")
    browser.find_element(By.PARTIAL_LINK_TEXT, "role history").click()
    assert browser.current_url.endswith("/mlops/ui/registry/gnn")
    assert console_errors(browser) == []

    # A bad path parameter answers the API's status with a readable page.
    browser.get(demo_url + "/mlops/ui/experiments/no_such_test")
    assert "no_such_test" in browser.find_element(By.TAG_NAME, "body").text
    console_errors(browser)  # the 404 itself is logged by the browser

    # /docs and /redoc: Swagger UI and ReDoc from the service, with no network.
    wait = WebDriverWait(browser, 60)
    browser.get(demo_url + "/docs")
    wait.until(expected_conditions.presence_of_element_located((By.CSS_SELECTOR, ".swagger-ui .opblock")))
    assert "/mlops/ab/tests" in browser.find_element(By.TAG_NAME, "body").text
    screenshot(browser, "docs")
    assert console_errors(browser) == []
    browser.get(demo_url + "/redoc")
    wait.until(expected_conditions.presence_of_element_located((By.CSS_SELECTOR, "[data-section-id]")))
    assert "Equipment diagnosis service" in browser.find_element(By.TAG_NAME, "body").text
    screenshot(browser, "redoc")
    assert console_errors(browser) == []
