"""The runnable examples in the analysis and report docstrings stay true."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = [
    "hpsearch_budget.analysis._checklist",
    "hpsearch_budget.analysis._evp",
    "hpsearch_budget.analysis._rnd",
    "hpsearch_budget.analysis._sensitivity",
    "hpsearch_budget.analysis._sweep",
    "hpsearch_budget.analysis._variance",
    "hpsearch_budget.report",
    "hpsearch_budget.report._forecast",
    "hpsearch_budget.report._write",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
