"""A task on an ephemeral worker: its own state directory, deleted when the task ends (a pod's disk).

The kill drills (tests/e2e/test_custody_kill_drills.py) pass ``mark``: the stalled task writes its pid
there, to be SIGKILLed; ``calls``: that many hooks in a row (each refreshes, given a long buffer).
"""

from __future__ import annotations

import json
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
    params={"conn_id": "brightspace_custody", "stall": "", "api_url": "", "mark": "", "calls": 1},
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
        if params.get("mark"):  # the drill deletes this state directory after the kill
            os.environ["CANVAS_PROVIDER_DRILL_MARK"] = params["mark"]
            with open(f"{params['mark']}.state_dir", "w") as state:
                state.write(state_dir)
        try:
            refreshes, custody = 0, None
            for _ in range(int(params.get("calls") or 1)):
                hook = BrightspaceHook(params["conn_id"], max_retries=2)
                hook.whoami()
                refreshes += hook.tokens.refresh_count
                custody = hook.tokens.custody_seconds
            # Where the live refresh token is, by fingerprint (the REST API masks token values).
            from airflow_provider_canvas.common import airflow_access as metadata
            from airflow_provider_canvas.tokens.record import fingerprint

            central = json.loads(
                metadata.get_variable(f"canvas_provider_tokens__{params['conn_id']}") or "{}"
            )
            held = metadata.get_connection(params["conn_id"]).extra_dejson.get("refresh_token")
            return {
                "refreshes": refreshes,
                "custody_seconds": custody,
                "connection": fingerprint(held),
                "central": fingerprint(central.get("refresh_token")),
            }
        finally:
            shutil.rmtree(state_dir, ignore_errors=True)

    call_api()


custody_drill()
