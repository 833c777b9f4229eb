"""CanvasDataLoadOperator against the local PostgreSQL: result, asset event, lineage, and no secret logged."""

from __future__ import annotations

import logging

import psycopg
import pytest
from airflow.sdk.execution_time.context import OutletEventAccessors
from lms_fixtures import dsn, postgres_connection_fields
from test_dap_load import SourceTable, table_rows

from airflow_provider_canvas.canvas_data.operators.load import CanvasDataLoadOperator, canvas_data_table_asset
from airflow_provider_canvas.exceptions import DapDataError
from airflow_provider_canvas.testing.dap_files import upsert

PASSWORD = "pg-password-never-logged-7Qx"


@pytest.fixture
def pg_conn_id(make_connection) -> str:
    # Trust auth ignores the password; it is there to prove it never reaches a log, XCom or error.
    return make_connection("cd2_warehouse", extra={}, password=PASSWORD, **postgres_connection_fields())


def test_the_operator_loads_reports_and_reruns_as_a_no_op(pg_conn_id, schema, tmp_path, caplog):
    source = SourceTable(tmp_path / "cd2")
    source.snapshot(range(1, 101))
    source.incremental([(i, 1) for i in range(1, 11)] + [(i, None) for i in range(95, 101)])
    op = CanvasDataLoadOperator(
        task_id="load", table="users", location=tmp_path / "cd2", postgres_conn_id=pg_conn_id, schema=schema
    )
    events = OutletEventAccessors()

    with caplog.at_level(logging.DEBUG):
        result = op.execute({"outlet_events": events})
        again = op.execute({"outlet_events": OutletEventAccessors()})

    assert result["batches"] == ["job-1", "job-2"] and result["schema_version"] == 1
    assert (result["records"], result["rows_upserted"], result["rows_deleted"]) == (116, 110, 6)
    assert again["skipped"] == "up to date" and again["batches"] == []
    assert table_rows(schema) == source.expected()
    event = events[canvas_data_table_asset(pg_conn_id, schema, "users")].extra
    assert event["target"] == f"{schema}.users" and event["rows_deleted"] == 6 and event["batches"] == 2
    lineage = op.get_openlineage_facets_on_complete(None)
    assert lineage.outputs[0].name.endswith(f".{schema}.users")
    assert lineage.inputs == []  # the last run loaded nothing
    assert PASSWORD not in caplog.text and PASSWORD not in repr(result)


def test_lineage_lists_the_files_of_the_batches_loaded(pg_conn_id, schema, tmp_path):
    source = SourceTable(tmp_path / "cd2")
    source.snapshot(range(1, 11), files=2)
    op = CanvasDataLoadOperator(
        task_id="load", table="users", location=tmp_path / "cd2", postgres_conn_id=pg_conn_id, schema=schema
    )
    op.execute({})

    lineage = op.get_openlineage_facets_on_complete(None)

    folder = source.pulled.folder.path
    assert [d.name for d in lineage.inputs] == [
        str(folder / "job-1/part-00000.json.gz"),
        str(folder / "job-1/part-00001.json.gz"),
    ]
    [output] = lineage.outputs
    assert output.namespace.startswith("postgres://") and PASSWORD not in output.namespace
    assert [f.name for f in output.facets["schema"].fields][:3] == ["id", "name", "workflow_state"]


def test_a_bad_file_fails_the_task_with_the_row_named_and_the_table_untouched(
    pg_conn_id, schema, tmp_path, caplog
):
    source = SourceTable(tmp_path / "cd2")
    source.snapshot(range(1, 21))
    op = CanvasDataLoadOperator(
        task_id="load", table="users", location=tmp_path / "cd2", postgres_conn_id=pg_conn_id, schema=schema
    )
    op.execute({})
    source.pulled.add_batch(
        "job-bad",
        [[upsert({"id": 1}, {"name": "x", "is_admin": "yes"}, "2026-03-01T01:00:00Z")]],
        since="2026-03-01T01:00:00Z",
        until="2026-03-01T02:00:00Z",
    )

    with caplog.at_level(logging.DEBUG), pytest.raises(DapDataError, match=r"line 1: column 'is_admin'"):
        op.execute({})

    assert table_rows(schema) == source.expected()
    with psycopg.connect(dsn()) as db:
        assert db.execute(f'SELECT count(*) FROM "{schema}"._dap_loads').fetchone()[0] == 1
    assert PASSWORD not in caplog.text
