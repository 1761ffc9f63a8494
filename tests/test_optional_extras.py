"""Without the optional extras (`[ray]`, `[postgres]`, `[bench]`) the package works and the
test suite collects, skipping what needs them with the install command.

The extras are installed here, so a child Python is started with them made unimportable: a
``sitecustomize`` on its path raises ModuleNotFoundError for them, as a missing package does.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import optuna

REPO = Path(__file__).resolve().parents[1]
MISSING = "ray,psycopg,yahpo_gym,matplotlib"

_BLOCKER = """
import os, sys

_MISSING = set(os.environ["HPAUDIT_TEST_MISSING"].split(","))


class _Missing:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in _MISSING:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


sys.meta_path.insert(0, _Missing())
"""


def _without_extras(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``python *args`` in the repository, with the extras' packages missing."""
    site = tmp_path / "site"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(_BLOCKER)
    path = os.pathsep.join([str(site), str(REPO), os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, "PYTHONPATH": path, "HPAUDIT_TEST_MISSING": MISSING}
    return subprocess.run(
        [sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )


def test_the_suite_collects_and_skips_what_needs_an_extra(tmp_path: Path) -> None:
    out = _without_extras(
        tmp_path, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", "tests"
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "error" not in out.stdout.splitlines()[-1]
    assert "tests/ray/conftest.py" in out.stdout  # the Ray area is skipped, with the command
    assert "ray[tune] not installed: pip install -e '.[ray]'" in out.stdout


def test_the_library_and_cli_work_without_ray(tmp_path: Path) -> None:
    out = _without_extras(tmp_path, "-c", "import hpsearch_budget.ray")
    assert out.returncode == 1
    assert out.stderr.strip().splitlines()[-1].endswith("pip install 'hpsearch_budget[ray]'")

    assert _without_extras(tmp_path, "-m", "hpsearch_budget", "--help").returncode == 0

    url = f"sqlite:///{tmp_path / 'study.db'}"
    study = optuna.create_study(storage=url, study_name="s")
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=3)
    out = _without_extras(tmp_path, "-m", "hpsearch_budget", "report", url, "--no-ledger")
    assert out.returncode == 0, out.stderr
    assert "trials          3 (complete 3)" in out.stdout
