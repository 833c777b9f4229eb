"""Inventory of a Canvas account tree: the root account and every sub-account, as JSON Lines.

The file holds one account per line (the Canvas JSON, root first) and is published only when
complete; the run logs how many accounts there are by workflow_state and by depth below the root.
``output_dir`` may be a local directory or an object-storage URL (``s3://bucket/canvas`` with
``output_conn_id``). The developer key needs ``url:GET|/api/v1/accounts/:id`` and
``url:GET|/api/v1/accounts/:account_id/sub_accounts``.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import pendulum
from airflow.sdk import Param, dag, task

from airflow_provider_canvas.canvas.operators.accounts import (
    CanvasAccountsOperator,
    read_json_lines,
    summarize_accounts,
)
from airflow_provider_canvas.setup_check import skip_unless_configured

log = logging.getLogger(__name__)


@dag(
    schedule="@daily",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["canvas", "accounts"],
    doc_md=__doc__,
    params={
        "canvas_conn_id": Param("canvas_default", type="string"),
        "root_account_id": Param(1, type=["integer", "string"], description="id or sis_account_id:..."),
        "output_dir": Param("/tmp/canvas_inventory", type="string", description="directory or URL"),
        "output_conn_id": Param(None, type=["null", "string"], description="object-storage connection"),
    },
)
def canvas_account_inventory() -> None:
    @task
    def check_setup(params: dict[str, Any]) -> None:
        """With no Canvas connection yet, the run skips and says what to create."""
        skip_unless_configured(
            connections={params["canvas_conn_id"]: "type canvas, see canvas-oauth authorize"}
        )

    read_tree = CanvasAccountsOperator(
        task_id="read_account_tree",
        canvas_conn_id="{{ params.canvas_conn_id }}",
        mode="sub_accounts",
        account_id="{{ params.root_account_id }}",
        include_root=True,
        output_path="{{ params.output_dir }}/canvas_accounts_"
        "{{ dag_run.run_after.strftime('%Y%m%dT%H%M%S') }}.jsonl",
        output_conn_id="{{ params.output_conn_id or '' }}",
        xcom_max_accounts=0,  # always the file: downstream tasks read one format
    )

    @task
    def summarize(result: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
        summary = summarize_accounts(read_json_lines(result["path"], params["output_conn_id"]))
        log.info(
            "%d accounts under %s, max depth %d; by workflow_state: %s; by depth: %s",
            summary["count"],
            result["account_id"],
            summary["max_depth"],
            json.dumps(summary["by_workflow_state"]),
            json.dumps(summary["by_depth"]),
        )
        return {"path": result["path"], **summary}

    check_setup() >> read_tree
    summarize(read_tree.output)


canvas_account_inventory()
