"""Finding and reading a policy file, and turning every problem into a key path and a hint.

Where the policy comes from, first match wins:

1. a path given explicitly (``--policy FILE``, ``load_policy("lab.toml")``);
2. ``$HPAUDIT_POLICY`` (a lab-wide file on a shared disk);
3. from the working directory upwards, nearest folder first: ``hpaudit.toml`` or a
   ``pyproject.toml`` with a ``[tool.hpaudit]`` table (a ``pyproject.toml`` without one does
   not stop the search). Both in one folder is an error: neither may silently lose its caps.

No file anywhere is not an error: :func:`load_policy` returns the empty policy (no caps).
"""

from __future__ import annotations

import difflib
import json
import os
import re
import tomllib
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from hpsearch_budget.policy._errors import InvalidPolicyError, PolicyProblem
from hpsearch_budget.policy._model import Policy, policy_from_mapping

POLICY_ENV = "HPAUDIT_POLICY"
POLICY_FILE = "hpaudit.toml"
PYPROJECT = "pyproject.toml"
_PYPROJECT_PREFIX = "tool.hpaudit"
_HAS_TOOL_TABLE = re.compile(r"^\s*\[\s*tool\s*\.\s*hpaudit\b|^\s*tool\s*\.\s*hpaudit\b", re.M)

# An example for each key, shown as the hint of a type or range error.
_HINTS: dict[str, str] = {
    "on_exceed": 'on_exceed = "prune" (prune the running trial), "stop" (stop the sweep) or '
    '"warn" (log only)',
    "defaults": "a table: [defaults] with region, g_per_kwh, pue, usd_per_kwh, "
    "cloud_usd_per_gpu_hour",
    "caps": "a table: [caps.project] with co2e_kg = 50 (or energy_kwh, usd, gpu_hours)",
    "reporting": "a table: [reporting] with seeds = 5, sensitivity = true, variance = true",
    "region": 'a grid region code in quotes, e.g. region = "us"; or g_per_kwh = 386 instead',
    "g_per_kwh": "grams CO2e per kWh of the grid, a number >= 0, e.g. g_per_kwh = 386",
    "pue": "facility power / IT power, a number >= 1.0, e.g. pue = 1.58",
    "usd_per_kwh": "electricity price, a number >= 0, e.g. usd_per_kwh = 0.12",
    "cloud_usd_per_gpu_hour": "price of one GPU-hour, a number >= 0, e.g. "
    "cloud_usd_per_gpu_hour = 2.5",
    "co2e_kg": "kg CO2e, a number >= 0, e.g. co2e_kg = 50; leave the key out for no limit",
    "energy_kwh": "kWh, a number >= 0, e.g. energy_kwh = 300; leave the key out for no limit",
    "usd": "US dollars, a number >= 0, e.g. usd = 1000; leave the key out for no limit",
    "gpu_hours": "GPU-hours, a number >= 0, e.g. gpu_hours = 400; leave the key out for no limit",
    "seeds": "how many seeds the final configuration must run with, an integer >= 1, "
    "e.g. seeds = 5",
    "sensitivity": "true or false (no quotes)",
    "variance": "true or false (no quotes)",
    "studies": "a table of named studies, e.g. [caps.studies.bert-lr] with co2e_kg = 5",
    "projects": "a table of named projects, e.g. [caps.projects.nlp] with co2e_kg = 100",
    "users": "a table of named users, e.g. [caps.users.ana] with gpu_hours = 200",
}
_KINDS = {
    "float_type": "a number",
    "int_type": "an integer",
    "bool_type": "true or false",
    "string_type": "a string",
    "model_type": "a table",
    "dict_type": "a table",
    "literal_error": "one of the listed values",
}


def _toml_type(value: Any) -> str:
    names = {
        bool: "boolean",
        int: "integer",
        float: "number",
        str: "string",
        dict: "table",
        list: "array",
    }
    return names.get(type(value), type(value).__name__)


def _toml_repr(value: Any) -> str:
    """A value as it is written in TOML (``true``, ``"text"``), for messages."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, float):
        return f"{value:g}"
    return repr(value)


def _model_at(loc: tuple[int | str, ...]) -> type[BaseModel] | None:
    """The model class whose fields live at ``loc`` (to list the keys allowed there)."""
    model: Any = Policy
    pending_dict = False
    for part in loc:
        if pending_dict:  # this part is a free key of a dict (a project name): skip it
            pending_dict = False
            continue
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            return None
        info = model.model_fields.get(str(part))
        if info is None:
            return None
        model, pending_dict = _unwrap(info.annotation)
    return model if isinstance(model, type) and issubclass(model, BaseModel) else None


def _unwrap(annotation: Any) -> tuple[Any, bool]:
    """``X | None`` -> X; ``dict[str, X]`` -> (X, True)."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return _unwrap(args[0]) if len(args) == 1 else (None, False)
    if origin is dict:
        return typing.get_args(annotation)[1], True
    return annotation, False


def _key(part: int | str) -> str:
    """A key as TOML writes it in a dotted path: bare when it can be, quoted otherwise."""
    text = str(part)
    return text if re.fullmatch(r"[A-Za-z0-9_-]+", text) else json.dumps(text)


def _dotted(prefix: str, loc: tuple[int | str, ...]) -> str:
    return ".".join([prefix, *map(_key, loc)] if prefix else map(_key, loc))


def _problem(err: Mapping[str, Any], prefix: str) -> PolicyProblem:
    loc = tuple(err["loc"])
    path = _dotted(prefix, loc)
    key = str(loc[-1]) if loc else ""
    kind, value, ctx = err["type"], err.get("input"), err.get("ctx") or {}
    if kind == "extra_forbidden":
        parent = _model_at(loc[:-1])
        allowed = list(parent.model_fields) if parent else []
        close = difflib.get_close_matches(key, allowed, n=1)
        section = _dotted(prefix, loc[:-1])
        where = f"[{section}]" if section else "the top level"
        hint = (f"did you mean {close[0]!r}? " if close else "") + (
            f"keys allowed in {where}: {', '.join(allowed)}"
        )
        return PolicyProblem(path, f"unknown key {key!r}", hint)
    if "hint" in ctx:  # our own validators: message and hint written for this case
        return PolicyProblem(path, str(err["msg"]), str(ctx["hint"]))
    hint = _HINTS.get(key, "see `hpaudit policy check --help` for the file format")
    if kind in ("greater_than_equal", "greater_than"):
        bound = ctx.get("ge", ctx.get("gt"))
        op = ">=" if kind == "greater_than_equal" else ">"
        return PolicyProblem(path, f"must be {op} {bound:g}, got {_toml_repr(value)}", hint)
    if kind == "finite_number":
        return PolicyProblem(path, f"must be a finite number, got {_toml_repr(value)}", hint)
    if kind == "literal_error":
        expected = str(ctx.get("expected", "")).replace("'", '"')
        return PolicyProblem(path, f"must be {expected}, got {_toml_repr(value)}", hint)
    if kind in _KINDS:
        got = f"{_toml_type(value)} {_toml_repr(value)}"
        return PolicyProblem(path, f"expected {_KINDS[kind]}, got {got}", hint)
    return PolicyProblem(path, str(err["msg"]), hint)


def validate_policy(data: Mapping[str, Any], origin: str = "policy", prefix: str = "") -> Policy:
    """A :class:`Policy` from parsed TOML, or :class:`InvalidPolicyError` listing every problem.

    ``prefix`` is prepended to key paths (``tool.hpaudit`` for a pyproject table).

    >>> try:
    ...     validate_policy({"caps": {"project": {"co2_kg": 5}}}, "hpaudit.toml")
    ... except InvalidPolicyError as exc:
    ...     print(exc.problems[0].path, "|", exc.problems[0].hint[:23])
    caps.project.co2_kg | did you mean 'co2e_kg'?
    """
    try:
        return policy_from_mapping(data, origin)
    except ValidationError as exc:
        problems = [_problem(err, prefix) for err in exc.errors()]
    raise InvalidPolicyError(origin, problems)


def parse_policy(text: str, origin: str = "policy", *, pyproject: bool = False) -> Policy:
    """Parse TOML text (a whole ``hpaudit.toml``, or a ``pyproject.toml`` when ``pyproject``)."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        hint = "fix the TOML syntax (strings need quotes, tables [like.this], one key per line)"
        problem = PolicyProblem("", f"not valid TOML: {exc}", hint)
        raise InvalidPolicyError(origin, [problem]) from None
    if not pyproject:
        return validate_policy(data, origin)
    table = data.get("tool", {}).get("hpaudit") if isinstance(data.get("tool"), dict) else None
    if table is None:
        raise InvalidPolicyError(
            origin,
            [
                PolicyProblem(
                    "", "no [tool.hpaudit] table", "add one, or put the policy in hpaudit.toml"
                )
            ],
        )
    if not isinstance(table, dict):
        raise InvalidPolicyError(
            origin,
            [
                PolicyProblem(
                    _PYPROJECT_PREFIX,
                    f"expected a table, got {_toml_type(table)}",
                    "write the policy under a [tool.hpaudit] header",
                )
            ],
        )
    return validate_policy(table, origin, prefix=_PYPROJECT_PREFIX)


def read_policy(path: str | os.PathLike[str]) -> Policy:
    """Read a policy file: ``hpaudit.toml``-style, or ``pyproject.toml`` (its [tool.hpaudit])."""
    p = Path(path)
    origin = str(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InvalidPolicyError(
            origin,
            [
                PolicyProblem(
                    "", "no such file", "check the path, or leave it out to search for hpaudit.toml"
                )
            ],
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidPolicyError(
            origin,
            [
                PolicyProblem(
                    "",
                    f"cannot read it: {exc.__class__.__name__}: {exc}",
                    "give a readable UTF-8 TOML file",
                )
            ],
        ) from None
    return parse_policy(text, origin, pyproject=p.name == PYPROJECT)


def find_policy(start: str | os.PathLike[str] | None = None) -> Path | None:
    """The policy file that applies in ``start`` (default: the working directory), or None.

    ``$HPAUDIT_POLICY`` first, then ``hpaudit.toml`` or a ``pyproject.toml`` with a
    ``[tool.hpaudit]`` table in ``start`` and each parent, nearest first. Both in one folder:
    :class:`InvalidPolicyError` (say which one applies by keeping only it, or by naming it).
    """
    env = os.environ.get(POLICY_ENV, "").strip()
    if env:
        return Path(env)
    here = Path(start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        candidate = folder / POLICY_FILE
        pyproject = folder / PYPROJECT
        has_table = pyproject.is_file() and _mentions_tool_table(pyproject)
        if candidate.is_file() and has_table:
            raise _both_files(candidate, pyproject)
        if candidate.is_file():
            return candidate
        if has_table:
            return pyproject
    return None


def _both_files(policy_file: Path, pyproject: Path) -> InvalidPolicyError:
    # Whichever file won, a lab could believe the other one's caps apply: refuse to guess.
    problem = PolicyProblem(
        "",
        f"{pyproject} has a [tool.hpaudit] table too; only one policy file can apply",
        f"keep one: move the [tool.hpaudit] settings into {policy_file.name} and delete the "
        f"table, or delete {policy_file.name} (or name the file to use with ${POLICY_ENV})",
    )
    return InvalidPolicyError(str(policy_file), [problem])


def _mentions_tool_table(pyproject: Path) -> bool:
    # A cheap text test, so that an unrelated malformed pyproject.toml found on the way up
    # neither stops the search nor raises; a real [tool.hpaudit] is then parsed strictly.
    try:
        return bool(_HAS_TOOL_TABLE.search(pyproject.read_text(encoding="utf-8")))
    except (OSError, UnicodeDecodeError):
        return False


def load_policy(
    path: str | os.PathLike[str] | Policy | None = None,
    *,
    start: str | os.PathLike[str] | None = None,
) -> Policy:
    """The policy to enforce: ``path`` (a file or a :class:`Policy`), else :func:`find_policy`.

    Returns the empty policy (no caps, ``on_exceed = "prune"``) when no file is found.
    """
    if isinstance(path, Policy):
        return path
    found = Path(path) if path is not None else find_policy(start)
    if found is None:
        return Policy()
    if path is None and os.environ.get(POLICY_ENV, "").strip() and not found.exists():
        raise InvalidPolicyError(
            str(found),
            [
                PolicyProblem(
                    "",
                    f"no such file (named by ${POLICY_ENV})",
                    f"fix ${POLICY_ENV}, or unset it to search for hpaudit.toml",
                )
            ],
        )
    return read_policy(found)
