"""CanvasDataLoadOperator in a real Airflow: a snapshot, then incrementals, then a run with nothing new;
the connection read through the Task SDK, its password in no log or XCom, an asset event per load."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import psycopg
import pytest

from airflow_provider_canvas.testing.dap_files import PulledTable, delete, table_schema, upsert
from airflow_provider_canvas.testing.local_airflow import LocalAirflow
from airflow_provider_canvas.testing.postgres import TEST_DATABASE, configured_server

pytestmark = pytest.mark.e2e

PASSWORD = "cd2-warehouse-password-Zk41"
SCHEMA_DOC = table_schema(
    {"id": {"type": "integer", "format": "int64"}},
    {"name": {"type": "string"}, "at": {"type": "string", "format": "date-time"}, "tags": {"type": "array"}},
)


def ts(hour: int) -> str:
    return f"2026-04-01T{hour:02d}:00:00Z"


def run_load(airflow: LocalAirflow, location: Path, schema: str) -> tuple[dict, str]:
    run_id = airflow.trigger("canvas_data_load", {"location": str(location), "schema": schema})
    state = airflow.wait_for_run("canvas_data_load", run_id, timeout=240)
    log = airflow.task_log("canvas_data_load", run_id, "load")
    assert state == "success", log[-3000:]
    return airflow.xcom("canvas_data_load", run_id, "load"), log


def test_snapshot_incrementals_and_a_no_op_run_in_tasks(local_airflow: LocalAirflow, tmp_path: Path) -> None:
    server = configured_server()
    schema = f"cd2_e2e_{uuid.uuid4().hex[:8]}"
    fields = server.connection_fields(TEST_DATABASE)
    local_airflow.add_connection(
        "cd2_warehouse",
        "postgres",
        host=fields["host"],
        port=fields["port"],
        login=fields["login"],
        schema=fields["schema"],
        password=PASSWORD,  # trust auth ignores it; it must show up nowhere
    )
    pulled = PulledTable(tmp_path, "canvas", "users")
    pulled.write_schema(SCHEMA_DOC)
    pulled.add_batch(
        "snap-1",
        [
            [
                upsert({"id": i}, {"name": f"u{i}", "at": ts(1), "tags": [i]}, ts(1), action=None)
                for i in range(1, 501)
            ]
        ],
        until=ts(2),
    )
    pulled.add_batch(
        "inc-1",
        [[upsert({"id": 1}, {"name": "one"}, ts(2)), delete({"id": 2}, ts(2))]],
        since=ts(2),
        until=ts(3),
    )
    local_airflow.wait_for_dag("canvas_data_load")
    try:
        first, first_log = run_load(local_airflow, tmp_path, schema)
        pulled.add_batch(
            "inc-2",
            [
                [upsert({"id": 2}, {"name": "two is back"}, ts(3)), delete({"id": 3}, ts(3))],
                [delete({"id": 4}, ts(3))],
            ],
            since=ts(3),
            until=ts(4),
        )
        second, second_log = run_load(local_airflow, tmp_path, schema)
        third, third_log = run_load(local_airflow, tmp_path, schema)

        assert first["batches"] == ["snap-1", "inc-1"] and first["snapshot"]
        assert (first["rows_upserted"], first["rows_deleted"]) == (501, 1)
        assert second["batches"] == ["inc-2"] and (second["rows_upserted"], second["rows_deleted"]) == (1, 2)
        assert third["skipped"] == "up to date"
        with psycopg.connect(server.url(TEST_DATABASE)) as db:
            rows = dict(db.execute(f'SELECT id, name FROM "{schema}".users').fetchall())
        assert len(rows) == 498 and rows[1] == "one" and rows[2] == "two is back"
        assert 3 not in rows and 4 not in rows and rows[500] == "u500"
        for text in (first_log, second_log, third_log, json.dumps([first, second, third])):
            assert PASSWORD not in text
        assert "2 batch(es) loaded" in first_log and "up to date" in third_log
        events = local_airflow.api(
            "GET", "/assets/events", params={"source_dag_id": "canvas_data_load"}
        ).json()
        extras = [e["extra"] for e in events["asset_events"]]
        assert {e.get("target") for e in extras} == {f"{schema}.users"}
        assert sorted(e.get("rows_deleted") for e in extras) == [0, 1, 2]
    finally:
        with psycopg.connect(server.url(TEST_DATABASE), autocommit=True) as db:
            db.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
