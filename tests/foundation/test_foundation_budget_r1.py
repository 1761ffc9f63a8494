"""Review R1 regression: a bad Budget's message does not repeat "budget:"."""

from __future__ import annotations

import pytest

from hpsearch_budget import Budget
from hpsearch_budget.errors import HpauditInputError


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"co2e_kg": -1.0}, "invalid budget: co2e_kg must be a positive number"),
        ({}, "invalid budget: give at least one limit"),
        ({"kwh": 1.0}, "invalid budget: kwh: "),
    ],
)
def test_budget_error_message(kwargs: dict[str, float], expected: str) -> None:
    with pytest.raises(HpauditInputError) as exc:
        Budget(**kwargs)
    assert str(exc.value).startswith(expected)
    assert "budget: budget" not in str(exc.value)
