"""The runnable examples in the meters' docstrings stay true."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = [
    "hpsearch_budget.meters",
    "hpsearch_budget.meters.base",
    "hpsearch_budget.meters.nvml",
    "hpsearch_budget.meters.rapl",
    "hpsearch_budget.meters.estimate",
    "hpsearch_budget.meters.replay",
    "hpsearch_budget.meters._composite",
    "hpsearch_budget.meters._measure",
    "hpsearch_budget.attribution",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
