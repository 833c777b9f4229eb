"""The provider works without the OpenLineage provider: nothing imports it until its listener asks."""

from __future__ import annotations

import subprocess
import sys

SCRIPT = """
import sys
import airflow_provider_canvas.brightspace.operators.data_sets as ops
import airflow_provider_canvas.brightspace.sensors.new_extract
import airflow_provider_canvas.brightspace.triggers.new_extract
ops.BrightspaceDataSetsPullOperator(task_id="pull", data_sets=["Users"], location="/tmp/x")
names = ("openlineage", "airflow_provider_canvas.operators.bds_")
print(sorted(m for m in sys.modules if m.startswith(names)))
"""


def test_operators_import_and_build_without_touching_openlineage():
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120)

    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "[]"
