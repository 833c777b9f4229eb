"""Canvas Data 2 end to end without Airflow: the DAP emulator over HTTP -> the pull -> PostgreSQL.

A snapshot and two incrementals (inserts, updates, deletes, a new column) must leave exactly the
emulator's final table in PostgreSQL, and pulling and loading again must change nothing.
"""

from __future__ import annotations

import logging
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
from lms_fixtures import dsn
from test_canvas_data_pull import CLIENT_ID, CLIENT_SECRET, make_op, pull

from airflow_provider_canvas.canvas_data.loading.load import DapTableLoader
from airflow_provider_canvas.canvas_data.loading.state import DapTableFolder
from airflow_provider_canvas.testing.dap import DapEmulator
from airflow_provider_canvas.testing.dap_jobs import CallLimit

TABLES = ["users", "courses"]


@pytest.fixture
def dap():
    with DapEmulator(rows={"accounts": 5, "users": 250, "courses": 40, "enrollments": 10}) as emulator:
        emulator.register_client(CLIENT_ID, CLIENT_SECRET)
        emulator.rows_per_object = 100  # several files per batch
        emulator.job_creation = CallLimit(50, 60.0)
        yield emulator


@pytest.fixture
def conn_id(dap, make_connection) -> str:
    extra = {"namespace": "canvas"}
    return make_connection(
        "canvas_data_sync", "canvas_data", dap.url, extra, login=CLIENT_ID, password=CLIENT_SECRET
    )


def sync(conn_id: str, location: Path, schema: str) -> dict[str, Any]:
    """One run of canvas_data_2_sync's work: the pull (waiting in its trigger), then each table's load."""
    pulled = pull(make_op(conn_id, location, TABLES))
    with psycopg.connect(dsn()) as db:
        loader = DapTableLoader(db, schema)
        loaded = {t: loader.load(DapTableFolder(location, "canvas", t)).to_dict() for t in TABLES}
    return {"pulled": pulled, "loaded": loaded}


def source_table(dap: DapEmulator, table: str) -> dict[int, dict[str, Any]]:
    """The emulator's table as it stands now, by key."""
    records, _ = dap.table(table).snapshot()
    return {r["key"]["id"]: r["value"] for r in records}


def warehouse_table(schema: str, table: str, columns: list[str]) -> dict[int, dict[str, Any]]:
    names = ", ".join(f'"{c}"' for c in ["id", *columns])
    with psycopg.connect(dsn()) as db:
        rows = db.execute(f'SELECT {names} FROM "{schema}"."{table}"').fetchall()
    return {row[0]: {c: _as_dap(v) for c, v in zip(columns, row[1:], strict=True)} for row in rows}


def _as_dap(value: Any) -> Any:
    """A PostgreSQL value written as DAP writes it (timestamps: UTC, milliseconds, Z)."""
    if isinstance(value, datetime):
        return value.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return value


def assert_same_table(dap: DapEmulator, schema: str, table: str) -> None:
    source = source_table(dap, table)
    columns = sorted({c for row in source.values() for c in row})
    stored = warehouse_table(schema, table, columns)
    assert stored.keys() == source.keys()
    expected = {key: {c: row.get(c) for c in columns} for key, row in source.items()}
    assert stored == expected


def test_snapshot_then_two_incrementals_leave_the_emulators_table_and_a_rerun_changes_nothing(
    dap, conn_id, tmp_path, schema, caplog
):
    caplog.set_level(logging.DEBUG)
    first = sync(conn_id, tmp_path, schema)
    assert {t: first["pulled"][t]["kind"] for t in TABLES} == dict.fromkeys(TABLES, "snapshot")
    assert first["loaded"]["users"]["rows_upserted"] == 250

    dap.publish("users", inserts=6, updates=9, deletes=4)
    dap.publish("courses", updates=3, deletes=1)
    second = sync(conn_id, tmp_path, schema)
    assert second["pulled"]["users"]["kind"] == "incremental"
    assert second["loaded"]["users"]["rows_deleted"] == 4

    dap.bump_schema("courses", "grading_scheme", {"type": "string"})
    dap.publish("courses", inserts=2, updates=5)
    dap.publish("users", updates=3, deletes=2)
    third = sync(conn_id, tmp_path, schema)
    assert third["loaded"]["courses"]["added_columns"] == ["grading_scheme"]
    assert third["loaded"]["courses"]["schema_version"] == 2

    for table in TABLES:
        assert_same_table(dap, schema, table)
    with psycopg.connect(dsn()) as db:
        before = db.execute(
            f"SELECT md5(string_agg(u::text, '|' ORDER BY u.id)) FROM \"{schema}\".users u"
        ).fetchone()
        again = sync(conn_id, tmp_path, schema)
        after = db.execute(
            f"SELECT md5(string_agg(u::text, '|' ORDER BY u.id)) FROM \"{schema}\".users u"
        ).fetchone()
    assert again["pulled"]["users"]["records"] == 0  # nothing changed at the source
    assert (again["loaded"]["users"]["rows_upserted"], again["loaded"]["users"]["rows_deleted"]) == (0, 0)
    assert before == after
    logged = caplog.text
    assert CLIENT_SECRET not in logged and "Bearer ey" not in logged
