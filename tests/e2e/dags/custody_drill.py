"""A task on an ephemeral worker: its own state directory, deleted when the task ends (a pod's disk)."""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import Any

import pendulum
from airflow.sdk import dag, task


@dag(
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    params={"conn_id": "brightspace_custody", "stall": "", "api_url": ""},
)
def custody_drill() -> None:
    @task
    def call_api(params: dict[str, Any] | None = None) -> dict[str, Any]:
        from airflow_provider_canvas.brightspace.hooks.brightspace import BrightspaceHook

        assert params is not None
        state_dir = tempfile.mkdtemp(prefix="canvas-e2e-pod-")
        os.environ["AIRFLOW__CANVAS_PROVIDER__STATE_DIR"] = state_dir
        if params["stall"]:  # e.g. "durable_copy:20": hold the refresh there, so the test can act
            os.environ["CANVAS_PROVIDER_DRILL_STALL"] = params["stall"]
        if params["api_url"]:  # where this task sends its connection write-back
            os.environ["AIRFLOW__CANVAS_PROVIDER__AIRFLOW_API_URL"] = params["api_url"]
        try:
            hook = BrightspaceHook(params["conn_id"], max_retries=2)
            hook.whoami()
            return {"refreshes": hook.tokens.refresh_count, "custody_seconds": hook.tokens.custody_seconds}
        finally:
            shutil.rmtree(state_dir, ignore_errors=True)

    call_api()


custody_drill()
