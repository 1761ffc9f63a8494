"""Budgets, accounting, reservations and forecasts."""

from hpsearch_budget.budget._accounting import Accounting
from hpsearch_budget.budget._budget import Budget
from hpsearch_budget.budget._cost import Cost
from hpsearch_budget.budget._cost_model import TrialCostModel
from hpsearch_budget.budget._sweep_forecast import (
    SweepForecast,
    cost_shifted,
    forecast_sweep,
    forecast_sweep_from_entries,
)
from hpsearch_budget.budget._trial_forecast import TrialForecaster, forecast_remaining

__all__ = [
    "Accounting",
    "Budget",
    "Cost",
    "SweepForecast",
    "TrialCostModel",
    "TrialForecaster",
    "cost_shifted",
    "forecast_remaining",
    "forecast_sweep",
    "forecast_sweep_from_entries",
]
