"""Brightspace reads for the triggerer (export jobs, extract listings) on httpx: the loop never blocks.

The authorised GET and its token handling are :class:`~.common.async_hook.LmsAsyncHook`'s.
"""

from __future__ import annotations

from typing import Any

from airflow_provider_canvas.brightspace.connection import BrightspaceSettings
from airflow_provider_canvas.brightspace.hooks.brightspace import SCOPE_ADS_FETCH, BrightspaceHook
from airflow_provider_canvas.brightspace.hooks.listing import BdsListings, read_async
from airflow_provider_canvas.brightspace.hooks.models import BdsExtract
from airflow_provider_canvas.common.async_hook import LmsAsyncHook


class BrightspaceAsyncHook(LmsAsyncHook[BrightspaceSettings]):
    """Reads export jobs and extract listings of one ``brightspace`` connection without blocking the loop.

    :param conn_id: the connection; read with Airflow's async connection API.
    :param timeout: (connect, read) seconds of each poll.

    No retries here: a throttled or failed poll raises :class:`LmsThrottledError` /
    :class:`LmsUnavailableError` and the caller (the trigger) decides when to poll again. Use as
    ``async with`` or call :meth:`aclose`.
    """

    sync_hook = BrightspaceHook
    platform = "brightspace"

    async def get_export_job(self, job_id: str) -> dict[str, Any]:
        """One export job (``Status``, ...): :meth:`BrightspaceHook.get_export_job` without a thread."""
        settings = await self.settings()
        return dict(await self.get_json(settings.lp_path(f"dataExport/jobs/{job_id}"), SCOPE_ADS_FETCH))

    async def list_extracts(self, data_set: str) -> list[BdsExtract]:
        """The extracts of ``data_set`` still offered, newest first: :meth:`BrightspaceHook.list_extracts`."""
        plan = BdsListings(await self.settings()).extracts(data_set)
        return await read_async(plan, lambda page: self.get_json(page.url, page.scope, page.params))
