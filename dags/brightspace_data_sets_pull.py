"""Pull Brightspace Data Sets every day (differentials; the weekly full on one weekday) into PostgreSQL.

The ``pull`` task downloads new extracts of the data sets named in the ``data_sets`` param into
``BRIGHTSPACE_BDS_LOCATION`` (a directory, or an object-store URL such as ``s3://bucket/bds``),
one folder and manifest per data set. On ``full_weekday`` it also takes a newly published full
extract, which restarts the chain; on other days only differentials. It fails when the last pull
is older than the 14-day retention of differentials (set ``full_weekday`` to today's weekday and
trigger a run to start over from the newest full). The ``load`` task upserts what the tables have
not seen into ``params.schema`` of the ``brightspace_warehouse`` PostgreSQL connection.

Each data set is also an Asset: schedule a downstream DAG on
``data_set_asset(LOCATION, "Users")`` to run after new Users data arrives.
"""

from __future__ import annotations

import os
from datetime import timedelta

import pendulum
from airflow.sdk import DAG, Param, task

from airflow_provider_canvas.brightspace.operators.data_sets import (
    BrightspaceDataSetsPullOperator,
    BrightspaceDataSetsToPostgresOperator,
)
from airflow_provider_canvas.setup_check import skip_unless_configured

LOCATION = os.environ.get("BRIGHTSPACE_BDS_LOCATION", "/opt/airflow/data/brightspace_data_sets")
BRIGHTSPACE_CONN_ID = "brightspace_default"
WAREHOUSE_CONN_ID = "brightspace_warehouse"

with DAG(
    dag_id="brightspace_data_sets_pull",
    schedule="@daily",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    # One pull at a time: each data set's manifest is read, extended and written back.
    max_active_runs=1,
    # The data_sets param reaches the operators as a list, not as its string form.
    render_template_as_native_obj=True,
    default_args={"retries": 2, "retry_delay": timedelta(minutes=15)},
    params={
        "data_sets": Param(
            ["Users", "Org Units", "User Enrollments"],
            type="array",
            items={"type": "string"},
            minItems=1,
            description="Brightspace Data Sets to pull, by name as Data Hub lists them.",
        ),
        "full_weekday": Param(
            6,
            type="integer",
            minimum=0,
            maximum=6,
            description="Weekday (0 = Monday) on which a newly published full extract is pulled.",
        ),
        "schema": Param("brightspace", type="string", description="PostgreSQL schema of the tables."),
    },
    tags=["brightspace", "data-sets"],
    doc_md=__doc__,
) as dag:
    pull = BrightspaceDataSetsPullOperator(
        task_id="pull",
        data_sets="{{ params.data_sets }}",
        location=LOCATION,
        brightspace_conn_id=BRIGHTSPACE_CONN_ID,
        # run_after is set for scheduled and manual runs alike (logical_date may be None).
        full="{{ 'newer' if dag_run.run_after.weekday() == params.full_weekday else 'first_run' }}",
    )
    load = BrightspaceDataSetsToPostgresOperator(
        task_id="load",
        data_sets="{{ params.data_sets }}",
        location=LOCATION,
        postgres_conn_id=WAREHOUSE_CONN_ID,
        schema="{{ params.schema }}",
        # Keys of data sets beyond the built-in defaults go here, e.g.
        # key_columns={"Grade Results": ["OrgUnitId", "GradeObjectId", "UserId"]},
        deleted_rows="delete",
    )

    @task
    def check_setup() -> None:
        """With no Brightspace or warehouse connection yet, the run skips and says what to create."""
        skip_unless_configured(
            connections={
                BRIGHTSPACE_CONN_ID: "type brightspace, see canvas-oauth authorize",
                WAREHOUSE_CONN_ID: "type postgres: the database the data sets are loaded into",
            }
        )

    check_setup() >> pull >> load
