"""Canvas Data 2 with its files on S3 (moto's server on 127.0.0.1): the pull uploads, the load reads from
there, and retention removes what every load applied, never what a failed load still needs."""

from __future__ import annotations

import json
import logging
import tempfile
from datetime import timedelta
from urllib.parse import urlsplit

import psycopg
import pytest
import test_canvas_data_pull_and_load as synced
from lms_fixtures import dsn, postgres_connection_fields
from test_canvas_data_pull import make_op, pull

from airflow_provider_canvas.canvas_data.loading.state import DapTableFolder
from airflow_provider_canvas.canvas_data.operators.load import CanvasDataLoadOperator
from airflow_provider_canvas.testing.s3 import SECRET_KEY, local_s3

PREFIX = "canvas_data/canvas"
TABLES, assert_same_table = synced.TABLES, synced.assert_same_table
dap, conn_id = synced.dap, synced.conn_id  # the emulator and the canvas_data connection, as fixtures


@pytest.fixture
def s3(monkeypatch):
    """The server, and the location on it as a templated location renders: text naming the connection."""
    with local_s3() as server:
        # A connection id of its own: ObjectStoragePath keeps one store per connection id for the process.
        conn_id = f"s3_local_{urlsplit(server.endpoint).port}"
        connection = {**server.connection(), "extra": json.loads(server.connection()["extra"])}
        monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(connection))
        yield server, f"s3://{conn_id}@{server.bucket}/canvas_data"


@pytest.fixture
def pg_conn_id(make_connection) -> str:
    return make_connection("cd2_s3_warehouse", extra={}, **postgres_connection_fields())


def load(location: str, pg_conn_id: str, schema: str, table: str) -> dict:
    op = CanvasDataLoadOperator(
        task_id=f"load_{table}", table=table, location=location, postgres_conn_id=pg_conn_id, schema=schema
    )
    return op.execute({})


def batch_folders(s3, table: str) -> set[str]:
    keys = s3.keys(f"{PREFIX}/{table}/")
    return {k.split("/")[3] for k in keys if k.count("/") == 4 and not k.split("/")[3].startswith("_")}


def test_pull_and_load_through_s3_leave_the_emulators_tables_and_nothing_on_local_disk(
    dap, conn_id, s3, pg_conn_id, schema, tmp_path, monkeypatch, caplog
):
    s3, location = s3
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # the downloads' scratch: empty afterwards
    caplog.set_level(logging.INFO)

    first = pull(make_op(conn_id, location, TABLES))
    loaded = {t: load(location, pg_conn_id, schema, t) for t in TABLES}
    dap.publish("users", inserts=6, updates=9, deletes=4)
    dap.bump_schema("courses", "grading_scheme", {"type": "string"})
    dap.publish("courses", inserts=2, updates=5)
    second = pull(make_op(conn_id, location, TABLES))
    again = {t: load(location, pg_conn_id, schema, t) for t in TABLES}

    assert first["users"]["kind"] == "snapshot" and second["users"]["kind"] == "incremental"
    assert loaded["users"]["rows_upserted"] == 250 and again["users"]["rows_deleted"] == 4
    assert again["courses"]["added_columns"] == ["grading_scheme"]
    for table in TABLES:
        assert_same_table(dap, schema, table)
    users = DapTableFolder(location, "canvas", "users")
    state = users.read_state()
    assert [b.kind for b in state.batches] == ["snapshot", "incremental"]
    keys = s3.keys(f"{PREFIX}/users/")
    for batch in state.batches:
        assert {f"{PREFIX}/users/{name}" for name in batch.files} <= set(keys)
    assert f"{PREFIX}/users/state.json" in keys and f"{PREFIX}/users/schema-v1.json" in keys
    assert f"{PREFIX}/users/_loads/cd2_s3_warehouse.{schema}.users.json" in keys
    assert not any(k.endswith(".unverified") for k in keys)
    assert list(tmp_path.iterdir()) == []  # every file was uploaded and its local copy removed
    assert SECRET_KEY not in caplog.text


def test_retention_on_s3_removes_what_every_load_applied_but_not_what_a_failed_load_needs(
    dap, conn_id, s3, pg_conn_id, schema, make_connection
):
    s3, location = s3
    other = f"{schema}_b"  # a second warehouse schema loading the same pulled files
    try:
        keep = {"keep_applied": timedelta(0)}
        pull(make_op(conn_id, location, ["users"], **keep))
        load(location, pg_conn_id, schema, "users")
        load(location, pg_conn_id, other, "users")
        snapshot = DapTableFolder(location, "canvas", "users").read_state().batches[0].job_id

        # The second warehouse starts again, and its load fails: a table it did not make is in the way.
        with psycopg.connect(dsn(), autocommit=True) as db:
            db.execute(f'DROP TABLE "{other}".users')
            db.execute(f'DELETE FROM "{other}"._dap_loads')
            db.execute(f'DELETE FROM "{other}"._dap_tables')
            db.execute(f'CREATE TABLE "{other}".users (id bigint)')
        dap.publish("users", inserts=3, updates=2)
        pull(make_op(conn_id, location, ["users"], **keep))
        load(location, pg_conn_id, schema, "users")
        with pytest.raises(Exception, match="exists but this loader did not make it"):
            load(location, pg_conn_id, other, "users")
        dap.publish("users", updates=4)
        pull(make_op(conn_id, location, ["users"], **keep))
        load(location, pg_conn_id, schema, "users")
        held = DapTableFolder(location, "canvas", "users").read_state()

        # Fixed (the table in the way dropped), it loads everything; the next pull keeps only the newest.
        with psycopg.connect(dsn(), autocommit=True) as db:
            db.execute(f'DROP TABLE "{other}".users')
        load(location, pg_conn_id, other, "users")
        assert_same_table(dap, other, "users")
        dap.publish("users", deletes=2)
        pull(make_op(conn_id, location, ["users"], **keep))
        after = DapTableFolder(location, "canvas", "users").read_state()
        for target in (schema, other):
            load(location, pg_conn_id, target, "users")
            assert_same_table(dap, target, "users")
    finally:
        with psycopg.connect(dsn(), autocommit=True) as db:
            db.execute(f'DROP SCHEMA IF EXISTS "{other}" CASCADE')

    # While the second load had failed, the pulls kept every batch from the snapshot on: it needs them.
    assert [b.kind for b in held.batches] == ["snapshot", "incremental", "incremental"]
    assert held.batches[0].job_id == snapshot
    # Once both loads had applied them, the pull removed all but the newest batch before its job.
    assert [b.kind for b in after.batches] == ["incremental", "incremental"]
    assert batch_folders(s3, "users") == {b.job_id for b in after.batches}
    assert snapshot not in batch_folders(s3, "users")
