"""Ledger throughput: finished rows per second with 1 and 8 writer processes.

Each "row" is one whole trial window as an integration writes it: ``open_window``, N
``checkpoint`` calls (``--checkpoints``: 0 and 1 by default) and ``finalize`` (which appends to
the study's hash chain): 2 + N write transactions per row. Writers are separate processes (as
Optuna / Ray workers are) sharing one study, the worst case for the chain lock. After each run
the chains are verified.

    python experiments/bench_ledger.py                 # full: 1 and 8 writers x 500 rows
    python experiments/bench_ledger.py --quick         # tiny: smoke test
    python experiments/bench_ledger.py --pg-url postgresql+psycopg://postgres@127.0.0.1:5432/postgres
    python experiments/bench_ledger.py --repeat 3 ...  # each case 3 times (a loaded machine)
    python experiments/bench_ledger.py --floor ...     # also the driver's floor (see below)

``--floor`` adds, for PostgreSQL, what this machine allows any ledger at all: bare psycopg, one
INSERT .. RETURNING and one durable UPDATE per row into a 3-column table (no SQLAlchemy, no
hash chain, no JSON): the ceiling the ledger's own figures are to be read against.

Without ``--pg-url`` (or $HPAUDIT_TEST_PG_URL) only SQLite is measured.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing as mp
import os
import platform
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from hpsearch_budget.ledger import Ledger
from hpsearch_budget.meters import Measurement, Source


def _writer(url: str, worker: int, rows: int, checkpoints: int, barrier: Any, cpu: Any) -> None:
    ledger = Ledger(url)
    barrier.wait()
    cpu0 = time.process_time()
    sources = {"cpu": Source.REPLAYED}
    for i in range(rows):
        w = ledger.open_window("bench", f"bench:{worker}:{i}", trial_number=i, params={"i": i})
        for step in range(1, checkpoints + 1):
            ledger.checkpoint(w, Measurement(float(step), {"cpu": 10.0 * step}, sources), step=step)
        ledger.finalize(w, Measurement(100.0, {"cpu": 1000.0 + i}, sources), status="complete")
    cpu.put(time.process_time() - cpu0)
    ledger.close()


_FLOOR_TABLE = "CREATE TABLE IF NOT EXISTS floor (id bigserial PRIMARY KEY, k text, e float8)"


def _floor_writer(
    url: str, worker: int, rows: int, checkpoints: int, barrier: Any, cpu: Any
) -> None:
    """The driver's floor: the fewest statements a durable open -> finish of a row can take."""
    import psycopg

    dsn = url.replace("postgresql+psycopg://", "postgresql://", 1)
    with psycopg.connect(dsn, autocommit=True) as conn:
        barrier.wait()
        cpu0 = time.process_time()
        for i in range(rows):
            row = conn.execute(
                "INSERT INTO floor (k, e) VALUES (%s, 0) RETURNING id",
                (f"{worker}:{i}",),
                prepare=True,
            ).fetchone()
            assert row is not None
            for step in range(1, checkpoints + 1):
                conn.execute("UPDATE floor SET e = %s WHERE id = %s", (float(step), row[0]),
                             prepare=True)  # fmt: skip
            conn.execute("UPDATE floor SET e = %s WHERE id = %s", (100.0, row[0]), prepare=True)
        cpu.put(time.process_time() - cpu0)


def _settle(url: str) -> None:
    """Let PostgreSQL finish what the previous case left (CREATE / DROP DATABASE write and
    flush a database's worth of pages) before the clock starts: a CHECKPOINT, if allowed."""
    if not url.startswith("postgresql"):
        return
    import sqlalchemy as sa

    engine = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    with contextlib.suppress(sa.exc.DBAPIError), engine.connect() as conn:
        conn.exec_driver_sql("CHECKPOINT")  # needs a superuser (or pg_checkpoint, PG 15+)
    engine.dispose()


def _server_cpu_s(url: str) -> float | None:
    """CPU seconds used so far by a local PostgreSQL server and its (exited) backends."""
    if not url.startswith("postgresql"):
        return None
    import psutil
    import sqlalchemy as sa

    engine = sa.create_engine(url)
    with engine.connect() as conn:
        data_dir = conn.exec_driver_sql("SHOW data_directory").scalar()
    engine.dispose()
    time.sleep(0.2)  # let the postmaster reap the backend that just closed
    try:
        pid = int(Path(str(data_dir), "postmaster.pid").read_text().split()[0])
        master = psutil.Process(pid)
        t = master.cpu_times()
        total = t.user + t.system + t.children_user + t.children_system
        for child in master.children():
            with contextlib.suppress(psutil.Error):
                c = child.cpu_times()
                total += c.user + c.system
        return total
    except (OSError, psutil.Error):
        return None  # not a local server we can see


def run(
    url: str, writers: int, rows: int, checkpoints: int = 1, *, floor: bool = False
) -> dict[str, Any]:
    if floor:
        import sqlalchemy as sa

        engine = sa.create_engine(url, isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            conn.exec_driver_sql(_FLOOR_TABLE)
        engine.dispose()
    else:
        Ledger(url).close()  # create the schema outside the timed part
    _settle(url)
    ctx = mp.get_context("fork")
    barrier = ctx.Barrier(writers + 1)
    cpu = ctx.Queue()
    target = _floor_writer if floor else _writer
    procs = [
        ctx.Process(target=target, args=(url, k, rows, checkpoints, barrier, cpu))
        for k in range(writers)
    ]
    for p in procs:
        p.start()
    server0 = _server_cpu_s(url)
    load0 = os.getloadavg()[0]
    barrier.wait()
    t0 = time.perf_counter()
    client_cpu_s = sum(cpu.get(timeout=600) for _ in procs)
    for p in procs:
        p.join()
    elapsed = time.perf_counter() - t0
    if any(p.exitcode != 0 for p in procs):
        raise SystemExit(f"a writer failed: exit codes {[p.exitcode for p in procs]}")
    server1 = _server_cpu_s(url)
    server_cpu_s = None if server0 is None or server1 is None else server1 - server0
    if not floor:
        ledger = Ledger(url)
        n = len(ledger.entries())
        report = ledger.verify()
        ledger.close()
        assert n == writers * rows and report.ok and report.rows == n, (n, report)
    return {
        "checkpoints_per_row": checkpoints,
        "writers": writers,
        "rows": writers * rows,
        "seconds": round(elapsed, 3),
        "rows_per_s": round(writers * rows / elapsed, 1),
        # CPU per row, writers + database server: a figure the machine's load does not inflate.
        "client_cpu_ms_per_row": round(1000 * client_cpu_s / (writers * rows), 3),
        "server_cpu_ms_per_row": None
        if server_cpu_s is None
        else round(1000 * server_cpu_s / (writers * rows), 3),
        "load_avg_1min_before": round(load0, 2),
    }


def _pg_database(base: str) -> tuple[str, Any]:
    import sqlalchemy as sa

    name = f"hpaudit_bench_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')

    def drop() -> None:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()

    url = sa.engine.make_url(base).set(database=name)  # keeps ?host=/socket/dir and the like
    return url.render_as_string(hide_password=False), drop


def markdown_table(results: list[dict[str, Any]]) -> str:
    """The results as a Markdown table (what experiments/results/bench_ledger.md shows)."""
    lines = [
        "| backend | rep | writers | checkpoints/row | rows | s | rows/s | client CPU ms/row "
        "| server CPU ms/row | load avg |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        server = "-" if r["server_cpu_ms_per_row"] is None else f"{r['server_cpu_ms_per_row']:.2f}"
        lines.append(
            f"| {r['backend']} | {r.get('rep', 1)} | {r['writers']} | {r['checkpoints_per_row']} "
            f"| {r['rows']} "
            f"| {r['seconds']:.2f} | {r['rows_per_s']:.0f} | {r['client_cpu_ms_per_row']:.2f} "
            f"| {server} | {r['load_avg_1min_before']:.1f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny run (smoke test)")
    parser.add_argument("--rows", type=int, default=500, help="rows per writer")
    parser.add_argument("--writers", type=int, nargs="+", default=[1, 8])
    parser.add_argument(
        "--checkpoints", type=int, nargs="+", default=[0, 1], help="checkpoints per row"
    )
    parser.add_argument("--repeat", type=int, default=1, help="runs of every case (interleaved)")
    parser.add_argument("--pg-url", default=os.environ.get("HPAUDIT_TEST_PG_URL"))
    parser.add_argument(
        "--floor", action="store_true", help="also bare psycopg on PostgreSQL (the ceiling)"
    )
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    args = parser.parse_args(argv)
    rows = 5 if args.quick else args.rows
    writers = [1, 2] if args.quick else args.writers
    results: list[dict[str, Any]] = []
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    cases = [(c, n) for c in args.checkpoints for n in writers]
    for rep in range(1, args.repeat + 1):
        with tempfile.TemporaryDirectory() as tmp:
            for c, n in cases:
                url = f"sqlite:///{Path(tmp) / f'bench-{c}-{n}.db'}"
                results.append({"backend": "sqlite", "rep": rep, **run(url, n, rows, c)})
                print(json.dumps(results[-1]), flush=True)
        if args.pg_url:
            for c, n in cases:
                url, drop = _pg_database(args.pg_url)
                try:
                    results.append({"backend": "postgresql", "rep": rep, **run(url, n, rows, c)})
                finally:
                    drop()
                print(json.dumps(results[-1]), flush=True)
                if not args.floor:
                    continue
                url, drop = _pg_database(args.pg_url)
                try:
                    floor = run(url, n, rows, c, floor=True)
                    results.append({"backend": "pg floor (bare psycopg)", "rep": rep, **floor})
                finally:
                    drop()
                print(json.dumps(results[-1]), flush=True)
    print(markdown_table(results))
    if args.out:
        meta = {
            "command": " ".join([Path(sys.argv[0]).name, *(argv or sys.argv[1:])]),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "results": results,
        }
        args.out.write_text(json.dumps(meta, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
