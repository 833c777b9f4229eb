"""canvas_data_2_sync on two Celery worker hosts that share no disk: the pulled files live on S3 (moto's
server on 127.0.0.1, which both hosts reach), so a load runs wherever Celery sends it, not where the pull ran.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import psycopg
import pytest
import requests
from redis_server import RedisServer

from airflow_provider_canvas.testing.dap import DapEmulator
from airflow_provider_canvas.testing.dap_jobs import CallLimit
from airflow_provider_canvas.testing.local_airflow import LocalAirflow
from airflow_provider_canvas.testing.postgres import configured_server, fresh_postgres_database
from airflow_provider_canvas.testing.s3 import LocalS3, local_s3

pytestmark = pytest.mark.e2e

DAG_ID = "canvas_data_2_sync"
DAG_FILE = Path(__file__).resolve().parents[2] / "dags" / f"{DAG_ID}.py"
CLIENT_ID, CLIENT_SECRET = "us-east-1#e2e-two-hosts", "e2e-two-hosts-secret-Hq52"
TABLES = ("accounts", "users", "courses", "enrollments")
S3_CONN_ID = "canvas_data_s3"
PREFIX = "canvas_data/canvas"


@pytest.fixture(scope="module")
def two_hosts(
    tmp_path_factory: pytest.TempPathFactory, redis_server: RedisServer
) -> Iterator[tuple[LocalAirflow, LocalS3, str]]:
    """A CeleryExecutor installation with two worker hosts, whose DAG's location is on the local S3."""
    dags = tmp_path_factory.mktemp("dags")
    shutil.copy(DAG_FILE, dags)
    with ExitStack() as stack:
        s3 = stack.enter_context(local_s3())
        server = configured_server()
        database_url = stack.enter_context(fresh_postgres_database(server))
        warehouse_url = stack.enter_context(fresh_postgres_database(server))
        env = {
            "CANVAS_DATA_LOCATION": f"s3://{S3_CONN_ID}@{s3.bucket}/canvas_data",
            "CANVAS_DATA_POLL_SECONDS": "1",
            # Seen on this 2-core machine under load: the api-server's first task start took 40 s, past
            # the workers' 5 s x 5 tries, and the task was killed. Later ones take well under a second.
            "AIRFLOW__WORKERS__EXECUTION_API_TIMEOUT": "120",
        }
        airflow = LocalAirflow(
            tmp_path_factory.mktemp("airflow_two_hosts"),
            dags,
            database_url=database_url,
            executor="CeleryExecutor",
            celery_workers=2,
            worker_concurrency=2,
            parallelism=8,
            redis_url=f"redis://{redis_server.host}:{redis_server.port}/0",
            extra_env=env,
        )
        stack.callback(airflow.stop)
        airflow.start()
        airflow.api("POST", "/connections", ok=(201,), json={"connection_id": S3_CONN_ID, **s3.connection()})
        warehouse = server.connection_fields(warehouse_url.rsplit("/", 1)[1])
        airflow.api(
            "POST", "/connections", ok=(201,), json={"connection_id": "canvas_data_warehouse", **warehouse}
        )
        yield airflow, s3, warehouse_url.replace("postgresql+psycopg2", "postgresql")


def run_states(airflow: LocalAirflow) -> dict[str, str] | None:
    """The state of every run of the DAG; None when the api-server did not answer in time."""
    try:
        runs = airflow.api("GET", f"/dags/{DAG_ID}/dagRuns").json()["dag_runs"]
    except requests.Timeout:
        # The api-server's first task start loads every provider (the amazon one too), holding it for
        # tens of seconds on a busy machine: ask again.
        return None
    return {run["dag_run_id"]: run["state"] for run in runs}


def run_until_done(airflow: LocalAirflow) -> list[str]:
    """Trigger a run and wait for it and any other (unpausing also makes a scheduled run); their ids,
    the triggered one first."""
    triggered = airflow.trigger(DAG_ID)
    deadline = time.monotonic() + 420
    while True:
        states = run_states(airflow)
        if states and triggered in states and set(states.values()) <= {"success", "failed"}:
            break
        assert time.monotonic() < deadline, states
        time.sleep(1)
    for run, state in states.items():
        instances = {
            ti["task_id"]: (ti["state"], ti["hostname"]) for ti in airflow.task_instances(DAG_ID, run)
        }
        assert state == "success", (run, instances)
    return [triggered, *(run for run in states if run != triggered)]


def pulled_files_on_disk(root: Path) -> list[str]:
    return [str(p) for p in root.rglob("*") if p.name.endswith((".json.gz", "state.json"))]


def test_the_sync_runs_on_two_hosts_with_its_files_on_s3(two_hosts):
    airflow, s3, warehouse_url = two_hosts
    started = time.monotonic()
    with DapEmulator(rows={"accounts": 10, "users": 300, "courses": 30, "enrollments": 600}) as dap:
        dap.register_client(CLIENT_ID, CLIENT_SECRET)
        dap.rows_per_object = 200  # several files per batch
        dap.job_creation = CallLimit(50, 60.0)
        airflow.add_connection(
            "canvas_data_default", "canvas_data", host=dap.url, login=CLIENT_ID, password=CLIENT_SECRET
        )
        airflow.wait_for_dag(DAG_ID)
        first = run_until_done(airflow)
        dap.publish("users", inserts=5, updates=7, deletes=2)
        dap.publish("enrollments", updates=4, deletes=3)
        second = run_until_done(airflow)[0]
        final = {t: {r["key"]["id"]: r["value"] for r in dap.table(t).snapshot()[0]} for t in TABLES}
    seconds = time.monotonic() - started
    hosts = {w.hostname for w in airflow.workers.values()}
    # One load per table, mapped: "load[0]", "load[1]", ...
    placement = [
        {
            ti["task_id"] + (f"[{ti['map_index']}]" if ti.get("map_index", -1) >= 0 else ""): ti["hostname"]
            for ti in airflow.task_instances(DAG_ID, run)
        }
        for run in dict.fromkeys([*first, second])
    ]
    print(f"\n[two hosts] {len(placement)} runs of {DAG_ID} in {seconds:.1f}s; tasks per host: {placement}")

    # Every task ran on one of the two worker hosts, and a load ran on a host the pull did not run on:
    # the files it read can only have come from S3.
    assert all(set(p.values()) <= hosts for p in placement), placement
    elsewhere = [(t, p[t]) for p in placement for t in p if t.startswith("load[") and p[t] != p["pull"]]
    assert elsewhere, f"every load ran on its pull's host: {placement}"
    pull = airflow.xcom(DAG_ID, second, "pull")
    assert {t: pull[t]["kind"] for t in TABLES} == dict.fromkeys(TABLES, "incremental")
    mapped = airflow.xcom(DAG_ID, second, "tables_pulled")
    users = airflow.xcom(DAG_ID, second, "load", map_index=mapped.index("users"))
    assert users["rows_deleted"] == 2 and len(users["batches"]) == 1

    # The files are on S3 and on no host's disk (nor the scheduler's).
    keys = s3.keys(PREFIX)
    for table in TABLES:
        assert f"{PREFIX}/{table}/state.json" in keys
        assert any(k.startswith(f"{PREFIX}/{table}/") and k.endswith(".json.gz") for k in keys), table
        assert f"{PREFIX}/{table}/_loads/canvas_data_warehouse.canvas_data.{table}.json" in keys
    assert pulled_files_on_disk(airflow.home) == []

    # PostgreSQL holds the emulator's tables, key for key and value for value.
    with psycopg.connect(warehouse_url) as db:
        for table in TABLES:
            stored = dict(db.execute(f"SELECT id, to_jsonb(t) FROM canvas_data.{table} t").fetchall())
            assert stored.keys() == final[table].keys(), table
            for key, row in final[table].items():
                same = {c: stored[key][c] for c in ("name", "workflow_state") if c in row}
                assert same == {c: row[c] for c in ("name", "workflow_state") if c in row}, (table, key)
    logs = airflow.task_log(DAG_ID, second, "pull") + airflow.task_log(
        DAG_ID, second, "load", map_index=mapped.index("users")
    )
    assert CLIENT_SECRET not in logs and "local-s3-secret-key" not in logs
