"""``hpaudit verify``, ``hpaudit export`` and ``hpaudit ledger``: exit codes, files, messages."""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa

from hpsearch_budget.cli import main
from hpsearch_budget.errors import LedgerError
from hpsearch_budget.ledger import CODECARBON_COLUMNS, ENTRY_COLUMNS, Ledger, default_carbon
from hpsearch_budget.meters import Measurement, Source
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
    assert row.gpu_count == 1 and pd.isna(row.cpu_power)
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
    # ours too: every CodeCarbon column, in its order, then our one extra column
    out = tmp_path / "emissions.csv"
    assert _hpaudit("export", "--ledger", filled, "--format", "codecarbon",
                    "--out", str(out)) == 0  # fmt: skip
    header = out.read_text().splitlines()[0].split(",")
    assert header == [*_CODECARBON_3_3_2_HEADER, "hpaudit_energy_source"]
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
