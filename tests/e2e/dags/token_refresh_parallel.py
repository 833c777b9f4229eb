"""Eight parallel tasks share one LMS connection whose access token has expired."""

from __future__ import annotations

from typing import Any

import pendulum
from airflow.sdk import dag, task

PARALLEL_TASKS = 8


@dag(
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    params={"conn_id": "brightspace_e2e", "platform": "brightspace"},
)
def token_refresh_parallel() -> None:
    @task
    def call_api(index: int, params: dict[str, Any] | None = None) -> dict[str, Any]:
        # Imported in the task: DAG files stay cheap to parse.
        from airflow_provider_canvas.hooks.brightspace import BrightspaceHook
        from airflow_provider_canvas.hooks.canvas import CanvasHook
        from airflow_provider_canvas.tokens import metadata

        assert params is not None
        if params["platform"] == "brightspace":
            hook: Any = BrightspaceHook(params["conn_id"])
            hook.whoami()
        else:
            hook = CanvasHook(params["conn_id"])
            hook.get_account(1)
        return {"index": index, "refreshes": hook.tokens.refresh_count, "orm_blocked": metadata.orm_blocked()}

    call_api.expand(index=list(range(PARALLEL_TASKS)))


token_refresh_parallel()
