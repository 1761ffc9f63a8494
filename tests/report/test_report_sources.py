"""Each source kind: Optuna SQLite / PostgreSQL / journal, a ledger, a Ray Tune folder."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import optuna
import pytest

from hpsearch_budget.errors import HpauditInputError
from hpsearch_budget.report import load_sweep
from hpsearch_budget.report._sources import _load_with_optuna

from .conftest import energy_j, make_metered_study, write_ray_folder


def _same_trials(a, b) -> None:  # type: ignore[no-untyped-def]
    assert a.study == b.study and a.direction == b.direction
    assert list(a.trials["number"]) == list(b.trials["number"])
    assert list(a.trials["state"]) == list(b.trials["state"])
    np.testing.assert_allclose(a.trials["value"], b.trials["value"])
    assert list(a.trials["params"]) == list(b.trials["params"])
    assert list(a.trials["steps"]) == list(b.trials["steps"])
    np.testing.assert_allclose(a.trials["wall_s"], b.trials["wall_s"], rtol=1e-6)


def test_fast_sql_reader_equals_optunas_loader(study_db: tuple[str, str]) -> None:
    url, _ = study_db
    fast = load_sweep(url)
    _same_trials(fast, _load_with_optuna(url, "sweep", url))
    assert fast.trials["energy_source"].eq("estimated").all()
    assert fast.trials["energy_j"].to_list() == pytest.approx(
        [energy_j(0, p["y"]) for p in fast.trials["params"]]
    )
    assert set(fast.trials["state"]) == {"complete", "pruned"}


def test_ledger_join_gives_energy_and_devices(study_db: tuple[str, str]) -> None:
    storage, ledger = study_db
    sw = load_sweep(storage, ledger=ledger)
    assert sw.trials["energy_source"].eq("measured").all()
    assert sw.trials["energy_j"].to_list() == pytest.approx(
        [energy_j(0, p["y"]) for p in sw.trials["params"]]
    )
    assert sw.trials["co2e_g"].gt(0).all() and sw.trials["devices"].iloc[0] == ["gpu:0"]


def test_study_without_energy_says_so(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 's.db'}"
    make_metered_study(url, None, n=4)
    bare = load_sweep(url)
    assert not bare.has_energy and any("--ledger" in n for n in bare.notes)


def test_ledger_alone_is_a_source(study_db: tuple[str, str]) -> None:
    _, ledger = study_db
    sw = load_sweep(ledger, direction="minimize")
    assert sw.source_kind == "ledger" and len(sw.trials) == 24
    assert (sw.trials["state"] == "pruned").sum() == 3
    # the ledger does not record the direction: a report must not guess which trial is best
    with pytest.raises(HpauditInputError, match="pass --direction maximize or --direction min"):
        load_sweep(ledger)
    best = load_sweep(ledger, direction="maximize").best_trial()
    assert best is not None and best["value"] == sw.trials["value"].max()


def test_journal_file(tmp_path: Path) -> None:
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    path = tmp_path / "study.log"
    storage = JournalStorage(JournalFileBackend(str(path)))
    make_metered_study(storage, None, attrs=True, n=8)  # type: ignore[arg-type]
    sw = load_sweep(str(path))
    assert sw.source_kind == "optuna" and len(sw.trials) == 8 and sw.has_energy
    assert sw.source == str(path)  # the report names the journal it read


def test_postgres_storage(pg_url: str) -> None:
    make_metered_study(pg_url, pg_url, n=10)
    sw = load_sweep(pg_url)  # the ledger shares the database: found without --ledger
    assert len(sw.trials) == 10 and sw.trials["energy_source"].eq("measured").all()


def test_ray_folder(tmp_path: Path) -> None:
    exp = write_ray_folder(tmp_path)
    with pytest.raises(HpauditInputError, match="whether metric 'loss' is maximised"):
        load_sweep(str(exp))  # Ray folders do not record the mode
    sw = load_sweep(str(exp), direction="minimize")
    assert sw.source_kind == "ray" and len(sw.trials) == 6
    assert sw.trials.loc[1, "state"] == "pruned" and sw.trials.loc[0, "state"] == "complete"
    assert sw.trials.loc[0, "params"] == {"lr": 0.1, "layers": 1}
    assert sw.trials.loc[0, "wall_s"] == pytest.approx(40.0)
    assert sw.trials.loc[0, "energy_j"] == pytest.approx(0.004 * 3.6e6)
    assert math.isfinite(sw.trials.loc[0, "value"])


def test_a_ray_trial_tune_stopped_is_pruned_not_complete(tmp_path: Path) -> None:
    """Tune marks the last result of a trial a scheduler stopped ``done`` (trial 1 of the
    folder, 2 of 4 iterations), as it does a finished one's: only the length tells them apart."""
    from hpsearch_budget.ledger import Ledger
    from hpsearch_budget.meters import Measurement

    exp = write_ray_folder(tmp_path)
    sw = load_sweep(str(exp), direction="minimize")
    assert sw.trials["state"].tolist() == ["complete", "pruned", *["complete"] * 4]
    (note,) = [n for n in sw.notes if "stopped by Tune" in n]
    assert note.startswith("1 trial(s) ended before the longest trial's 4 iterations")
    assert "--ledger URL" in note
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    led = Ledger(url)
    for i in range(6):  # the ledger knows: trial 1 stopped by itself
        w = led.open_window("exp", f"exp:t{i:05d}")
        led.finalize(w, Measurement(1.0, {"cpu": 5.0}), status="complete")
    led.close()
    sw = load_sweep(str(exp), ledger=url, direction="minimize")
    assert sw.trials["state"].eq("complete").all()
    assert not [n for n in sw.notes if "stopped by Tune" in n]


def test_ray_trials_naming_several_ledgers_join_none(tmp_path: Path) -> None:
    """Trials whose results record different ledgers (an experiment restored with another
    ledger URL): none is guessed; a note names them and asks for --ledger."""
    import json

    from hpsearch_budget.ledger import Ledger
    from hpsearch_budget.meters import Measurement

    exp = write_ray_folder(tmp_path, n=2)
    urls = [f"sqlite:///{tmp_path / name}" for name in ("a.db", "b.db")]
    for url in urls:
        with Ledger(url) as led:
            for i in range(2):
                w = led.open_window("exp", f"exp:t{i:05d}")
                led.finalize(w, Measurement(1.0, {"cpu": 5.0}), status="complete")
    for url, path in zip(urls, sorted(exp.glob("*/result.json")), strict=True):
        lines = path.read_text().splitlines()
        first = json.loads(lines[0])
        first["hpaudit_ledger"] = url  # as metered() writes it: the first result of a window
        path.write_text("\n".join([json.dumps(first), *lines[1:]]) + "\n")
    sw = load_sweep(str(exp), direction="minimize")
    (note,) = [n for n in sw.notes if "hpaudit_ledger" in n]
    assert note.startswith("ledger not used: the trials' results name 2 ledgers")
    assert all(url in note for url in urls) and note.endswith("pass --ledger URL")
    assert sw.trials["state"].tolist() == ["complete", "pruned"]  # the folder's fates
    one = load_sweep(str(exp), direction="minimize", ledger=urls[0])
    assert one.trials["state"].tolist() == ["complete", "complete"]  # the ledger's fates


def test_ray_folder_needs_a_metric_when_ambiguous(tmp_path: Path) -> None:
    exp = write_ray_folder(tmp_path)
    for f in exp.glob("*/result.json"):
        f.write_text(f.read_text().replace('"done"', '"acc": 1.0, "done"'))
    with pytest.raises(HpauditInputError, match="--metric"):
        load_sweep(str(exp))
    assert len(load_sweep(str(exp), metric="acc", direction="maximize").trials) == 6


@pytest.mark.parametrize(
    "make",
    ["missing_study", "two_studies", "empty_ray", "nonsense_path", "not_a_study_db", "bad_journal"],
)
def test_bad_sources(tmp_path: Path, make: str) -> None:
    url = f"sqlite:///{tmp_path / 's.db'}"
    if make in ("missing_study", "two_studies"):
        optuna.create_study(study_name="a", storage=url)
        optuna.create_study(study_name="b", storage=url)
        study = "zzz" if make == "missing_study" else None
        with pytest.raises(HpauditInputError, match="'a', 'b'"):
            load_sweep(url, study=study)
    elif make == "empty_ray":
        (tmp_path / "exp" / "trial_0").mkdir(parents=True)
        (tmp_path / "exp" / "trial_0" / "result.json").write_text("")
        with pytest.raises(HpauditInputError, match="no trial results"):
            load_sweep(str(tmp_path / "exp"))
    elif make == "nonsense_path":
        with pytest.raises(HpauditInputError, match="neither a URL"):
            load_sweep(str(tmp_path / "nothing-here"))
    elif make == "not_a_study_db":
        import sqlite3

        sqlite3.connect(tmp_path / "s.db").execute("CREATE TABLE t (x)").connection.commit()
        with pytest.raises(HpauditInputError, match="neither an Optuna study"):
            load_sweep(url)
    else:
        (tmp_path / "j.log").write_text("this is not a journal\n")
        with pytest.raises(HpauditInputError):
            load_sweep(str(tmp_path / "j.log"))


def test_ray_folder_joins_the_ledger_on_trial_id(tmp_path: Path) -> None:
    from hpsearch_budget.ledger import Ledger
    from hpsearch_budget.meters import Measurement, Source

    exp = write_ray_folder(tmp_path)
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    led = Ledger(url)
    for i in range(6):  # as hpsearch_budget.ray.metered writes them
        w = led.open_window("exp", f"exp:t{i:05d}", params={"i": i}, devices=["gpu:0"])
        m = Measurement(40.0, {"gpu:0": 1000.0 * (i + 1)}, {"gpu:0": Source.MEASURED})
        led.finalize(w, m, status="complete")
    led.close()
    sw = load_sweep(str(exp), ledger=url, direction="minimize")
    assert sw.study == "exp" and sw.trials["energy_source"].eq("measured").all()
    assert sw.trials["energy_j"].to_list() == pytest.approx([1000.0 * (i + 1) for i in range(6)])
    assert sw.trials.loc[2, "gpu_s"] == pytest.approx(40.0)


def test_the_ledger_knows_fates_and_rows_the_source_does_not(tmp_path: Path) -> None:
    """A Ray trial a budget stopped at its last step is complete in its folder (pruned in the
    ledger); a trial that wrote no result has a ledger row only; an Optuna trial whose worker
    was killed stays RUNNING in Optuna's storage (killed in the ledger, once reaped)."""
    from datetime import UTC, datetime, timedelta

    import optuna

    from hpsearch_budget.ledger import Ledger
    from hpsearch_budget.meters import Measurement, Source

    exp = write_ray_folder(tmp_path)
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    led = Ledger(url)
    for i in range(7):  # t00006 has a row but no trial folder
        w = led.open_window("exp", f"exp:t{i:05d}")
        m = Measurement(40.0, {"gpu:0": 3.6e4}, {"gpu:0": Source.MEASURED})
        led.finalize(w, m, status="pruned" if i == 0 else "complete")
    sw = load_sweep(str(exp), ledger=url, direction="minimize")
    assert sw.trials.loc[0, "state"] == "pruned"  # the folder says complete
    assert len(sw.trials) == 6
    (note,) = [n for n in sw.notes if "match no trial" in n]
    assert note.startswith("1 ledger row(s)") and "0.01 kWh" in note

    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    study = optuna.create_study(study_name="opt", storage=storage)
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    study.ask()  # trial 2: its worker dies; Optuna keeps it RUNNING
    for n in range(3):
        w = led.open_window("opt", f"opt:{n}", trial_number=n, checkpoint_interval_s=1.0)
        if n < 2:
            led.finalize(w, Measurement(1.0, {"cpu": 5.0}), status="complete")
    led.reap(now=datetime.now(UTC) + timedelta(minutes=1))
    sw = load_sweep(storage, ledger=url)
    assert sw.trials["state"].tolist() == ["complete", "complete", "killed"]


def test_schema_drift_falls_back_to_optunas_loader(
    study_db: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from hpsearch_budget.report import _sources

    url, _ = study_db
    fast = load_sweep(url)

    def drifted(*args: object) -> None:
        raise KeyError("a column a future Optuna renamed")

    monkeypatch.setattr(_sources, "_read_rdb", drifted)
    messages: list[str] = []
    slow = load_sweep(url, progress=messages.append)
    _same_trials(fast, slow)
    assert any("Optuna's loader" in m for m in messages)


def test_optunas_loader_hides_the_password_as_the_fast_reader_does(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sqlalchemy as sa

    from hpsearch_budget.report import _sources

    parsed = sa.engine.make_url(pg_url)
    secret = parsed.password or "not-checked-under-trust"  # .ci/run's server trusts loopback
    url = parsed.set(password=secret).render_as_string(hide_password=False)
    optuna.create_study(study_name="s", storage=url).optimize(
        lambda t: t.suggest_float("x", 0, 1), n_trials=2
    )
    fast = load_sweep(url)

    def drifted(*args: object) -> None:
        raise KeyError("a column a future Optuna renamed")

    monkeypatch.setattr(_sources, "_read_rdb", drifted)
    slow = load_sweep(url)
    assert secret not in fast.source and slow.source == fast.source


def test_partial_ledger_keeps_attribute_energy_for_the_rest(
    study_db: tuple[str, str], tmp_path: Path
) -> None:
    from hpsearch_budget.ledger import Ledger
    from hpsearch_budget.meters import Measurement, Source

    storage, _ = study_db
    url = f"sqlite:///{tmp_path / 'partial.db'}"
    led = Ledger(url)
    for n in (0, 1):
        w = led.open_window("sweep", f"sweep:{n}", trial_number=n, devices=["gpu:0", "gpu:1"])
        m = Measurement(5.0, {"gpu:0": 7.0}, {"gpu:0": Source.MEASURED})
        led.finalize(w, m, status="complete")
    led.close()
    sw = load_sweep(storage, ledger=url)
    t = sw.trials
    assert t.loc[:1, "energy_j"].to_list() == [7.0, 7.0]
    assert t.loc[:1, "energy_source"].to_list() == ["measured", "measured"]
    assert t.loc[0, "devices"] == ["gpu:0", "gpu:1"]
    assert t.loc[2:, "energy_source"].eq("estimated").all()  # from the user attributes
    assert t.loc[2, "energy_j"] == pytest.approx(energy_j(0, t.loc[2, "params"]["y"]))
    assert "22 trial(s) have no ledger row" in sw.notes


def test_final_and_seed_runs_come_from_the_ledger(tmp_path: Path) -> None:
    from hpsearch_budget.analysis import Assumptions, rnd_cost, seed_variance
    from hpsearch_budget.ledger import Ledger
    from hpsearch_budget.meters import Measurement, Source

    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    led = Ledger(url)
    rows = [("tuning", 0, 0.5), ("tuning", 1, 0.3), ("final", None, 0.29), ("seed", None, 0.31),
            ("seed", None, 0.27)]  # fmt: skip
    for k, (phase, number, value) in enumerate(rows):
        w = led.open_window("s", f"s:{phase}:{k}", phase=phase, trial_number=number)
        m = Measurement(10.0, {"cpu": 100.0 * (k + 1)}, {"cpu": Source.ESTIMATED})
        led.finalize(w, m, status="complete", value=value)
    led.close()
    sw = load_sweep(url, direction="minimize")
    assert len(sw.trials) == 2 and sorted(sw.runs["phase"]) == ["final", "seed", "seed"]
    r = rnd_cost(sw, Assumptions(final_epochs=50, seeds=9))  # factors unused: runs recorded
    assert [p.basis for p in r.phases] == ["recorded"] * 3
    assert [p.energy_j for p in r.phases] == pytest.approx([300.0, 300.0, 900.0])
    sv = seed_variance(sw)
    assert sv.origin == "ledger seed runs" and sv.spread is not None and sv.spread.n == 3


def test_seed_variance_uses_complete_final_and_seed_runs_never_finals_alone(
    tmp_path: Path,
) -> None:
    from hpsearch_budget.analysis import seed_variance
    from hpsearch_budget.ledger import Ledger
    from hpsearch_budget.meters import Measurement, Source

    def ledger_with(study: str, rows: list[tuple[str, str, float]]) -> str:
        url = f"sqlite:///{tmp_path / study}.db"
        led = Ledger(url)
        tuning = [("tuning", "complete", 0.5), ("tuning", "complete", 0.3)]
        for k, (phase, status, value) in enumerate(tuning + rows):
            number = k if phase == "tuning" else None
            key, params = f"{study}:{k}", {"lr": k}  # no two trials repeat a configuration
            w = led.open_window(study, key, phase=phase, trial_number=number, params=params)
            m = Measurement(10.0, {"cpu": 100.0}, {"cpu": Source.ESTIMATED})
            led.finalize(w, m, status=status, value=value)
        led.close()
        return url

    # A final training that crashed part way (0.9) and its rerun, a seed rerun killed part way
    # (0.8): neither partial value is a seed draw.
    url = ledger_with(
        "mixed",
        [("final", "failed", 0.9), ("final", "complete", 0.29), ("seed", "killed", 0.8),
         ("seed", "complete", 0.31), ("seed", "complete", 0.27)],
    )  # fmt: skip
    sv = seed_variance(load_sweep(url, direction="minimize"))
    assert sv.origin == "ledger seed runs" and sv.spread is not None
    assert (sv.spread.n, sv.spread.max) == (3, 0.31)
    assert sv.spread.mean == pytest.approx(0.29)
    assert "1 final training and 2 seed reruns" in sv.note
    # Two final trainings and no seed rerun: not a seed variance (a retraining, or finals of
    # two configurations), so the report asks for seed reruns.
    url = ledger_with("finals", [("final", "complete", 0.29), ("final", "complete", 0.35)])
    sv = seed_variance(load_sweep(url, direction="minimize"))
    assert sv.spread is None and "ledger phase 'seed'" in sv.note
