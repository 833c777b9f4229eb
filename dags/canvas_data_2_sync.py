"""Sync Canvas Data 2 tables from Instructure's Data Access Platform (DAP) every 4 hours.

DAP refreshes its data about every 4 hours. The ``pull`` task starts one DAP job per table (a
snapshot the first time, then incrementals from the last watermark), waits for them in the
triggerer without holding a worker slot, and writes each table's verified gzip JSON Lines batches
and ``state.json`` under ``CANVAS_DATA_LOCATION/<namespace>/<table>/``. A failed job, an expired
download URL or DAP's job-creation limit (about 5 a minute) ends with a message naming the table;
the next run goes on from the last recorded watermark.

Then ``load``, mapped over the tables the pull returned (``tables_pulled``), applies each table's new
batches to ``canvas_data.<table>`` in the ``canvas_data_warehouse`` PostgreSQL database: typed
columns from DAP's schema, upserts and deletes in one transaction per table.

The tables: ``CANVAS_DATA_TABLES`` (comma-separated), default the four of the demo; ``all`` syncs
every table DAP lists in the namespace at run time (about 90 in ``canvas``). DAP allows about 5
job creations a minute, so the pull paces itself: 90 tables take about 18 minutes to start.

Each pulled and each loaded table is an Asset: schedule a downstream DAG on
``canvas_data_asset(LOCATION, "canvas", "users")`` (files) or ``canvas_data_table_asset(...)``
(the PostgreSQL table) to run after new users data arrives.
Needs the connections ``canvas_data_default`` (type canvas_data: the DAP client ID and secret) and
``canvas_data_warehouse`` (type postgres).
"""

from __future__ import annotations

import os
from datetime import timedelta

import pendulum
from airflow.sdk import DAG, AssetAlias, task

from airflow_provider_canvas.canvas_data.operators.load import CanvasDataLoadOperator
from airflow_provider_canvas.canvas_data.operators.pull import CanvasDataPullOperator
from airflow_provider_canvas.setup_check import skip_unless_configured

LOCATION = os.environ.get("CANVAS_DATA_LOCATION", "/opt/airflow/data/canvas_data")
#: Seconds between two looks at the DAP jobs (jobs take minutes on DAP; the demo's emulator seconds).
POLL_SECONDS = float(os.environ.get("CANVAS_DATA_POLL_SECONDS", "30"))
CANVAS_DATA_CONN_ID = "canvas_data_default"
WAREHOUSE_CONN_ID = "canvas_data_warehouse"
NAMESPACE = "canvas"
#: "all", or table names separated by commas.
TABLES = os.environ.get("CANVAS_DATA_TABLES", "accounts,users,courses,enrollments")

with DAG(
    dag_id="canvas_data_2_sync",
    schedule=timedelta(hours=4),
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    # One pull at a time: each table's state.json is read, extended and written back.
    max_active_runs=1,
    default_args={"retries": 2, "retry_delay": timedelta(minutes=10)},
    tags=["canvas", "canvas-data-2"],
    doc_md=__doc__,
) as dag:

    @task
    def check_setup() -> None:
        """With no DAP connection yet, the run skips and says what to create."""
        skip_unless_configured(
            connections={
                CANVAS_DATA_CONN_ID: "type canvas_data: the DAP client ID and secret",
                WAREHOUSE_CONN_ID: "type postgres: the database the tables are loaded into",
            }
        )

    pull = CanvasDataPullOperator(
        task_id="pull",
        tables=TABLES,
        namespace=NAMESPACE,
        location=LOCATION,
        canvas_data_conn_id=CANVAS_DATA_CONN_ID,
        deferrable=True,
        poll_interval=POLL_SECONDS,
        job_timeout=timedelta(hours=3),
    )
    check_setup() >> pull

    @task
    def tables_pulled(pulled: dict[str, object]) -> list[str]:
        """The tables the pull returned (what ``all`` resolved to): one load each."""
        return sorted(pulled)

    # One load per table, mapped at run time over the tables the pull resolved: each applies what its
    # table's pull recorded and its ledger lacks, in one transaction; a failed load leaves its batches
    # pending for the next run, the other tables go on. The alias carries each table's asset event.
    CanvasDataLoadOperator.partial(
        task_id="load",
        namespace=NAMESPACE,
        location=LOCATION,
        postgres_conn_id=WAREHOUSE_CONN_ID,
        schema="canvas_data",
        outlets=[AssetAlias(name=f"canvas-data-load:{WAREHOUSE_CONN_ID}/canvas_data")],
        map_index_template="{{ task.table }}",
    ).expand(table=tables_pulled(pull.output))
