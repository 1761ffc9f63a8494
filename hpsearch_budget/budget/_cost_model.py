"""``TrialCostModel``: how a trial's cost depends on its hyperparameters, learned from earlier
sweeps over the same search space, so a new sweep can be forecast from its first few trials.

Why: a sweep's trial costs spread widely (on LCBench the coefficient of variation is about 1:
a few slow configurations cost 5-10x the median), so the mean of its first 10 trials is off
by about 30%. Much of that spread is the hyperparameters themselves (batch size, width,
depth), and how cost depends on them carries over from one task to the next; what changes is
the scale (data set size, hardware). So the model is

    log(cost) = offset(study) + f(params) + noise

with ``f`` a ridge regression on the parameters' values (log values for parameters that span
decades), maybe their squares and pairwise products, fitted on earlier studies each centred on
its own mean, so that ``f`` learns the shape within a study and nothing of its scale. The form
and the penalty are chosen by leaving one earlier study out at a time. A new study's
offset is the mean of ``log(cost) - f(params)`` over its finished trials; a trial's expected
cost is then ``exp(offset) x E[exp(f(x) + noise)]`` over the search space (a Monte Carlo mean
over parameters drawn from it). Every figure it gives is an estimate.

Without earlier sweeps (a lab's first sweep over a space), :meth:`TrialCostModel.from_sweep`
fits ``f`` on the sweep's own finished trials, its penalty chosen by leaving one trial out.
It needs a few more trials than the space has parameters; from about 20 trials it forecasts a
random-search sweep far better than their mean does, because it averages the cost over the
whole search space rather than over the few configurations that happened to run first
(experiments/results/forecast.md).

Example:

    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> def sweep(scale, n):  # cost grows with width, shrinks with batch size
    ...     ps = [{"units": int(u), "batch": int(b)}
    ...           for u, b in zip(rng.integers(64, 1024, n), rng.integers(16, 512, n))]
    ...     return [(p, scale * p["units"] / p["batch"] * rng.lognormal(0, 0.1)) for p in ps]
    >>> model = TrialCostModel.fit({"task-a": sweep(1.0, 200), "task-b": sweep(50.0, 200)})
    >>> new = sweep(7.0, 400)
    >>> mean, _ = model.mean_cost([p for p, _ in new[:10]], [c for _, c in new[:10]],
    ...                           [p for p, _ in new[10:]])
    >>> truth = float(np.mean([c for _, c in new]))
    >>> abs(mean / truth - 1) < 0.1
    True
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import combinations
from typing import TYPE_CHECKING, Any

import numpy as np

from hpsearch_budget.errors import HpauditInputError

if TYPE_CHECKING:
    from hpsearch_budget.ledger import Ledger

Params = Mapping[str, Any]

#: A numeric parameter whose positive values span more than this ratio is modelled in logs.
_LOG_SPAN = 20.0
#: Fewest earlier studies and trials a model is fitted from.
MIN_STUDIES, MIN_TRIALS = 2, 30
#: A sweep's own model needs this many finished trials more than it has inputs.
SWEEP_SPARE_TRIALS = 3
#: Ridge penalties :meth:`TrialCostModel.from_sweep` chooses from; the last one leaves no
#: more than the intercept (a log-normal mean), for sweeps whose cost the parameters do not
#: explain.
_SWEEP_PENALTIES = (0.3, 1.0, 3.0, 10.0, 30.0, 100.0, 300.0, 1e9)
#: How much lower (x) the held-out error of squares and products must be to be preferred.
_QUADRATIC_MARGIN = 1.1


@dataclass(frozen=True)
class _Column:
    """One input of ``f``: a numeric parameter (maybe in logs) or one category of one."""

    name: str
    log: bool = False
    category: Any = None  # not None: an indicator of this category
    mean: float = 0.0
    sd: float = 1.0

    def raw(self, params: Params) -> float:
        v: Any = params.get(self.name)
        if self.category is not None:
            return 1.0 if v == self.category else 0.0
        if not _is_number(v):
            return math.nan  # missing (a conditional parameter): the mean, below
        x = float(v)
        return math.log(x) if self.log and x > 0 else x


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _columns(trials: Sequence[Params]) -> list[_Column]:
    """The model's inputs, from the parameters the trials share (standardised)."""
    names = sorted({k for p in trials for k in p})
    cols: list[_Column] = []
    for name in names:
        values = [p[name] for p in trials if name in p]
        if all(_is_number(v) for v in values):
            pos = [float(v) for v in values if v > 0]
            log = len(pos) == len(values) and max(pos) / min(pos) > _LOG_SPAN
            cols.append(_Column(name, log=log))
        else:  # categorical: one indicator per category seen (the first is the baseline)
            cats = sorted({repr(v): v for v in values}.items())
            cols += [_Column(name, category=v) for _, v in cats[1:]]
    out = []
    for c in cols:
        x = np.array([c.raw(p) for p in trials], dtype=float)
        ok = np.isfinite(x)
        mean = float(x[ok].mean()) if ok.any() else 0.0
        sd = float(x[ok].std()) if ok.sum() > 1 else 0.0
        if sd > 0:  # a constant input says nothing
            out.append(_Column(c.name, c.log, c.category, mean, sd))
    return out


def _design(cols: Sequence[_Column], trials: Sequence[Params], quadratic: bool) -> np.ndarray:
    """Standardised inputs, and with ``quadratic`` their squares and pairwise products (no
    intercept: each study's offset is its own)."""
    x = np.array([[c.raw(p) for c in cols] for p in trials], dtype=float).reshape(-1, len(cols))
    z = (x - np.array([c.mean for c in cols])) / np.array([c.sd for c in cols])
    z = np.where(np.isfinite(z), z, 0.0)
    if not quadratic or not z.shape[1]:
        return z
    pairs = [z[:, i] * z[:, j] for i, j in combinations(range(z.shape[1]), 2)]
    return np.column_stack([z, z**2, *pairs])


def _ridge(x: np.ndarray, y: np.ndarray, penalty: float) -> np.ndarray:
    return np.linalg.solve(x.T @ x + penalty * np.eye(x.shape[1]), x.T @ y)


def _centred(xs: list[np.ndarray], ys: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Stack the studies, each centred on its own means (the offset absorbs its scale)."""
    return (
        np.vstack([x - x.mean(axis=0) for x in xs]),
        np.concatenate([y - y.mean() for y in ys]),
    )


def _held_out_error(xs: list[np.ndarray], ys: list[np.ndarray], penalty: float) -> float:
    """Leave-one-study-out squared error of the log cost, the held-out study's offset taken
    from its own residuals, as a new sweep's would be."""
    err = 0.0
    for i in range(len(xs)):
        x, y = _centred(xs[:i] + xs[i + 1 :], ys[:i] + ys[i + 1 :])
        r = ys[i] - xs[i] @ _ridge(x, y, penalty)
        err += float(np.sum((r - r.mean()) ** 2))
    return err


def _loo_fit(
    x: np.ndarray, y: np.ndarray, penalty: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ridge with an unpenalised intercept: ``(coef, leave-one-out residuals, cov)``.

    The held-out residuals are exact, in one solve (a linear smoother's held-out residual is
    its residual / (1 - leverage)). ``cov``: the covariance of (intercept, coef) per unit of
    noise variance, ``(A'A + P)^-1 A'A (A'A + P)^-1``.
    """
    a = np.column_stack([np.ones(len(y)), x])
    pen = penalty * np.eye(a.shape[1])
    pen[0, 0] = 0.0
    gram = a.T @ a
    inv = np.linalg.inv(gram + pen)
    beta = inv @ a.T @ y
    leverage = np.einsum("ij,jk,ik->i", a, inv, a)
    r = (y - a @ beta) / np.maximum(1.0 - leverage, 1e-9)
    return beta[1:], r, inv @ gram @ inv


@dataclass(frozen=True)
class TrialCostModel:
    """``log(cost) = offset(study) + f(params) + noise``, ``f`` learned from earlier studies.

    Build it with :meth:`fit` (studies as ``(params, cost)`` pairs), :meth:`from_ledger`
    (the ledger's complete trials of other studies) or :meth:`from_sweep` (a sweep's own
    trials); use :meth:`mean_cost` for a new study.
    """

    columns: tuple[_Column, ...]
    quadratic: bool  # squares and pairwise products of the inputs too
    coef: np.ndarray
    noise_sd: float  # sd of the log residuals within the earlier studies
    n_studies: int
    n_trials: int
    pool: tuple[Params, ...]  # the earlier trials' parameters: a search space's stand-in
    span: tuple[float, float]  # f over the earlier trials, each study centred: no extrapolation
    own_sweep: bool = False  # fitted on the forecast sweep's own trials (from_sweep)
    #: from_sweep: covariance of (intercept, coef) per unit noise variance. Its ``f`` is as
    #: uncertain as its offset, since both come from the same few trials.
    coef_cov: np.ndarray | None = None

    def describe(self) -> str:
        """What the model was learned from, for a forecast's method line."""
        if self.own_sweep:
            return f"cost model of this sweep's {self.n_trials} trials (cost vs parameters)"
        return f"cost model of {self.n_studies} earlier sweeps ({self.n_trials} trials)"

    @classmethod
    def fit(
        cls, studies: Mapping[str, Sequence[tuple[Params, float]]], *, ridge: float = 1.0
    ) -> TrialCostModel:
        """Fit ``f`` on earlier studies: ``{study: [(params, cost), ...]}``, costs in any one
        unit (joules, say) and > 0. Each study is centred on its own mean log cost."""
        kept = {
            s: [(p, float(c)) for p, c in rows if _is_number(c) and c > 0]
            for s, rows in studies.items()
        }
        kept = {s: rows for s, rows in kept.items() if len(rows) >= 2}
        n = sum(len(rows) for rows in kept.values())
        if len(kept) < MIN_STUDIES or n < MIN_TRIALS:
            raise HpauditInputError(
                f"a cost model needs at least {MIN_STUDIES} earlier studies and {MIN_TRIALS} "
                f"finished trials with a cost; got {len(kept)} studies, {n} trials"
            )
        trials = [p for rows in kept.values() for p, _ in rows]
        cols = _columns(trials)
        if not cols:
            raise HpauditInputError(
                "the earlier studies' trials have no parameter that varies: there is nothing "
                "to learn how cost depends on the parameters from"
            )
        ys = [np.log([c for _, c in rows]) for rows in kept.values()]
        # The inputs' form (linear, or with squares and products) and the ridge penalty are
        # chosen by how well they forecast a study left out: few or unlike studies get a
        # simple, strongly shrunk model instead of one that fits their noise.
        best: tuple[float, bool, float] | None = None
        for quadratic in (False, True):
            xs = [_design(cols, [p for p, _ in rows], quadratic) for rows in kept.values()]
            for penalty in (0.1 * ridge, ridge, 10 * ridge, 100 * ridge, 1000 * ridge):
                err = _held_out_error(xs, ys, penalty)
                if best is None or err < best[0]:
                    best = (err, quadratic, penalty)
        assert best is not None
        _, quadratic, penalty = best
        xs = [_design(cols, [p for p, _ in rows], quadratic) for rows in kept.values()]
        x, y = _centred(xs, ys)
        coef = _ridge(x, y, penalty)
        dof = max(1, len(y) - len(kept) - x.shape[1])
        noise = float(math.sqrt(float(np.sum((y - x @ coef) ** 2)) / dof))
        f = x @ coef  # centred fits: the range the model has evidence for
        return cls(
            tuple(cols),
            quadratic,
            coef,
            noise,
            len(kept),
            n,
            tuple(trials),
            (float(f.min()), float(f.max())),
        )

    @classmethod
    def from_sweep(cls, trials: Sequence[tuple[Params, float]]) -> TrialCostModel:
        """Fit ``f`` on one sweep's own finished trials, ``[(params, cost), ...]`` (cost > 0),
        when there are no earlier sweeps to learn from.

        The form (linear; squares and products too once there are enough trials) and the
        ridge penalty are chosen by leaving one trial out, from a grid whose last penalty
        leaves only the intercept: a sweep whose cost the parameters do not explain gets a
        log-normal mean. Needs more trials than the model has inputs (the error says how
        many); fitted on trials that trained to the end, it forecasts full trainings.
        """
        kept = [(p, float(c)) for p, c in trials if _is_number(c) and c > 0]
        trial_params = [p for p, _ in kept]
        cols = _columns(trial_params) if kept else []
        need = max(len(cols) + SWEEP_SPARE_TRIALS, 2 + SWEEP_SPARE_TRIALS)
        if len(kept) < need:
            raise HpauditInputError(
                f"a cost model of one sweep needs at least {need} finished trials with a cost "
                f"(its {len(cols)} varying parameters + {SWEEP_SPARE_TRIALS}); got {len(kept)}"
            )
        y = np.log([c for _, c in kept])
        best: tuple[float, bool, np.ndarray, np.ndarray, np.ndarray] | None = None
        for quadratic in (False, True):
            x = _design(cols, trial_params, quadratic)
            if quadratic and len(y) < 2 * x.shape[1]:
                break  # too few trials to tell a curved shape from noise
            # The curved form must forecast clearly better: with a few dozen trials it
            # otherwise wins on noise now and then, and its extremes go wild.
            margin = _QUADRATIC_MARGIN if quadratic else 1.0
            for penalty in _SWEEP_PENALTIES:
                coef, r, cov = _loo_fit(x, y, penalty)
                err = float(np.mean(r**2))
                if best is None or err * margin < best[0]:
                    best = (err, quadratic, coef, x, cov)
        assert best is not None
        err, quadratic, coef, x, cov = best
        f = x @ coef
        return cls(
            tuple(cols),
            quadratic,
            coef,
            math.sqrt(err),  # held-out: the noise a new trial of this sweep sees
            1,
            len(kept),
            tuple(trial_params),
            (float(f.min()), float(f.max())),
            own_sweep=True,
            coef_cov=cov,
        )

    @classmethod
    def from_ledger(
        cls, ledger: Ledger | str, *, exclude: Iterable[str] = (), params: Iterable[str] = ()
    ) -> TrialCostModel:
        """Fit on the ledger's complete tuning trials of every study but ``exclude``, using the
        energy of each row; ``params``: keep only studies whose trials have all these names
        (the new sweep's search space), and only those inputs."""
        from hpsearch_budget.ledger import Ledger

        # A history is read, never created: a mistyped path is an error, not a new empty file.
        lg = ledger if isinstance(ledger, Ledger) else Ledger(ledger, create=False)
        rows = lg.entries()
        skip, names = set(exclude), set(params)
        studies: dict[str, list[tuple[Params, float]]] = {}
        if not rows.empty:
            done = rows[(rows["status"] == "complete") & (rows["phase"] == "tuning")]
            for r in done.itertuples(index=False):
                p = r.params if isinstance(r.params, Mapping) else {}
                if r.study in skip or not names <= set(p):
                    continue
                kept = {k: v for k, v in p.items() if k in names} if names else dict(p)
                studies.setdefault(str(r.study), []).append((kept, float(r.energy_j or 0.0)))
        return cls.fit(studies)

    def shape(self, trials: Sequence[Params]) -> np.ndarray:
        """``f(params)`` of each trial: its log cost relative to its study's typical trial,
        held within what the earlier studies showed (a model extrapolates badly in logs)."""
        f = _design(self.columns, trials, self.quadratic) @ self.coef
        return np.clip(f, *self.span)

    def log_mean_sd(self, n_seen: int, space: Sequence[Params] | None = None) -> float:
        """Standard deviation of ``log(mean_cost)`` from ``n_seen`` trials of a new study.

        Learned from earlier studies, ``f`` is taken as known: only the offset is uncertain,
        ``noise / sqrt(n_seen)``. Learned from the sweep's own trials, the shape is uncertain
        too; by the delta method the log mean moves with the intercept and with each
        coefficient times the cost-weighted mean of its input over the space (dear
        configurations dominate a mean cost)."""
        if self.coef_cov is None:
            return self.noise_sd / math.sqrt(max(1, n_seen))
        trials = list(space) if space else list(self.pool)
        x = _design(self.columns, trials, self.quadratic)
        w = np.exp(np.clip(x @ self.coef, *self.span))
        g = np.concatenate([[1.0], (w @ x) / w.sum()])
        return self.noise_sd * math.sqrt(max(0.0, float(g @ self.coef_cov @ g)))

    def mean_cost(
        self,
        seen: Sequence[Params],
        costs: Sequence[float] | np.ndarray,
        space: Sequence[Params] | None = None,
    ) -> tuple[float, float]:
        """``(mean, sd)`` of the cost of one more trial of a study whose trials ``seen`` cost
        ``costs`` (> 0), its parameters drawn like ``space`` (parameter sets drawn from the
        study's search space; None: the earlier studies' trials). An estimate."""
        c = np.asarray(costs, dtype=float)
        if len(seen) != len(c) or len(c) == 0 or not np.all(c > 0):
            raise HpauditInputError(
                "mean_cost needs one positive cost per seen trial (at least one)"
            )
        offset = float(np.mean(np.log(c) - self.shape(seen)))
        f = self.shape(list(space) if space else list(self.pool))
        s2 = self.noise_sd**2
        m1 = float(np.mean(np.exp(f))) * math.exp(s2 / 2)  # E[exp(f + noise)]
        m2 = float(np.mean(np.exp(2 * f))) * math.exp(2 * s2)  # E[exp(2 (f + noise))]
        scale = math.exp(offset)
        return scale * m1, scale * math.sqrt(max(0.0, m2 - m1 * m1))
