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

#: Optional dependencies (top-level module -> the extra that installs it): a module that needs
#: one that is missing is skipped with the install command, so that `.[dev]` alone can test.
EXTRAS = {"ray": "ray", "psycopg": "postgres"}


def _modules_with_examples() -> tuple[list[str], dict[str, str]]:
    """The modules with examples, and those that could not be imported: name -> skip reason."""
    finder = doctest.DocTestFinder()
    found, unimportable = [], {}
    for info in pkgutil.walk_packages(hpsearch_budget.__path__, "hpsearch_budget."):
        if info.name.endswith("__main__"):
            continue
        try:
            module = importlib.import_module(info.name)
        except ModuleNotFoundError as error:
            extra = EXTRAS.get((error.name or "").split(".")[0])
            if extra is None:
                raise  # a broken import of the package itself fails the run
            unimportable[info.name] = f"{error.name} not installed: pip install -e '.[{extra}]'"
            continue
        if any(test.examples for test in finder.find(module)):
            found.append(info.name)
    return found, unimportable


MODULES, UNIMPORTABLE = _modules_with_examples()


def test_the_walk_finds_the_documented_modules() -> None:
    # A broken walk (a renamed package, an import error swallowed) must not pass silently.
    for name in ("hpsearch_budget.optuna._metered", "hpsearch_budget.ledger._ledger"):
        assert name in MODULES
    assert len(MODULES) >= 40


@pytest.mark.parametrize(
    "name",
    [
        *MODULES,
        *(pytest.param(n, marks=pytest.mark.skip(reason=r)) for n, r in UNIMPORTABLE.items()),
    ],
)
def test_docstring_examples(name: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)  # the NVML examples map devices
    monkeypatch.chdir(tmp_path)  # an example that writes a default ledger writes it here
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
