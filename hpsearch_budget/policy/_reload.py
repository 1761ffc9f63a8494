"""A lab policy that follows its file while a sweep runs: an edit applies within a second.

A multi-day sweep must respect a cap the lab lowers on Tuesday. Every integration that
enforces a policy holds a :class:`LivePolicy` and asks it for :meth:`~LivePolicy.current` on
the paths that already run per trial or per report. That costs a clock read; at most once per
``CHECK_S`` seconds it also costs one ``stat`` of the file, and a re-read only when the file's
size, times or inode changed. One :class:`LivePolicy` per file is shared by the whole process,
so the pruner, the callback and the objective of a sweep stat it once between them.

An edit that breaks the file (bad TOML, an unknown key) or removes it does not stop a running
sweep: the last good policy stays in force, one warning names the file and the problem, and a
fixed file is picked up as any edit is. A :class:`Policy` passed as an object never changes.

A sweep that found no file at its start looks for one at the same cadence, where it would have
found it (``$HPAUDIT_POLICY``, else ``hpaudit.toml`` / ``[tool.hpaudit]`` from the working
directory of the start upwards): a lab admin may add the policy to a sweep already running. A
file that appears is applied like an edit (a malformed one: one warning, no caps meanwhile),
and followed from then on.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

from hpsearch_budget.errors import HpauditInputError
from hpsearch_budget.policy._errors import InvalidPolicyError
from hpsearch_budget.policy._model import Policy

logger = logging.getLogger("hpsearch_budget.policy")

#: How often (s) a running sweep looks at its policy file: the bound on how late an edit applies.
CHECK_S = 1.0

_Signature = tuple[int, int, int, int]


def _signature(path: Path) -> _Signature | None:
    """What changes when the file is edited or replaced (an editor's rename: a new inode);
    None when it cannot be read."""
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_ctime_ns, st.st_size, st.st_ino)


class LivePolicy:
    """The policy a sweep enforces now: ``current()`` re-reads its file after an edit.

    ``path`` None and no ``search`` (a policy given as an object): the policy never changes.
    ``search`` (no file was found at the start): the folder to look for one from, until found.
    """

    def __init__(
        self,
        policy: Policy,
        path: Path | None = None,
        signature: _Signature | None = None,
        *,
        search: Path | None = None,
    ) -> None:
        self.path = path
        self._search = search
        # Set once: the hot path of a policy that never changes stays one attribute test.
        self._fixed = path is None and search is None
        self._policy = policy
        self._signature = signature
        self._problem: str | None = None  # what is wrong with the file now (warned once)
        self._next = time.monotonic() + CHECK_S
        self._lock = threading.Lock()

    def current(self) -> Policy:
        """The policy in force: the file's, as of at most ``CHECK_S`` seconds ago."""
        if self._fixed or time.monotonic() < self._next:
            return self._policy
        with self._lock:
            if time.monotonic() >= self._next:
                path = self.path if self.path is not None else self._look_for_file()
                if path is not None:
                    self._refresh(path)
                self._next = time.monotonic() + CHECK_S
        return self._policy

    def _look_for_file(self) -> Path | None:
        """The policy file that has appeared where the sweep looked at its start, adopted as
        this policy's file; None while there is none (or two that clash: warned once)."""
        from hpsearch_budget.policy._load import find_policy

        try:
            found = find_policy(self._search)
        except InvalidPolicyError as exc:  # hpaudit.toml and [tool.hpaudit] in one folder
            self._broken(str(exc))
            return None
        if found is not None:
            self.path = found.absolute()
        return self.path

    def _refresh(self, path: Path) -> None:
        signature = _signature(path)
        if signature is not None and signature == self._signature:
            return
        self._signature = signature
        if signature is None:
            self._broken(f"{path}: the file is gone or cannot be read")
            return
        from hpsearch_budget.policy._load import read_policy

        try:
            policy = read_policy(path)
        except InvalidPolicyError as exc:
            self._broken(str(exc))  # one line: the file, its first problem and a hint
            return
        if self._problem is not None or policy != self._policy:
            logger.warning("hpaudit: the lab policy %s changed; its caps apply from now on", path)
        self._problem = None
        self._policy = policy

    def _broken(self, problem: str) -> None:
        # Once per problem, not per trial: the sweep goes on under the last good policy.
        if problem != self._problem:
            logger.warning(
                "hpaudit: the edited lab policy is not applied: %s; the running sweep keeps "
                "enforcing its last good version until the file is fixed",
                problem,
            )
        self._problem = problem

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        # A pickled sweep (Tuner.restore, a worker process) follows the same file again (or
        # looks for one in the same place), starting from the last good policy.
        return _unpickle, (self._policy, self.path, self._search)


def _unpickle(policy: Policy, path: Path | None, search: Path | None = None) -> LivePolicy:
    if path is None:
        return LivePolicy(policy) if search is None else _searching(policy, search)
    live = _shared(policy, path, None)
    live._next = -float("inf")  # the file may have changed while it was pickled
    return live


_lock = threading.Lock()
_watched: dict[Path, LivePolicy] = {}
_searches: dict[Path, LivePolicy] = {}  # by the folder a file is looked for from


def _shared(policy: Policy, path: Path, signature: _Signature | None) -> LivePolicy:
    """The process's one :class:`LivePolicy` of ``path``, now holding ``policy``."""
    key = path.absolute()
    with _lock:
        live = _watched.get(key)
        if live is None:
            live = _watched[key] = LivePolicy(policy, key, signature)
        elif signature is not None:  # just read, valid: newer than what it holds
            with live._lock:
                live._policy, live._signature, live._problem = policy, signature, None
    return live


def _searching(policy: Policy, folder: Path) -> LivePolicy:
    """The process's one :class:`LivePolicy` that looks for a policy file from ``folder``: the
    pieces of a sweep share its look, as they share a file's."""
    key = folder.absolute()
    with _lock:
        live = _searches.get(key)
        if live is None or live.path is not None:  # none yet, or it found a file since
            live = _searches[key] = LivePolicy(policy, search=key)
    return live


def follow_policy(policy: Any) -> LivePolicy | None:
    """:func:`~hpsearch_budget.policy._sweep.resolve_policy` for a running sweep: ``False`` ->
    None; a :class:`Policy` -> one that never changes; None or a path -> the file's policy,
    followed while the sweep runs (a bad file raises ``InvalidPolicyError`` now, before any
    trial; later, its last good version stays in force). A :class:`LivePolicy` is kept."""
    from hpsearch_budget.policy._load import find_policy, load_policy

    if policy is False:
        return None
    if isinstance(policy, LivePolicy):
        return policy
    if isinstance(policy, Policy):
        return LivePolicy(policy)
    if not (policy is None or isinstance(policy, str | os.PathLike)):
        raise HpauditInputError(
            f"policy must be a Policy, a policy file path, None (find hpaudit.toml) or False "
            f"(no policy), got {type(policy).__name__}"
        )
    path = Path(policy) if policy is not None else find_policy()
    signature = _signature(path) if path is not None else None  # before reading: no edit lost
    loaded = load_policy(policy)
    if path is None:  # no file anywhere yet: look for one while the sweep runs
        return _searching(loaded, Path.cwd())
    return _shared(loaded, path, signature)


def current(live: LivePolicy | None) -> Policy | None:
    """The policy ``live`` holds now (None: the sweep opted out)."""
    return None if live is None else live.current()
