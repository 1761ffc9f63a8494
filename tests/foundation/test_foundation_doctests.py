"""The runnable examples in the foundation modules' docstrings run and hold."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = [
    "hpsearch_budget.carbon",
    "hpsearch_budget.carbon.intensity",
    "hpsearch_budget.carbon._series",
    "hpsearch_budget.carbon._regions",
    "hpsearch_budget.carbon._resolve",
    "hpsearch_budget.carbon._model",
    "hpsearch_budget.carbon.prices",
    "hpsearch_budget.analysis._paper",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0, f"{name} has no runnable example"
    assert result.failed == 0
