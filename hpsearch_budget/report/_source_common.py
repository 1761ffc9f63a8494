"""What every source reader shares: picking the study, hiding passwords, per-trial energy.

Used by the Optuna readers (:mod:`._sources`), the Ray Tune reader (:mod:`._source_ray`) and
the ledger reader and join (:mod:`._source_ledger`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa

from hpsearch_budget.errors import HpauditInputError
from hpsearch_budget.units import kg_to_g, kwh_to_j

Progress = Callable[[str], None]

#: Key in ``Sweep.cache`` under which a reader leaves the ledger URL the sweep recorded (an
#: Optuna study's attribute, a Ray trial's result): :mod:`._recorded_ledger` joins it.
RECORDED_LEDGER_KEY = "recorded_ledger"
#: Key in ``Sweep.cache`` under which the Optuna readers leave the study's recorded name in the
#: ledger.
RECORDED_STUDY_KEY = "recorded_ledger_study"


def _nothing(_: str) -> None:
    pass


def _redact(url: str) -> str:
    try:
        return sa.engine.make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "the given URL"


def _missing_study(kind: str, study: str | None, names: list[str]) -> HpauditInputError:
    listed = ", ".join(repr(n) for n in names[:20]) or "none"
    if study is None:
        return HpauditInputError(
            f"the {kind} holds {len(names)} studies; pick one with --study (studies: {listed})"
        )
    return HpauditInputError(f"no study {study!r} in the {kind}; studies: {listed}")


def _pick(kind: str, study: str | None, names: list[str]) -> str:
    if study is not None and study in names:
        return study
    if study is None and len(names) == 1:
        return names[0]
    raise _missing_study(kind, study, names)


def _wall(trials: pd.DataFrame) -> None:
    start, end = trials["started_at"], trials["ended_at"]
    trials["wall_s"] = (end - start).dt.total_seconds()


def _energy_from_attrs(trials: pd.DataFrame, attrs: Sequence[Mapping[str, Any]]) -> None:
    """Energy and carbon from the user attributes the Optuna integration sets."""
    _wall(trials)
    kwh = np.array([_num(a.get("energy_kwh")) for a in attrs], dtype=float)
    co2 = np.array([_num(a.get("co2e_kg")) for a in attrs], dtype=float)
    # The unit helpers are plain arithmetic, so they take arrays too.
    trials["energy_j"] = kwh_to_j(kwh)  # type: ignore[arg-type]  # device energy, before PUE
    trials["co2e_g"] = kg_to_g(co2)  # type: ignore[arg-type]
    trials["energy_source"] = [a.get("energy_source") for a in attrs]


def optuna_times(values: Iterable[Any]) -> pd.Series:
    """Optuna's trial datetimes in UTC. Its storages hold naive local times (``datetime.now()``;
    a journal's UTC times are read back as local ones), so a naive value is this machine's
    local time, daylight saving included, not UTC (the machine that ran the study, as a rule)."""
    out = []
    for v in values:
        if v is None or (isinstance(v, float) and math.isnan(v)):
            out.append(pd.NaT)
            continue
        t = pd.Timestamp(v).to_pydatetime()
        out.append(t.astimezone(UTC))  # a naive datetime is taken as local time here
    return pd.Series(pd.to_datetime(out, utc=True), dtype="datetime64[ns, UTC]")


def rdb_times(values: Iterable[Any]) -> pd.Series:
    """Trial datetimes read straight from an Optuna RDB's tables, in UTC, as the installed
    Optuna reads them: from Optuna 5 on it writes naive UTC there; Optuna 4 wrote naive local
    times (``datetime.now()``)."""
    import optuna

    if int(optuna.__version__.split(".")[0]) >= 5:
        return pd.Series(pd.to_datetime(list(values), utc=True, format="ISO8601"))
    return optuna_times(values)


def _num(v: Any) -> float:
    try:
        return float(v) if v is not None else math.nan
    except (TypeError, ValueError):
        return math.nan


def require_direction(
    direction: str | None, trials: pd.DataFrame, source: str, objective: str = "the objective"
) -> str:
    """``direction``, required when there are values to rank: a source that does not record
    it must not guess, or the report would call the worst trial the best and project the
    final training from it."""
    if direction is not None:
        return direction
    values = trials["value"] if "value" in trials else pd.Series(dtype=float)
    if not values.notna().any():
        return "minimize"  # nothing to rank: the direction changes no figure
    raise HpauditInputError(
        f"{source} does not record whether {objective} is maximised or minimised; pass "
        "--direction maximize or --direction minimize"
    )
