"""Work-arounds for Ray Tune behaviour the budget pieces run into."""

from __future__ import annotations

from typing import Any


def ensure_trial_dir(trial: Any) -> None:
    """Give a trial that never started its folder.

    A budget can end a sweep while trials are still pending; Tune then builds its ResultGrid
    from every trial's folder and fails on one that was never created ("Should not access
    `trial_fs_path` without setting `trial_dir_name`", Ray 2.x). An empty folder is what
    Tune itself creates when it schedules a trial.
    """
    if getattr(trial, "relative_logdir", None):
        return
    try:
        trial.init_local_path()
    except Exception:  # a folder is a courtesy to Tune's result grid, never worth a failure
        return
