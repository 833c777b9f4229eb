"""One task calling the LMS API, with a knob that stalls the token save: for failure drills."""

from __future__ import annotations

import os
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pendulum
from airflow.sdk import dag, task


@dag(
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    params={"conn_id": "brightspace_drill", "platform": "brightspace", "stall_save_seconds": 0, "marker": ""},
)
def lms_drill() -> None:
    @task(retries=12, retry_delay=timedelta(seconds=8))
    def call_api(params: dict[str, Any] | None = None) -> dict[str, Any]:
        from airflow_provider_canvas.brightspace.hooks.brightspace import BrightspaceHook
        from airflow_provider_canvas.canvas.hooks.canvas import CanvasHook
        from airflow_provider_canvas.tokens.store import TokenStore

        assert params is not None
        if params["stall_save_seconds"]:
            # Stall between the token response and the save, the window a crash must not lose.
            save = TokenStore.save

            def stalled_save(self: TokenStore, tokens: Any) -> None:
                Path(params["marker"]).write_text(str(os.getpid()))
                time.sleep(params["stall_save_seconds"])
                save(self, tokens)

            TokenStore.save = stalled_save  # type: ignore[method-assign]
        if params["platform"] == "brightspace":
            hook: Any = BrightspaceHook(params["conn_id"], max_retries=4)
            hook.whoami()
        else:
            hook = CanvasHook(params["conn_id"], max_retries=4)
            hook.get_account(1)
        return {"refreshes": hook.tokens.refresh_count}

    call_api()


lms_drill()
