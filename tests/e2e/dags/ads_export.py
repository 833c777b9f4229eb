"""An Advanced Data Sets export that waits for its job in the triggerer (deferrable)."""

from __future__ import annotations

import pendulum
from airflow.sdk import dag

from airflow_provider_canvas.brightspace.operators.data_sets import BrightspaceAdvancedDataSetOperator


@dag(
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    params={"destination": "/tmp/ads_export.zip"},
)
def ads_export() -> None:
    BrightspaceAdvancedDataSetOperator(
        task_id="export",
        data_set="Enrollments and Withdrawals",
        filters={"startDate": "2026-01-01T00:00:00.000Z"},
        destination="{{ params.destination }}",
        brightspace_conn_id="brightspace_ads",
        poll_interval=1,
        deferrable=True,
    )


ads_export()
