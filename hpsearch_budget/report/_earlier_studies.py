"""Ledger windows of an earlier Optuna study of the same name, left out of a joined report.

The ledger knows a study by its name, so a study created again under a name it has seen (an
in-memory study re-run, a study file deleted and the script run again) finds the earlier
study's windows beside its own, with the same trial numbers: joined on study and trial number,
each trial would be charged both. An Optuna trial has one tuning window (a heartbeat retry is a
trial of its own number), so a trial number that appears twice marks a later study, which its
trial 0's window starts (see :func:`drop_earlier_studies`).
"""

from __future__ import annotations

import pandas as pd

#: How far before the later study's trial 0 window its other windows may start (a worker
#: opening trial 1 a moment before trial 0's window opens; clocks of several machines).
SKEW_S = 60.0


def drop_earlier_studies(
    tuning: pd.DataFrame, runs: pd.DataFrame, study: str
) -> tuple[pd.DataFrame, pd.DataFrame, str | None]:
    """``tuning`` and ``runs`` without the windows of earlier studies named ``study``, and a
    note saying how many were left out (None: the trial numbers are unique, nothing left out).

    A repeated trial number keeps its latest window (ids grow). The later study's trial 0
    window then marks its start: runs written before it, and windows written before it that
    had ended when it started (or started over ``SKEW_S`` before it), are the earlier one's.
    """
    numbered = tuning.dropna(subset=["trial_number"])
    if not numbered["trial_number"].duplicated().any():
        return tuning, runs, None
    latest = numbered.groupby("trial_number")["id"].transform("max")
    tuning = tuning.drop(numbered.index[numbered["id"] != latest])
    zero = tuning[tuning["trial_number"] == 0]
    if not zero.empty:
        first_id, first_at = int(zero["id"].iloc[0]), pd.Timestamp(zero["started_at"].iloc[0])
        # Written before trial 0's window: the earlier study's if it had ended by then (a
        # worker of the later one may open trial 1 a moment before trial 0's window opens).
        ended = tuning["ended_at"].notna() & (tuning["ended_at"] <= first_at)
        long_ago = tuning["started_at"] < first_at - pd.Timedelta(seconds=SKEW_S)
        tuning = tuning[~((tuning["id"] < first_id) & (ended | long_ago))]
        runs = runs[runs["id"] >= first_id]
    return tuning, runs, _note(study, len(numbered) - len(tuning.dropna(subset=["trial_number"])))


def _note(study: str, n_windows: int) -> str:
    return (
        f"the ledger holds {n_windows} trial window(s) of an earlier study also named "
        f"{study!r} (trial numbers repeat): they, and the earlier study's final / seed / idle "
        f"runs, are left out of this report; `hpaudit ledger show --study {study}` lists them"
    )
