"""CostAwareASHAScheduler's decisions against Ray Tune's TrialScheduler API (no cluster)."""

from __future__ import annotations

import pytest

pytest.importorskip("ray.tune", reason="ray[tune] not installed: pip install -e '.[ray]'")

from ray.tune.schedulers import TrialScheduler

from hpsearch_budget.errors import HpauditInputError
from hpsearch_budget.ray import CostAwareASHAScheduler


class _Trial:
    def __init__(self, trial_id: str) -> None:
        self.trial_id = trial_id


def _result(it: int, acc: float, energy_j: float) -> dict[str, float]:
    return {"training_iteration": it, "acc": acc, "energy_j": energy_j}


def test_stops_dear_trial_that_a_cheap_one_with_the_same_rank_survives() -> None:
    def run(last_energy: float) -> str:
        s = CostAwareASHAScheduler(metric="acc", mode="max", min_t=2, max_t=20)
        for i in range(11):  # peers at rung 2: acc i, 1 J per iteration
            s.on_trial_result(None, _Trial(f"p{i}"), _result(2, float(i), 2.0))
        return s.on_trial_result(None, _Trial("x"), _result(2, 8.5, last_energy))

    # 12 at the rung, 3 better than 8.5: plain ASHA keeps 4 -> goes on at median cost ...
    assert run(2.0) == TrialScheduler.CONTINUE
    # ... but at 9x the median cost per iteration only the top 1/9 (1 trial) goes on.
    assert run(18.0) == TrialScheduler.STOP


def test_max_t_stops_and_missing_keys_continue() -> None:
    s = CostAwareASHAScheduler(metric="acc", mode="max", max_t=5)
    assert s.on_trial_result(None, _Trial("a"), {"training_iteration": 1}) == "CONTINUE"
    assert s.on_trial_result(None, _Trial("a"), _result(5, 0.1, 1.0)) == TrialScheduler.STOP


def test_metric_mode_from_tune_config_and_required() -> None:
    s = CostAwareASHAScheduler(max_t=9)
    with pytest.raises(HpauditInputError, match="metric"):
        s.decide("a", _result(1, 0.5, 1.0))
    assert s.set_search_properties("acc", "min")
    assert not s.set_search_properties("other", "max")  # already set: Ray's convention
    assert s.decide("a", _result(1, 0.5, 1.0)) == TrialScheduler.CONTINUE


def test_skipped_rungs_are_all_judged() -> None:
    s = CostAwareASHAScheduler(metric="acc", mode="min", min_t=1, max_t=27)
    for i in range(6):
        s.decide(f"p{i}", _result(9, float(i), 9.0))  # records rungs 1, 3 and 9 at once
    assert s.decide("bad", _result(10, 100.0, 10.0)) == TrialScheduler.STOP
    assert "stopped" in s.debug_string()


@pytest.mark.parametrize("bad", [-0.5, float("nan"), float("inf")])
def test_a_cost_exponent_that_would_invert_the_rule_is_refused(bad: float) -> None:
    with pytest.raises(HpauditInputError, match="cost_exponent"):
        CostAwareASHAScheduler(metric="loss", mode="min", cost_exponent=bad)
