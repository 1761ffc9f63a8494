"""``hpaudit estimate`` and ``hpaudit regions``: output, and every bad input -> exit 2, one line."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

GOOD = ["estimate", "--power-w", "300", "--hours", "2"]

BAD = {
    "negative hours": [*GOOD[:3], "--hours", "-1"],
    "non-numeric hours": [*GOOD[:3], "--hours", "two"],
    "infinite hours": [*GOOD[:3], "--hours", "inf"],
    "negative power": ["estimate", "--power-w", "-300", "--hours", "2"],
    "missing power": ["estimate", "--hours", "2"],
    "missing hours": ["estimate", "--power-w", "300"],
    "PUE below 1": [*GOOD, "--pue", "0.95"],
    "non-numeric PUE": [*GOOD, "--pue", "high"],
    "unknown region": [*GOOD, "--region", "Atlantis"],
    "unknown accelerator": [*GOOD, "--gpu", "Voodoo2"],
    "zero gpus": [*GOOD, "--gpu", "V100", "--gpus", "0"],
    "fractional gpus": [*GOOD, "--gpu", "V100", "--gpus", "1.5"],
    "gpus without gpu": [*GOOD, "--gpus", "4"],
    "region and g/kWh": [*GOOD, "--region", "FR", "--g-per-kwh", "50"],
    "g/kWh and lbs/kWh": [*GOOD, "--g-per-kwh", "50", "--lbs-per-kwh", "1"],
    "negative intensity": [*GOOD, "--g-per-kwh", "-50"],
    "negative price": [*GOOD, "--usd-per-kwh", "-0.1"],
    "unknown price edition": [*GOOD, "--gpu", "V100", "--prices", "2031"],
    "unknown price edition without --gpu": [*GOOD, "--prices", "2018"],
    "unknown regions kind": ["regions", "--kind", "planet"],
}


@pytest.mark.parametrize("argv", list(BAD.values()), ids=list(BAD))
def test_bad_input_exits_2_with_one_line(argv: list[str], run_cli) -> None:
    res = run_cli(*argv)
    assert res.code == 2
    assert res.out == ""  # nothing half-written
    lines = res.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("hpaudit: error: "), res.err
    assert "Traceback" not in res.err


def test_text_output_is_labelled_as_estimates(run_cli) -> None:
    res = run_cli(*GOOD, "--region", "FR", "--gpu", "H100", "--gpus", "2")
    assert res.code == 0, res.err
    assert "estimate" in res.out.lower() and "not measured" in res.out
    assert "0.948 kWh" in res.out and "H100" in res.out and "[current]" in res.out


def test_json_intensity_options(run_cli) -> None:
    fr = run_cli(*GOOD, "--region", "FR", "--format", "json").json()
    assert "Our World in Data" in fr["intensity_source"]
    assert fr["co2e_kg"] == pytest.approx(fr["energy_kwh"] * fr["intensity_g_per_kwh"] / 1000)
    assert "cloud_usd_low" not in fr  # no accelerator, no cloud cost
    user = run_cli(*GOOD, "--g-per-kwh", "100", "--pue", "1.0", "--format", "json").json()
    assert (user["energy_kwh"], user["co2e_kg"], user["pue"]) == (0.6, 0.06, 1.0)
    assert user["intensity_source"] == "user-supplied"
    lbs = run_cli(*GOOD, "--lbs-per-kwh", "1", "--pue", "1", "--usd-per-kwh", "0.2", "-f", "json")
    data = lbs.json()
    assert data["co2e_lbs"] == pytest.approx(0.6) and data["electricity_usd"] == pytest.approx(0.12)


def test_regions_lists_codes(run_cli) -> None:
    data = run_cli("regions", "--format", "json").json()
    codes = {row["code"] for row in data}
    assert {"FRA", "USA", "us-east-1", "europe-west4", "eastus", "WORLD"} <= codes
    assert all(row["source"] and row["year"] for row in data)
    cloud = run_cli("regions", "--kind", "cloud", "--format", "json").json()
    assert {row["provider"] for row in cloud} == {"aws", "gcp", "azure"}
    text = run_cli("regions", "--kind", "country")
    assert text.code == 0 and "FRA" in text.out


def test_console_script_has_help_and_no_traceback() -> None:
    """The installed entry point, as a user runs it."""
    exe = [sys.executable, "-m", "hpsearch_budget"]
    helped = subprocess.run([*exe, "estimate", "--help"], capture_output=True, text=True)
    assert helped.returncode == 0 and "--power-w" in helped.stdout
    bad = subprocess.run([*exe, *GOOD[:3], "--hours", "-3"], capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "Traceback" not in bad.stderr
    good = subprocess.run([*exe, *GOOD, "-f", "json"], capture_output=True, text=True)
    assert json.loads(good.stdout)["energy_kwh"] == pytest.approx(0.948)
