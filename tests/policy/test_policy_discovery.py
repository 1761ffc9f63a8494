"""Where a policy comes from (hpaudit.toml, pyproject.toml, $HPAUDIT_POLICY) and who a sweep
belongs to ($HPAUDIT_PROJECT / $HPAUDIT_USER)."""

from __future__ import annotations

import getpass

import pytest

from hpsearch_budget.errors import HpauditInputError
from hpsearch_budget.policy import (
    POLICY_ENV,
    InvalidPolicyError,
    Policy,
    find_policy,
    load_policy,
    resolve_identity,
)

PYPROJECT = """
[project]
name = "lab-sweeps"

[tool.ruff]
line-length = 100

[tool.hpaudit]
on_exceed = "warn"

[tool.hpaudit.caps.project]
co2e_kg = 12
"""


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    for name in (POLICY_ENV, "HPAUDIT_PROJECT", "HPAUDIT_USER"):
        monkeypatch.delenv(name, raising=False)


def test_pyproject_found_from_a_subfolder(tmp_path, monkeypatch):
    (tmp_path / "pyproject.toml").write_text(PYPROJECT)
    deep = tmp_path / "src" / "sweeps"
    deep.mkdir(parents=True)
    monkeypatch.chdir(deep)
    assert find_policy() == tmp_path / "pyproject.toml"
    policy = load_policy()
    assert policy.on_exceed == "warn"
    assert policy.caps.project is not None and policy.caps.project.co2e_kg == 12.0
    assert policy.origin == str(tmp_path / "pyproject.toml")


def test_pyproject_without_table_does_not_stop_the_search(tmp_path):
    (tmp_path / "hpaudit.toml").write_text('[caps]\nuser = "7 kWh"\n')
    project = tmp_path / "repo"
    project.mkdir()
    (project / "pyproject.toml").write_text('[project]\nname = "x"\n[tool.ruff]\nx = 1\n')
    assert find_policy(project) == tmp_path / "hpaudit.toml"
    assert load_policy(start=project).caps.user.energy_kwh == 7.0


def test_nearest_wins(tmp_path):
    (tmp_path / "hpaudit.toml").write_text('[caps]\nuser = "1 kWh"\n')
    inner = tmp_path / "inner"
    inner.mkdir()
    (inner / "pyproject.toml").write_text(PYPROJECT)
    assert find_policy(inner) == inner / "pyproject.toml"


def test_hpaudit_toml_beside_a_pyproject_table_is_an_error(tmp_path, monkeypatch):
    # hpaudit.toml used to win silently: the lab's [tool.hpaudit] caps did not apply
    (tmp_path / "pyproject.toml").write_text(PYPROJECT)
    (tmp_path / "hpaudit.toml").write_text('on_exceed = "stop"\n')
    with pytest.raises(InvalidPolicyError) as info:
        load_policy(start=tmp_path)
    message = str(info.value)
    assert "\n" not in message and "hpaudit.toml" in message and "pyproject.toml" in message
    assert "keep one" in message
    # naming the file says which one applies
    monkeypatch.setenv(POLICY_ENV, str(tmp_path / "pyproject.toml"))
    assert load_policy(start=tmp_path).caps.project.co2e_kg == 12.0


def test_env_var_names_the_lab_file(tmp_path, monkeypatch):
    lab = tmp_path / "lab-policy.toml"
    lab.write_text('on_exceed = "stop"\n')
    (tmp_path / "hpaudit.toml").write_text('on_exceed = "warn"\n')
    monkeypatch.setenv(POLICY_ENV, str(lab))
    assert load_policy(start=tmp_path).on_exceed == "stop"
    # An explicit path beats the variable.
    assert load_policy(tmp_path / "hpaudit.toml").on_exceed == "warn"
    monkeypatch.setenv(POLICY_ENV, str(tmp_path / "moved.toml"))
    with pytest.raises(InvalidPolicyError, match=r"no such file \(named by \$HPAUDIT_POLICY\)"):
        load_policy()


def test_no_file_anywhere_is_the_empty_policy(tmp_path):
    assert find_policy(tmp_path) is None
    policy = load_policy(start=tmp_path)
    assert policy.caps.is_empty() and policy.origin is None and policy.on_exceed == "prune"
    given = Policy.model_validate({"on_exceed": "warn"})
    assert load_policy(given) is given


def test_pyproject_key_paths_are_prefixed(tmp_path):
    path = tmp_path / "pyproject.toml"
    path.write_text("[tool.hpaudit.caps.project]\nco2e_kg = -2\n")
    with pytest.raises(InvalidPolicyError) as info:
        load_policy(path)
    assert [p.path for p in info.value.problems] == ["tool.hpaudit.caps.project.co2e_kg"]


def test_explicit_pyproject_without_table_and_missing_file_are_errors(tmp_path):
    path = tmp_path / "pyproject.toml"
    path.write_text('[project]\nname = "x"\n')
    with pytest.raises(InvalidPolicyError, match=r"no \[tool.hpaudit\] table"):
        load_policy(path)
    with pytest.raises(InvalidPolicyError, match="no such file"):
        load_policy(tmp_path / "absent.toml")


def test_identity_defaults_to_study_and_login(monkeypatch):
    assert resolve_identity("bert-lr") == ("bert-lr", getpass.getuser())


def test_identity_from_env_vars(monkeypatch):
    monkeypatch.setenv("HPAUDIT_PROJECT", "nlp")
    monkeypatch.setenv("HPAUDIT_USER", "ana")
    identity = resolve_identity("bert-lr")
    assert (identity.project, identity.user) == ("nlp", "ana")
    # Explicit arguments beat the environment.
    assert resolve_identity("bert-lr", project="cv", user="bob") == ("cv", "bob")


def test_empty_env_var_means_unset_but_empty_argument_is_an_error(monkeypatch):
    monkeypatch.setenv("HPAUDIT_PROJECT", "  ")
    assert resolve_identity("bert-lr", user="ana").project == "bert-lr"
    with pytest.raises(HpauditInputError, match="project must be a non-empty name"):
        resolve_identity("bert-lr", project="")


def test_limits_for_resolves_identity_from_env(monkeypatch):
    monkeypatch.setenv("HPAUDIT_PROJECT", "nlp")
    monkeypatch.setenv("HPAUDIT_USER", "ana")
    policy = Policy.model_validate({"caps": {"project": "1 kg", "user": "2 kWh"}})
    names = [name for _, _, name in policy.limits_for("bert-lr")]
    assert names == ["project 'nlp' monthly CO2e cap", "user 'ana' monthly energy cap"]
