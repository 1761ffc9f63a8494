"""Benchmarks: what one epoch of a configuration costs and what it scores.

Two families share one interface (:class:`Benchmark`), so the runner and every strategy see the
same thing: a search space (``suggest``), and for a configuration the per-epoch energy, seconds
and objective values (``curve``).

- ``lcbench``: the YAHPO Gym surrogate of LCBench. Energy of an epoch = surrogate training
  seconds of that epoch x ``watts``. The surrogate's cumulative ``time`` is not always
  increasing; we charge its running maximum (so per-epoch seconds are differences of the running
  maximum, never negative). Objective: validation accuracy (%), maximised.
- ``zeus``: the Zeus NSDI '23 traces. A configuration is (batch size, GPU power limit); an epoch
  costs ``time_per_epoch x average_power`` joules (measured on the GPU); a trial trains until
  the validation target is reached (the epoch comes from one recorded training run of that batch
  size, drawn per trial). Objective: energy-to-target in J, minimised; intermediate values are
  the energy spent so far (a lower bound of the final value).
"""

from __future__ import annotations

import abc
import contextlib
import io
import os
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import optuna

from hpsearch_budget.errors import HpauditInputError

LCBENCH_EPOCHS = 52
DEV_TASKS = ("3945", "34539", "126025", "167149", "189906")


def bench_data_dir() -> Path:
    """``../shared/benchdata`` next to the repository (override: $HPAUDIT_BENCHDATA)."""
    env = os.environ.get("HPAUDIT_BENCHDATA")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[3] / "shared" / "benchdata"


@dataclass(frozen=True)
class Curve:
    """One configuration trained epoch by epoch: cost and score after each epoch."""

    epoch_j: np.ndarray  # energy of each epoch, J (>= 0)
    epoch_s: np.ndarray  # seconds of each epoch (>= 0)
    values: np.ndarray  # objective after each epoch
    final: float | None  # the trial's value when trained to the end (None: target missed)

    @property
    def n_epochs(self) -> int:
        return int(self.values.size)

    @property
    def total_j(self) -> float:
        return float(self.epoch_j.sum())


class Benchmark(abc.ABC):
    """A task whose configurations can be 'trained' epoch by epoch at no real cost."""

    name: str
    task: str
    direction: str  # "maximize" | "minimize"
    max_steps: int
    #: Whether a trial stopped early has a usable value (a model's accuracy so far: yes; the
    #: energy spent before reaching a target: no, it is not an energy-to-target).
    partial_values_count: bool = True

    def epoch_forecast_j(self, params: dict[str, Any]) -> float | None:
        """What an epoch of ``params`` will cost, if known before training it (else None)."""
        return None

    @abc.abstractmethod
    def suggest(self, trial: optuna.Trial) -> dict[str, Any]:
        """Draw a configuration through Optuna's ``suggest_*`` API."""

    @abc.abstractmethod
    def curve(self, params: dict[str, Any], *, rng: np.random.Generator) -> Curve:
        """Per-epoch energy, seconds and values of ``params`` (``rng``: run-to-run noise)."""

    def random_configs(
        self, n: int, seed: int
    ) -> tuple[optuna.Study, list[dict[str, Any]], list[float]]:
        """``n`` configurations drawn by Optuna's RandomSampler (the study that drew them) and
        the energy of fully training each."""
        study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
        rng = np.random.default_rng(seed)
        params, costs = [], []
        for _ in range(n):
            trial = study.ask()
            params.append(self.suggest(trial))
            costs.append(self.curve(params[-1], rng=rng).total_j)
            study.tell(trial, 0.0)
        return study, params, costs

    def median_full_cost_j(self, n: int = 256, seed: int = 20190601) -> float:
        """Median energy of fully training a random configuration (the unit of ``budget_k``).

        A fixed seed, independent of the sweep's: every strategy and seed gets the same budget.
        """
        return float(np.median(self.random_configs(n, seed)[2]))


class LCBench(Benchmark):
    """YAHPO Gym LCBench surrogate for one OpenML task id."""

    name = "lcbench"
    direction = "maximize"
    max_steps = LCBENCH_EPOCHS

    def __init__(self, task: str, *, watts: float = 300.0, data_dir: Path | None = None):
        self.task = str(task)
        self.watts = float(watts)
        self._bench = _yahpo_lcbench(str(data_dir or bench_data_dir() / "yahpo"))
        if self.task not in self._bench.instances:
            raise HpauditInputError(
                f"unknown LCBench task {self.task!r}; pick one of {', '.join(DEV_TASKS)} "
                "(or any OpenML id the surrogate knows)"
            )
        self._cache: dict[tuple[Any, ...], Curve] = {}

    def suggest(self, trial: optuna.Trial) -> dict[str, Any]:
        return {
            "batch_size": trial.suggest_int("batch_size", 16, 512, log=True),
            "learning_rate": trial.suggest_float("learning_rate", 1e-4, 1e-1, log=True),
            "max_dropout": trial.suggest_float("max_dropout", 0.0, 1.0),
            "max_units": trial.suggest_int("max_units", 64, 1024, log=True),
            "momentum": trial.suggest_float("momentum", 0.1, 0.99),
            "num_layers": trial.suggest_int("num_layers", 1, 5),
            "weight_decay": trial.suggest_float("weight_decay", 1e-5, 1e-1),
        }

    def curve(self, params: dict[str, Any], *, rng: np.random.Generator) -> Curve:
        key = tuple(sorted(params.items()))
        if key not in self._cache:
            self._bench.set_instance(self.task)
            base = {"OpenML_task_id": self.task, **params}
            out = self._bench.objective_function(
                [{**base, "epoch": e} for e in range(1, LCBENCH_EPOCHS + 1)]
            )
            cum_s = np.maximum.accumulate(np.array([max(0.0, r["time"]) for r in out]))
            epoch_s = np.diff(cum_s, prepend=0.0)
            values = np.array([float(r["val_accuracy"]) for r in out])
            self._cache[key] = Curve(epoch_s * self.watts, epoch_s, values, float(values[-1]))
        return self._cache[key]


@cache
def _yahpo_lcbench(data_path: str) -> Any:
    if not (Path(data_path) / "lcbench" / "model.onnx").is_file():
        raise HpauditInputError(
            f"no LCBench surrogate under {data_path}/lcbench: put the YAHPO data there "
            "(see ../shared/benchdata/README.md) or set HPAUDIT_BENCHDATA"
        )
    from yahpo_gym import benchmark_set, local_config

    # yahpo-gym prints a citation request on stdout; keep stdout for our JSON.
    with contextlib.redirect_stdout(io.StringIO()):
        local_config.init_config()
        local_config.set_data_path(data_path)
        return benchmark_set.BenchmarkSet("lcbench", active_session=True)


class Zeus(Benchmark):
    """Zeus NSDI '23 traces: batch size x power limit of one workload on one GPU."""

    name = "zeus"
    direction = "minimize"
    partial_values_count = False

    def __init__(self, task: str, *, gpu: str = "v100", data_dir: Path | None = None):
        import pandas as pd

        folder = Path(data_dir or bench_data_dir() / "zeus_nsdi23")
        power_csv = folder / f"summary_power_{gpu}.csv"
        if not power_csv.is_file():
            raise HpauditInputError(f"no Zeus power trace {power_csv}: check --benchdata / gpu")
        train = pd.read_csv(folder / "summary_train.csv")
        power = pd.read_csv(power_csv)
        if task not in set(train["dataset"]):
            known = ", ".join(sorted(set(train["dataset"])))
            raise HpauditInputError(f"unknown Zeus workload {task!r}; pick one of {known}")
        self.task = task
        train = train[train["dataset"] == task]
        # One optimizer per workload in the power trace (cifar100 has two): keep the trained one.
        opt = str(train["optimizer"].iloc[0]).lower()
        power = power[(power["dataset"] == task) & (power["optimizer"].str.lower() == opt)]
        self.target = _zeus_target(train)
        hit = train[np.isclose(train["target_metric"], self.target)]
        self._epochs = {
            int(bs): [int(e) if np.isfinite(e) else None for e in g["target_epoch"]]
            for bs, g in hit.groupby("batch_size")
        }
        self._power = {
            (int(r.batch_size), int(r.power_limit)): (
                float(r.time_per_epoch),
                float(r.average_power),
            )
            for r in power.itertuples()
        }
        self.batch_sizes = sorted({b for b, _ in self._power} & set(self._epochs))
        self.power_limits = sorted({p for _, p in self._power})
        reached = [e for runs in self._epochs.values() for e in runs if e is not None]
        # Runs that never reach the target stop at the longest successful run, x 1.5.
        self.max_steps = int(np.ceil(1.5 * max(reached)))

    def epoch_forecast_j(self, params: dict[str, Any]) -> float | None:
        # Zeus profiles power and throughput in the first seconds of a job (its JIT profiler):
        # the epoch's cost is known before the epoch is paid for.
        sec, watts = self._power[(int(params["batch_size"]), int(params["power_limit"]))]
        return sec * watts

    def suggest(self, trial: optuna.Trial) -> dict[str, Any]:
        return {
            "batch_size": trial.suggest_categorical("batch_size", self.batch_sizes),
            "power_limit": trial.suggest_categorical("power_limit", self.power_limits),
        }

    def curve(self, params: dict[str, Any], *, rng: np.random.Generator) -> Curve:
        bs, pl = int(params["batch_size"]), int(params["power_limit"])
        sec, watts = self._power[(bs, pl)]
        runs = self._epochs[bs]
        target_epoch = runs[int(rng.integers(len(runs)))]
        n = target_epoch if target_epoch is not None else self.max_steps
        epoch_s = np.full(n, sec)
        epoch_j = epoch_s * watts
        values = np.cumsum(epoch_j)
        final = float(values[-1]) if target_epoch is not None else None
        return Curve(epoch_j, epoch_s, values, final)


def _zeus_target(train: Any) -> float:
    """The hardest validation target that at least half of the recorded runs reach.

    Direction-agnostic (WER falls, accuracy rises): harder = more epochs needed.
    """
    best, best_epochs = None, -1.0
    for target, g in train.groupby("target_metric"):
        if g["target_epoch"].notna().mean() >= 0.5:
            med = float(g["target_epoch"].median())
            if med > best_epochs:
                best, best_epochs = float(target), med
    if best is None:
        raise HpauditInputError("no validation target is reached by half of the Zeus runs")
    return best


def load_benchmark(name: str, task: str, *, watts: float = 300.0, gpu: str = "v100") -> Benchmark:
    """``lcbench`` (``watts`` per training second) or ``zeus`` (measured, ``gpu`` trace)."""
    if name == "lcbench":
        return LCBench(task, watts=watts)
    if name == "zeus":
        return Zeus(task, gpu=gpu)
    raise HpauditInputError(f"unknown benchmark {name!r}; use --benchmark lcbench or zeus")
