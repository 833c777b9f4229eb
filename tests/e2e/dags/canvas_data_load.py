"""Load a pulled Canvas Data 2 table into PostgreSQL (the folder and schema come from the run's conf)."""

from __future__ import annotations

import pendulum
from airflow.sdk import dag

from airflow_provider_canvas.canvas_data.operators.load import CanvasDataLoadOperator


@dag(
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    params={"location": "/tmp/cd2", "schema": "canvas_data"},
)
def canvas_data_load() -> None:
    CanvasDataLoadOperator(
        task_id="load",
        namespace="canvas",
        table="users",
        location="{{ params.location }}",
        postgres_conn_id="cd2_warehouse",
        schema="{{ params.schema }}",
    )


canvas_data_load()
