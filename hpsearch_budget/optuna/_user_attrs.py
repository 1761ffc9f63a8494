"""Deferred user attributes: the ``energy_kwh`` / ``co2e_kg`` / ``energy_source`` attributes
that :func:`~hpsearch_budget.optuna.metered` sets on a finished trial, written inside the
storage commit in which Optuna records the trial's end (no commit of their own)."""

from __future__ import annotations

import functools
import json
import logging
import threading
from collections.abc import Callable
from typing import Any

from optuna.trial import Trial

_log = logging.getLogger(__name__)


def set_user_attrs(trial: Trial, attrs: dict[str, Any]) -> None:
    """Set the trial's user attributes, in a storage commit Optuna makes anyway if possible.

    Optuna writes each ``set_user_attr`` in its own commit, and on SQLite storage every commit
    syncs the disk: that one commit cost more than the whole ledger per trial. On RDBStorage
    the attributes are therefore deferred and written inside the transaction in which Optuna
    records the trial's end (``study.tell``, which ``optimize`` always calls): no extra commit,
    and no reader ever sees the trial finished without them. Any other storage (in-memory,
    JournalStorage), or an Optuna whose internals differ, gets the public call per attribute.
    """
    backend = _rdb_backend(trial)
    cached = trial._cached_frozen_trial.user_attrs
    clash = attrs.keys() & cached
    if clash:
        _warn_replaced(trial.study.study_name, clash, cached, attrs)
    # A key the objective already stored is overwritten through the public call instead: the
    # deferred write then only ever INSERTs, with no read before it (rare; one commit more).
    if backend is not None and not clash and _deferred.install(backend):
        _deferred.add(backend, trial._trial_id, attrs)
        cached.update(attrs)
        return
    for key, value in attrs.items():
        trial.set_user_attr(key, value)


_warned: set[tuple[str, str]] = set()


def _warn_replaced(study: str, keys: set[str], old: dict[str, Any], new: dict[str, Any]) -> None:
    """Say once per study and attribute that the objective's own value of it is replaced."""
    for key in sorted(keys):
        if old[key] != new[key] and (study, key) not in _warned:
            _warned.add((study, key))
            _log.warning(
                "the objective set the trial user attribute %r (%r), which metered sets to the "
                "trial's metered figure: its value is replaced; rename yours (e.g. 'my_%s') to "
                "keep it",
                key,
                old[key],
                key,
            )


def _rdb_backend(trial: Trial) -> Any:
    """The trial's RDBStorage (under Optuna's cache), or None for any other storage."""
    try:
        from optuna.storages import RDBStorage
        from optuna.storages._cached_storage import _CachedStorage

        storage = trial.storage
        backend = storage._backend if isinstance(storage, _CachedStorage) else storage
        return backend if isinstance(backend, RDBStorage) else None
    except (ImportError, AttributeError):  # pragma: no cover - another Optuna
        return None


class _DeferredAttrs:
    """User attributes waiting for the commit that finishes their trial.

    A ``before_commit`` listener on the storage's sessions (SQLAlchemy's public event API)
    adds the pending attributes of every finished trial that session holds -- the session
    that marks the trial finished, at the latest -- so they land in the same transaction as
    the state. Keyed by trial id: threads (``n_jobs > 1``) and studies sharing one storage
    never mix.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: dict[tuple[int, int], dict[str, Any]] = {}
        self._installed: dict[int, bool] = {}

    def install(self, backend: Any) -> bool:
        """Listen on ``backend``'s sessions (once); False if its internals are not as known."""
        key = id(backend)
        with self._lock:
            found = self._installed.get(key)
            if found is not None:
                return found
            try:
                from optuna.storages._rdb import models
                from sqlalchemy import event

                factory = backend.scoped_session.session_factory
                ok = all(hasattr(models.TrialUserAttributeModel, c) for c in ("key", "value_json"))
                if ok:
                    event.listen(factory, "before_commit", self._before_commit(key, models))
            except (ImportError, AttributeError, TypeError):  # pragma: no cover
                ok = False
            self._installed[key] = ok
            return ok

    def add(self, backend: Any, trial_id: int, attrs: dict[str, Any]) -> None:
        with self._lock:
            self._pending.setdefault((id(backend), int(trial_id)), {}).update(attrs)

    def _before_commit(self, key: int, models: Any) -> Callable[[Any], None]:
        def before_commit(session: Any) -> None:
            if not self._pending:
                return
            # Every finished trial the session holds, not only ``session.dirty``: an autoflush
            # may already have written the state change when the commit begins.
            for obj in list(session.identity_map.values()):
                if not isinstance(obj, models.TrialModel) or not obj.state.is_finished():
                    continue
                with self._lock:
                    attrs = self._pending.pop((key, int(obj.trial_id)), None)
                if attrs:
                    self._write(session, models, int(obj.trial_id), attrs)

        return before_commit

    @staticmethod
    def _write(session: Any, models: Any, trial_id: int, attrs: dict[str, Any]) -> None:
        # One multi-row INSERT, as SQL text through the session's connection: the ORM unit of
        # work cost ~1 ms per trial here, a Core insert() executemany still ~0.9 ms. The keys
        # are new (see set_user_attrs); the values are JSON text, as Optuna stores them.
        params: dict[str, Any] = {"trial_id": trial_id}
        for i, (key, value) in enumerate(attrs.items()):
            params[f"k{i}"], params[f"v{i}"] = key, json.dumps(value)
        conn = session.connection()
        table = models.TrialUserAttributeModel.__table__
        conn.execute(_attrs_insert(conn.dialect, table, len(attrs)), params)


@functools.lru_cache(maxsize=8)
def _attrs_insert(dialect: Any, table: Any, n: int) -> Any:
    from sqlalchemy import text

    q = dialect.identifier_preparer.quote  # "key" is a reserved word in MySQL
    rows = ", ".join(f"(:trial_id, :k{i}, :v{i})" for i in range(n))
    columns = ", ".join(q(c) for c in ("trial_id", "key", "value_json"))
    return text(f"INSERT INTO {q(table.name)} ({columns}) VALUES {rows}")


_deferred = _DeferredAttrs()
