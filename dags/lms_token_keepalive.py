"""Keep the OAuth tokens of Canvas and Brightspace connections alive.

Each run makes sure every listed connection holds a live access token, refreshing it (and saving
the rotated tokens back to the connection) when it is due. Brightspace refresh tokens are
single-use and lapse when unused; a regular refresh keeps the chain alive without a person.
"""

from __future__ import annotations

from typing import Any

import pendulum
from airflow.sdk import dag, task

from airflow_provider_canvas.brightspace.hooks.brightspace import BrightspaceHook
from airflow_provider_canvas.canvas.hooks.canvas import CanvasHook
from airflow_provider_canvas.setup_check import missing_connections, skip_unless_configured


def listed_connections(conn_ids: list[str], conn_type: str) -> list[str]:
    """The listed connection ids; while none of them exists yet, the run skips and says what to create.

    Once one exists, a missing one fails its own task: a token chain must not lapse unnoticed.
    """
    if set(missing_connections(conn_ids)) == set(conn_ids):
        skip_unless_configured(
            connections={conn_id: f"type {conn_type}, see canvas-oauth authorize" for conn_id in conn_ids}
        )
    return list(conn_ids)


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
        return listed_connections(params["canvas_conn_ids"], "canvas")

    @task
    def brightspace_conn_ids(params: dict[str, Any]) -> list[str]:
        return listed_connections(params["brightspace_conn_ids"], "brightspace")

    @task
    def keep_canvas_alive(conn_id: str) -> dict[str, Any]:
        return CanvasHook(conn_id).keep_alive()

    @task
    def keep_brightspace_alive(conn_id: str) -> dict[str, Any]:
        return BrightspaceHook(conn_id).keep_alive()

    keep_canvas_alive.expand(conn_id=canvas_conn_ids())
    keep_brightspace_alive.expand(conn_id=brightspace_conn_ids())


lms_token_keepalive()
