"""Problems found in a policy file, each with its key path and a hint."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from hpsearch_budget.errors import PolicyError


@dataclass(frozen=True, slots=True)
class PolicyProblem:
    """One thing wrong with a policy file.

    >>> str(PolicyProblem("caps.project.co2e_kg", "must be >= 0, got -5", "caps are positive"))
    'caps.project.co2e_kg: must be >= 0, got -5; hint: caps are positive'
    """

    path: str  # dotted key path as written in the file ("" for the file as a whole)
    message: str
    hint: str = ""

    def __str__(self) -> str:
        where = f"{self.path}: " if self.path else ""
        hint = f"; hint: {self.hint}" if self.hint else ""
        return f"{where}{self.message}{hint}"


class InvalidPolicyError(PolicyError):
    """A policy file has one or more problems; ``problems`` lists every one of them.

    ``str(error)`` is one line: the file, the first problem, and how many more there are.
    ``hpaudit policy check FILE`` prints them all.
    """

    def __init__(self, origin: str, problems: Sequence[PolicyProblem]) -> None:
        self.origin = origin
        self.problems = list(problems)
        first = self.problems[0] if self.problems else PolicyProblem("", "invalid policy")
        more = len(self.problems) - 1
        tail = (
            f" (and {more} more problem{'s' if more > 1 else ''}: run `hpaudit policy check "
            f"{origin}` to see them all)"
            if more > 0
            else ""
        )
        super().__init__(f"{origin}: {first}{tail}")

    def lines(self) -> list[str]:
        """Every problem as one line, prefixed with the file it was found in."""
        return [f"{self.origin}: {p}" for p in self.problems]
