"""Budgets, accounting, reservations and forecasts."""

from hpsearch_budget.budget._budget import Budget
from hpsearch_budget.budget._cost import Cost

__all__ = ["Budget", "Cost"]
