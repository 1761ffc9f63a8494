"""The README's examples run as a new user would type them, and name every ``hpaudit`` command.

The Python, TOML and ``hpaudit`` blocks are read from README.md itself, in the order a reader
meets them, and run in one empty folder: an edited example is tested without being listed here.
Left out: the Ray Tune block (starting Ray takes longer than this whole test; tests/ray runs
the same code) and ``hpaudit report`` on a Ray folder, which that block would have written.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator
from pathlib import Path

import pytest
import typer.main

from hpsearch_budget.cli import app, main

README = Path(__file__).resolve().parent.parent / "README.md"
_BLOCK = re.compile(r"^```(\w+)\n(.*?)^```", re.MULTILINE | re.DOTALL)
# The README's sweep asks for 500 trials; a dozen show the same, in about a second.
_N_TRIALS = re.compile(r"n_trials=\d+")


def _blocks() -> list[tuple[str, str]]:
    return [(m.group(1), m.group(2)) for m in _BLOCK.finditer(README.read_text("utf-8"))]


def _your_code() -> dict[str, object]:
    """The two names the examples leave to the user (``# your code``): the cheapest stand-ins."""

    def train_one_epoch(lr: float) -> float:
        return min(1.0, 10 * lr)

    def train() -> None:
        sum(i * i for i in range(10_000))

    return {"train_one_epoch": train_one_epoch, "train": train}


def _commands(block: str) -> Iterator[list[str]]:
    for line in block.splitlines():
        args = shlex.split(line, comments=True)
        if args and args[0] == "hpaudit":
            yield args[1:]


def _run_cli(args: list[str]) -> int:
    try:
        main(args)
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


def test_the_readme_examples_run_in_an_empty_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    for name in ("HPAUDIT_LEDGER", "HPAUDIT_POLICY", "HPAUDIT_PROJECT", "HPAUDIT_USER"):
        monkeypatch.delenv(name, raising=False)
    namespace = _your_code()
    ran: list[str] = []
    for lang, text in _blocks():
        if lang == "python" and "from ray import" not in text:
            exec(compile(_N_TRIALS.sub("n_trials=12", text), "README.md", "exec"), namespace)
        elif lang == "toml":
            # The block says which file it is in its first comment.
            Path(text.split()[1]).write_text(text, "utf-8")
        elif lang == "bash":
            for args in _commands(text):
                if args[:1] == ["report"] and not args[1].startswith("sqlite:"):
                    continue  # a Ray Tune folder: see the module's docstring
                assert _run_cli(args) == 0, (args, capsys.readouterr().err)
                ran.append(args[0])
        else:
            continue
        ran.append(lang)
    out = capsys.readouterr().out
    assert "pruned by the budget" in out  # run.describe() of the sweep
    assert namespace["m"].sources  # measure(): every figure carries its source
    assert {"python", "toml", "verify", "export", "report", "estimate", "policy"} <= set(ran)
    for written in ("emissions.csv", "jan.json", "report.html"):
        assert (tmp_path / written).is_file(), written
    # "finds its ledger": the report on the study names the ledger the sweep recorded.
    assert "hpaudit_ledger attribute" in (tmp_path / "report.html").read_text("utf-8")


def _command_paths(group: object, prefix: str = "hpaudit") -> Iterator[str]:
    for name, command in sorted(getattr(group, "commands", {}).items()):
        path = f"{prefix} {name}"
        if getattr(command, "commands", None):
            yield from _command_paths(command, path)
        else:
            yield path


def test_every_hpaudit_command_is_in_the_readme() -> None:
    commands = list(_command_paths(typer.main.get_command(app)))
    assert "hpaudit ledger show" in commands  # the walk reaches the groups' commands
    text = README.read_text("utf-8")
    assert [c for c in commands if c not in text] == []
