"""Cloud accelerator prices, the electricity price, and unit conversions."""

from __future__ import annotations

import pytest

from hpsearch_budget import units
from hpsearch_budget.carbon import (
    default_electricity_price,
    electricity_price,
    gpu_price,
    known_accelerators,
)
from hpsearch_budget.errors import HpauditInputError, UnknownAcceleratorError

REQUIRED = ["P100", "V100", "A100", "H100", "TPUv2", "TPUv3"]


@pytest.mark.parametrize("name", REQUIRED)
def test_required_accelerators_have_a_sourced_dated_range(name: str) -> None:
    p = gpu_price(name)
    assert 0 < p.spot_low_usd_per_hour <= p.spot_high_usd_per_hour
    assert 0 < p.on_demand_low_usd_per_hour <= p.on_demand_high_usd_per_hour
    assert p.low_usd_per_hour <= p.high_usd_per_hour
    assert p.spot_high_usd_per_hour <= p.on_demand_high_usd_per_hour
    assert p.source and len(p.date) == 7 and p.edition == "current"


@pytest.mark.parametrize(
    ("alias", "name"),
    [("Tesla P100", "P100"), ("nvidia-v100", "V100"), ("TPU v2", "TPUv2"), ("tpu-v3", "TPUv3"),
     ("h100", "H100"), ("A100 80GB", "A100-80GB")],
)  # fmt: skip
def test_accelerator_names_are_normalised(alias: str, name: str) -> None:
    assert gpu_price(alias).accelerator == name


def test_paper_edition_reproduces_per_device_prices() -> None:
    """Table 3's P100x8, 12 h row costs $41-$140: 0.43-1.46 USD per P100-hour."""
    p100 = gpu_price("P100", edition="strubell2019")
    assert [round(x) for x in p100.cost(device_hours=8 * 12)] == [41, 140]
    assert gpu_price("V100", edition="strubell2019").high_usd_per_hour == 2.48


def test_unknown_accelerator_lists_known_ones() -> None:
    with pytest.raises(UnknownAcceleratorError) as err:
        gpu_price("Voodoo2")
    message = str(err.value)
    assert all(name in message for name in REQUIRED) and "\n" not in message
    with pytest.raises(UnknownAcceleratorError, match="strubell2019"):
        gpu_price("H100", edition="strubell2019")  # the paper predates the H100
    with pytest.raises(HpauditInputError, match="edition"):
        gpu_price("P100", edition="2031")
    assert set(REQUIRED) <= set(known_accelerators())


def test_electricity_prices() -> None:
    default = default_electricity_price()
    assert default == electricity_price("US")
    assert 0.05 < default.usd_per_kwh < 0.5 and default.year >= 2023 and "EIA" in default.source
    assert electricity_price("us-2018").year == 2018
    with pytest.raises(HpauditInputError, match="known: us, us-2018"):
        electricity_price("mars")


def test_unit_conversions() -> None:
    assert units.kwh_to_j(1) == 3.6e6 and units.j_to_kwh(3.6e6) == 1
    assert units.lbs_to_kg(1) == 0.45359237
    assert units.kg_to_lbs(units.lbs_to_kg(626155)) == pytest.approx(626155)
    assert units.g_to_lbs(453.59237) == pytest.approx(1.0)
    assert units.lbs_per_kwh_to_g_per_kwh(0.954) == pytest.approx(432.727, abs=1e-3)
    assert units.watts_hours_to_kwh(1000, 2) == 2
    assert units.gpu_hours(7200, share=0.5) == 1.0
    assert units.s_to_hours(units.hours_to_s(3.3)) == pytest.approx(3.3)
