"""Many machines: two Ray nodes on loopback (``ray start``), one PostgreSQL ledger.

The head and the worker node each offer one CPU, so the two trials run one per node, each
metering itself in its own worker process and writing to the shared ledger.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hpsearch_budget.ledger import Ledger

pytestmark = [pytest.mark.ray, pytest.mark.postgres, pytest.mark.slow]

DRIVER = """
import json, os, sys, time
import ray
from ray import tune
from hpsearch_budget import Budget
from hpsearch_budget.ledger import Ledger
from hpsearch_budget.ray import BudgetStopper, LedgerCallback, metered

url, storage = sys.argv[1], sys.argv[2]
ray.init(address=os.environ["RAY_ADDRESS"], log_to_driver=False)
deadline = time.time() + 60
while sum(n["Alive"] for n in ray.nodes()) < 2:
    assert time.time() < deadline, "the second node never joined"
    time.sleep(0.5)
ledger = Ledger(url)

def train(config):
    node = ray.get_runtime_context().get_node_id()
    for step in range(3):
        t = time.process_time()
        while time.process_time() - t < 0.2:  # real CPU work: the estimate meter sees it
            pass
        tune.report({"loss": 1.0 / (step + 1), "node": node})

grid = tune.Tuner(
    metered(train, ledger),
    param_space={"i": tune.grid_search([0, 1])},
    run_config=tune.RunConfig(
        name="cluster", storage_path=storage, verbose=0,
        stop=BudgetStopper(Budget(energy_kwh=1.0), ledger),
        callbacks=[LedgerCallback(ledger)],
    ),
).fit()
print("RESULT " + json.dumps({"nodes": [r.metrics.get("node") for r in grid],
                              "errors": [str(e)[:300] for e in grid.errors]}))
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ray() -> str:
    exe = Path(sys.executable).with_name("ray")
    return str(exe) if exe.exists() else (shutil.which("ray") or "ray")


def _stop(procs: list[subprocess.Popen]) -> None:
    """End the throwaway nodes: each `ray start` leads its own process group (gcs, raylet,
    workers), so signalling the groups touches only what this test started. Nothing on these
    nodes needs saving: a short grace period, then SIGKILL."""
    for sig, grace in ((signal.SIGTERM, 3.0), (signal.SIGKILL, 10.0)):
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
        deadline = time.monotonic() + grace
        for proc in procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))


@pytest.fixture
def two_nodes(tmp_path: Path) -> Iterator[dict[str, str]]:
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("RAY_ADDRESS", None)
    port = _free_port()
    temp = Path("/tmp") / f"ray_h_{port}"  # short: Ray's socket paths have a length limit
    common = ["--num-cpus=1", "--block", "--disable-usage-stats"]
    head = [
        _ray(), "start", "--head", f"--port={port}", "--include-dashboard=false",
        f"--temp-dir={temp}", f"--dashboard-agent-listen-port={_free_port()}", *common,
    ]  # fmt: skip
    worker = [
        _ray(), "start", f"--address=127.0.0.1:{port}",
        f"--dashboard-agent-listen-port={_free_port()}", *common,
    ]  # fmt: skip
    procs: list[subprocess.Popen] = []
    log = open(tmp_path / "ray_start.log", "w")  # noqa: SIM115 - closed in finally
    try:
        procs.append(
            subprocess.Popen(head, env=env, stdout=log, stderr=log, start_new_session=True)
        )
        _wait_for_port(port, procs[0], tmp_path)
        procs.append(
            subprocess.Popen(worker, env=env, stdout=log, stderr=log, start_new_session=True)
        )
        yield {**env, "RAY_ADDRESS": f"127.0.0.1:{port}"}
    finally:
        _stop(procs)
        log.close()
        shutil.rmtree(temp, ignore_errors=True)


def _wait_for_port(port: int, proc: subprocess.Popen, tmp_path: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            # Ray is installed wherever this runs ([ray] extra): a node that cannot start is
            # a failure to see, not a reason to pass quietly.
            pytest.fail(
                f"ray start --head failed: {(tmp_path / 'ray_start.log').read_text()[-300:]}"
            )
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.5)
    pytest.fail("ray start --head did not open its port within 60 s")


def test_two_nodes_share_one_postgresql_ledger(pg_url, two_nodes, tmp_path):
    script = tmp_path / "driver.py"
    script.write_text(DRIVER)
    out = subprocess.run(
        [sys.executable, str(script), pg_url, str(tmp_path / "results")],
        env=two_nodes,
        capture_output=True,
        text=True,
        timeout=240,
        cwd=tmp_path,
    )
    lines = [x for x in out.stdout.splitlines() if x.startswith("RESULT ")]
    assert out.returncode == 0 and lines, out.stderr[-2000:]
    result = json.loads(lines[-1][len("RESULT ") :])
    assert result["errors"] == []
    assert len(set(result["nodes"])) == 2  # one trial on each node

    ledger = Ledger(pg_url)
    rows = ledger.entries("cluster")
    assert list(rows["status"]) == ["complete", "complete"]
    assert rows["pid"].nunique() == 2  # two worker processes wrote to the one ledger
    assert (rows["energy_j"] > 0).all() and set(rows["source"]) == {"estimated"}
    assert ledger.verify("cluster").ok
