"""The README's main command works: every example DAG green on a real Airflow, tokens saved.

It runs on a laptop without a PostgreSQL server too: the demo here is pointed at an address where nothing
listens, so it starts and stops its own embedded server. The rest of the suite covers the machine's server
(in CI: the load and lock tests, the e2e metadata database), and the demo runs only once.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from airflow_provider_canvas.testing.postgres import MODE_VARIABLE, URL_VARIABLE, PostgresServer
from airflow_provider_canvas.testing.primitives import free_port

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]


def test_demo_runs_every_example_dag_green_on_an_embedded_postgres() -> None:
    nothing_there = PostgresServer("127.0.0.1", free_port())
    assert not nothing_there.answers()
    env = os.environ | {MODE_VARIABLE: "auto", URL_VARIABLE: nothing_there.url()}
    # scripts/demo only adds the .venv set-up (done: the tests run in it) to this.
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "demo.py")],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    report = result.stdout
    assert result.returncode == 0, report[-3000:] + result.stderr[-3000:]
    [postgres_line] = [line for line in report.splitlines() if line.startswith("postgres:")]
    assert "(embedded, started in" in postgres_line and nothing_there.address not in postgres_line
    assert not (ROOT / ".demo" / "postgres" / "data").exists()  # stopped and deleted at the end
    for dag_id in (path.stem for path in (ROOT / "dags").glob("*.py")):
        assert f"  {dag_id} " in report and "success" in report.split(f"  {dag_id} ")[1].splitlines()[0]
    assert "2000 accounts" in report
    assert "changed ['auth_discovery_url']" in report
    assert "brightspace.users: 20001 rows" in report
    assert "consumed refresh tokens presented: 0" in report
    assert "Demo finished" in report and report.rstrip().endswith("OK")
