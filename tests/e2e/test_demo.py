"""The README's main command works: every example DAG green on a real Airflow, tokens saved."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]


def test_demo_runs_every_example_dag_green() -> None:
    # scripts/demo only adds the .venv set-up (done: the tests run in it) to this.
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "demo.py")], capture_output=True, text=True, timeout=600
    )
    report = result.stdout
    assert result.returncode == 0, report[-3000:] + result.stderr[-3000:]
    for dag_id in (path.stem for path in (ROOT / "dags").glob("*.py")):
        assert f"  {dag_id} " in report and "success" in report.split(f"  {dag_id} ")[1].splitlines()[0]
    assert "2000 accounts" in report
    assert "changed ['auth_discovery_url']" in report
    assert "brightspace.users: 20001 rows" in report
    assert "consumed refresh tokens presented: 0" in report
    assert "Demo finished" in report and report.rstrip().endswith("OK")
