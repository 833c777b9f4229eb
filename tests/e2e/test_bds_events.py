"""Data-driven scheduling and lineage under a real Airflow: the emulator publishes a new extract, the example
DAG's AssetWatcher (in the real triggerer) starts one run, its tasks pull and load into PostgreSQL, and the
real OpenLineage listener reports data set -> files -> table."""

from __future__ import annotations

import json
import time
from datetime import timedelta
from pathlib import Path

import psycopg
import pytest
from sqlalchemy.engine import make_url

from airflow_provider_canvas.testing import LmsEmulator
from airflow_provider_canvas.testing.local_airflow import LocalAirflow
from airflow_provider_canvas.testing.postgres import fresh_postgres_database
from airflow_provider_canvas.testing.primitives import utcnow

pytestmark = pytest.mark.e2e

DAG_ID = "brightspace_on_new_extract"
CLIENT_ID, CLIENT_SECRET = "watch-client", "watch-client-secret-value"
COLUMNS = ["UserId", "UserName", "OrgDefinedId", "IsDeleted"]


def user(i: int, name: str | None = None) -> dict[str, str]:
    return {
        "UserId": str(i),
        "UserName": name or f"user{i}",
        "OrgDefinedId": f"S{i:05d}",
        "IsDeleted": "False",
    }


def wait_until(condition, what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what} within {timeout:.0f}s"
        time.sleep(0.5)


def runs(airflow: LocalAirflow) -> list[dict]:
    return airflow.api("GET", f"/dags/{DAG_ID}/dagRuns").json()["dag_runs"]


def lineage_events(airflow: LocalAirflow) -> list[dict]:
    path = airflow.home / "openlineage.jsonl"
    return (
        [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []
    )


def completed(events: list[dict], task_id: str) -> dict:
    [event] = [
        e for e in events if e["eventType"] == "COMPLETE" and e["job"]["name"] == f"{DAG_ID}.{task_id}"
    ]
    return event


def test_a_new_extract_starts_the_watched_dag_once_and_its_lineage_names_the_table(
    local_airflow: LocalAirflow,
) -> None:
    with LmsEmulator() as emulator, fresh_postgres_database() as warehouse_url:
        bs = emulator.brightspace
        bs.add_data_set(
            "Users", COLUMNS, [user(i) for i in range(1, 101)], created=utcnow() - timedelta(days=2)
        )
        bs.register_client(CLIENT_ID, CLIENT_SECRET)
        local_airflow.add_connection(
            "brightspace_default",
            "brightspace",
            host=emulator.url,
            login=CLIENT_ID,
            password=CLIENT_SECRET,
            extra=emulator.connection_extra("brightspace", bs.issue_tokens(CLIENT_ID), expired=False),
        )
        warehouse = make_url(warehouse_url)
        local_airflow.add_connection(
            "brightspace_warehouse",
            "postgres",
            host=warehouse.host,
            port=warehouse.port or 5432,
            login=warehouse.username,
            schema=warehouse.database,
        )
        local_airflow.wait_for_dag(DAG_ID)
        local_airflow.api("PATCH", f"/dags/{DAG_ID}", json={"is_paused": False})

        def listings() -> int:
            return sum(1 for r in emulator.api_requests if r.path.endswith("/extracts") and r.status == 200)

        # Two listings (Full and Differential plugins) per poll: after two polls the baseline is set.
        wait_until(lambda: listings() >= 4, "the watcher polled Brightspace twice", 180)
        assert runs(local_airflow) == []  # the extract that was there before the watch is no news

        bs.add_extract("Users", "Differential", utcnow(), [user(7, "renamed7"), user(101)])
        wait_until(lambda: runs(local_airflow), "a run started by the asset event", 120)
        [run] = runs(local_airflow)
        state = local_airflow.wait_for_run(DAG_ID, run["dag_run_id"], timeout=240)

        assert (state, run["run_type"]) == ("success", "asset_triggered")
        with psycopg.connect(warehouse_url.replace("+psycopg2", "")) as db:
            rows = dict(db.execute('SELECT "UserId", "UserName" FROM brightspace.users').fetchall())
        assert len(rows) == 101 and rows[7] == "renamed7"  # UserId is an integer column

        # The listener writes COMPLETE once the task's process is done with it.
        wait_until(lambda: len(lineage_events(local_airflow)) >= 4, "lineage of pull and load", 60)
        events = lineage_events(local_airflow)
        pull, load = completed(events, "pull"), completed(events, "load")
        assert [(d["namespace"], d["name"]) for d in pull["inputs"]] == [(emulator.url, "Users")]
        files = sorted(d["name"] for d in pull["outputs"])
        bds = local_airflow.home / "bds" / "users"
        assert [Path(f).parent for f in files] == [bds / "Differential", bds / "Full"]
        assert sorted(d["name"] for d in load["inputs"]) == files
        [table] = load["outputs"]
        assert (table["namespace"], table["name"]) == (
            f"postgres://{warehouse.host}:{warehouse.port or 5432}",
            f"{warehouse.database}.brightspace.users",
        )
        assert [f["name"] for f in table["facets"]["schema"]["fields"]][:4] == COLUMNS

        # Later polls find nothing newer: still one run.
        before = listings()
        wait_until(lambda: listings() >= before + 4, "two more polls", 60)
        assert len(runs(local_airflow)) == 1
        local_airflow.api("PATCH", f"/dags/{DAG_ID}", json={"is_paused": True})
