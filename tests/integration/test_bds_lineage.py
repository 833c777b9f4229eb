"""The lineage the Brightspace operators report: data set -> extract files -> PostgreSQL table and columns.

These are the methods the OpenLineage listener calls; tests/e2e/test_bds_events.py captures the events
the real listener sends from tasks."""

from __future__ import annotations

import pytest
from lms_fixtures import COLUMNS, postgres_connection_fields, user

from airflow_provider_canvas.brightspace.operators.data_sets import (
    BrightspaceDataSetsPullOperator,
    BrightspaceDataSetsToPostgresOperator,
)


@pytest.fixture
def conns(lms_connection, make_connection) -> tuple[str, str]:
    return lms_connection("brightspace", expired=False), make_connection(
        "bds_lineage_pg", extra={}, **postgres_connection_fields()
    )


@pytest.fixture
def users(emulator):
    emulator.brightspace.add_data_set("Users", COLUMNS, [user(i) for i in range(1, 11)])


def test_lineage_of_the_pull_and_the_load_names_data_set_files_and_table(
    emulator, users, conns, schema, tmp_path
):
    pull_task = BrightspaceDataSetsPullOperator(
        task_id="pull", data_sets=["Users"], location=tmp_path, brightspace_conn_id=conns[0]
    )
    pulled = pull_task.execute({})["Users"]
    load_task = BrightspaceDataSetsToPostgresOperator(
        task_id="load", data_sets=["Users"], location=tmp_path, postgres_conn_id=conns[1], schema=schema
    )
    load_task.execute({})

    pull_lineage = pull_task.get_openlineage_facets_on_complete(None)
    load_lineage = load_task.get_openlineage_facets_on_complete(None)

    assert [(d.namespace, d.name) for d in pull_lineage.inputs] == [(emulator.url, "Users")]
    files = [("file", str(tmp_path / "users" / p["file"])) for p in pulled]
    assert [(d.namespace, d.name) for d in pull_lineage.outputs] == files
    assert [(d.namespace, d.name) for d in load_lineage.inputs] == files
    [table] = load_lineage.outputs
    assert table.name == f"test.{schema}.users" and table.namespace.startswith("postgres://")
    assert [f.name for f in table.facets["schema"].fields][:4] == COLUMNS
