"""DAGs that tests/e2e/test_local_airflow.py runs to show what task code can do under a real scheduler."""

from __future__ import annotations

import json
import time
from typing import Any

from airflow.sdk import dag, get_current_context, task


@dag(dag_id="smoke_trivial", schedule=None, catchup=False, tags=["e2e"])
def smoke_trivial() -> None:
    @task
    def hello() -> str:
        return "hello"

    hello()


@dag(dag_id="smoke_facts", schedule=None, catchup=False, tags=["e2e"])
def smoke_facts() -> None:
    @task
    def orm_is_blocked() -> dict[str, Any]:
        # Imported here: the point is what these names are inside the supervised task process.
        from airflow import settings
        from airflow.sdk.execution_time import task_runner

        try:
            settings.Session()
            session_error = None
        except RuntimeError as err:
            session_error = str(err)
        return {
            "session_class": f"{settings.Session.__module__}.{settings.Session.__qualname__}",
            "session_error": session_error,
            "supervisor_comms": task_runner.SUPERVISOR_COMMS is not None,
        }

    @task
    def patch_connection_extra() -> dict[str, Any]:
        import requests
        from airflow.configuration import conf
        from airflow.sdk import BaseHook

        conn_id = get_current_context()["dag_run"].conf["conn_id"]
        new_extra = get_current_context()["dag_run"].conf["new_extra"]
        # The execution API lives on the api-server, so its URL is also where the public REST API is.
        base = conf.get("core", "execution_api_server_url").removesuffix("/").removesuffix("/execution")
        before = BaseHook.get_connection(conn_id)
        response = requests.patch(
            f"{base}/api/v2/connections/{conn_id}?update_mask=extra",
            json={"connection_id": conn_id, "conn_type": before.conn_type, "extra": json.dumps(new_extra)},
            timeout=10,
        )
        after = BaseHook.get_connection(conn_id)
        return {
            "base": base,
            "status_code": response.status_code,
            "extra_before": before.extra_dejson,
            "extra_after": after.extra_dejson,
        }

    orm_is_blocked()
    patch_connection_extra()


@dag(dag_id="smoke_parallel", schedule=None, catchup=False, tags=["e2e"])
def smoke_parallel() -> None:
    @task
    def sleeper(index: int) -> dict[str, float]:
        start = time.time()
        time.sleep(3)
        return {"index": index, "start": start, "end": time.time()}

    sleeper.expand(index=list(range(8)))


smoke_trivial()
smoke_facts()
smoke_parallel()
