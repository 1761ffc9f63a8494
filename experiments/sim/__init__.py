"""Simulated sweeps for ``experiments/sweep_sim.py``: benchmarks, a simulated clock, runners.

Nothing here trains a model: LCBench (YAHPO Gym surrogate) predicts each epoch's accuracy and
training time, the Zeus NSDI '23 traces give measured GPU energy per epoch. Every trained epoch
is charged exactly its cost on a simulated clock; the budget stops a sweep when the next epoch's
forecast cost would not fit.
"""

from sim._bench import Benchmark, Curve, bench_data_dir, load_benchmark
from sim._clock import SimAccountant
from sim._run import STRATEGIES, RunRecord, run_sweep

__all__ = [
    "STRATEGIES",
    "Benchmark",
    "Curve",
    "RunRecord",
    "SimAccountant",
    "bench_data_dir",
    "load_benchmark",
    "run_sweep",
]
