"""Size and load time of a report's leaderboard page (index.html) in headless Chromium.

    .venv/bin/python benchmarks/leaderboard_load.py reports --loads 5

Opens <reports>/index.html from file:// `--loads` times in one browser (about:blank between loads, so each is a
fresh navigation; plotly.min.js comes from the disk cache after the first) and prints the page's size and the
median time from navigation start to every figure drawn: the `leaderboard-drawn` mark the page's script sets
once Plotly has drawn the heatmap and the Pareto plot. Needs chromium and chromedriver (Debian: apt-get install
chromium chromium-driver) and selenium. Timings depend on the machine and its load: compare pages measured in one
run, not numbers across machines. Goal (issue 25): the default suite's page is at most 2 MB.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.support.ui import WebDriverWait

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--window-size=1400,1000"]
DRAWN = "const m = performance.getEntriesByName('leaderboard-drawn'); return m.length ? m[0].startTime : null"


def load_times(page: Path, loads: int) -> list[float]:
    """Milliseconds from navigation start to the figures drawn, per load; raises if the page logs an error."""
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or shutil.which("chromium-browser")
    with tempfile.TemporaryDirectory() as profile:
        for flag in [*FLAGS, f"--user-data-dir={profile}"]:
            options.add_argument(flag)
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        driver = webdriver.Chrome(service=Service(shutil.which("chromedriver") or "/usr/bin/chromedriver"),
                                  options=options)
        try:
            times = []
            for _ in range(loads):
                driver.get("about:blank")
                driver.get(page.resolve().as_uri())
                times.append(WebDriverWait(driver, 120).until(lambda d: d.execute_script(DRAWN)))
            errors = [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        finally:
            driver.quit()
    if errors:
        raise SystemExit(f"error: the page logged errors: {errors[:3]}")
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("reports", type=Path, nargs="?", default=Path("reports"), help="a `bench report` folder")
    parser.add_argument("--loads", type=int, default=5)
    args = parser.parse_args()
    page = args.reports / "index.html"
    if not page.is_file():
        raise SystemExit(f"error: no {page}; write one with `bench report --out {args.reports}`")
    times = load_times(page, args.loads)
    print(f"{page}: {page.stat().st_size:,} bytes (plotly.min.js beside it: "
          f"{(args.reports / 'plotly.min.js').stat().st_size:,} bytes)")
    print(f"load, navigation start to figures drawn: median {statistics.median(times):.0f} ms over {len(times)} "
          f"loads ({', '.join(f'{t:.0f}' for t in times)} ms)")


if __name__ == "__main__":
    main()
