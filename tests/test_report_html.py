"""The leaderboard page: self-contained, escaped, and working in headless Chromium from file://."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from bench.report import build_report
from test_report import write_method  # the synthetic-results fixture writer (tmp dirs only)

HOSTILE = '<script>window.pwned=1</script><img src=x onerror="window.pwned=2">'  # a method name from results
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--window-size=1400,1000"]
N_ROWS = 2 * 3 * 4  # methods x layers x dims, one task, one precision


@pytest.fixture(scope="module")
def page(tmp_path_factory) -> Path:
    results, out = tmp_path_factory.mktemp("results"), tmp_path_factory.mktemp("report")
    for method in ("full", HOSTILE):
        write_method(results, method, tasks=("stsb",), precisions=("fp32",))
    build_report(results, out)
    return out / "index.html"


def test_page_is_self_contained_and_escapes_names_from_results(page):
    html = page.read_text()
    assert HOSTILE not in html
    assert len(re.findall(r"<script", html)) == 2 + 1  # two JSON data blocks and the page's own script
    assert "&lt;script&gt;window.pwned=1&lt;/script&gt;" in html  # autoescaped in the server-side tables
    assert "\\u003c/script\\u003e" in html  # and in the embedded JSON
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", html)  # nothing fetched from the network
    assert html.count("data:image/png;base64,") >= 2


def _column(driver, index: int) -> list[str]:
    from selenium.webdriver.common.by import By
    return [td.text for td in driver.find_elements(By.CSS_SELECTOR, f"#leaderboard tbody td:nth-child({index + 1})")]


def test_leaderboard_in_headless_chromium(page, tmp_path):
    if not CHROMIUM or not Path(CHROMEDRIVER).exists():
        pytest.skip("chromium and chromium-driver are not installed (apt-get install -y chromium chromium-driver)")
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in CHROMIUM_FLAGS + [f"--user-data-dir={tmp_path / 'profile'}"]:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        driver.get(page.as_uri())
        assert driver.title == "elastic-bench leaderboard"
        assert len(_column(driver, 0)) == N_ROWS
        assert driver.save_screenshot(str(tmp_path / "leaderboard.png"))
        assert (tmp_path / "leaderboard.png").read_bytes().startswith(b"\x89PNG")

        scores = [float(s) for s in _column(driver, 5)]
        assert scores == sorted(scores, reverse=True)  # best first by default
        driver.find_element(By.XPATH, "//table[@id='leaderboard']//th[text()='dim']").click()
        dims = [int(d) for d in _column(driver, 2)]
        assert dims == sorted(dims) and dims != [int(d) for d in sorted(_column(driver, 2))]  # numeric, not text
        driver.find_element(By.XPATH, "//table[@id='leaderboard']//th[text()='dim']").click()
        assert [int(d) for d in _column(driver, 2)] == sorted(dims, reverse=True)

        assert driver.execute_script("return window.pwned") is None  # the hostile name ran nothing
        assert HOSTILE in _column(driver, 0)  # and shows as text
        assert HOSTILE in [td.text for td in driver.find_elements(By.CSS_SELECTOR, "table.paper td")]
        Select(driver.find_element(By.ID, "f-method")).select_by_visible_text(HOSTILE)
        assert set(_column(driver, 0)) == {HOSTILE} and len(_column(driver, 0)) == N_ROWS // 2
        driver.find_element(By.ID, "search").send_keys("128")
        assert set(_column(driver, 2)) == {"128"}
    finally:
        driver.quit()
