"""Keep the OAuth tokens of Canvas and Brightspace connections alive.

Each run makes sure every listed connection holds a live access token, refreshing it (and saving
the rotated tokens back to the connection) when it is due. Brightspace refresh tokens are
single-use and lapse when unused; a regular refresh keeps the chain alive without a person.
"""

from __future__ import annotations

from typing import Any

import pendulum
from airflow.sdk import dag, task

from airflow_provider_canvas.hooks.brightspace import BrightspaceHook
from airflow_provider_canvas.hooks.canvas import CanvasHook


@dag(
    schedule="@hourly",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["canvas", "brightspace", "tokens"],
    params={"canvas_conn_ids": ["canvas_default"], "brightspace_conn_ids": ["brightspace_default"]},
)
def lms_token_keepalive() -> None:
    @task
    def canvas_conn_ids(params: dict[str, Any]) -> list[str]:
        return list(params["canvas_conn_ids"])

    @task
    def brightspace_conn_ids(params: dict[str, Any]) -> list[str]:
        return list(params["brightspace_conn_ids"])

    @task
    def keep_canvas_alive(conn_id: str) -> dict[str, Any]:
        return CanvasHook(conn_id).keep_alive()

    @task
    def keep_brightspace_alive(conn_id: str) -> dict[str, Any]:
        return BrightspaceHook(conn_id).keep_alive()

    keep_canvas_alive.expand(conn_id=canvas_conn_ids())
    keep_brightspace_alive.expand(conn_id=brightspace_conn_ids())


lms_token_keepalive()
