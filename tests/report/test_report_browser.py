"""The HTML report in a real headless Chromium: no console errors, figures render, screenshot."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest

from hpsearch_budget.report import Report, build_report, load_sweep, render, write_atomic

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


def _open(driver, rep: Report, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The report's HTML, loaded in the browser, with no console error."""
    driver.get(write_atomic(tmp_path / "report.html", render(rep, "html")).as_uri())
    assert driver.title.startswith("hpaudit report")
    assert [e for e in driver.get_log("browser") if e["level"] == "SEVERE"] == []


def test_html_report_renders_in_chromium(
    driver,
    study_db: tuple[str, str],  # type: ignore[no-untyped-def]
    tmp_path: Path,
) -> None:
    from selenium.webdriver.common.by import By

    storage, ledger = study_db
    _open(driver, build_report(load_sweep(storage, ledger=ledger)), tmp_path)
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


def test_lab_policy_rows_render_in_the_checklist(
    driver,
    study_db: tuple[str, str],  # type: ignore[no-untyped-def]
    tmp_path: Path,
) -> None:
    from selenium.webdriver.common.by import By

    storage, ledger = study_db
    policy = tmp_path / "hpaudit.toml"
    policy.write_text("[reporting]\nseeds = 5\nsensitivity = true\n")
    _open(driver, build_report(load_sweep(storage, ledger=ledger), policy=policy), tmp_path)
    rows = {
        r.find_elements(By.TAG_NAME, "td")[0].text: r
        for r in driver.find_elements(By.CSS_SELECTOR, "tr.ok, tr.missing")
    }
    seeds, sens = rows["Lab policy: seeds"], rows["Lab policy: sensitivity"]
    assert seeds.is_displayed() and f"{policy} requires 5" in seeds.text
    status = seeds.find_elements(By.TAG_NAME, "td")[1]
    assert (
        status.text == "missing" and status.value_of_css_property("color") == "rgba(176, 0, 32, 1)"
    )
    assert sens.find_elements(By.TAG_NAME, "td")[1].text == "ok"
