"""CostAwareASHAScheduler in a real (tiny) Ray Tune run, against the same run with plain ASHA.

Five cheap trials (1 J per iteration) of rising quality run first, then two dear ones (9 J per
iteration): one ranked second at every rung, one ranked first. Trials run one at a time, so the
rungs each trial meets are known: plain ASHA (``cost_exponent=0``) keeps the second-best dear
trial (1 of 6 better; the top third, 2, go on), the cost-aware rule keeps only the top ninth of
a rung (at least 1) for a trial 9x the median cost per iteration, so it stops that trial at the
first rung. The
best dear trial goes on under both: cost never stops the leader.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ray = pytest.importorskip("ray", reason="ray[tune] not installed: pip install -e '.[ray]'")
tune = pytest.importorskip("ray.tune", reason="ray[tune] not installed: pip install -e '.[ray]'")

from hpsearch_budget.ray import CostAwareASHAScheduler  # noqa: E402

MAX_T = 9  # rungs at iterations 1 and 3
CHEAP = [{"name": f"cheap{i}", "q": i / 10, "j_per_it": 1.0} for i in range(5)]
DEAR_SECOND = {"name": "dear_second", "q": 0.35, "j_per_it": 9.0}  # only cheap4 (0.4) better
DEAR_BEST = {"name": "dear_best", "q": 0.95, "j_per_it": 9.0}
TRIALS = [*CHEAP, DEAR_SECOND, DEAR_BEST]


def _trainable(config: dict[str, Any]) -> None:
    spec = config["trial"]
    for it in range(1, MAX_T + 1):
        # Quality ranks the same at every iteration; energy is cumulative, as metered reports.
        tune.report({"acc": spec["q"] * it / (it + 1), "energy_j": spec["j_per_it"] * it})


@pytest.fixture(scope="module")
def ray_local() -> Iterator[Any]:
    """Local Ray with 2 CPUs, reused if a test area already started one."""
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield ray
    if started:
        ray.shutdown()


def _run(tmp_path: Path, name: str, cost_exponent: float) -> dict[str, tuple[int, float]]:
    """{trial name: (iterations run, energy J)} of one sequential Tune run."""
    scheduler = CostAwareASHAScheduler(
        max_t=MAX_T, min_t=1, reduction_factor=3, cost_exponent=cost_exponent
    )
    tuner = tune.Tuner(
        _trainable,
        param_space={"trial": tune.grid_search(TRIALS)},
        # metric / mode reach the scheduler through set_search_properties, as users set them.
        tune_config=tune.TuneConfig(
            metric="acc",
            mode="max",
            scheduler=scheduler,
            max_concurrent_trials=1,
            reuse_actors=True,  # one worker process for all trials: seconds, not minutes
        ),
        run_config=tune.RunConfig(name=name, storage_path=str(tmp_path), verbose=0),
    )
    grid = tuner.fit()
    assert not grid.errors
    return {
        r.config["trial"]["name"]: (int(r.metrics["training_iteration"]), r.metrics["energy_j"])
        for r in grid
    }


def test_dear_second_ranked_trial_stops_earlier_than_under_plain_asha(
    ray_local: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")  # no TensorBoard/CSV files
    plain = _run(tmp_path, "plain", cost_exponent=0.0)
    aware = _run(tmp_path, "aware", cost_exponent=0.5)
    assert set(plain) == set(aware) == {t["name"] for t in TRIALS}
    # Plain ASHA keeps the dear second-ranked trial to the end; cost-aware stops it at rung 1.
    assert plain["dear_second"][0] == MAX_T
    assert aware["dear_second"][0] == 1
    # Cost never stops the leader, and the cheap trials are judged alike by both.
    assert plain["dear_best"][0] == aware["dear_best"][0] == MAX_T
    assert {k: v for k, v in plain.items() if k.startswith("cheap")} == {
        k: v for k, v in aware.items() if k.startswith("cheap")
    }
    # What it saved: 8 iterations of 9 J.
    saved = sum(e for _, e in plain.values()) - sum(e for _, e in aware.values())
    assert saved == pytest.approx(8 * 9.0)


def test_results_that_a_stopper_ends_still_count_at_their_rung(
    ray_local: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Three good trials that a stop criterion ends at iteration 1 (Tune gives that result to
    # on_trial_complete, not on_trial_result), then a bad one: 4 at rung 1, it is the worst.
    monkeypatch.setenv("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    short = [{"name": f"short{i}", "q": 0.9 - i / 10, "j_per_it": 1.0} for i in range(3)]
    bad = {"name": "bad", "q": 0.1, "j_per_it": 1.0}
    grid = tune.Tuner(
        _trainable,
        param_space={"trial": tune.grid_search([*short, bad])},
        tune_config=tune.TuneConfig(
            metric="acc",
            mode="max",
            scheduler=CostAwareASHAScheduler(max_t=MAX_T, min_t=1, reduction_factor=3),
            max_concurrent_trials=1,
            reuse_actors=True,
        ),
        run_config=tune.RunConfig(
            name="stopped",
            storage_path=str(tmp_path),
            verbose=0,
            stop=lambda _, r: r["config"]["trial"]["name"] != "bad",
        ),
    ).fit()
    assert not grid.errors
    iterations = {r.config["trial"]["name"]: r.metrics["training_iteration"] for r in grid}
    assert iterations == {"short0": 1, "short1": 1, "short2": 1, "bad": 1}
