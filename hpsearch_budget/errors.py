"""Exceptions. Every message is one line that says what was wrong and how to fix it.

The CLI prints ``str(error)`` and exits 2 for :class:`HpauditInputError` (bad input or usage)
and 1 for a failed check; it never shows a traceback for these.
"""

from __future__ import annotations


class HpauditError(Exception):
    """Base class of every error this library raises on purpose."""

    exit_code: int = 2


class HpauditInputError(HpauditError, ValueError):
    """Bad input: a malformed file, a negative budget, an unknown region, a missing study."""


class UnknownRegionError(HpauditInputError):
    pass


class UnknownAcceleratorError(HpauditInputError):
    pass


class MeterError(HpauditError, RuntimeError):
    """A hardware counter could not be read; the message says how to fix it."""


class MeterPermissionError(MeterError, PermissionError):
    pass


class LedgerError(HpauditError, RuntimeError):
    """The ledger database cannot be opened, is corrupted, locked, or of another schema."""


class LedgerIntegrityError(LedgerError):
    """``verify`` found an edited, inserted or deleted row."""

    exit_code = 1


class BudgetExceededError(HpauditError, RuntimeError):
    """A sweep cannot start (or go on) inside its budget or a policy cap."""


class PolicyError(HpauditInputError):
    """A policy file is malformed."""
