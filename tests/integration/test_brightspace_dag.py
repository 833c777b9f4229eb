"""The example DAG dags/brightspace_data_sets_pull.py, run in-process against the emulator and PostgreSQL."""

from __future__ import annotations

import importlib.util
import shutil
import uuid
from datetime import timedelta
from pathlib import Path

import psycopg
import pytest
from airflow.utils.state import DagRunState
from lms_fixtures import dsn, postgres_connection_fields

from airflow_provider_canvas.testing.primitives import utcnow

DAG_FILE = Path(__file__).parents[2] / "dags" / "brightspace_data_sets_pull.py"


def load_dag(location: Path):
    spec = importlib.util.spec_from_file_location(f"bds_pull_dag_{uuid.uuid4().hex}", DAG_FILE)
    module = importlib.util.module_from_spec(spec)
    with pytest.MonkeyPatch.context() as env:
        env.setenv("BRIGHTSPACE_BDS_LOCATION", str(location))
        spec.loader.exec_module(module)
    return module.dag


def test_dag_shape_and_params(tmp_path):
    dag = load_dag(tmp_path)

    assert dag.max_active_runs == 1 and dag.render_template_as_native_obj
    assert [t.task_id for t in dag.topological_sort()] == ["check_setup", "pull", "load"]
    assert dag.params["data_sets"] == ["Users", "Org Units", "User Enrollments"]
    assert [o.name for o in dag.get_task("pull").outlets] == [
        f"brightspace-data-sets:{tmp_path.resolve().as_uri()}"
    ]


@pytest.mark.slow  # a whole dag.test() run of the example DAG
def test_dag_run_pulls_and_loads_the_param_data_sets(
    emulator, lms_connection, make_connection, schema, tmp_path, monkeypatch
):
    # dag.test() serialises the DAG from the dags-folder bundle: point that at a folder with this DAG.
    from airflow import settings

    dags = tmp_path / "dags"
    dags.mkdir()
    shutil.copy(DAG_FILE, dags)
    monkeypatch.setattr(settings, "DAGS_FOLDER", str(dags))
    location = tmp_path / "bds"
    monkeypatch.setenv("BRIGHTSPACE_BDS_LOCATION", str(location))
    now = utcnow()
    bs = emulator.brightspace
    bs.add_data_set(
        "Users",
        ["UserId", "UserName", "IsDeleted"],
        [{"UserId": str(i), "UserName": f"u{i}", "IsDeleted": "False"} for i in range(1, 1001)],
        created=now - timedelta(days=3),
    )
    bs.add_extract(
        "Users",
        "Differential",
        now - timedelta(days=1),
        [{"UserId": "1", "UserName": "x", "IsDeleted": "True"}],
    )
    bs.add_data_set(
        "Org Units",
        ["OrgUnitId", "Name"],
        [{"OrgUnitId": "6606", "Name": "Org"}],
        created=now - timedelta(days=3),
    )
    lms_connection("brightspace", "brightspace_default", expired=False)
    make_connection("brightspace_warehouse", extra={}, **postgres_connection_fields())

    run = load_dag(location).test(run_conf={"data_sets": ["Users", "Org Units"], "schema": schema})

    assert run.state == DagRunState.SUCCESS
    with psycopg.connect(dsn()) as db:
        # Typed from the catalogue: no casts, max() of the integer key is numeric.
        users = db.execute(f'SELECT count(*), min("UserId"), max("UserId") FROM "{schema}".users').fetchone()
        org_units = db.execute(f'SELECT "OrgUnitId", "Name" FROM "{schema}".org_units').fetchall()
    assert users == (999, 2, 1000) and org_units == [(6606, "Org")]
    assert sorted(p.parent.name for p in (location / "users").rglob("*.zip")) == ["Differential", "Full"]
