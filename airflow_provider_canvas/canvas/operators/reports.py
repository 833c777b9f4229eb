"""Canvas account reports: start one, wait in the triggerer, download its file (from another host)."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Mapping, Sequence
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow.sdk.configuration import conf

from airflow_provider_canvas.canvas.hooks.canvas import normalize_account_id
from airflow_provider_canvas.canvas.hooks.sis import SCOPE_GET_REPORT, SCOPE_START_REPORT
from airflow_provider_canvas.canvas.hooks.sis_models import REPORT_FINAL_STATES
from airflow_provider_canvas.canvas.operators._jsonl import resolve_path
from airflow_provider_canvas.canvas.operators.accounts import _CanvasOperator
from airflow_provider_canvas.common.locations import copy_to_object_store, local_path
from airflow_provider_canvas.common.polling import Poll
from airflow_provider_canvas.exceptions import AccountReportError

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_provider_canvas.canvas.operators._jsonl import OutputPath


class CanvasAccountReportOperator(_CanvasOperator):
    """Run an account report (``provisioning_csv``, ``sis_export_csv``, ``last_user_access_csv``, any
    other name) with ``parameters`` and download its file into ``destination``.

    The report is waited for in the triggerer with ``deferrable`` (default ``[operators]
    default_deferrable``), else in the task, until ``report_timeout``; status and progress are
    logged. A report that ends ``error`` or ``aborted`` fails the task with what Canvas said. The
    file's URL answers with a redirect to storage on another host, which is sent no token; the file
    is streamed to a hidden part file, checked against the size Canvas announced and renamed, so
    ``destination`` never holds a partial file. ``destination`` is a folder: local, or an object
    store (``s3://...``, an ``ObjectStoragePath``), where the finished file is streamed up.

    With ``postgres_conn_id`` each CSV of the file is also loaded into
    ``<postgres_schema>.<table_prefix>_<kind>`` (``provisioning_users``, ...), typed where Canvas
    documents the column, text otherwise, all tables replaced in one transaction
    (:mod:`~airflow_provider_canvas.canvas.loading.report_load`).

    Returns (XCom) ``report_id``, ``report``, ``status``, ``path``, ``file_name``, ``size``, ``tables``
    (``{table: rows}`` when loaded).

    :param account_id: a Canvas id or ``sis_account_id:...`` (templated).
    :param report: the report's name (templated).
    :param parameters: ``parameters[...]`` of the report, e.g. ``{"users": True, "enrollment_term_id":
        "sis_term_id:2026FA"}`` (templated).
    :param destination: the folder for the file (templated).
    :param destination_conn_id: the object-storage connection of ``destination``.
    """

    template_fields: Sequence[str] = ("canvas_conn_id", "account_id", "report", "parameters", "destination")
    template_fields_renderers = {"parameters": "json"}
    required_scopes = (SCOPE_START_REPORT, SCOPE_GET_REPORT)
    ui_color = "#e8e4f6"

    def __init__(
        self,
        *,
        account_id: int | str,
        report: str,
        destination: OutputPath,
        parameters: Mapping[str, Any] | None = None,
        destination_conn_id: str | None = None,
        postgres_conn_id: str | None = None,
        postgres_schema: str = "canvas_reports",
        table_prefix: str | None = None,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        poll_interval: float = 30.0,
        report_timeout: timedelta = timedelta(hours=3),
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.account_id = account_id
        self.report = report
        self.parameters = dict(parameters or {})
        self.destination = destination
        self.destination_conn_id = destination_conn_id
        self.postgres_conn_id = postgres_conn_id
        self.postgres_schema = postgres_schema
        self.table_prefix = table_prefix
        self.deferrable = deferrable
        self.poll_interval = poll_interval
        self.report_timeout = report_timeout

    def execute(self, context: Context) -> dict[str, Any]:
        account_id = normalize_account_id(self.account_id)
        with self._canvas_calls(account_id):
            body = self.hook.start_report(account_id, self.report, self.parameters)
        self.log.info(
            "Report %s %s started on account %s (%s)", self.report, body["id"], account_id, body.get("status")
        )
        deadline = time.time() + self.report_timeout.total_seconds()
        if body.get("status") not in REPORT_FINAL_STATES and self.deferrable:
            from airflow_provider_canvas.canvas.triggers.progress import CanvasProgressTrigger

            self.defer(
                trigger=CanvasProgressTrigger(
                    self.canvas_conn_id,
                    "report",
                    account_id,
                    int(body["id"]),
                    report=self.report,
                    poll_interval=self.poll_interval,
                    timeout_at=deadline,
                ),
                method_name="execute_complete",
                kwargs={"account_id": account_id},
            )

        def look() -> dict[str, Any] | None:
            nonlocal body
            body = self.hook.get_report(account_id, self.report, int(body["id"]))
            self.log.info(
                "Report %s %s is %s, %s%%", self.report, body["id"], body.get("status"), body.get("progress")
            )
            return body if body.get("status") in REPORT_FINAL_STATES else None

        if body.get("status") not in REPORT_FINAL_STATES:
            with self._canvas_calls(account_id):
                waited = Poll(self.poll_interval, deadline, first_wait=True).until_in_task(
                    look, what=f"report {self.report} {body['id']}", log=self.log
                )
            if waited.status == "error":
                raise AccountReportError(waited.message)
        return self._finish(account_id, body)

    def execute_complete(
        self, context: Context, event: dict[str, Any], account_id: int | str
    ) -> dict[str, Any]:
        body = event.get("object")
        if event.get("status") != "done" or not body:
            raise AccountReportError(str(event.get("message")))
        return self._finish(account_id, body)

    def _finish(self, account_id: int | str, body: dict[str, Any]) -> dict[str, Any]:
        where = f"report {self.report} {body['id']} of account {account_id}"
        status = body.get("status")
        if status not in REPORT_FINAL_STATES:
            raise AccountReportError(f"{where} was still {status} after report_timeout {self.report_timeout}")
        if status != "complete":
            said = (body.get("parameters") or {}).get("extra_text") or "Canvas gave no reason"
            raise AccountReportError(f"{where} ended {status}: {said}")
        attachment = body.get("attachment") or {}
        if not attachment.get("url"):
            raise AccountReportError(f"{where} is complete but has no file (parameters {self.parameters})")
        name = Path(
            str(attachment.get("display_name") or attachment.get("filename") or f"report_{body['id']}")
        ).name
        with self._canvas_calls(account_id), tempfile.TemporaryDirectory(prefix="canvas-report-") as temp:
            folder = local_path(self.destination)
            local = (folder or Path(temp)) / name
            size = self.hook.download_attachment(attachment, local).size
            tables = self._load(local) if self.postgres_conn_id else None
            path = str(local) if folder is not None else self._upload(local, name)
        self.log.info("%s: %s (%d bytes)", where, path, size)
        return {
            "report_id": body["id"],
            "report": self.report,
            "status": status,
            "path": path,
            "file_name": name,
            "size": size,
            "tables": tables,
        }

    def _load(self, local: Path) -> dict[str, int]:
        from airflow.providers.postgres.hooks.postgres import PostgresHook

        from airflow_provider_canvas.canvas.loading.report_load import load_report
        from airflow_provider_canvas.common.airflow_access import get_connection

        prefix = self.table_prefix if self.table_prefix is not None else self.report.removesuffix("_csv")
        assert self.postgres_conn_id is not None  # only called with a PostgreSQL connection
        connection = get_connection(self.postgres_conn_id)  # the Task SDK's, or the ORM outside a task
        db = PostgresHook(postgres_conn_id=self.postgres_conn_id, connection=connection).get_conn()
        try:
            loaded = load_report(db, local, self.postgres_schema, prefix)
        finally:
            db.close()
        for table in loaded:
            self.log.info("Loaded %d rows of %s into %s", table.rows, table.source, table.table)
        return {table.table: table.rows for table in loaded}

    def _upload(self, local: Path, name: str) -> str:
        target = resolve_path(self.destination, self.destination_conn_id) / name
        copy_to_object_store(local, target)  # type: ignore[arg-type]
        return str(target)
