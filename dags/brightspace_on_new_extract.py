"""Pull and load a Brightspace data set as soon as Brightspace publishes a new extract: no schedule polls.

An ``AssetWatcher`` runs :class:`BrightspaceNewExtractTrigger` in the triggerer: it lists the data
set's extracts every ``BRIGHTSPACE_WATCH_POLL_SECONDS`` (default 300) over async HTTP and, when one
newer than the last it announced appears, records an event on the asset, which starts this DAG.
The newest extract announced is kept in the asset's state store, so a restarted triggerer neither
repeats an event nor misses what was published while it was down. The watch starts when the DAG
is unpaused; extracts published before then are not news (the first run's pull still takes the
newest full and the differentials after it).

Then the same two tasks as ``brightspace_data_sets_pull``: ``pull`` into
``BRIGHTSPACE_BDS_LOCATION``, ``load`` into the ``brightspace`` schema of ``brightspace_warehouse``.
For a DAG that keeps its schedule and only waits for the day's extract, use
``BrightspaceNewExtractSensor`` instead.
"""

from __future__ import annotations

import os
from datetime import timedelta

import pendulum
from airflow.sdk import DAG, Asset, AssetWatcher, task

from airflow_provider_canvas.brightspace.loading.pull_state import slug
from airflow_provider_canvas.brightspace.operators.data_sets import (
    BrightspaceDataSetsPullOperator,
    BrightspaceDataSetsToPostgresOperator,
)
from airflow_provider_canvas.brightspace.triggers.new_extract import BrightspaceNewExtractTrigger
from airflow_provider_canvas.setup_check import skip_unless_configured

LOCATION = os.environ.get("BRIGHTSPACE_BDS_LOCATION", "/opt/airflow/data/brightspace_data_sets")
POLL_SECONDS = float(os.environ.get("BRIGHTSPACE_WATCH_POLL_SECONDS", "300"))
BRIGHTSPACE_CONN_ID = "brightspace_default"
WAREHOUSE_CONN_ID = "brightspace_warehouse"
DATA_SET = "Users"

# The trigger's arguments identify the watch: keep them fixed (no "now" in newer_than).
new_extract = Asset(
    name=f"brightspace_new_extract_{slug(DATA_SET)}",
    uri=f"brightspace://{BRIGHTSPACE_CONN_ID}/data-sets/{slug(DATA_SET)}",
    watchers=[
        AssetWatcher(
            name=f"brightspace_{slug(DATA_SET)}_extracts",
            trigger=BrightspaceNewExtractTrigger(BRIGHTSPACE_CONN_ID, DATA_SET, poll_interval=POLL_SECONDS),
        )
    ],
)

with DAG(
    dag_id="brightspace_on_new_extract",
    schedule=[new_extract],
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,  # one pull at a time per manifest
    default_args={"retries": 2, "retry_delay": timedelta(minutes=5)},
    tags=["brightspace", "data-sets", "event-driven"],
    doc_md=__doc__,
) as dag:

    @task
    def check_setup() -> None:
        """With no Brightspace or warehouse connection yet, the run skips and says what to create."""
        skip_unless_configured(
            connections={
                BRIGHTSPACE_CONN_ID: "type brightspace, see canvas-oauth authorize",
                WAREHOUSE_CONN_ID: "type postgres: the database the data sets are loaded into",
            }
        )

    pull = BrightspaceDataSetsPullOperator(
        task_id="pull", data_sets=[DATA_SET], location=LOCATION, brightspace_conn_id=BRIGHTSPACE_CONN_ID
    )
    load = BrightspaceDataSetsToPostgresOperator(
        task_id="load",
        data_sets=[DATA_SET],
        location=LOCATION,
        postgres_conn_id=WAREHOUSE_CONN_ID,
        schema="brightspace",
    )
    check_setup() >> pull >> load
