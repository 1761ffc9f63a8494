"""The HTML report in a real headless Chromium: no console errors, figures render, screenshot."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest

from hpsearch_budget.report import build_report, load_sweep, render, write_atomic

pytestmark = pytest.mark.browser

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"


@pytest.fixture
def driver():  # type: ignore[no-untyped-def]
    webdriver = pytest.importorskip("selenium.webdriver")
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        pytest.skip(
            "chromium + chromedriver not installed (apt-get install chromium chromium-driver)"
        )
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="hpaudit-chromium-")
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={profile}",
        "--window-size=1280,2400",
    ):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    drv = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    try:
        yield drv
    finally:
        drv.quit()
        shutil.rmtree(profile, ignore_errors=True)


def test_html_report_renders_in_chromium(
    driver,
    study_db: tuple[str, str],  # type: ignore[no-untyped-def]
    tmp_path: Path,
) -> None:
    from selenium.webdriver.common.by import By

    storage, ledger = study_db
    page = write_atomic(
        tmp_path / "report.html", render(build_report(load_sweep(storage, ledger=ledger)), "html")
    )
    driver.get(page.as_uri())
    assert driver.title.startswith("hpaudit report")
    severe = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    assert severe == []
    ids = {
        "fig-history",
        "fig-evp",
        "fig-importance-objective",
        "fig-importance-energy",
        "fig-energy-by-fate",
    }
    for fig_id in ids:
        svg = driver.find_element(By.ID, fig_id)
        assert svg.size["width"] > 100 and svg.size["height"] > 50, fig_id
        marks = svg.find_elements(By.CSS_SELECTOR, ".series")
        assert marks and any(m.size["width"] > 0 and m.size["height"] > 0 for m in marks), fig_id
    shot = tmp_path / "report.png"
    assert driver.save_screenshot(str(shot))
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000
