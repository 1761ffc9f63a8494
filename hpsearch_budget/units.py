"""Unit conversions, in one place.

Inside the library energy is in joules, carbon in grams CO2e, money in USD and time in
seconds; reports convert at the edge with these helpers. Field names carry their unit
(``energy_j``, ``co2e_g``, ``wall_s``, ``usd``).
"""

from __future__ import annotations

J_PER_KWH = 3.6e6
J_PER_WH = 3.6e3
G_PER_KG = 1000.0
# Avoirdupois pound, exact by definition (International yard and pound agreement, 1959).
KG_PER_LB = 0.45359237
S_PER_HOUR = 3600.0


def j_to_kwh(energy_j: float) -> float:
    return energy_j / J_PER_KWH


def kwh_to_j(energy_kwh: float) -> float:
    return energy_kwh * J_PER_KWH


def g_to_kg(mass_g: float) -> float:
    return mass_g / G_PER_KG


def kg_to_g(mass_kg: float) -> float:
    return mass_kg * G_PER_KG


def kg_to_lbs(mass_kg: float) -> float:
    return mass_kg / KG_PER_LB


def lbs_to_kg(mass_lbs: float) -> float:
    return mass_lbs * KG_PER_LB


def g_to_lbs(mass_g: float) -> float:
    return kg_to_lbs(g_to_kg(mass_g))


def lbs_per_kwh_to_g_per_kwh(lbs_per_kwh: float) -> float:
    return kg_to_g(lbs_to_kg(lbs_per_kwh))


def s_to_hours(seconds: float) -> float:
    return seconds / S_PER_HOUR


def hours_to_s(hours: float) -> float:
    return hours * S_PER_HOUR


def gpu_hours(device_s: float, share: float = 1.0) -> float:
    """GPU-hours held: device-seconds times the share of the device, over 3600."""
    return device_s * share / S_PER_HOUR


def watts_hours_to_kwh(power_w: float, hours: float) -> float:
    return power_w * hours / 1000.0
