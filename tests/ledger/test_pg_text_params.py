"""The PostgreSQL fast path's text parameters: exact, and never a guess for other types."""

from __future__ import annotations

import math

import pytest

from hpsearch_budget.ledger._pg import _texts


def test_floats_ints_strings_and_none_become_libpq_text() -> None:
    values = [0.1 + 0.2, -1e-308, math.inf, 2**62, "café ☕", None]
    texts = _texts(values)
    assert texts == [b"0.30000000000000004", b"-1e-308", b"inf", b"4611686018427387904",
                     "café ☕".encode(), None]  # fmt: skip
    assert float(texts[0]) == values[0]  # shortest round-trip form


@pytest.mark.parametrize("odd", [True, 1.5j, b"bytes", [1], {"a": 1}])
def test_any_other_type_sends_the_statement_through_psycopg(odd: object) -> None:
    assert _texts([1.0, odd]) is None  # bool is not taken for an int
