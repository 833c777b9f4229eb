"""Brightspace reads for the triggerer (export jobs, extract listings) on httpx: the loop never blocks.

Polls are plain async GETs with the stored access token. Only when that token is due or refused
does a thread run the shared token lifecycle (lock, re-read, rescue, save-and-verify) of a sync
:class:`BrightspaceHook`: the rare path, which must never differ from a task's refresh.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from airflow_provider_canvas.brightspace.connection import BrightspaceSettings
from airflow_provider_canvas.brightspace.hooks.brightspace import SCOPE_ADS_FETCH, BrightspaceHook
from airflow_provider_canvas.brightspace.hooks.listing import BdsListings, read_async
from airflow_provider_canvas.brightspace.hooks.models import BdsExtract
from airflow_provider_canvas.common import airflow_access as metadata
from airflow_provider_canvas.common.async_hook import AsyncConnectedHook
from airflow_provider_canvas.common.net import absolute_url, is_throttled, redact_url
from airflow_provider_canvas.exceptions import LmsThrottledError, LmsUnavailableError
from airflow_provider_canvas.tokens.model import TokenSet


class BrightspaceAsyncHook(AsyncConnectedHook[BrightspaceSettings]):
    """Reads export jobs and extract listings of one ``brightspace`` connection without blocking the loop.

    :param conn_id: the connection; read with Airflow's async connection API.
    :param timeout: (connect, read) seconds of each poll.

    No retries here: a throttled or failed poll raises :class:`LmsThrottledError` /
    :class:`LmsUnavailableError` and the caller (the trigger) decides when to poll again. Use as
    ``async with`` or call :meth:`aclose`.
    """

    sync_hook = BrightspaceHook

    def __init__(self, conn_id: str, *, timeout: tuple[float, float] = (10.0, 60.0)) -> None:
        super().__init__(conn_id, timeout=timeout)
        self._refresher: BrightspaceHook | None = None  # a full sync hook, used in a thread only
        self._tokens: TokenSet | None = None
        self._rejected: set[str] = set()

    async def aclose(self) -> None:
        await super().aclose()
        if self._refresher is not None:
            self._refresher.close()
            self._refresher = None

    async def get_export_job(self, job_id: str) -> dict[str, Any]:
        """One export job (``Status``, ...): :meth:`BrightspaceHook.get_export_job` without a thread."""
        settings = await self.settings()
        return dict(await self.get_json(settings.lp_path(f"dataExport/jobs/{job_id}"), SCOPE_ADS_FETCH))

    async def list_extracts(self, data_set: str) -> list[BdsExtract]:
        """The extracts of ``data_set`` still offered, newest first: :meth:`BrightspaceHook.list_extracts`."""
        plan = BdsListings(await self.settings()).extracts(data_set)
        return await read_async(plan, lambda page: self.get_json(page.url, page.scope, page.params))

    async def get_json(
        self, path_or_url: str, scope: str | None, params: dict[str, Any] | None = None
    ) -> Any:
        """An authorised GET on the instance: 401 with ``WWW-Authenticate`` refreshes once; no retries."""
        settings = await self.settings()
        url = absolute_url(settings.base_url, path_or_url)
        where = f"GET {redact_url(url)}"
        client = self.client
        refreshed = False
        while True:
            access_token = await self._access_token()
            try:
                response = await client.get(
                    url,
                    params=params,
                    headers={"Accept": "application/json", "Authorization": f"Bearer {access_token}"},
                )
            except httpx.TransportError as err:
                raise LmsUnavailableError(
                    f"{where} failed: {type(err).__name__}", status=0, url=redact_url(url)
                ) from None
            if BrightspaceHook.api_rules.token_refused(response) and not refreshed:
                self._rejected.add(access_token)
                self._tokens = None
                refreshed = True
                continue
            if is_throttled(response):
                status = response.status_code
                raise LmsThrottledError(
                    f"{where} throttled (HTTP {status})", status=status, url=redact_url(url)
                )
            if response.status_code >= 400:
                raise BrightspaceHook.api_rules.error(response, "GET", url, scope, self.conn_label)
            return response.json()

    def _connection_read(self, fields: Any) -> None:
        self._tokens = TokenSet.from_extra(fields.extra_dejson, "brightspace")

    async def _access_token(self) -> str:
        buffer = (await self.settings()).expiry_buffer_seconds
        if self._tokens is None or not self._tokens.is_usable(buffer, rejected=self._rejected):
            # Another worker may have refreshed meanwhile: read the stored tokens first.
            fields = await metadata.aget_connection(self.conn_id)
            self._tokens = TokenSet.from_extra(fields.extra_dejson, "brightspace")
        if not self._tokens.is_usable(buffer, rejected=self._rejected):
            self._tokens = await asyncio.to_thread(self._refresh, frozenset(self._rejected))
        assert self._tokens.access_token
        return self._tokens.access_token

    def _refresh(self, rejected: frozenset[str]) -> TokenSet:
        """In a thread: the task path's lifecycle hands out a live token, refreshing under the lock."""
        if self._refresher is None:
            self._refresher = BrightspaceHook(self.conn_id)
        lifecycle = self._refresher.tokens
        for token in rejected:
            lifecycle.reject(token)
        access_token = lifecycle.access_token()
        return TokenSet(access_token=access_token, expires_at=lifecycle.expires_at)
