"""Policy files: valid forms, and every kind of malformed file -> key path + hint."""

from __future__ import annotations

import math

import pytest

from hpsearch_budget.errors import HpauditInputError, PolicyError
from hpsearch_budget.policy import InvalidPolicyError, Policy, parse_policy

FULL = """
on_exceed = "stop"

[defaults]
region = "FR"
pue = 1.2
usd_per_kwh = 0.2
cloud_usd_per_gpu_hour = 2.5

[caps]
user = "300 kWh"

[caps.study]
co2e_kg = 5

[caps.project]
co2e_kg = 50
gpu_hours = 400

[caps.projects.nlp]
usd = 1000

[caps.users.ana]
co2e_kg = 0

[reporting]
seeds = 5
sensitivity = true
"""


def problems_of(text: str) -> list[tuple[str, str, str]]:
    with pytest.raises(InvalidPolicyError) as info:
        parse_policy(text, "hpaudit.toml")
    return [(p.path, p.message, p.hint) for p in info.value.problems]


def test_full_policy_reads_every_section():
    policy = parse_policy(FULL, "hpaudit.toml")
    assert policy.on_exceed == "stop"
    assert policy.defaults.region == "FR" and policy.defaults.pue == 1.2
    assert policy.caps.user is not None and policy.caps.user.energy_kwh == 300.0
    assert policy.caps.for_project("cv").limits() == {"co2e_kg": 50.0, "gpu_hours": 400.0}
    # A named project's cap replaces the general one for it, it is not merged with it.
    assert policy.caps.for_project("nlp").limits() == {"usd": 1000.0}
    assert policy.caps.for_user("ana").limits() == {"co2e_kg": 0.0}
    assert policy.reporting.seeds == 5 and policy.reporting.sensitivity
    assert policy.origin == "hpaudit.toml"


def test_empty_file_is_the_empty_policy():
    policy = parse_policy("", "hpaudit.toml")
    assert policy.caps.is_empty() and policy.on_exceed == "prune"
    assert policy.limits_for("mnist", "p", "u") == []


@pytest.mark.parametrize(
    ("text", "field", "value"),
    [
        ('user = "50 kg CO2e"', "co2e_kg", 50.0),
        ('user = "50kgCO2e"', "co2e_kg", 50.0),
        ('user = "1_000 USD"', "usd", 1000.0),
        ('user = "12.5 GPU-hours"', "gpu_hours", 12.5),
        ('user = "3e2 kWh"', "energy_kwh", 300.0),
    ],
)
def test_cap_string_forms_carry_their_unit(text, field, value):
    policy = parse_policy(f"[caps]\n{text}\n")
    assert policy.caps.user is not None
    assert policy.caps.user.limits() == {field: value}


def test_cap_as_cost_has_inf_for_unset_units():
    policy = parse_policy("[caps.project]\nco2e_kg = 2\nenergy_kwh = 1\n")
    cost = policy.caps.project.as_cost()
    assert cost.co2e_g == 2000.0 and cost.energy_j == 3.6e6
    assert math.isinf(cost.usd) and math.isinf(cost.gpu_s)


# Each malformed file has exactly one problem: (file text, its key path, words in the message).
MALFORMED = [
    # wrong types
    ('on_exceed = "halt"', "on_exceed", '"prune", "stop" or "warn"'),
    ("on_exceed = 1", "on_exceed", '"warn", got 1'),
    ('[defaults]\npue = "1.5"', "defaults.pue", 'expected a number, got string "1.5"'),
    ("[defaults]\nregion = 5", "defaults.region", "expected a string"),
    ("[reporting]\nseeds = true", "reporting.seeds", "expected an integer, got boolean true"),
    ("[reporting]\nseeds = 2.5", "reporting.seeds", "expected an integer"),
    ('[reporting]\nsensitivity = "yes"', "reporting.sensitivity", "expected true or false"),
    ("defaults = 3", "defaults", "expected a table"),
    ("[caps]\nprojects = 3", "caps.projects", "expected a table"),
    ('[caps.project]\nco2e_kg = "lots"', "caps.project.co2e_kg", "expected a number"),
    # unknown keys, at every level
    ("colour = 1", "colour", "unknown key 'colour'"),
    ("[default]\npue = 1.2", "default", "unknown key 'default'"),
    ("[defaults]\nregoin = 'FR'", "defaults.regoin", "unknown key 'regoin'"),
    ("[caps.month]\nco2e_kg = 1", "caps.month", "unknown key 'month'"),
    ("[caps.project]\nco2_kg = 5", "caps.project.co2_kg", "unknown key 'co2_kg'"),
    ("[caps.projects.nlp]\nkwh = 5", "caps.projects.nlp.kwh", "unknown key 'kwh'"),
    ('[caps.users."a.b"]\nusd = -1', 'caps.users."a.b".usd', "must be >= 0"),
    ("[reporting]\nseed = 5", "reporting.seed", "unknown key 'seed'"),
    # negative, non-finite and zero-meaning-nothing values
    ("[caps.project]\nco2e_kg = -5", "caps.project.co2e_kg", "must be >= 0, got -5"),
    ("[caps.users.ana]\ngpu_hours = -1.5", "caps.users.ana.gpu_hours", "must be >= 0"),
    ('[caps]\nstudy = "-3 kWh"', "caps.study.energy_kwh", "must be >= 0"),
    ("[caps.study]\nusd = inf", "caps.study.usd", "finite number, got inf"),
    ("[caps.study]\nusd = nan", "caps.study.usd", "finite number, got nan"),
    ("[defaults]\npue = 0.9", "defaults.pue", "must be >= 1"),
    ("[defaults]\nusd_per_kwh = -0.1", "defaults.usd_per_kwh", "must be >= 0"),
    ("[reporting]\nseeds = 0", "reporting.seeds", "must be >= 1"),
    # unknown region, and two intensities at once
    ('[defaults]\nregion = "atlantis"', "defaults.region", "unknown region 'atlantis'"),
    ('[defaults]\nregion = "FR"\ng_per_kwh = 50', "defaults", "both region and g_per_kwh"),
    # a cap without a unit, in each form it can take
    ("[caps]\nproject = 50", "caps.project", "a cap without a unit: 50"),
    ('[caps]\nproject = "50"', "caps.project", "a cap without a unit: '50'"),
    ("[caps.projects]\nnlp = 2.5", "caps.projects.nlp", "a cap without a unit"),
    ('[caps]\nuser = "5 tonnes"', "caps.user", "unknown unit 'tonnes'"),
    ("[caps.project]", "caps.project", "a cap with no limit in it"),
    # bad TOML syntax
    ("[caps\nproject = 1", "", "not valid TOML"),
    ("on_exceed = prune", "", "not valid TOML"),
    ("[caps.project]\nco2e_kg = 1\nco2e_kg = 2", "", "not valid TOML"),
]


@pytest.mark.parametrize(("text", "path", "words"), MALFORMED)
def test_malformed_file_reports_key_path_and_hint(text, path, words):
    (problem,) = problems_of(text)
    got_path, message, hint = problem
    assert got_path == path
    assert words in message
    assert hint, "every problem comes with a hint"
    assert "\n" not in message + hint


def test_unknown_key_suggests_the_closest_and_lists_the_allowed():
    ((_, _, hint),) = problems_of("[caps.project]\nco2_kg = 5")
    assert hint.startswith("did you mean 'co2e_kg'?")
    assert "co2e_kg, energy_kwh, usd, gpu_hours" in hint


def test_unknown_region_hint_says_how_to_list_regions():
    ((_, _, hint),) = problems_of('[defaults]\nregion = "frx"')
    assert "did you mean fr" in hint.lower() and "hpaudit regions" in hint


def test_every_problem_is_reported_not_only_the_first():
    text = '[caps.project]\nco2e_kg = -1\nco2_kg = 3\n[reporting]\nseeds = "5"\n'
    paths = {path for path, _, _ in problems_of(text)}
    assert paths == {"caps.project.co2e_kg", "caps.project.co2_kg", "reporting.seeds"}


def test_error_is_one_line_input_error_counting_the_rest():
    with pytest.raises(InvalidPolicyError) as info:
        parse_policy("a = 1\nb = 2\nc = 3\n", "lab.toml")
    error = info.value
    assert isinstance(error, PolicyError) and isinstance(error, HpauditInputError)
    assert error.exit_code == 2
    assert "\n" not in str(error)
    assert str(error).startswith("lab.toml: ") and "(and 2 more problems" in str(error)
    assert len(error.lines()) == 3


def test_policy_in_code_is_validated_the_same_way():
    with pytest.raises(Exception, match="greater than or equal"):
        Policy.model_validate({"caps": {"user": {"usd": -1}}})
    assert Policy.model_validate({"caps": {"user": "2 USD"}}).caps.user.usd == 2.0


def test_reporting_missing_lists_unmet_requirements():
    reporting = parse_policy("[reporting]\nseeds = 5\nsensitivity = true\nvariance = true\n")
    missing = reporting.reporting.missing(seeds_run=5, sensitivity=False, variance=True)
    assert missing == ["hyperparameter sensitivity is not reported; the policy requires it"]
    assert reporting.reporting.missing(seeds_run=5, sensitivity=True, variance=True) == []


def test_carbon_model_from_defaults():
    region = parse_policy('[defaults]\nregion = "FR"\npue = 1.1\nusd_per_kwh = 0.3\n')
    number = parse_policy("[defaults]\ng_per_kwh = 100\n", "lab.toml")
    fr = region.carbon_model().footprint(3.6e6)
    assert fr.pue == 1.1 and math.isclose(fr.energy_kwh, 1.1)
    assert math.isclose(fr.usd, 0.33)
    assert 0 < fr.g_per_kwh < 200  # France's low-carbon grid, from the shipped table
    fp = number.carbon_model().footprint(3.6e6)
    assert fp.g_per_kwh == 100.0 and "lab policy (lab.toml)" in fp.intensity_source
    # Nothing set: the ledger's default model, so a policy without defaults changes nothing.
    from hpsearch_budget.ledger import default_carbon

    base = default_carbon().footprint(3.6e6)
    empty = parse_policy("").carbon_model().footprint(3.6e6)
    assert (empty.g_per_kwh, empty.pue, empty.usd) == (base.g_per_kwh, base.pue, base.usd)


def test_module_docstring_example_file_is_valid():
    import textwrap

    from hpsearch_budget.policy import _model

    doc = _model.__doc__ or ""
    block = doc.split("every table optional::\n", 1)[1].split("\nValidation is strict", 1)[0]
    policy = parse_policy(textwrap.dedent(block), "example")
    assert policy.caps.for_project("nlp").limits() == {"co2e_kg": 120.0}
    assert policy.caps.user is not None and policy.caps.user.energy_kwh == 300.0


def test_docstring_examples_run(monkeypatch):
    import doctest
    import importlib

    monkeypatch.delenv("HPAUDIT_PROJECT", raising=False)
    monkeypatch.delenv("HPAUDIT_USER", raising=False)
    modules = ["", "._enforce", "._errors", "._identity", "._load", "._model"]
    for suffix in modules:
        module = importlib.import_module(f"hpsearch_budget.policy{suffix}")
        result = doctest.testmod(module)
        assert result.failed == 0 and result.attempted > 0, module.__name__
