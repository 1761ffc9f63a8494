"""Every runnable example in the package's docstrings runs and holds.

Modules are found by walking the package, so a module whose docstring gains an example is
tested without being listed anywhere."""

from __future__ import annotations

import doctest
import importlib
import pkgutil
from pathlib import Path

import pytest

import hpsearch_budget


def _modules_with_examples() -> list[str]:
    finder = doctest.DocTestFinder()
    found = []
    for info in pkgutil.walk_packages(hpsearch_budget.__path__, "hpsearch_budget."):
        if info.name.endswith("__main__"):
            continue
        module = importlib.import_module(info.name)
        if any(test.examples for test in finder.find(module)):
            found.append(info.name)
    return found


MODULES = _modules_with_examples()


def test_the_walk_finds_the_documented_modules() -> None:
    # A broken walk (a renamed package, an import error swallowed) must not pass silently.
    for name in ("hpsearch_budget.optuna._metered", "hpsearch_budget.ledger._ledger"):
        assert name in MODULES
    assert len(MODULES) >= 40


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)  # the NVML examples map devices
    monkeypatch.chdir(tmp_path)  # an example that writes a default ledger writes it here
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
