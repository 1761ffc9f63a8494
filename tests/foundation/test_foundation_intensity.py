"""Grid intensity: the shipped region table, time series files, callables, and the resolver."""

from __future__ import annotations

import csv
from datetime import UTC, datetime, timedelta, timezone
from importlib import resources
from pathlib import Path

import pytest

from hpsearch_budget.carbon import (
    CallableIntensity,
    CarbonModel,
    Intensity,
    StaticIntensity,
    TimeSeriesIntensity,
    default_carbon_model,
    default_intensity,
    region_intensity,
    regions,
    resolve_intensity,
)
from hpsearch_budget.carbon.prices import electricity_price
from hpsearch_budget.errors import HpauditInputError, UnknownRegionError

T0 = datetime(2025, 3, 1, tzinfo=UTC)


def _table_rows() -> list[dict[str, str]]:
    text = resources.files("hpsearch_budget.carbon").joinpath("data/grid_intensity.csv")
    return list(csv.DictReader(text.read_text("utf-8").splitlines()))


# --- region table -------------------------------------------------------------------------


def test_every_row_has_value_source_and_year() -> None:
    rows = _table_rows()
    assert len(rows) > 250
    for row in rows:
        assert float(row["g_per_kwh"]) >= 0, row
        assert row["source"].strip(), row
        assert 2000 <= int(row["year"]) <= 2030, row  # Western Sahara: 2009
    codes = [r["code"].lower() for r in rows] + [r["alias"].lower() for r in rows if r["alias"]]
    assert len(codes) == len(set(codes)), "a code must name one row"


@pytest.mark.parametrize("code", ["FR", "fr", "FRA", " Fra "])
def test_country_by_alpha2_or_alpha3(code: str) -> None:
    fr = region_intensity(code)
    assert fr == region_intensity("FRA")
    assert fr.g_per_kwh < 100  # nuclear and hydro
    assert "Our World in Data" in fr.source and fr.year is not None


@pytest.mark.parametrize(
    ("code", "provider"),
    [("us-east-1", "aws"), ("europe-west4", "gcp"), ("eastus", "azure"), ("eu-north-1", "aws")],
)
def test_main_cloud_regions_are_present(code: str, provider: str) -> None:
    row = next(r for r in regions() if r.code == code)
    assert row.provider == provider and row.kind == "cloud"
    assert region_intensity(f"{provider}:{code}") == row.intensity
    assert region_intensity(code.upper()) == row.intensity


def test_cloud_region_figures_follow_their_location() -> None:
    """AWS / Azure regions take their location's figure: both Virginia regions agree, a
    Swedish region is far cleaner than Poland, and eGRID's lbs/MWh became g/kWh."""
    assert region_intensity("us-east-1") == region_intensity("eastus")
    assert region_intensity("eu-north-1").g_per_kwh < 60 < region_intensity("PL").g_per_kwh
    assert "eGRID" in region_intensity("us-east-1").source


def test_unknown_region_says_how_to_list_codes() -> None:
    with pytest.raises(UnknownRegionError) as err:
        region_intensity("us-east1x")
    message = str(err.value)
    assert "hpaudit regions" in message and "\n" not in message
    assert "us-east1" in message  # the close match is suggested


@pytest.mark.parametrize("number", [400, -5, float("nan")])
def test_a_number_given_as_the_region_says_where_it_goes(number: float) -> None:
    # resolve_intensity's first argument is the region: a number there is a g/kWh figure
    with pytest.raises(UnknownRegionError) as err:
        resolve_intensity(number)  # type: ignore[arg-type]
    message = str(err.value)
    assert "\n" not in message and f"pass g_per_kwh={number!r}" in message
    assert message.startswith("region must be a code such as 'FR'")


def test_default_is_the_world_average_with_its_source() -> None:
    world = default_intensity()
    assert world.g_per_kwh == 475.0
    assert "IEA" in world.source and world.year == 2018


# --- time series --------------------------------------------------------------------------


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "grid.csv"
    path.write_text(text, encoding="utf-8")
    return path


def test_series_is_stepwise_and_looked_up_at_the_time_given(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "timestamp,g_per_kwh\n"
        "2025-03-01T00:00:00Z,300\n2025-03-01T01:00:00Z,200\n2025-03-01T02:00:00Z,100\n",
    )
    series = TimeSeriesIntensity.from_csv(path)
    assert series.at(T0).g_per_kwh == 300
    assert series.at(T0 + timedelta(minutes=59, seconds=59)).g_per_kwh == 300
    assert series.at(T0 + timedelta(hours=1)).g_per_kwh == 200
    assert series.at(T0 + timedelta(hours=2, minutes=59)).g_per_kwh == 100  # last step lasts 1 h
    assert series.at(T0).source == "time series grid.csv" and series.at(T0).year == 2025
    # a zone-aware time is converted: 02:30 at UTC+2 is 00:30 UTC
    plus2 = timezone(timedelta(hours=2))
    assert series.at(datetime(2025, 3, 1, 2, 30, tzinfo=plus2)).g_per_kwh == 300


def test_series_naive_and_offset_timestamps_are_utc(tmp_path: Path) -> None:
    path = _write(tmp_path, "2025-03-01 00:00,10\n2025-03-01T02:00:00+01:00,20\n")
    series = TimeSeriesIntensity.from_csv(path)  # no header; second row is 01:00 UTC
    assert series.at(T0 + timedelta(minutes=30)).g_per_kwh == 10
    assert series.at(T0 + timedelta(hours=1, minutes=1)).g_per_kwh == 20


def test_series_outside_its_span_is_an_error(tmp_path: Path) -> None:
    series = TimeSeriesIntensity.from_csv(
        _write(tmp_path, "2025-03-01T00:00Z,1\n2025-03-01T01:00Z,2\n")
    )
    for when in (T0 - timedelta(seconds=1), T0 + timedelta(hours=2)):
        with pytest.raises(HpauditInputError, match="covers 2025-03-01T00:00:00"):
            series.at(when)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("timestamp,g_per_kwh\n", "no data rows"),
        ("", "no data rows"),
        ("2025-03-01T00:00Z,abc\n", "line 1: 'abc' is not a number"),
        ("2025-03-01T00:00Z,1\nyesterday,2\n", "line 2: 'yesterday' is not an ISO 8601"),
        ("2025-03-01T00:00Z,1\n2025-03-01T01:00Z\n", "line 2: expected 2 columns"),
        ("2025-03-01T00:00Z,-4\n", "line 1: intensity must be a number >= 0"),
        ("2025-03-01T00:00Z,nan\n", "line 1: intensity must be a number >= 0"),
        ("2025-03-01T01:00Z,1\n2025-03-01T00:00Z,2\n", "must increase strictly"),
        ("2025-03-01T00:00Z,1\n2025-03-01T00:00Z,2\n", "must increase strictly"),
    ],
)
def test_bad_series_files_get_one_line_errors(tmp_path: Path, text: str, match: str) -> None:
    with pytest.raises(HpauditInputError, match=match) as err:
        TimeSeriesIntensity.from_csv(_write(tmp_path, text))
    assert "\n" not in str(err.value)


def test_series_from_python_pairs_treats_naive_times_as_utc() -> None:
    naive = (datetime(2025, 3, 1), datetime(2025, 3, 1, 1))
    series = TimeSeriesIntensity(naive, (5, 6), source="forecast")
    assert series.at(T0 + timedelta(minutes=90)) == Intensity(6.0, "forecast", 2025)
    with pytest.raises(HpauditInputError, match="values must be numbers >= 0"):
        TimeSeriesIntensity(naive, (5, -6))


def test_missing_series_file(tmp_path: Path) -> None:
    with pytest.raises(HpauditInputError, match="not found"):
        TimeSeriesIntensity.from_csv(tmp_path / "nope.csv")


def test_carbon_model_charges_energy_at_the_intensity_of_its_time(tmp_path: Path) -> None:
    series = TimeSeriesIntensity.from_csv(
        _write(tmp_path, "2025-03-01T00:00Z,100\n2025-03-01T01:00Z,400\n")
    )
    model = CarbonModel(series, pue=1.0)
    early = model.footprint(3.6e6, T0 + timedelta(minutes=10))
    late = model.footprint(3.6e6, T0 + timedelta(minutes=70))
    assert (early.co2e_g, late.co2e_g) == (100.0, 400.0)
    assert late.intensity_source == "time series grid.csv (2025)"


# --- callable, static, resolver -----------------------------------------------------------


def test_callable_intensity_accepts_numbers_or_intensities() -> None:
    by_hour = CallableIntensity(lambda when: 50.0 + when.hour, source="my forecast")
    got = by_hour.at(T0 + timedelta(hours=3))
    assert (got.g_per_kwh, got.source, got.year) == (53.0, "my forecast", 2025)
    full = CallableIntensity(lambda when: Intensity(7.0, "api", 2024))
    assert full.at(T0) == Intensity(7.0, "api", 2024)
    with pytest.raises(HpauditInputError, match="must return g/kWh"):
        CallableIntensity(lambda when: "high").at(T0)  # type: ignore[arg-type, return-value]
    with pytest.raises(HpauditInputError, match=">= 0"):
        CallableIntensity(lambda when: -1.0).at(T0)


def test_infinite_intensity_pue_or_price_is_refused_not_charged() -> None:
    # inf passed the ">= 0" / ">= 1" checks and charged infinite carbon (and NaN money).
    inf = float("inf")
    with pytest.raises(HpauditInputError, match="finite"):
        CallableIntensity(lambda when: inf).at(T0)
    with pytest.raises(HpauditInputError, match="finite"):
        Intensity(inf, "api")
    with pytest.raises(HpauditInputError, match="PUE must be a finite"):
        CarbonModel(StaticIntensity.of(400.0), pue=inf)
    with pytest.raises(HpauditInputError, match="electricity price must be a finite"):
        CarbonModel(StaticIntensity.of(400.0), usd_per_kwh=inf)


def test_resolver_each_option(tmp_path: Path) -> None:
    assert resolve_intensity().at(T0) == default_intensity()
    assert resolve_intensity(region="SE").at(T0) == region_intensity("SWE")
    assert resolve_intensity(g_per_kwh=123).at(T0) == Intensity(123.0, "user-supplied")
    lbs = resolve_intensity(lbs_per_kwh=1.0).at(T0)
    assert lbs.g_per_kwh == pytest.approx(453.59237) and "1 lbs/kWh" in lbs.source
    path = _write(tmp_path, "2025-03-01T00:00Z,42\n2025-03-01T01:00Z,43\n")
    assert resolve_intensity(series=path).at(T0).g_per_kwh == 42
    assert isinstance(resolve_intensity(region="FR"), StaticIntensity)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"region": "FR", "g_per_kwh": 1.0},
        {"g_per_kwh": 1.0, "lbs_per_kwh": 1.0},
        {"region": "FR", "series": "x.csv"},
        {"g_per_kwh": -1.0},
        {"lbs_per_kwh": float("nan")},
        {"g_per_kwh": float("inf")},
        {"region": "Atlantis"},
    ],
)
def test_resolver_rejects_bad_options(kwargs: dict) -> None:
    with pytest.raises(HpauditInputError):
        resolve_intensity(**kwargs)


def test_default_carbon_model() -> None:
    model = default_carbon_model()
    f = model.footprint(3.6e6, T0)  # 1 kWh at the device
    assert f.pue == 1.58 and f.energy_kwh == pytest.approx(1.58)
    assert f.co2e_g == pytest.approx(1.58 * 475.0)
    assert f.usd == pytest.approx(1.58 * electricity_price().usd_per_kwh)  # the shipped US price
    assert "IEA" in f.intensity_source


# --- a provider that fails while a sweep runs ---------------------------------------------------


def test_holding_keeps_the_last_good_value_labelled_once_the_provider_fails(tmp_path: Path) -> None:
    from hpsearch_budget.carbon import HoldingIntensity

    series = TimeSeriesIntensity.from_csv(
        _write(tmp_path, "2025-03-01T00:00Z,300\n2025-03-01T01:00Z,200\n")
    )
    held = HoldingIntensity(series)
    assert held.at(T0).g_per_kwh == 300 and held.at(T0).label == "time series grid.csv (2025)"
    inside = held.at(T0 + timedelta(minutes=90))
    after = held.at(T0 + timedelta(hours=3))  # the file ended at 02:00
    assert (inside.g_per_kwh, after.g_per_kwh) == (200, 200)
    assert after.label == "time series grid.csv (2025), held: provider failed"


def test_holding_raises_when_the_provider_never_answered(tmp_path: Path) -> None:
    from hpsearch_budget.carbon import HoldingIntensity

    series = TimeSeriesIntensity.from_csv(_write(tmp_path, "2025-03-01T00:00Z,300\n"))
    with pytest.raises(HpauditInputError, match=r"^time series grid\.csv covers"):
        HoldingIntensity(series).at(T0 + timedelta(days=1))


def test_holding_a_live_source_that_goes_down_and_comes_back() -> None:
    from hpsearch_budget.carbon import HoldingIntensity

    down = {"now": False}

    def live(when: datetime) -> float:
        if down["now"]:
            raise ConnectionError("grid API unreachable")
        return 100.0 + when.hour

    held = HoldingIntensity(CallableIntensity(live, "grid API"))
    assert held.at(T0).g_per_kwh == 100.0
    down["now"] = True
    assert held.at(T0 + timedelta(hours=5)).g_per_kwh == 100.0  # the last good value
    down["now"] = False
    back = held.at(T0 + timedelta(hours=5))
    assert (back.g_per_kwh, back.label) == (105.0, "grid API (2025)")
