"""One metered trial while it runs: the :class:`MeteredTrial` handed to the objective, its
ledger window and live state (:class:`_TrialRun`), and the heartbeat thread that keeps a
silent trial's row fresh."""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING

from optuna.trial import Trial

from hpsearch_budget.budget import Cost
from hpsearch_budget.budget._accounting import fits
from hpsearch_budget.errors import LedgerError
from hpsearch_budget.ledger._unwritten import unwritten_cost
from hpsearch_budget.meters import Measurement
from hpsearch_budget.optuna import _state
from hpsearch_budget.optuna._metering import REUSE_S, SharedMeter

if TYPE_CHECKING:
    from hpsearch_budget.ledger import Ledger

_log = logging.getLogger(__name__)

#: How long the heartbeat thread waits for a next trial before it exits.
_LINGER_S = 5.0
#: What a trial measured before its meter window opened (while it waited for room).
_NOTHING = Measurement(0.0)


class MeteredTrial(Trial):
    """The :class:`optuna.trial.Trial` handed to a metered objective.

    It *is* the trial Optuna created (same state, same storage); :meth:`report` also
    checkpoints the trial's energy into the ledger, and :meth:`checkpoint` does so without an
    intermediate value (multi-objective studies, where Optuna has no ``report``).
    """

    _hpaudit: _TrialRun

    def __init__(self, trial: Trial, run: _TrialRun) -> None:
        # Share the trial's state instead of re-creating it: Trial.__init__ would call the
        # sampler's before_trial again.
        self.__dict__ = trial.__dict__
        object.__setattr__(self, "_hpaudit", run)

    def report(self, value: float, step: int) -> None:
        try:
            super().report(value, step)
        except NotImplementedError as exc:  # Optuna has no report for multi-objective studies
            n = len(self.study.directions)
            if n < 2:
                raise
            raise NotImplementedError(
                f"trial.report is not supported for multi-objective optimization (the study "
                f"has {n} objectives; with energy_objective=True energy is one of them): call "
                f"trial.checkpoint(step) to record the trial's energy at a step instead"
            ) from exc
        self._hpaudit.checkpoint(step=int(step), value=float(value))

    def checkpoint(self, step: int | None = None) -> Cost:
        """Write the trial's energy so far to the ledger (always, unlike a throttled
        :meth:`report`); returns its cost so far."""
        return self._hpaudit.checkpoint(step=step, value=None, force=True)

    @property
    def cost(self) -> Cost:
        """The trial's cost as of its last report or checkpoint (measured then, even when
        the report was not yet written to the ledger)."""
        return self._hpaudit.live.cost


class _TrialRun:
    """One trial's window: meter token, ledger row, live state.

    Every report reads the meter and updates the live state (what this process's pruner and
    ``MeteredTrial.cost`` see). The ledger row is written at a report only when someone
    could act on it (see :meth:`_due`); otherwise the step, value and energy wait, and the
    next write carries all of them. Near the limit every report writes.
    """

    def __init__(
        self,
        ledger: Ledger,
        meter: SharedMeter,
        live: _state.LiveTrial,
        token: int | None,
        interval_s: float,
        state: _state.StudyState,
    ) -> None:
        self.ledger = ledger
        self.meter = meter
        self.live = live
        #: The meter window (None: not open yet, the trial waits for room in the budget).
        self.token = token
        self.interval_s = interval_s
        self.state = state
        #: Reports closer than this to the row's last write may skip the ledger (0: never).
        #: Set once the trial holds a reservation that covers its unwritten spend.
        self.throttle_s = 0.0
        self.lock = threading.Lock()  # a heartbeat never races a report or the finalize
        self.last_s = time.monotonic()  # the row's last write (open_window)
        self.written = Cost()  # the row's cost at its last write
        self.step: int | None = None  # reported, not yet written
        self.value: float | None = None
        self.dirty = False  # something was measured or reported since the last write
        self.write_failed = False  # a checkpoint write failed (warned once per trial)
        self.closed = False

    def start(self) -> None:
        """Open the meter window of a trial that waited for room in the budget."""
        with self.lock:
            if self.token is None:
                self.token = self.meter.open(self.interval_s)

    def checkpoint(self, step: int | None, value: float | None, *, force: bool = False) -> Cost:
        """Measure the trial now; write the row if :meth:`_due` (or ``force``)."""
        with self.lock:
            if self.closed:
                return self.live.cost
            if step is not None:
                self.step = int(step)
            if value is not None:
                self.value = value
            write = force or self._due()
            measurement = self._measure(fresh=write)
            cost = self.estimate(measurement)
            if not write and not fits(cost, self.live.reserved):
                write = True  # spent beyond its reservation: the ledger must see it, fresh
                measurement = self._measure(fresh=True)
                cost = self.estimate(measurement)
            if write:
                cost = self._write_or_keep(measurement, cost)
            else:
                self.dirty = True
        self.live.cost = cost
        if step is not None:
            self.live.steps_done = max(self.live.steps_done, step + 1)
            if self.live.base is None:
                self.live.base = (cost, self.live.steps_done)
        return cost

    def flush(self) -> None:
        """Write what the last reports left unwritten (a no-op when the row is current)."""
        with self.lock:
            if self.dirty and not self.closed and self.token is not None:
                measurement = self._measure(fresh=True)
                self.live.cost = self._write_or_keep(measurement, self.estimate(measurement))

    def _measure(self, *, fresh: bool) -> Measurement:
        """The window's measurement; a report that is not written (far from every limit,
        inside its reservation) may take a meter read up to ``REUSE_S`` old."""
        if self.token is None:
            return _NOTHING
        return self.meter.measure(self.token, max_age_s=0.0 if fresh else REUSE_S)

    def _due(self) -> bool:
        """Whether this report must reach the ledger, before measuring it: near the limit (the
        pruner says so) or once ``throttle_s`` has passed since the last write. A report is
        also written when it finds the trial beyond its reservation (:meth:`checkpoint`).

        Skipping is safe only while the trial's reservation covers everything it has spent:
        the ledger then counts the unwritten spend as committed, so every worker's spent +
        committed -- what reservations, the pruner and the callback decide on -- is exact.
        """
        return self.state.near or time.monotonic() - self.last_s >= self.throttle_s

    def _write_or_keep(self, measurement: Measurement, cost: Cost) -> Cost:
        """Write the row; if the ledger fails now (locked past its timeout, a connection
        lost), keep the report for the next write instead of failing the trial: the row keeps
        its last checkpoint, and the final write carries everything (or says it failed)."""
        try:
            return self._write(measurement)
        except LedgerError as exc:
            self.dirty = True
            if not self.write_failed:
                self.write_failed = True
                _log.warning(
                    "trial %d: its ledger checkpoint failed (%s); the trial goes on and the next "
                    "write carries its energy",
                    self.live.number,
                    exc,
                )
            return cost

    def estimate(self, measurement: Measurement) -> Cost:
        """The cost the ledger would record for ``measurement``: the energy since the last
        write charged at the ledger's carbon model now (as :meth:`Ledger.checkpoint` does)."""
        return unwritten_cost(self.ledger, self.written, measurement.energy_j)

    def _write(self, measurement: Measurement) -> Cost:
        cost = self.ledger.checkpoint(
            self.live.window_id, measurement, step=self.step, value=self.value
        )
        self.written, self.last_s, self.dirty = cost, time.monotonic(), False
        self.step = self.value = None
        return cost


class _Heartbeat:
    """Checkpoints trials whose row has not been written for a checkpoint interval.

    A trial whose epochs are longer than the interval (or whose reports are throttled) would
    otherwise look dead to :meth:`Ledger.reap` (silent for 3 intervals), and a crash would lose
    more than one interval. One daemon thread per process; it exits once no trial has run for
    ``_LINGER_S`` (sequential trials would otherwise start a thread each, ~0.2 ms).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._runs: set[_TrialRun] = set()
        self._thread: threading.Thread | None = None
        self._wake = threading.Event()  # a new trial may have a shorter interval
        self._wait_s = 1.0  # how long the thread sleeps between rounds

    def add(self, run: _TrialRun) -> None:
        with self._lock:
            self._runs.add(run)
            if run.interval_s / 4 < self._wait_s:
                self._wake.set()  # a shorter interval than the thread now sleeps for
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name="hpaudit-heartbeat")
                self._thread.daemon = True
                self._thread.start()

    def remove(self, run: _TrialRun) -> None:
        with self._lock:
            self._runs.discard(run)

    def _loop(self) -> None:
        idle_since: float | None = None
        while True:
            self._wake.clear()  # before the snapshot: a run added after it wakes the wait below
            with self._lock:
                runs = list(self._runs)
                self._wait_s = min([1.0, *(r.interval_s / 4 for r in runs)])
                now = time.monotonic()
                if runs:
                    idle_since = None
                elif idle_since is None:
                    idle_since = now
                elif now - idle_since >= _LINGER_S:
                    self._thread = None
                    return
            for run in runs:
                if now - run.last_s >= run.interval_s:
                    try:
                        run.checkpoint(step=None, value=None, force=True)
                    except Exception as exc:  # the trial's own reports will surface it
                        _log.debug("heartbeat checkpoint failed: %s", exc)
            self._wake.wait(self._wait_s)


heartbeat = _Heartbeat()
