"""``LedgerCallback``: the driver's side of the ledger for a Ray Tune experiment.

Metered trainables (:func:`~hpsearch_budget.ray.metered`) write their own windows from the
workers. The callback, on the driver, closes what a worker could not:

* a trial restarted by ``Tuner.restore`` (or retried after a failure) left a ``running`` window
  behind in the run that crashed: it is finalised as ``killed`` at its last checkpoint, which
  stays charged, and the restarted trial opens a fresh window. Nothing is charged twice: a
  window is finalised once (a second attempt is a no-op) and each joule belongs to one window;
* a trial whose worker died (out of memory, node lost) before it could finalise: its window is
  closed as ``failed`` at its last checkpoint when Tune reports the error;
* at the end of the experiment, any window of this run still open after ``finalize_timeout_s``
  is closed as ``killed``.

A trial whose ledger writes fail (see :func:`~hpsearch_budget.ray.metered`) is logged: a failed
checkpoint once per experiment; a final write that failed as an error, kept in
:attr:`LedgerCallback.ledger_error` for the caller to check after ``tuner.fit()``.

It also warns when results carry no energy figures (an unmetered trainable) or no number
under ``metered(metric=...)`` (once per experiment, naming the keys reported), and logs the
experiment's total at the end. It is idempotent: calling any hook twice changes nothing.

Example::

    from ray import tune
    from hpsearch_budget import Ledger
    from hpsearch_budget.ray import LedgerCallback, metered

    ledger = Ledger("sqlite:////shared/hpaudit.db")
    tuner = tune.Tuner(metered(train, ledger),
                       run_config=tune.RunConfig(callbacks=[LedgerCallback(ledger)]))
"""

from __future__ import annotations

import logging
import math
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import pandas as pd
from ray.tune import Callback

from hpsearch_budget.errors import HpauditInputError, LedgerError
from hpsearch_budget.meters import Measurement, Source
from hpsearch_budget.ray._compat import ensure_trial_dir
from hpsearch_budget.ray._metered import (
    LEDGER_ERROR_KEY,
    LEDGER_FINAL_ERROR_KEY,
    METRIC_MISSING_KEY,
)
from hpsearch_budget.units import g_to_kg, j_to_kwh

if TYPE_CHECKING:
    from ray.tune.experiment import Trial

    from hpsearch_budget.ledger import Ledger

_log = logging.getLogger(__name__)


class LedgerCallback(Callback):
    """Closes the ledger windows a worker could not close; safe across ``Tuner.restore``.

    Args:
        ledger: the ledger the metered trainables write to (a :class:`Ledger` or its URL).
        study: the ledger study; default the Tune experiment name.
        finalize_timeout_s: at the end, how long to wait for workers' final writes.
    """

    def __init__(
        self,
        ledger: Ledger | str | None = None,
        *,
        study: str | None = None,
        finalize_timeout_s: float = 30.0,
    ) -> None:
        from hpsearch_budget.ledger import Ledger

        if ledger is not None and not isinstance(ledger, Ledger | str):
            raise HpauditInputError(
                f"ledger must be a Ledger or a database URL string, got {type(ledger).__name__}"
            )
        self.ledger = ledger if isinstance(ledger, Ledger) else Ledger(ledger)
        self.study = study
        self.finalize_timeout_s = float(finalize_timeout_s)
        self.closed: dict[int, str] = {}  # window id -> status this callback gave it
        self._reset()

    def _reset(self) -> None:
        # Windows opened before this run belong to a crashed run: on the ledger's clock (the
        # database server's on PostgreSQL), which the workers stamp their windows with.
        self._since = self.ledger.now()
        #: Why the ledger could not record a trial's end in this run, if it could not (the
        #: first such trial): the run's ledger is incomplete; a BudgetStopper / Scheduler ended
        #: it. A new run (``Tuner.restore(...).fit()``) starts without it.
        self.ledger_error: str | None = None
        self._trials: dict[str, str] = {}  # trial id -> study, for trials seen in this run
        self._unmetered_warned = False
        self._metric_warned = False
        self._checkpoint_warned = False

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.update(_trials={}, closed={})
        return state

    def setup(
        self, stop: Any = None, num_samples: Any = None, total_num_samples: Any = None, **info: Any
    ) -> None:
        self._reset()

    # -- hooks --------------------------------------------------------------------------------

    def on_trial_start(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any):
        study = self._study(trial)
        self._trials[trial.trial_id] = study
        # A window of this trial opened before this run started is from the run that crashed.
        self._close(study, trial.trial_id, "killed", before=self._since)

    def on_trial_result(
        self, iteration: int, trials: list[Trial], trial: Trial, result: dict, **info: Any
    ):
        self._trials.setdefault(trial.trial_id, self._study(trial))
        if "hpaudit_window" not in result and not self._unmetered_warned:
            self._unmetered_warned = True
            _log.warning(
                "hpaudit: trial %s reports no energy figures; wrap the trainable with "
                "hpsearch_budget.ray.metered(train, ledger) to meter it",
                trial.trial_id,
            )
        self._warn_metric_missing(trial, result)
        self._note_ledger_errors(trial, result)

    def on_trial_recover(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any):
        self._on_failure(trial)

    def on_trial_error(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any):
        self._on_failure(trial)

    def on_experiment_end(self, trials: list[Trial], **info: Any) -> None:
        for trial in trials:  # a budget may have ended the sweep with trials never started
            ensure_trial_dir(trial)
        deadline = time.monotonic() + self.finalize_timeout_s
        while self._open_windows() and time.monotonic() < deadline:
            time.sleep(0.2)
        for study, trial_id in self._open_windows():
            self._close(study, trial_id, "killed", after=self._since)
        for study in sorted(set(self._trials.values())):
            self._log_total(study)

    # -- work ---------------------------------------------------------------------------------

    def _study(self, trial: Trial) -> str:
        return self.study or trial.experiment_dir_name

    def _warn_metric_missing(self, trial: Trial, result: dict) -> None:
        # Tune refuses a TuneConfig metric a result lacks; metered(metric=) only fills the
        # ledger's objective value, so a typo there would leave it empty without a word.
        missing = result.get(METRIC_MISSING_KEY)
        if not isinstance(missing, dict) or self._metric_warned:
            return
        self._metric_warned = True
        _log.warning(
            "hpaudit: metered(metric=%r): trial %s reported no number under that key (it "
            "reported %s), so its ledger window has no objective value; pass metric= one of "
            "the reported keys",
            missing.get("metric"),
            trial.trial_id,
            ", ".join(map(repr, missing.get("reported") or [])) or "no keys",
        )

    def _note_ledger_errors(self, trial: Trial, result: dict) -> None:
        final = result.get(LEDGER_FINAL_ERROR_KEY)
        if final is not None:
            self.ledger_error = self.ledger_error or f"trial {trial.trial_id}: {final}"
            _log.error(
                "hpaudit: the ledger could not record the end of trial %s (%s); it kept its "
                "result in Tune, its row is closed as killed at its last checkpoint",
                trial.trial_id,
                final,
            )
        elif result.get(LEDGER_ERROR_KEY) is not None and not self._checkpoint_warned:
            self._checkpoint_warned = True
            _log.warning(
                "hpaudit: trial %s: a ledger checkpoint failed (%s); the trial goes on, its "
                "energy figures are estimates until the next write records them",
                trial.trial_id,
                result[LEDGER_ERROR_KEY],
            )

    def _on_failure(self, trial: Trial) -> None:
        # The worker finalises its window before raising; one still running means the worker
        # died without a word. Its energy up to the last checkpoint is charged.
        self._close(self._study(trial), trial.trial_id, "failed", after=self._since)

    def _rows(self, study: str, open_only: bool = True) -> pd.DataFrame:
        """The study's windows; by default only those still open (what the callback may close),
        filtered in SQL so that a trial's start does not read the whole study."""
        try:
            return self.ledger.entries(study, open_only=open_only)
        except LedgerError as error:
            _log.error("hpaudit: cannot read the ledger: %s", error)
            return pd.DataFrame()

    def _open_windows(self) -> list[tuple[str, str]]:
        open_: list[tuple[str, str]] = []
        for study in sorted(set(self._trials.values())):
            rows = self._rows(study)
            if rows.empty:
                continue
            keys = {f"{study}:{tid}": tid for tid, s in self._trials.items() if s == study}
            running = rows[(rows["status"] == "running") & rows["trial_key"].isin(list(keys))]
            open_ += [(study, keys[k]) for k in running["trial_key"]]
        return open_

    def _close(
        self,
        study: str,
        trial_id: str,
        status: str,
        *,
        before: float | None = None,
        after: float | None = None,
    ) -> None:
        rows = self._rows(study)
        if rows.empty:
            return
        mine = rows[(rows["trial_key"] == f"{study}:{trial_id}") & (rows["status"] == "running")]
        for _, row in mine.iterrows():
            started = _unix(row["started_at"])
            if (before is not None and started >= before) or (
                after is not None and started < after
            ):
                continue
            try:
                self.ledger.finalize(int(row["id"]), _last_checkpoint(row), status=status)
            except LedgerError:
                continue  # finalised meanwhile (by its worker, or reaped): nothing to do
            self.closed[int(row["id"])] = status
            _log.info("hpaudit: closed window %s of trial %s as %s", row["id"], trial_id, status)

    def _log_total(self, study: str) -> None:
        rows = self._rows(study, open_only=False)
        if rows.empty:
            return
        sources = sorted({str(s) for s in rows["source"].dropna()})
        _log.info(
            "hpaudit: study %r: %d windows, %.4g kWh at the device (%s), %.4g kg CO2e (estimate)",
            study,
            len(rows),
            j_to_kwh(float(rows["energy_j"].sum())),
            ", ".join(sources) or "no energy recorded",
            g_to_kg(float(rows["co2e_g"].sum())),
        )


def _unix(when: Any) -> float:
    if isinstance(when, datetime):
        return (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()
    return pd.Timestamp(when).timestamp() if when is not None else -math.inf


def _last_checkpoint(row: Any) -> Measurement:
    """The window's figures at its last checkpoint: finalising with them charges nothing new."""
    by_domain = {str(k): float(v) for k, v in dict(row["energy_by_domain"] or {}).items()}
    sources = {str(k): Source(v) for k, v in dict(row["sources"] or {}).items()}
    return Measurement(float(row["wall_s"] or 0.0), by_domain, sources)
