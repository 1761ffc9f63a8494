"""``metered``: a Ray Tune function trainable whose every trial is a window in the energy ledger.

The wrapper runs inside the trial's worker process, on the node Ray placed it: it measures that
node's devices (the GPUs Ray assigned, ``ray.get_gpu_ids()``), opens a ledger window
(``study`` = the experiment name, ``trial_key = "<study>:<trial_id>"``), checkpoints it at
every ``ray.tune.report`` and on a heartbeat, and finalises it with the trial's fate:

* ``complete``: the function returned;
* ``pruned``: Tune stopped it early (a scheduler, a stopper, stop criteria) -- pass
  ``max_steps`` to count a trial stopped at or after that many reports as ``complete``;
* ``failed``: the function raised (the energy up to that point is still charged);
* ``killed``: interrupted (KeyboardInterrupt); a worker that dies without a word is closed at
  its last checkpoint by :class:`~hpsearch_budget.ray.LedgerCallback` or by ``Ledger.reap``.

Every reported result gains these keys (see ``docs/ray-cluster.md``)::

    energy_j, co2e_g, usd, gpu_s   cost of this ledger window so far (cumulative, PUE in co2e/usd)
    energy_source                  measured | integrated | estimated | replayed (weakest domain)
    hpaudit_window, hpaudit_study  the ledger window id and study

the first result of each window also ``hpaudit_ledger``: the ledger's URL (no password, absolute
SQLite path), by which ``hpaudit report <folder>`` finds the ledger without ``--ledger``;
and, while ``metric=`` names no number reported so far, ``hpaudit_metric_missing`` (the metric
and the keys reported): :class:`~hpsearch_budget.ray.LedgerCallback` warns of it once.

A ledger the worker cannot reach when the trial starts fails the trial with the ledger's
message: a trial never runs unmetered. A ledger that fails later (SQLite locked past
``$HPAUDIT_LEDGER_TIMEOUT_S``, a database gone) never costs the trial its results:

* a checkpoint that cannot be written is logged once and carried by the next write; the
  result it belonged to carries ``hpaudit_ledger_error`` (its figures are then an estimate);
* a final write that fails is logged as an error and, when the function returned, reported as
  one more result (a copy of the last, its figures an estimate) with
  ``hpaudit_ledger_final_error``: BudgetStopper / BudgetScheduler end the experiment on it,
  LedgerCallback keeps it in ``ledger_error``. The row, still running, is closed as
  ``killed`` at its last checkpoint (LedgerCallback at the end, or ``Ledger.reap``).

Example (``ray.init()`` first; the ledger URL must be reachable from every node)::

    from ray import tune
    from hpsearch_budget.ray import metered

    def train(config):
        for epoch in range(10):
            tune.report({"loss": 1.0 / (epoch + 1)})

    tuner = tune.Tuner(metered(train, "sqlite:////shared/hpaudit.db"),
                       param_space={"lr": tune.loguniform(1e-4, 1e-1)})
    tuner.fit()  # each result now carries energy_j, co2e_g and energy_source
"""

from __future__ import annotations

import functools
import inspect
import logging
import math
import os
import socket
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from numbers import Number
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hpsearch_budget.budget import Cost
from hpsearch_budget.errors import HpauditInputError, LedgerError
from hpsearch_budget.ledger._shareable import STUDY_ATTR, shareable_url

if TYPE_CHECKING:
    from hpsearch_budget.carbon import CarbonModel
    from hpsearch_budget.ledger import Ledger
    from hpsearch_budget.meters import Measurement, Meter, Reading

_log = logging.getLogger(__name__)

#: Keys :func:`metered` adds to every reported result.
RESULT_KEYS = (
    "energy_j",
    "co2e_g",
    "usd",
    "gpu_s",
    "energy_source",
    "hpaudit_window",
    "hpaudit_study",
)

#: Added to the first result of each ledger window: the ledger's URL, no password (the name
#: the Optuna integration gives the study attribute): ``hpaudit report <folder>`` joins it.
LEDGER_URL_KEY = STUDY_ATTR

#: Added to a result while ``metered(metric=...)`` has no number to store as the window's
#: objective value: ``{"metric": name, "reported": [the keys the trainable reported]}``.
METRIC_MISSING_KEY = "hpaudit_metric_missing"

#: Added to a result whose checkpoint the ledger could not write: the ledger's error.
LEDGER_ERROR_KEY = "hpaudit_ledger_error"

#: Added to the result a trial reports after returning when the ledger could not record its
#: end: the ledger's error. The experiment's budget can no longer be kept: it is ended.
LEDGER_FINAL_ERROR_KEY = "hpaudit_ledger_final_error"

#: A callable that builds the meter of a trial from the GPU ids Ray assigned to it.
MeterFactory = Callable[[Sequence[str]], "Meter"]

# Trial id -> event set once the trial's window is finalised. The actor's main thread waits on
# it in cleanup(), so Ray does not tear the worker down while the row is being written.
_FINALIZED: dict[str, threading.Event] = {}
# Trial id -> its training_iteration when Ray restored it from a checkpoint (a retry, a
# Tuner.restore, a PBT exploit), set by the mixin before the function's thread starts.
_RESUMED_AT: dict[str, int] = {}
# One Ledger per URL per worker process (actors are reused across trials).
_LEDGERS: dict[str, Ledger] = {}
_LEDGERS_LOCK = threading.Lock()


def metered(
    trainable: Callable[..., Any],
    ledger: Ledger | str | None = None,
    *,
    study: str | None = None,
    metric: str | None = None,
    max_steps: int | None = None,
    meter: MeterFactory | None = None,
    project: str | None = None,
    user: str | None = None,
    checkpoint_interval_s: float = 30.0,
    finalize_timeout_s: float = 30.0,
    policy: Any = None,
) -> Callable[[dict[str, Any]], None]:
    """Wrap a Ray Tune function trainable so every trial is metered into the ledger.

    Args:
        trainable: ``def train(config): ...`` reporting with ``ray.tune.report`` (generator
            and returning functions work too). Wrap the function itself, then apply
            ``tune.with_parameters`` / ``tune.with_resources`` outside or inside: both work
            (``with_parameters`` outside passes its data on to ``trainable`` as keywords).
        ledger: a :class:`~hpsearch_budget.ledger.Ledger`, or its URL; ``None`` reads
            ``$HPAUDIT_LEDGER`` (else ``sqlite:///hpaudit.db``) here, on the driver. A relative
            SQLite path is made absolute here, since Ray runs trials in their own folders.
        study: ledger study name; default the Tune experiment name.
        metric: a reported metric to store as the window's objective value.
        max_steps: a trial stopped by Tune after this many reports counts as ``complete``
            (its ``training_iteration``: reports before a restore from a checkpoint count).
        meter: ``meter(gpu_ids) -> Meter`` built in the worker (taken as the trial's own);
            default :func:`hpsearch_budget.meters.default_meter` on the assigned GPUs, charging
            the trial its part of counters it shares (a fractional GPU, a RAPL package):
            :class:`~hpsearch_budget.attribution.ProcessShareMeter`.
        project, user: who the windows belong to (policy caps per project / user).
        checkpoint_interval_s: heartbeat: the longest a running window goes unrecorded.
        finalize_timeout_s: how long a stopping worker waits for its final ledger write.
        policy: the lab policy whose defaults (region, PUE, price) charge the windows unless
            ``ledger`` is a Ledger with a carbon model of its own; None finds the lab's file
            (``hpaudit.toml``, ``[tool.hpaudit]``, ``$HPAUDIT_POLICY``) here, on the driver;
            False uses none. Caps are enforced by BudgetStopper / BudgetScheduler.
    """
    _check_function(trainable)
    _check_positive(checkpoint_interval_s, "checkpoint_interval_s")
    _check_positive(finalize_timeout_s, "finalize_timeout_s")
    if max_steps is not None and not (isinstance(max_steps, int) and max_steps > 0):
        raise HpauditInputError(f"max_steps must be a positive integer, got {max_steps!r}")
    url, carbon = _ledger_target(ledger)
    carbon = _policy_carbon(policy, carbon)
    project, user = _identity(study, project, user)
    spec = _Spec(
        url=url,
        carbon=carbon,
        study=study,
        metric=metric,
        max_steps=max_steps,
        meter=meter,
        project=project,
        user=user,
        checkpoint_interval_s=float(checkpoint_interval_s),
    )

    def metered_trainable(config: dict[str, Any], **data: Any) -> None:
        # tune.with_parameters applied outside calls this with its data as keywords.
        fn = functools.partial(trainable, **data) if data else trainable
        _TrialRun(spec).run(fn, config)

    # Ray names trials after the function and reads these attributes (with_resources,
    # mixins); the metered mixin makes the actor wait for the final ledger write.
    metered_trainable.__name__ = getattr(trainable, "__name__", "trainable")
    metered_trainable.__qualname__ = getattr(trainable, "__qualname__", "trainable")
    metered_trainable.__doc__ = trainable.__doc__
    if hasattr(trainable, "_resources"):
        metered_trainable._resources = trainable._resources  # type: ignore[attr-defined]
    mixin = _metered_mixin(finalize_timeout_s)
    metered_trainable.__mixins__ = (mixin, *getattr(trainable, "__mixins__", ()))  # type: ignore[attr-defined]
    metered_trainable._hpaudit_ledger_url = url  # type: ignore[attr-defined]
    return metered_trainable


# -- arguments ------------------------------------------------------------------------------


def _check_function(trainable: object) -> None:
    if inspect.isclass(trainable):
        raise HpauditInputError(
            f"metered() wraps a function trainable `def train(config): ...`, got the class "
            f"{trainable.__name__}; move the training loop into a function that calls "
            "ray.tune.report, or record the class trainable with LedgerCallback alone"
        )
    if not callable(trainable):
        raise HpauditInputError(
            f"metered() wraps a function trainable `def train(config): ...`, got "
            f"{type(trainable).__name__} {trainable!r}; pass the function itself, not its name "
            "or its result"
        )
    try:
        params = inspect.signature(trainable).parameters.values()
    except (TypeError, ValueError):
        return  # a builtin or C callable: Ray will judge it
    positional = [
        p
        for p in params
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty
    ]
    if len(positional) != 1:
        raise HpauditInputError(
            f"a Ray Tune function trainable takes exactly one argument, `config`; "
            f"{getattr(trainable, '__name__', trainable)!r} takes {len(positional)} "
            "required positional arguments; give the extra ones a default, or pass them with "
            "tune.with_parameters inside: metered(tune.with_parameters(train, data=...))"
        )


def _identity(study: str | None, project: str | None, user: str | None) -> tuple[str | None, str]:
    """Project and user, resolved here on the driver as the policy's caps resolve them
    (argument, else $HPAUDIT_PROJECT / $HPAUDIT_USER, else the study / the login name); a
    project left open becomes the study name in the worker, once the experiment is known."""
    from hpsearch_budget.policy import resolve_identity

    placeholder = "\x00study"
    resolved = resolve_identity(study or placeholder, project, user)
    return (None if resolved.project == placeholder else resolved.project), resolved.user


def _check_positive(value: float, name: str) -> None:
    if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
        raise HpauditInputError(f"{name} must be a positive number of seconds, got {value!r}")


def _ledger_target(ledger: Ledger | str | None) -> tuple[str, CarbonModel | None]:
    """The URL (and carbon model) a worker will open; checked here, on the driver."""
    from hpsearch_budget.ledger import Ledger

    if isinstance(ledger, Ledger):
        return _absolute_sqlite(ledger.url), ledger.carbon
    if ledger is not None and not isinstance(ledger, str):
        raise HpauditInputError(
            f"ledger must be a Ledger or a database URL string, got {type(ledger).__name__}"
        )
    probe = Ledger(ledger)  # fails here, on the driver, before any trial is scheduled
    try:
        return _absolute_sqlite(probe.url), None
    finally:
        probe.close()


def _policy_carbon(policy: Any, carbon: CarbonModel | None) -> CarbonModel | None:
    """The lab policy's carbon model, unless the caller's ledger brought its own."""
    from hpsearch_budget.ledger import default_carbon
    from hpsearch_budget.policy._sweep import policy_carbon, resolve_policy

    found = policy_carbon(resolve_policy(policy))  # a malformed file fails here, up front
    if found is not None and (carbon is None or carbon == default_carbon()):
        return found
    return carbon


def _absolute_sqlite(url: str) -> str:
    # Ray runs each trial with its trial folder as working directory: a relative SQLite path
    # would give every trial a ledger of its own.
    prefix = "sqlite:///"
    if url.startswith(prefix) and not url.startswith(prefix + "/"):
        path, sep, query = url[len(prefix) :].partition("?")
        return prefix + str(Path(path).resolve()) + sep + query
    return url


# -- in the worker --------------------------------------------------------------------------


@dataclass(frozen=True)
class _Spec:
    url: str
    carbon: CarbonModel | None
    study: str | None
    metric: str | None
    max_steps: int | None
    meter: MeterFactory | None
    project: str | None
    user: str
    checkpoint_interval_s: float


@dataclass
class _State:
    window: int = -1
    start: Reading | None = None
    steps: int = 0
    before: int = 0  # the trial's reports before this window (restored from a checkpoint)
    value: float | None = None
    cost: Cost = field(default_factory=Cost)  # what the ledger last recorded
    failing: str | None = None  # the ledger's error while its writes fail
    warned: bool = False  # a failed checkpoint was logged (once per trial)
    last: dict[str, Any] = field(default_factory=dict)  # the last result reported
    error: Exception | None = None  # the heartbeat's meter failed: raised at the next report


class _TrialRun:
    """One trial's window: opened at start, checkpointed per report, finalised at the end."""

    def __init__(self, spec: _Spec) -> None:
        self.spec = spec
        self.state = _State()
        self.lock = threading.Lock()
        self.stop = threading.Event()

    def run(self, trainable: Callable[..., Any], config: dict[str, Any]) -> None:
        from ray.train._internal.session import get_session
        from ray.tune import get_context

        session = get_session()
        if session is None:
            raise HpauditInputError(
                "a metered trainable runs inside Ray Tune: pass it to tune.Tuner(...).fit(), "
                "do not call it directly"
            )
        ctx = get_context()
        trial_id = ctx.get_trial_id()
        done = _FINALIZED[trial_id] = threading.Event()
        self.state.before = _RESUMED_AT.pop(trial_id, 0)
        try:
            self.study = self.spec.study or ctx.get_experiment_name()
            self.ledger = _worker_ledger(self.spec)
            gpu_ids = _assigned_gpus()
            share = _gpu_share(ctx, len(gpu_ids))
            self.meter = self._make_meter(gpu_ids, share)
            try:
                self._open(trial_id, config, gpu_ids, share)
                self._run_with_reports(session, trainable, config)
            finally:
                self.meter.close()
        finally:
            done.set()  # also when the ledger or the meter could not be opened

    def _make_meter(self, gpu_ids: Sequence[str], share: float) -> Meter:
        if self.spec.meter is not None:
            return self.spec.meter(gpu_ids)
        from hpsearch_budget.attribution import ProcessShareMeter
        from hpsearch_budget.meters import default_meter

        meter = default_meter(devices=list(gpu_ids))
        # The machine's counters see every trial on the node (RAPL) or on the GPU (a fractional
        # GPU): this trial is charged its part of them, not all of it.
        if ProcessShareMeter.needed(meter, share):
            return ProcessShareMeter(meter, gpu_share=share)
        return meter

    def _open(self, trial_id: str, config: Mapping[str, Any], gpu_ids: Sequence[str], share: float):
        self.state.start = self.meter.read()  # first: a meter that fails leaves no row
        self.state.window = self.ledger.open_window(
            self.study,
            f"{self.study}:{trial_id}",
            trial_number=_trial_number(trial_id),
            params=_jsonable(dict(config)),
            devices=[f"gpu:{g}" for g in gpu_ids],
            gpu_share=share,
            project=self.spec.project or self.study,
            user=self.spec.user,
            checkpoint_interval_s=self.spec.checkpoint_interval_s,
        )

    def _run_with_reports(
        self, session: Any, trainable: Callable[..., Any], config: dict[str, Any]
    ) -> None:
        original = session.report

        def report(metrics: dict[str, Any], checkpoint: Any = None) -> None:
            original(self._annotate(metrics), checkpoint=checkpoint)

        # Every path to a result (ray.tune.report, ray.train.report, a generator's yield)
        # ends in the session's report: patching the instance catches them all.
        session.report = report
        beat = threading.Thread(target=self._heartbeat, name="hpaudit-heartbeat", daemon=True)
        beat.start()
        status, error = "failed", None
        try:
            output = _call(trainable, config, report)
            if isinstance(output, dict | Number) and not isinstance(output, bool):
                report(output if isinstance(output, dict) else {"_metric": output})
            status = "complete"
        except SystemExit:
            # Tune stopped the trial (scheduler, stopper, stop criteria) while it reported;
            # max_steps counts the trial's reports, also those before a restore.
            steps = self.state.before + self.state.steps
            reached = self.spec.max_steps is not None and steps >= self.spec.max_steps
            status = "complete" if reached else "pruned"
            raise
        except KeyboardInterrupt:
            status = "killed"
            raise
        finally:
            self.stop.set()
            session.report = original
            error = self._finalize(status)
        if error is not None:  # the function returned: Tune still takes one more result
            original(self._unrecorded_end(error))

    def _measure(self) -> Measurement:
        assert self.state.start is not None
        return self.meter.read() - self.state.start

    def _annotate(self, metrics: Mapping[str, Any]) -> dict[str, Any]:
        with self.lock:
            if self.state.error is not None:
                raise self.state.error
            self.state.steps += 1
            value = metrics.get(self.spec.metric) if self.spec.metric else None
            if isinstance(value, Number) and not isinstance(value, bool):
                self.state.value = float(value)  # type: ignore[arg-type]
            m = self._measure()
            cost = self._checkpoint(m, step=self.state.steps - 1)
        out = self._with_cost(dict(metrics), cost, m)
        if self.state.steps == 1:
            # Once per window, not per result: the folder's reader reads every result line.
            out[LEDGER_URL_KEY] = shareable_url(self.spec.url)
        if self.state.failing is not None:
            out[LEDGER_ERROR_KEY] = self.state.failing
        if self.spec.metric and self.state.value is None:
            # The driver's LedgerCallback warns once per experiment: only here are the keys
            # the trainable reported known apart from Tune's and ours.
            out[METRIC_MISSING_KEY] = {"metric": self.spec.metric, "reported": sorted(metrics)}
        self.state.last = dict(out)
        return out

    def _with_cost(self, out: dict[str, Any], cost: Cost, m: Measurement) -> dict[str, Any]:
        out.update(
            energy_j=cost.energy_j,
            co2e_g=cost.co2e_g,
            usd=cost.usd,
            gpu_s=cost.gpu_s,
            energy_source=str(m.source) if m.source is not None else "estimated",
            hpaudit_window=self.state.window,
            hpaudit_study=self.study,
        )
        return out

    def _checkpoint(self, m: Measurement, step: int | None = None) -> Cost:
        """Write the window's row; if the ledger fails now, log it once and go on: the next
        write carries this energy (checkpoints are cumulative). The cost: the row's, or what
        it would record (an estimate) while the ledger fails."""
        try:
            cost = self.ledger.checkpoint(self.state.window, m, step=step, value=self.state.value)
        except LedgerError as error:
            self.state.failing = str(error)
            if not self.state.warned:
                self.state.warned = True
                _log.warning(
                    "hpaudit: ledger window %s: a checkpoint failed (%s); the trial goes on and "
                    "the next write carries its energy",
                    self.state.window,
                    error,
                )
            return self._estimate(m)
        self.state.cost, self.state.failing = cost, None
        return cost

    def _heartbeat(self) -> None:
        # Long steps would otherwise leave the window silent: Ledger.reap takes a window
        # silent for 3 intervals for dead, and a crash would lose the whole step.
        while not self.stop.wait(self.spec.checkpoint_interval_s):
            with self.lock:
                try:
                    m = self._measure()
                except Exception as error:  # the meter: surfaced at the next report, not
                    self.state.error = error  # lost with this thread (and its checkpoints)
                    return
                self._checkpoint(m)  # a ledger failure is logged and carried

    def _finalize(self, status: str) -> LedgerError | None:
        """Close the window; the ledger's error if it could not (logged here: the trial's own
        exception, if any, is the one Tune shows)."""
        with self.lock:
            try:
                self.ledger.finalize(
                    self.state.window, self._measure(), status=status, value=self.state.value
                )
            except LedgerError as error:
                _log.error(
                    "hpaudit: ledger window %s could not be finalised as %s (%s); the trial "
                    "keeps its result in Tune, a BudgetStopper / BudgetScheduler ends the "
                    "experiment, and the row is closed as killed at its last checkpoint",
                    self.state.window,
                    status,
                    error,
                )
                return error
        return None

    def _unrecorded_end(self, error: LedgerError) -> dict[str, Any]:
        """The result that tells the driver the ledger could not record this trial's end: the
        last result again, its figures the window's whole cost (an estimate)."""
        m = self._measure()
        out = self._with_cost(dict(self.state.last), self._estimate(m), m)
        out[LEDGER_FINAL_ERROR_KEY] = str(error)
        return out

    def _estimate(self, m: Measurement) -> Cost:
        """What the row would record for ``m`` now (while the ledger cannot be written)."""
        from hpsearch_budget.ledger._unwritten import unwritten_cost

        return unwritten_cost(self.ledger, self.state.cost, m.energy_j)


def _call(
    trainable: Callable[..., Any], config: dict[str, Any], report: Callable[..., None]
) -> Any:
    if inspect.isgeneratorfunction(trainable):
        for output in trainable(config):
            if isinstance(output, dict):
                report(output)
            elif isinstance(output, Number):
                report({"_metric": output})
        return None
    return trainable(config)


def _worker_ledger(spec: _Spec) -> Ledger:
    from hpsearch_budget.ledger import Ledger

    with _LEDGERS_LOCK:
        ledger = _LEDGERS.get(spec.url)
        if ledger is None:
            try:
                ledger = Ledger(spec.url, carbon=spec.carbon)
            except LedgerError as error:
                raise LedgerError(
                    f"ledger unreachable from the Ray worker on {socket.gethostname()} "
                    f"(pid {os.getpid()}): {error}; every node needs the same ledger URL "
                    "(a shared PostgreSQL for many machines, see docs/ray-cluster.md)"
                ) from None
            _LEDGERS[spec.url] = ledger
        return ledger


def _assigned_gpus() -> list[str]:
    """GPU ids Ray assigned to this trial (as in CUDA_VISIBLE_DEVICES: indices or UUIDs)."""
    import ray

    try:
        ids = [str(g) for g in ray.get_gpu_ids()]
    except Exception:  # not connected to Ray (a direct call): trust the environment
        ids = []
    if not ids:
        visible = os.environ.get("CUDA_VISIBLE_DEVICES", "").strip()
        ids = [] if visible in ("", "-1", "NoDevFiles") else visible.split(",")
    return [i.strip() for i in ids if i.strip()]


def _gpu_share(ctx: Any, n_gpus: int) -> float:
    """The share of each assigned GPU this trial holds (0.5 for ``{"gpu": 0.5}``)."""
    if n_gpus == 0:
        return 1.0
    try:
        requested = float(ctx.get_trial_resources().required_resources.get("GPU", n_gpus))
    except Exception:
        return 1.0
    return min(1.0, max(requested / n_gpus, 1e-6))


def _trial_number(trial_id: str) -> int | None:
    # Ray trial ids end in the trial's index: "4e8a1_00003". A search algorithm's trials have
    # 8 hex digits and no index ("8cee68a7"), which are sometimes all decimal digits.
    _, sep, tail = trial_id.rpartition("_")
    return int(tail) if sep and tail.isdigit() else None


def _jsonable(value: Any, depth: int = 0) -> Any:
    """A config as plain JSON: numbers, strings, lists and dicts; anything else as its repr."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if hasattr(value, "item") and callable(value.item):  # numpy scalars
        try:
            return _jsonable(value.item(), depth)
        except (TypeError, ValueError):
            pass
    if depth < 8 and isinstance(value, Mapping):
        return {str(k): _jsonable(v, depth + 1) for k, v in value.items()}
    if depth < 8 and isinstance(value, list | tuple):
        return [_jsonable(v, depth + 1) for v in value]
    return repr(value)[:200]


class _MeteredMixin:
    """Mixed into Ray's function trainable: waits in the actor's main thread for the trial's
    final ledger write before Ray tears the worker down, and tells the window how far a trial
    restored from a checkpoint had got."""

    _hpaudit_finalize_timeout_s = 30.0

    def restore(self, checkpoint_path: Any) -> None:
        super().restore(checkpoint_path)  # type: ignore[misc]  # sets the trial's iteration
        trial_id = getattr(self, "trial_id", None)
        if trial_id:
            _RESUMED_AT[trial_id] = int(getattr(self, "iteration", 0) or 0)

    def cleanup(self) -> None:
        trial_id = getattr(self, "trial_id", None)
        super().cleanup()  # type: ignore[misc]  # stops the training thread
        done = _FINALIZED.pop(trial_id, None) if trial_id else None
        timeout = self._hpaudit_finalize_timeout_s
        if done is not None and not done.wait(timeout):
            _log.error(
                "hpaudit: trial %s did not finalise its ledger window within %.0f s; "
                "LedgerCallback or Ledger.reap will close it at its last checkpoint",
                trial_id,
                timeout,
            )


def _metered_mixin(finalize_timeout_s: float) -> type:
    # A subclass per metered() call carries its timeout; the behaviour stays in the module-level
    # base, so it is pickled by reference and sees this module's state in the worker.
    return type(
        "MeteredMixin", (_MeteredMixin,), {"_hpaudit_finalize_timeout_s": finalize_timeout_s}
    )
