"""canvas_data_2_sync on a real Airflow: DAP jobs wait in the real triggerer; snapshot, then incremental,
each loaded into PostgreSQL, which ends up holding exactly the emulator's tables."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from airflow_provider_canvas.canvas_data.loading.state import DapTableFolder
from airflow_provider_canvas.testing.dap import DapEmulator
from airflow_provider_canvas.testing.dap_jobs import CallLimit
from airflow_provider_canvas.testing.local_airflow import LocalAirflow
from airflow_provider_canvas.testing.postgres import configured_server, fresh_postgres_database

pytestmark = pytest.mark.e2e

DAG_FILE = Path(__file__).resolve().parents[2] / "dags" / "canvas_data_2_sync.py"
CLIENT_ID, CLIENT_SECRET = "us-east-1#e2e-dap-client", "e2e-dap-secret-Qw71"
TABLES = ("accounts", "users", "courses", "enrollments")


@pytest.fixture(scope="module")
def airflow_with_the_dag(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[LocalAirflow, Path, str]]:
    """One Airflow for this module, whose DAG folder holds only the example DAG under test, and the
    warehouse database its ``canvas_data_warehouse`` connection points at."""
    dags = tmp_path_factory.mktemp("dags")
    shutil.copy(DAG_FILE, dags)
    location = tmp_path_factory.mktemp("canvas_data")
    env = {"CANVAS_DATA_LOCATION": str(location), "CANVAS_DATA_POLL_SECONDS": "1"}
    server = configured_server()
    with fresh_postgres_database(server) as database_url, fresh_postgres_database(server) as warehouse_url:
        home = tmp_path_factory.mktemp("home")
        airflow = LocalAirflow(home, dags, database_url=database_url, extra_env=env)
        with airflow:
            warehouse = server.connection_fields(warehouse_url.rsplit("/", 1)[1])
            airflow.api(
                "POST",
                "/connections",
                ok=(201,),
                json={"connection_id": "canvas_data_warehouse", **warehouse},
            )
            yield airflow, location, warehouse_url.replace("postgresql+psycopg2", "postgresql")


def wait_until_deferred(airflow: LocalAirflow, run_id: str) -> None:
    deadline = time.monotonic() + 120
    while True:
        states = {ti["task_id"]: ti["state"] for ti in airflow.task_instances("canvas_data_2_sync", run_id)}
        if states.get("pull") == "deferred":
            return
        assert states.get("pull") not in ("success", "failed"), f"the pull never deferred: {states}"
        assert time.monotonic() < deadline, f"the pull never deferred: {states}"
        time.sleep(0.5)


def finished_pulls(airflow: LocalAirflow) -> list[dict]:
    """The pull results of every run so far, once all have ended (unpausing also makes a scheduled run)."""
    deadline = time.monotonic() + 240
    while True:
        runs = airflow.api("GET", "/dags/canvas_data_2_sync/dagRuns").json()["dag_runs"]
        if all(run["state"] in ("success", "failed") for run in runs):
            break
        assert time.monotonic() < deadline, runs
        time.sleep(1)
    assert {run["state"] for run in runs} == {"success"}, runs
    return [airflow.xcom("canvas_data_2_sync", run["dag_run_id"], "pull") for run in runs]


def test_the_example_dag_pulls_snapshots_then_incrementals_waiting_in_the_triggerer(airflow_with_the_dag):
    airflow, location, warehouse_url = airflow_with_the_dag
    users = DapTableFolder(location, "canvas", "users")
    with DapEmulator(rows={"accounts": 10, "users": 300, "courses": 30, "enrollments": 600}) as dap:
        dap.register_client(CLIENT_ID, CLIENT_SECRET)
        dap.job_min_seconds = 8  # long enough to see the task deferred
        dap.job_creation = CallLimit(5, 10.0)  # a second run within 10 s waits for Retry-After
        airflow.add_connection(
            "canvas_data_default", "canvas_data", host=dap.url, login=CLIENT_ID, password=CLIENT_SECRET
        )
        airflow.wait_for_dag("canvas_data_2_sync")

        first = airflow.trigger("canvas_data_2_sync")
        wait_until_deferred(airflow, first)
        pulls = finished_pulls(airflow)
        snapshot = next(p for p in pulls if p["users"]["kind"] == "snapshot")
        watermark = users.read_state().watermark

        dap.publish("users", inserts=5, updates=7, deletes=2)
        dap.bump_schema("courses", "grading_scheme", {"type": "string"})
        dap.publish("courses", updates=3)
        second = airflow.trigger("canvas_data_2_sync")
        wait_until_deferred(airflow, second)
        assert airflow.wait_for_run("canvas_data_2_sync", second, timeout=240) == "success"
        incremental = airflow.xcom("canvas_data_2_sync", second, "pull")
        log = airflow.task_log("canvas_data_2_sync", second, "pull")
        mapped = airflow.xcom("canvas_data_2_sync", second, "tables_pulled")
        loaded = airflow.xcom("canvas_data_2_sync", second, "load", map_index=mapped.index("users"))
        final = {t: {r["key"]["id"]: r["value"] for r in dap.table(t).snapshot()[0]} for t in TABLES}

    assert {t: snapshot[t]["kind"] for t in TABLES} == dict.fromkeys(TABLES, "snapshot")
    assert snapshot["users"]["records"] == 300 and snapshot["enrollments"]["records"] == 600
    assert {t: incremental[t]["kind"] for t in TABLES} == dict.fromkeys(TABLES, "incremental")
    assert incremental["users"]["records"] == 14 and incremental["users"]["since"] == watermark
    assert incremental["courses"]["schema_version"] == 2
    assert users.read_state().batches[0].kind == "snapshot" and users.read_state().watermark > watermark
    courses = DapTableFolder(location, "canvas", "courses")
    assert json.loads(courses.schema_file(2).read_text())["version"] == 2
    assert not any(d.had_authorization for d in dap.signed_downloads)
    assert "Waiting in the triggerer for 4 DAP job(s)" in log and CLIENT_SECRET not in log
    assert mapped == sorted(TABLES)  # one mapped load per table the pull resolved
    # The loads ran after each pull: PostgreSQL holds the emulator's tables, row for row.
    assert loaded["rows_deleted"] == 2 and loaded["batches"]
    with psycopg.connect(warehouse_url) as db:
        for table in TABLES:
            stored = dict(db.execute(f"SELECT id, to_jsonb(t) FROM canvas_data.{table} t").fetchall())
            assert stored.keys() == final[table].keys(), table
            for key, row in final[table].items():
                assert {c: stored[key][c] for c in ("name", "workflow_state") if c in row} == {
                    c: row[c] for c in ("name", "workflow_state") if c in row
                }, (table, key)
        grading = db.execute(
            "SELECT count(*) FROM information_schema.columns WHERE table_schema = 'canvas_data' "
            "AND table_name = 'courses' AND column_name = 'grading_scheme'"
        ).fetchone()[0]
    assert grading == 1
