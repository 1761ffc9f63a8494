"""``hpaudit verify``, ``hpaudit export`` and ``hpaudit ledger``: exit codes, files, messages;
export's --since / --until, its json format, and what the CodeCarbon layout fills."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa

from hpsearch_budget.cli import main
from hpsearch_budget.errors import LedgerError
from hpsearch_budget.ledger import CODECARBON_COLUMNS, ENTRY_COLUMNS, Ledger, default_carbon
from hpsearch_budget.meters import Measurement, Source
from hpsearch_budget.policy import parse_policy
from hpsearch_budget.units import j_to_kwh


def _hpaudit(*args: str) -> int:
    try:
        main(list(args))
    except SystemExit as done:
        return int(done.code or 0)
    return 0


@pytest.fixture
def filled(ledger_url: str) -> str:
    ledger = Ledger(ledger_url)
    for i in range(3):
        w = ledger.open_window("cnn", f"cnn:{i}", trial_number=i, devices=["gpu:0"], project="lab")
        m = Measurement(
            100.0,
            {"gpu:0": 3.6e5, "cpu": 7.2e4, "ram": 3.6e3},
            {"gpu:0": Source.MEASURED, "cpu": Source.ESTIMATED, "ram": Source.ESTIMATED},
        )
        ledger.finalize(w, m, status="complete", value=0.5 + i / 10)
    w = ledger.open_window("mlp", "mlp:0")
    ledger.finalize(w, Measurement(1.0, {"cpu": 1.0}), status="pruned")
    ledger.close()
    return ledger_url


def test_verify_exits_0_on_a_sound_ledger(filled: str, capsys) -> None:
    assert _hpaudit("verify", "--ledger", filled) == 0
    assert "ledger sound: 4 finished rows in 2 studies" in capsys.readouterr().out


def test_verify_exits_1_naming_the_first_bad_row(filled: str, capsys) -> None:
    engine = sa.create_engine(filled)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE hpaudit_windows SET co2e_g = 0 WHERE trial_key = 'cnn:1'"))
    engine.dispose()
    assert _hpaudit("verify", "--ledger", filled) == 1
    assert "row id 2 (seq 2) was edited" in capsys.readouterr().out
    assert _hpaudit("verify", "--ledger", filled, "--study", "mlp") == 0
    assert _hpaudit("verify", "--ledger", filled, "--format", "json") == 1
    payload = json.loads(capsys.readouterr().out.split("\n", 1)[1])  # after the mlp line
    assert payload["ok"] is False and payload["problems"][0]["row_id"] == 2


def test_the_ledger_url_can_come_from_the_environment(filled: str, monkeypatch, capsys) -> None:
    monkeypatch.setenv("HPAUDIT_LEDGER", filled)
    assert _hpaudit("ledger", "studies") == 0
    out = capsys.readouterr().out
    assert "cnn\t3 windows" in out and "(includes estimates)" in out
    cnn = next(line for line in out.splitlines() if line.startswith("cnn\t"))
    assert cnn.endswith("kg CO2e (includes estimates)")  # the carbon figure is labelled too
    assert " kWh (device) (includes estimates)\t" in cnn  # before PUE: the report's is x PUE


def test_bad_input_exits_2_with_one_line_and_creates_nothing(tmp_path: Path, capsys) -> None:
    missing = tmp_path / "typo.db"
    assert _hpaudit("verify", "--ledger", f"sqlite:///{missing}") == 2
    err = capsys.readouterr().err
    assert err.startswith("hpaudit: error: no ledger at") and err.count("\n") == 1
    assert not missing.exists()
    junk = tmp_path / "junk.db"
    junk.write_text("not sqlite " * 100)
    assert _hpaudit("verify", "--ledger", f"sqlite:///{junk}") == 2
    assert "corrupted" in capsys.readouterr().err
    assert _hpaudit("verify", "--ledger", "ftp://x") == 2


def test_an_unknown_study_is_bad_input(filled: str, capsys) -> None:
    assert _hpaudit("verify", "--ledger", filled, "--study", "nope") == 2
    assert "no study 'nope' in the ledger; studies: cnn, mlp" in capsys.readouterr().err


def test_export_csv_round_trips_the_entries(filled: str, tmp_path: Path) -> None:
    out = tmp_path / "rows.csv"
    assert _hpaudit("export", "--ledger", filled, "--format", "csv", "--out", str(out)) == 0
    table = pd.read_csv(out)
    assert list(table.columns) == list(ENTRY_COLUMNS)
    assert len(table) == 4
    assert json.loads(table.energy_by_domain[0]) == {"cpu": 7.2e4, "gpu:0": 3.6e5, "ram": 3.6e3}
    assert table.source[0] == "estimated"  # the weakest domain labels the total
    assert table.started_at[0].endswith("Z")


def test_export_parquet_keeps_types(filled: str, tmp_path: Path) -> None:
    out = tmp_path / "rows.parquet"
    assert _hpaudit("export", "--ledger", filled, "--study", "cnn", "--format", "parquet",
                    "--out", str(out)) == 0  # fmt: skip
    table = pd.read_parquet(out)
    assert len(table) == 3 and str(table.started_at.dtype).startswith("datetime64")
    assert table.value.tolist() == pytest.approx([0.5, 0.6, 0.7])


def test_export_codecarbon_fills_what_it_can(filled: str, tmp_path: Path) -> None:
    out = tmp_path / "emissions.csv"
    assert _hpaudit("export", "--ledger", filled, "--study", "cnn", "--format", "codecarbon",
                    "--out", str(out)) == 0  # fmt: skip
    table = pd.read_csv(out)
    assert list(table.columns) == list(CODECARBON_COLUMNS)
    row = table.iloc[0]
    assert (row.project_name, row.run_id, row.experiment_id) == ("lab", "cnn:0", "cnn")
    # CodeCarbon's convention: every energy column includes PUE, and the parts add up
    assert row.pue > 1
    assert row.gpu_energy == pytest.approx(j_to_kwh(3.6e5) * row.pue)
    assert row.cpu_energy == pytest.approx(j_to_kwh(7.2e4) * row.pue)
    assert row.ram_energy == pytest.approx(j_to_kwh(3.6e3) * row.pue)
    assert row.energy_consumed == pytest.approx(j_to_kwh(4.356e5) * row.pue)
    parts = row.gpu_energy + row.cpu_energy + row.ram_energy
    assert parts == pytest.approx(row.energy_consumed)
    g_per_kwh = default_carbon().intensity.at(datetime.now(UTC)).g_per_kwh
    assert row.emissions == pytest.approx(row.energy_consumed * g_per_kwh / 1000)  # kg
    assert row.duration == 100.0 and row.emissions_rate == pytest.approx(row.emissions / 100)
    assert row.gpu_count == 1 and row.cpu_power == pytest.approx(7.2e4 / 100)  # W, no PUE
    assert list(table.hpaudit_energy_source) == list(
        Ledger(filled).entries(study="cnn")["source"].fillna("none")
    )  # how each row's energy was obtained, which CodeCarbon's own columns cannot say
    assert row.hpaudit_energy_source == "estimated"  # GPU measured, CPU and RAM estimated


#: The header CodeCarbon 3.3.2 writes: the fields of its EmissionsData, in order
#: (codecarbon/output_methods/emissions_data.py; FileOutput writes them as they are).
_CODECARBON_3_3_2_HEADER = [
    "timestamp", "project_name", "run_id", "experiment_id", "duration", "emissions",
    "emissions_rate", "cpu_power", "gpu_power", "ram_power", "cpu_energy", "gpu_energy",
    "ram_energy", "energy_consumed", "water_consumed", "country_name", "country_iso_code",
    "region", "cloud_provider", "cloud_region", "os", "python_version", "codecarbon_version",
    "cpu_count", "cpu_model", "gpu_count", "gpu_model", "longitude", "latitude",
    "ram_total_size", "tracking_mode", "cpu_utilization_percent", "gpu_utilization_percent",
    "ram_utilization_percent", "ram_used_gb", "on_cloud", "pue", "wue",
]  # fmt: skip


def test_export_codecarbon_has_codecarbon_3_columns_in_order(filled: str, tmp_path: Path) -> None:
    # a script or dashboard reading CodeCarbon 3.x files (table.water_consumed, .wue, ...) reads
    # ours too: every CodeCarbon column, in its order, then our two extra columns
    out = tmp_path / "emissions.csv"
    assert _hpaudit("export", "--ledger", filled, "--format", "codecarbon",
                    "--out", str(out)) == 0  # fmt: skip
    header = out.read_text().splitlines()[0].split(",")
    assert header == [*_CODECARBON_3_3_2_HEADER, "hpaudit_energy_source", "hpaudit_status"]
    table = pd.read_csv(out)
    unknown = ["water_consumed", "cpu_utilization_percent", "ram_used_gb", "wue"]
    assert table[unknown].isna().all().all()  # not known to the ledger: empty, not 0


def test_export_codecarbon_fills_missing_project_and_source(filled: str, tmp_path: Path) -> None:
    # mlp:0 has no project and no energy source; next to cnn's rows pandas reads them as NaN
    # (truthy), which left project_name and hpaudit_energy_source empty
    out = tmp_path / "emissions.csv"
    assert _hpaudit("export", "--ledger", filled, "--format", "codecarbon",
                    "--out", str(out)) == 0  # fmt: skip
    table = pd.read_csv(out).set_index("run_id")
    assert table.loc["mlp:0", "project_name"] == "mlp"  # project, else study
    assert table.loc["mlp:0", "hpaudit_energy_source"] == "none"
    assert table.loc["cnn:0", "project_name"] == "lab"


def test_export_replaces_a_file_whole_or_not_at_all(
    filled: str, tmp_path: Path, monkeypatch, capsys
) -> None:
    out = tmp_path / "rows.csv"
    out.write_text("previous export\n")
    monkeypatch.setattr(pd.DataFrame, "to_csv", _fail_half_way)
    assert _hpaudit("export", "--ledger", filled, "--format", "csv", "--out", str(out)) == 2
    assert "No space left on device" in capsys.readouterr().err
    assert out.read_text() == "previous export\n"  # the old file, whole
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]  # no temporary left


def _fail_half_way(self: pd.DataFrame, path: str, **_: object) -> None:
    Path(path).write_text("half a fi")
    raise OSError(28, "No space left on device")


def test_export_bad_destination_is_bad_input(filled: str, tmp_path: Path, capsys) -> None:
    assert _hpaudit("export", "--ledger", filled, "--format", "csv",
                    "--out", str(tmp_path / "no" / "dir.csv")) == 2  # fmt: skip
    assert "does not exist" in capsys.readouterr().err
    assert _hpaudit("export", "--ledger", filled, "--format", "csv", "--out", str(tmp_path)) == 2
    assert _hpaudit("export", "--ledger", filled, "--format", "xml", "--out", "x.xml") == 2


def test_export_never_replaces_a_database(sqlite_url: str, capsys) -> None:
    # --out mistyped as the ledger itself (or an Optuna study): every row would be lost
    ledger = Ledger(sqlite_url)
    ledger.finalize(ledger.open_window("s", "s:0"), Measurement(1.0), status="complete")
    ledger.close()
    path = Path(sqlite_url.removeprefix("sqlite:///"))
    before = path.read_bytes()
    assert _hpaudit("export", "--ledger", sqlite_url, "--format", "csv", "--out", str(path)) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "is a SQLite database" in err
    assert "name a new file" in err and path.read_bytes() == before
    assert Ledger(sqlite_url, create=False).verify().rows == 1


def test_ledger_show(filled: str, capsys) -> None:
    assert _hpaudit("ledger", "show", "--ledger", filled, "--study", "cnn", "--limit", "2") == 0
    out = capsys.readouterr().out
    assert "cnn:2" in out and "cnn:0" not in out and "estimated" in out
    assert _hpaudit("ledger", "show", "--ledger", filled, "--format", "json") == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["trial_key"] for r in rows] == ["cnn:0", "cnn:1", "cnn:2", "mlp:0"]
    # times as the csv export writes them (ISO 8601, UTC): parseable, and null when missing
    for r in rows:
        started = datetime.fromisoformat(r["started_at"].replace("Z", "+00:00"))
        assert started.tzinfo is not None and r["started_at"].endswith("Z")
        assert r["ended_at"] is None or r["ended_at"].endswith("Z")


def test_ledger_show_marks_a_missing_source_with_a_dash(filled: str, capsys) -> None:
    # mlp:0 has no energy source; next to cnn's rows pandas holds NaN there, shown as "nan"
    assert _hpaudit("ledger", "show", "--ledger", filled) == 0
    mlp = next(line for line in capsys.readouterr().out.splitlines() if "mlp:0" in line)
    assert "nan" not in mlp and " - " in mlp


@pytest.mark.parametrize(
    ("edit", "row_id"),
    [
        ("UPDATE hpaudit_windows SET energy_j = 'abc' WHERE id = 1", 1),
        ("UPDATE hpaudit_windows SET params = '{bad' WHERE id = 2", 2),
        ("UPDATE hpaudit_windows SET checkpoint_interval_s = 'q' WHERE id = 5", 5),
    ],
)
def test_a_row_edited_into_nonsense_is_one_line_not_a_traceback(
    tmp_path: Path, capsys, edit: str, row_id: int
) -> None:
    # SQLite keeps whatever a raw UPDATE writes: show / studies / export died with a
    # TypeError, ValueError or JSONDecodeError traceback.
    url = f"sqlite:///{tmp_path / 'l.db'}"
    ledger = Ledger(url)
    for i in range(4):
        ledger.finalize(ledger.open_window("s", f"s:{i}"), Measurement(1.0), status="complete")
    ledger.open_window("s", "s:running", checkpoint_interval_s=3600.0)
    ledger.close()
    con = sqlite3.connect(tmp_path / "l.db")
    con.execute(edit)
    con.commit()
    con.close()
    out = str(tmp_path / "out.csv")
    for args in (
        ["ledger", "show"],
        ["ledger", "studies"],
        ["export", "--format", "csv", "--out", out],
    ):
        assert _hpaudit(*args, "--ledger", url) == 2, args
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1, err
        assert f"row id {row_id}" in err and "edited by hand" in err
    if "params" not in edit:  # sums read numbers only
        with pytest.raises(LedgerError, match=f"row id {row_id}"):
            Ledger(url).spent()


def test_a_reap_under_a_nonsense_chain_head_is_a_ledger_error(sqlite_url: str) -> None:
    ledger = Ledger(sqlite_url)
    ledger.finalize(ledger.open_window("s", "s:0"), Measurement(1.0), status="complete")
    silent = ledger.open_window("s", "s:1", checkpoint_interval_s=1.0)
    engine = sa.create_engine(sqlite_url)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE hpaudit_chain_heads SET seq = 'zz'"))
    engine.dispose()
    with pytest.raises(LedgerError, match=r"study 's': its chain head holds seq 'zz'.*by hand"):
        ledger.reap(now=datetime.now(UTC) + timedelta(hours=1))
    assert ledger.entries(study="s").set_index("id").loc[silent, "status"] == "running"


def test_ledger_show_json_of_an_empty_ledger(sqlite_url: str, capsys) -> None:
    # An empty entries() frame had untyped time columns: .dt raised an AttributeError.
    Ledger(sqlite_url).close()
    assert _hpaudit("ledger", "show", "--ledger", sqlite_url, "--format", "json") == 0
    assert json.loads(capsys.readouterr().out) == []
    empty = Ledger(sqlite_url).entries()
    assert list(empty.columns) == list(ENTRY_COLUMNS)
    assert str(empty.started_at.dtype) == "datetime64[ns, UTC]"


def test_ledger_show_piped_keeps_whole_figures(filled: str, capsys) -> None:
    """Piped (no terminal; pytest captures stdout), the table is not squeezed into 80 columns
    with its numbers elided."""
    assert _hpaudit("ledger", "show", "--ledger", filled) == 0
    out = capsys.readouterr().out
    assert "…" not in out and "estimated" in out
    kwh = j_to_kwh(Ledger(filled).entries(study="cnn")["energy_j"].iloc[0])
    assert f"{kwh:.4g}" in out


def test_show_studies_and_export_do_not_reap(tmp_path: Path) -> None:
    # "These commands only read": they reaped (finalised and chained) silent windows.
    path = tmp_path / "l.db"
    url = f"sqlite:///{path}"
    ledger = Ledger(url)
    ledger.finalize(ledger.open_window("s", "s:0"), Measurement(1.0), status="complete")
    ledger.open_window("s", "s:dead", checkpoint_interval_s=1.0)
    ledger.close()
    con = sqlite3.connect(path)  # its worker died long ago
    con.execute("UPDATE hpaudit_windows SET updated_unix_s = 0 WHERE id = 2")
    con.commit()
    con.close()
    con = sqlite3.connect(path)
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()
    before = path.read_bytes()
    out = str(tmp_path / "out.csv")
    for args in (
        ["ledger", "show"],
        ["ledger", "studies"],
        ["export", "--format", "csv", "--out", out],
    ):
        assert _hpaudit(*args, "--ledger", url) == 0, args
    assert path.read_bytes() == before
    assert pd.read_csv(out).status.tolist() == ["complete", "killed"]  # shown killed all the same


def test_verify_does_not_write_to_the_ledger(tmp_path: Path) -> None:
    path = tmp_path / "l.db"
    ledger = Ledger(f"sqlite:///{path}")
    ledger.finalize(ledger.open_window("s", "s:0"), Measurement(1.0), status="complete")
    ledger.close()
    con = sqlite3.connect(path)
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()
    before = path.read_bytes()
    assert _hpaudit("verify", "--ledger", f"sqlite:///{path}") == 0
    assert path.read_bytes() == before


#: A zone five and a half hours ahead of UTC, in POSIX form (no tz database needed).
_PLUS_0530 = "XXX-05:30"


@pytest.fixture
def local_zone(monkeypatch) -> Iterator[None]:
    """The machine's local time zone is UTC+05:30 for the test."""
    monkeypatch.setenv("TZ", _PLUS_0530)
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def _measured(wall_s: float, gpu_j: float, cpu_j: float) -> Measurement:
    return Measurement(
        wall_s,
        {"gpu:0": gpu_j, "cpu": cpu_j, "ram": 360.0},
        {"gpu:0": Source.MEASURED, "cpu": Source.ESTIMATED, "ram": Source.ESTIMATED},
    )


@pytest.fixture
def three_times(sqlite_url: str) -> tuple[str, datetime, datetime]:
    """Windows cnn:0, cnn:1, cnn:2 opened one after another, and two instants between them."""
    ledger = Ledger(sqlite_url)
    bounds = []
    for i in range(3):
        w = ledger.open_window("cnn", f"cnn:{i}", devices=["gpu:0"])
        ledger.finalize(w, _measured(10.0, 100.0, 10.0), status="complete")
        time.sleep(0.02)
        bounds.append(datetime.now(UTC))
        time.sleep(0.02)
    w = ledger.open_window("mlp", "mlp:0")
    ledger.finalize(w, Measurement(1.0, {"cpu": 1.0}), status="pruned")
    ledger.close()
    return sqlite_url, bounds[0], bounds[1]


def _exported(url: str, out: Path, *options: str) -> list[str]:
    assert _hpaudit("export", "--ledger", url, "--format", "json", "--out", str(out), *options) == 0
    return [r["trial_key"] for r in json.loads(out.read_text())]


def test_since_and_until_filter_on_start_time(three_times, tmp_path: Path) -> None:
    url, first, second = three_times
    out = tmp_path / "rows.json"
    since, until = first.isoformat(), second.isoformat()  # with an offset (+00:00)
    assert _exported(url, out, "--since", since, "--until", until) == ["cnn:1"]
    assert _exported(url, out, "--since", since, "--study", "cnn") == ["cnn:1", "cnn:2"]
    assert _exported(url, out, "--until", until.replace("+00:00", "Z")) == ["cnn:0", "cnn:1"]
    in_paris_winter = first.astimezone(timezone(timedelta(hours=1))).isoformat()
    assert in_paris_winter.endswith("+01:00")
    assert _exported(url, out, "--since", in_paris_winter, "--study", "cnn") == ["cnn:1", "cnn:2"]
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).date().isoformat()
    assert _exported(url, out, "--since", tomorrow) == []  # a date alone: its midnight


def test_a_time_without_offset_is_local_time(three_times, tmp_path: Path, local_zone) -> None:
    url, first, _ = three_times
    local = first.astimezone().replace(tzinfo=None)  # what a user at this machine would type
    assert local != first.replace(tzinfo=None)  # UTC+05:30: not the UTC reading
    out = tmp_path / "rows.json"
    assert _exported(url, out, "--since", local.isoformat()) == ["cnn:1", "cnn:2", "mlp:0"]


@pytest.mark.parametrize(
    ("options", "words"),
    [
        (
            ["--since", "yesterday"],
            "--since 'yesterday' is not an ISO 8601 date or time: write e.g.",
        ),
        (["--until", "2026-02-30"], "--until '2026-02-30' is not an ISO 8601 date or time"),
        (["--since", "2026-02-01", "--until", "2026-01-01"], "is before --since"),
        (  # a valid ISO time whose UTC instant is past year 9999
            ["--until", "9999-12-31T23:59:59-05:00"],
            "--until '9999-12-31T23:59:59-05:00' is out of range: write a date from 0001-01-02",
        ),
        (["--since", "0001-01-01T00:00+05:00"], "is out of range: write a date from"),
    ],
)
def test_a_bad_time_is_one_line_and_writes_nothing(
    three_times, tmp_path: Path, capsys, options: list[str], words: str
) -> None:
    url, _, _ = three_times
    out = tmp_path / "rows.json"
    out.write_text("previous export\n")
    assert _hpaudit("export", "--ledger", url, "--format", "json", "--out", str(out), *options) == 2
    err = capsys.readouterr().err
    assert words in err and len(err.strip().splitlines()) == 1
    assert out.read_text() == "previous export\n"


def test_json_has_the_csv_columns_with_numbers_nulls_and_offsets(
    sqlite_url: str, tmp_path: Path
) -> None:
    ledger = Ledger(sqlite_url)
    w = ledger.open_window("cnn", "cnn:0", trial_number=0, devices=["gpu:0"], params={"lr": 0.1})
    ledger.finalize(w, _measured(10.0, 3.6e5, 7.2e4), status="complete", value=float("nan"))
    ledger.open_window("cnn", "cnn:1")  # running: no end time, no value
    ledger.close()
    as_json, as_csv = tmp_path / "rows.json", tmp_path / "rows.csv"
    assert (
        _hpaudit("export", "--ledger", sqlite_url, "--format", "json", "--out", str(as_json)) == 0
    )
    assert _hpaudit("export", "--ledger", sqlite_url, "--format", "csv", "--out", str(as_csv)) == 0
    records = json.loads(as_json.read_text())  # strict JSON: no NaN
    assert [list(r) for r in records] == [list(ENTRY_COLUMNS)] * 2
    done, running = records
    assert list(pd.read_csv(as_csv).columns) == list(done)
    assert done["energy_j"] == pytest.approx(3.6e5 + 7.2e4 + 360.0) and done["trial_number"] == 0
    assert done["value"] is None and running["ended_at"] is None and running["trial_number"] is None
    assert done["energy_by_domain"]["gpu:0"] == 3.6e5 and done["params"] == {"lr": 0.1}
    assert done["source"] == "estimated"  # the estimate stays labelled
    started = datetime.fromisoformat(done["started_at"])
    assert started.utcoffset() == timedelta(0)
    assert started == datetime.fromisoformat(pd.read_csv(as_csv).started_at[0])


def _codecarbon(url: str, out: Path) -> pd.DataFrame:
    assert _hpaudit("export", "--ledger", url, "--format", "codecarbon", "--out", str(out)) == 0
    return pd.read_csv(out, keep_default_na=False, na_values=[""]).set_index("run_id")


def test_codecarbon_power_is_domain_energy_over_duration(sqlite_url: str, tmp_path: Path) -> None:
    ledger = Ledger(sqlite_url)
    w = ledger.open_window("cnn", "cnn:0", devices=["gpu:0"])
    ledger.finalize(w, _measured(100.0, 3.6e4, 7.2e3), status="complete")
    ledger.close()
    row = _codecarbon(sqlite_url, tmp_path / "emissions.csv").loc["cnn:0"]
    # W at the devices (without PUE), while the energies include PUE, as CodeCarbon writes them
    assert (row.gpu_power, row.cpu_power, row.ram_power) == pytest.approx((360.0, 72.0, 3.6))
    assert row.gpu_energy == pytest.approx(row.gpu_power * 100.0 / 3.6e6 * row.pue)


def test_codecarbon_location_comes_from_the_intensity_charged(
    sqlite_url: str, tmp_path: Path
) -> None:
    for study, region in (("fr", "FR"), ("nl", "europe-west4"), ("va", "us-east-1"), ("w", None)):
        policy = parse_policy(f'[defaults]\nregion = "{region}"\n' if region else "")
        ledger = Ledger(sqlite_url, carbon=policy.carbon_model())
        w = ledger.open_window(study, f"{study}:0")
        ledger.finalize(w, Measurement(10.0, {"cpu": 100.0}), status="complete")
        ledger.close()
    table = _codecarbon(sqlite_url, tmp_path / "emissions.csv")
    fr, nl, va, world = (table.loc[k] for k in ("fr:0", "nl:0", "va:0", "w:0"))
    assert (fr.country_name, fr.country_iso_code, fr.on_cloud) == ("France", "FRA", "N")
    assert pd.isna(fr.cloud_provider) and pd.isna(fr.cloud_region)
    assert (nl.cloud_provider, nl.cloud_region, nl.on_cloud) == ("gcp", "europe-west4", "Y")
    assert (nl.country_iso_code, nl.country_name) == ("NLD", "Netherlands")
    # AWS us-east-1 shares Virginia's figure with two Azure regions: country yes, region no
    assert (va.country_iso_code, va.on_cloud) == ("USA", "Y") and pd.isna(va.cloud_region)
    # the world average: no place at all
    assert world[["country_name", "country_iso_code", "on_cloud", "cloud_region"]].isna().all()
    assert table["region"].isna().all()  # sub-national region: not recorded


def test_codecarbon_marks_running_and_killed_rows(sqlite_url: str, tmp_path: Path) -> None:
    ledger = Ledger(sqlite_url)
    w = ledger.open_window("cnn", "cnn:0")
    ledger.finalize(w, Measurement(1.0, {"cpu": 1.0}), status="pruned")
    running = ledger.open_window("cnn", "cnn:1")
    ledger.checkpoint(running, Measurement(2.0, {"cpu": 2.0}))
    ledger.open_window("cnn", "cnn:2", checkpoint_interval_s=0.01)  # then silent: killed
    time.sleep(0.1)
    table = _codecarbon(sqlite_url, tmp_path / "emissions.csv")
    ledger.close()
    assert table.hpaudit_status.to_dict() == {
        "cnn:0": "pruned",
        "cnn:1": "running",
        "cnn:2": "killed",
    }
    assert table.loc["cnn:1", "cpu_power"] == pytest.approx(1.0)  # so far: 2 J in 2 s


def test_codecarbon_timestamp_is_local_time_with_its_offset(
    sqlite_url: str, tmp_path: Path, local_zone
) -> None:
    ledger = Ledger(sqlite_url)
    w = ledger.open_window("cnn", "cnn:0")
    ledger.finalize(w, Measurement(1.0, {"cpu": 1.0}), status="complete")
    ended = ledger.entries().ended_at[0]
    ledger.close()
    stamp = _codecarbon(sqlite_url, tmp_path / "emissions.csv").loc["cnn:0", "timestamp"]
    assert stamp.endswith("+05:30")  # local, as CodeCarbon writes it, but unambiguous
    assert abs(datetime.fromisoformat(stamp) - ended.to_pydatetime(warn=False)) < timedelta(
        seconds=1
    )
