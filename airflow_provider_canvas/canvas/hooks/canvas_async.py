"""Canvas reads for the triggerer (SIS imports, account reports) on httpx: the event loop never blocks."""

from __future__ import annotations

from typing import Any

from airflow_provider_canvas.canvas.connection import CanvasSettings
from airflow_provider_canvas.canvas.hooks.canvas import CanvasHook
from airflow_provider_canvas.canvas.hooks.paths import account_path
from airflow_provider_canvas.canvas.hooks.sis import SCOPE_GET_REPORT, SCOPE_GET_SIS_IMPORT
from airflow_provider_canvas.common.async_hook import LmsAsyncHook


class CanvasAsyncHook(LmsAsyncHook[CanvasSettings]):
    """Reads one ``canvas`` connection's SIS imports and reports without blocking the loop.

    :param conn_id: the connection; read with Airflow's async connection API.
    :param timeout: (connect, read) seconds of each poll.
    """

    sync_hook = CanvasHook
    platform = "canvas"

    async def get_sis_import(self, account_id: int | str, import_id: int) -> dict[str, Any]:
        """:meth:`CanvasHook.get_sis_import` without a thread."""
        path = account_path(account_id, f"/sis_imports/{int(import_id)}")
        return dict(await self.get_json(path, SCOPE_GET_SIS_IMPORT))

    async def get_report(self, account_id: int | str, report: str, report_id: int) -> dict[str, Any]:
        """:meth:`CanvasHook.get_report` without a thread."""
        path = account_path(account_id, f"/reports/{report}/{int(report_id)}")
        return dict(await self.get_json(path, SCOPE_GET_REPORT))
