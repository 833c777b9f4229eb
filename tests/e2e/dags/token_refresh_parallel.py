"""Eight parallel tasks share one LMS connection whose access token has expired."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import pendulum
from airflow.sdk import dag, task

PARALLEL_TASKS = 8


@dag(
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    params={"conn_id": "brightspace_e2e", "platform": "brightspace", "separate_hosts": False},
)
def token_refresh_parallel() -> None:
    @task
    def call_api(index: int, params: dict[str, Any] | None = None) -> dict[str, Any]:
        # Imported in the task: DAG files stay cheap to parse.
        from airflow_provider_canvas.brightspace.hooks.brightspace import BrightspaceHook
        from airflow_provider_canvas.canvas.hooks.canvas import CanvasHook
        from airflow_provider_canvas.common import airflow_access as metadata

        assert params is not None
        if params["separate_hosts"]:
            # Each task as if on its own host: no shared lock file, no shared rescue directory.
            state_dir = Path(tempfile.mkdtemp(prefix=f"canvas-e2e-host{index}-"))
            os.environ["AIRFLOW__CANVAS_PROVIDER__STATE_DIR"] = str(state_dir)
            assert metadata.state_dir() == str(state_dir)
        if params["platform"] == "brightspace":
            hook: Any = BrightspaceHook(params["conn_id"])
            hook.whoami()
        else:
            hook = CanvasHook(params["conn_id"])
            hook.get_account(1)
        return {"index": index, "refreshes": hook.tokens.refresh_count, "orm_blocked": metadata.orm_blocked()}

    call_api.expand(index=list(range(PARALLEL_TASKS)))


token_refresh_parallel()
