"""``optimize``: a budgeted ``study.optimize`` -- metered objective, BudgetPruner, BudgetCallback.

Example:

    >>> import optuna
    >>> from hpsearch_budget import Budget
    >>> from hpsearch_budget.optuna import optimize
    >>> def objective(trial):
    ...     x = trial.suggest_float("x", -10, 10)
    ...     for step in range(5):
    ...         trial.report((x - 2) ** 2 + 1 / (step + 1), step)
    ...         if trial.should_prune():
    ...             raise optuna.TrialPruned()
    ...     return (x - 2) ** 2
    >>> optuna.logging.set_verbosity(optuna.logging.WARNING)
    >>> study = optuna.create_study(pruner=optuna.pruners.MedianPruner())
    >>> import tempfile
    >>> url = f"sqlite:///{tempfile.mkdtemp()}/ledger.db"
    >>> run = optimize(study, objective, budget=Budget(co2e_kg=1.0), ledger=url,
    ...                n_trials=10)
    >>> run.n_trials, run.spent.co2e_kg < 1.0
    (10, True)
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import optuna
from optuna.trial import FrozenTrial, Trial, TrialState

from hpsearch_budget.budget import Budget, Cost
from hpsearch_budget.budget._accounting import Accounting, _min, fits, used_fraction
from hpsearch_budget.errors import BudgetExceededError, HpauditInputError
from hpsearch_budget.optuna import _state
from hpsearch_budget.optuna._callback import BudgetCallback
from hpsearch_budget.optuna._limits import spent_label, study_source
from hpsearch_budget.optuna._metered import MeteredObjective
from hpsearch_budget.optuna._objective_checks import check_directions
from hpsearch_budget.optuna._pruner import BudgetPruner
from hpsearch_budget.policy._reload import current, follow_policy
from hpsearch_budget.policy._sweep import CapWarner, begin_sweep, open_ledger

if TYPE_CHECKING:
    from hpsearch_budget.ledger import Ledger
    from hpsearch_budget.meters import Meter


@dataclass(frozen=True)
class BudgetedRun:
    """What a budgeted sweep spent and how its trials ended (the whole study, all workers)."""

    study: str
    budget: Budget
    spent: Cost  # the study's spent in the ledger (finished + last checkpoints)
    source: str  # weakest energy source of the study's trials: "estimated" figures are estimates
    n_trials: int
    n_complete: int
    n_pruned_budget: int  # pruned because the budget could not pay for them
    n_pruned_other: int  # pruned by the wrapped pruner (Median, Hyperband, ...)
    n_failed: int
    stopped: str | None  # why the budget stopped the study; None if n_trials / timeout ended it
    n_unfinished: int = 0  # still RUNNING in Optuna's storage: running elsewhere, or killed
    nearest_cap: str | None = None  # "98% of the project 'nlp' monthly energy cap", if nearer

    @property
    def used_fraction(self) -> float:
        """Fraction of the binding limit spent."""
        return used_fraction(self.spent, self.budget.as_cost())

    def describe(self) -> str:
        """A few lines for a terminal; estimated figures say so."""
        label = {"measured": "", "estimated": " (estimated)"}.get(self.source, f" ({self.source})")
        lines = [
            f"study {self.study!r}: spent {self.spent.co2e_kg * 1000:.3g} g CO2e, "
            f"{self.spent.energy_kwh * 1000:.3g} Wh{label}, {100 * self.used_fraction:.0f}% of "
            f"the budget ({self.budget.describe()})"
            + (f"; {self.nearest_cap}" if self.nearest_cap else ""),
            f"trials: {self.n_trials} = {self.n_complete} complete + {self.n_pruned_budget} "
            f"pruned by the budget + {self.n_pruned_other} pruned as unpromising + "
            f"{self.n_failed} failed"
            + (
                f" + {self.n_unfinished} unfinished (running in another worker, or killed: "
                "hpaudit ledger show)"
                if self.n_unfinished
                else ""
            ),
        ]
        if self.stopped:
            lines.append(f"stopped: {self.stopped}")
        return "\n".join(lines)


def optimize(
    study: optuna.Study,
    objective: Callable[[Trial], Any],
    *,
    budget: Budget | Mapping[str, float],
    ledger: Ledger | str | None = None,
    n_trials: int | None = None,
    timeout: float | None = None,
    policy: Any = None,
    meter: Meter | None = None,
    max_steps: int | None = None,
    energy_objective: bool = False,
    project: str | None = None,
    user: str | None = None,
    checkpoint_interval_s: float = 30.0,
    min_checkpoint_interval_s: float = 1.0,
    callbacks: Iterable[Callable[[optuna.Study, FrozenTrial], None]] | None = None,
    **optimize_kwargs: Any,
) -> BudgetedRun:
    """Run ``study.optimize`` inside ``budget``, metering every trial into ``ledger``.

    Wires :func:`metered` (with reservations), :class:`BudgetPruner` (wrapping the study's own
    pruner, for single-objective studies; Optuna cannot prune multi-objective trials) and
    :class:`BudgetCallback`. Run the same call in many processes or machines on one Optuna
    storage and one ledger: they share the budget. ``n_trials`` and ``timeout`` may both be
    None: the budget ends the sweep. Extra keyword arguments go to ``study.optimize``
    (``n_jobs``, ``catch``, ``gc_after_trial``, ``show_progress_bar``).

    Lab policy: ``policy=None`` finds the lab's file (``hpaudit.toml``, ``[tool.hpaudit]`` in
    ``pyproject.toml``, ``$HPAUDIT_POLICY``) before any trial; ``False`` opts out. The sweep
    follows the file: an edited cap or ``on_exceed`` applies within a second (at the next
    trial or report); a broken edit leaves the last good version in force. Its
    caps (study; project / user per UTC month) apply on top of ``budget`` as its ``on_exceed``
    says: "prune" prunes the least promising running trials and starts no new one, "stop"
    prunes every running trial at its next report and stops the study, "warn" logs each cap
    passed once (``budget`` is still enforced). Its defaults (region, PUE, price) charge the
    ledger rows unless ``ledger`` is a Ledger built with a carbon model of its own.

    What the meter measured between trials is written as ``idle`` ledger rows (the last of them
    when the sweep ends): it counts in ``spent``, never as a trial (see :func:`metered`).

    ``n_trials`` is recorded as the study user attribute ``n_trials`` (trials already run plus
    this call's), the plan ``hpaudit report`` forecasts the cost to finish from; the ledger's
    URL (no password) as ``hpaudit_ledger`` (by :func:`metered`), the ledger the report reads.

    Overshoot bound: spent <= budget + one checkpoint interval (``trial.report`` to
    ``trial.report``) of each running trial. Far from the limit a report covered by its
    trial's reservation may wait up to ``min_checkpoint_interval_s`` before it is written to
    the ledger (see :func:`metered`); near the limit every report is written. Trials that
    never report (multi-objective studies) can only be held to their reservation: the bound is
    then the part of each running trial's cost beyond its forecast.

    Raises:
        BudgetExceededError: the study (or a policy cap) has nothing left before it starts.
        HpauditInputError: a bad budget, ledger, or study directions that conflict with
            ``energy_objective``.
    """
    if not isinstance(study, optuna.Study):
        raise HpauditInputError(
            f"optimize() needs an optuna.Study (optuna.create_study(...)), got "
            f"{type(study).__name__}"
        )
    if n_trials is not None and (
        isinstance(n_trials, bool) or not isinstance(n_trials, int) or n_trials < 1
    ):
        raise HpauditInputError(f"n_trials must be a positive integer or None, got {n_trials!r}")
    if timeout is not None and not _positive_seconds(timeout):
        raise HpauditInputError(f"timeout must be a number of seconds > 0 or None, got {timeout!r}")
    budget = _as_budget(budget)
    # The lab's policy (hpaudit.toml, [tool.hpaudit], $HPAUDIT_POLICY) is found once per sweep
    # and followed by every piece (an edit applies within a second); False opts out. Its
    # defaults charge the ledger unless the ledger has its own carbon model.
    live = follow_policy(policy)
    found = current(live)
    policy = live if live is not None else False
    ledger = open_ledger(ledger, found)
    check_directions(study, energy_objective)
    begin_sweep(ledger.url, study.study_name)
    _admit(study, budget, ledger, found, project, user, n_trials)
    inner = objective.objective if isinstance(objective, MeteredObjective) else objective
    # The callback runs inside the metered objective, after each trial's row is final: as a
    # study.optimize callback it would cost Optuna's re-read of every finished trial.
    callback = BudgetCallback(budget, ledger, policy=policy, project=project, user=user)
    metered_objective = MeteredObjective(
        inner,
        ledger,
        meter
        if meter is not None or not isinstance(objective, MeteredObjective)
        else objective.meter,
        energy_objective,
        budget=budget,
        policy=policy,
        max_steps=max_steps,
        project=project,
        user=user,
        checkpoint_interval_s=checkpoint_interval_s,
        min_checkpoint_interval_s=min_checkpoint_interval_s,
        budget_callback=callback,
    )
    if n_trials is not None:  # the plan the report's forecast of the cost to finish reads
        study.set_user_attr("n_trials", len(study.get_trials(deepcopy=False)) + n_trials)
    original_pruner = study.pruner
    if len(study.directions) == 1 and not isinstance(original_pruner, BudgetPruner):
        wrapped = None if isinstance(original_pruner, optuna.pruners.NopPruner) else original_pruner
        study.pruner = BudgetPruner(
            budget, ledger, wrapped, max_steps, policy=policy, project=project, user=user
        )
    user_callbacks = list(callbacks or ())
    try:
        study.optimize(
            metered_objective,
            n_trials=n_trials,
            timeout=timeout,
            # None, not []: Optuna re-reads each finished trial for any list of callbacks
            callbacks=user_callbacks or None,
            **optimize_kwargs,
        )
    finally:
        study.pruner = original_pruner
        # What the meter measured between the last trials is the sweep's too (conservation).
        metered_objective.record_idle(study)
    # The study stopped on either; every finished trial kept its result in the study.
    for error in (metered_objective.ledger_error, metered_objective.callback_error):
        if error is not None:
            raise error
    callback._warner(study.study_name).check(fresh=True)  # on_exceed = "warn": the last trials
    return _summary(
        study,
        budget,
        ledger,
        callback.stopped or metered_objective.stopped,
        policy=current(live),
        project=project,
        user=user,
    )


def _as_budget(budget: Any) -> Budget:
    if isinstance(budget, Budget):
        return budget
    if isinstance(budget, Mapping):
        return Budget(**budget)
    raise HpauditInputError(
        f"budget must be a hpsearch_budget.Budget (e.g. Budget(co2e_kg=0.5)), got "
        f"{type(budget).__name__}"
    )


def _admit(
    study: optuna.Study,
    budget: Budget,
    ledger: Ledger,
    policy: Any,
    project: str | None,
    user: str | None,
    n_trials: int | None = None,
) -> None:
    """Refuse to start a sweep whose budget is spent, or whose forecast exceeds what is left of
    a policy cap (unless the policy says ``on_exceed = "warn"``)."""
    name = study.study_name
    acc = Accounting(ledger, _state.limits_for(name, budget, None), ttl_s=0.0)
    state = _state.study_state(ledger, name)
    state.sync(force=True)  # learn from the study's finished trials, whoever ran them
    typical = state.forecaster.new_trial()
    spent = acc.spent()
    if policy is not None:
        forecast = _sweep_forecast(typical, n_trials, acc.left())
        admission = policy.admit(ledger, name, project, user, forecast, budget=budget)
        if not admission.fits:  # on_exceed = "warn": admit logged it; say it once per sweep
            CapWarner(ledger, policy, name, project, user).mark(admission.binding)
    limit = budget.as_cost()
    if used_fraction(spent, limit) >= 1.0 or not fits(typical, acc.left_after_release()):
        raise BudgetExceededError(
            f"study {name!r} has already spent {spent.describe_in(limit)}{spent_label(study)} of "
            f"its budget ({budget.describe()}) and what is left cannot pay for a typical trial "
            f"({typical.describe_in(limit)}, estimate); raise the budget or start a study with a "
            f"new name"
        )


def _sweep_forecast(typical: Cost, n_trials: int | None, left: Cost) -> Cost:
    """What a sweep of ``n_trials`` is forecast to spend: that many typical trials, but never
    more than its own budget has ``left`` (the budget stops it there). Nothing when the number
    of trials is unknown, and nothing either for a new study (no typical trial yet)."""
    if n_trials is None:
        return Cost()
    return _min(typical.scale(n_trials), left.clip())


def _summary(
    study: optuna.Study,
    budget: Budget,
    ledger: Ledger,
    stopped: str | None,
    *,
    policy: Any = None,
    project: str | None = None,
    user: str | None = None,
) -> BudgetedRun:
    trials = study.get_trials(deepcopy=False)
    pruned = [t for t in trials if t.state == TrialState.PRUNED]
    by_budget = sum(
        1 for t in pruned if str(t.user_attrs.get("hpaudit_prune_reason", "")).startswith("budget")
    )
    named = _state.named_limits(study.study_name, budget, policy, project, user)
    acc = Accounting(ledger, [(s, c) for s, c, _ in named], ttl_s=0.0)
    return BudgetedRun(
        study=study.study_name,
        budget=budget,
        spent=acc.spent(),
        source=str(study_source(study) or "none"),
        n_trials=len(trials),
        n_complete=sum(1 for t in trials if t.state == TrialState.COMPLETE),
        n_pruned_budget=by_budget,
        n_pruned_other=len(pruned) - by_budget,
        n_failed=sum(1 for t in trials if t.state == TrialState.FAIL),
        stopped=stopped,
        n_unfinished=sum(1 for t in trials if not t.state.is_finished()),
        nearest_cap=_nearest_cap(named, acc),
    )


def _nearest_cap(named: list[tuple[Any, Cost, str]], acc: Accounting) -> str | None:
    """How much of the most used policy cap the sweep's scope has used, when it is more than
    of the study's budget (a cap, not the budget, may have ended the sweep)."""
    used = acc.used_by_limit()
    fractions = [used_fraction(u, limit) for u, (_, limit, _) in zip(used, named, strict=True)]
    if len(fractions) < 2 or max(fractions[1:]) <= fractions[0]:
        return None
    i = 1 + max(range(len(fractions) - 1), key=lambda k: fractions[1 + k])
    return f"{100 * fractions[i]:.0f}% of the {named[i][2]}"


def _positive_seconds(value: object) -> bool:
    return (
        isinstance(value, numbers.Real)
        and not isinstance(value, bool)
        and 0.0 < float(value) < math.inf
    )
