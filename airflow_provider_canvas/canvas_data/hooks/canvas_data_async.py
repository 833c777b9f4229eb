"""DAP job polling for the triggerer, on httpx: login and polls never block the event loop.

The JWT is kept in this object's memory until 5 minutes before it expires (DAP issues it for client
credentials: nothing to refresh or save), and a refused token buys one new login.
"""

from __future__ import annotations

import httpx

from airflow_provider_canvas.canvas_data.connection import DapSettings
from airflow_provider_canvas.canvas_data.hooks.canvas_data import CanvasDataHook
from airflow_provider_canvas.canvas_data.hooks.models import (
    LOGIN_PATH,
    DapAccessToken,
    DapJob,
    dap_api_error,
    dap_error_message,
    login_refused,
)
from airflow_provider_canvas.common.async_hook import AsyncConnectedHook
from airflow_provider_canvas.common.net import absolute_url, redact_url
from airflow_provider_canvas.exceptions import LmsError, LmsThrottledError, LmsUnavailableError


class CanvasDataAsyncHook(AsyncConnectedHook[DapSettings]):
    """Reads DAP jobs of one ``canvas_data`` connection without blocking the event loop.

    :param conn_id: the connection; read with Airflow's async connection API.
    :param timeout: (connect, read) seconds of each request.

    No retries here: a throttled or failed request raises :class:`LmsThrottledError` /
    :class:`LmsUnavailableError` and the caller (the trigger) decides when to try again. Use as
    ``async with`` or call :meth:`aclose`.
    """

    sync_hook = CanvasDataHook

    def __init__(self, conn_id: str, *, timeout: tuple[float, float] = (10.0, 60.0)) -> None:
        super().__init__(conn_id, timeout=timeout)
        self._token: DapAccessToken | None = None
        #: How many logins this hook made.
        self.login_count = 0

    async def get_job(self, job_id: str) -> DapJob:
        """``GET /dap/job/{id}``: :meth:`CanvasDataHook.get_job` without a thread."""
        settings = await self.settings()
        url = absolute_url(settings.base_url, f"/dap/job/{job_id}")
        where = f"GET {redact_url(url)}"
        relogged = False
        while True:
            access_token = await self._access_token()
            try:
                response = await self.client.get(
                    url, headers={"Accept": "application/json", "Authorization": f"Bearer {access_token}"}
                )
            except httpx.TransportError as err:
                raise LmsUnavailableError(
                    f"{where} failed: {type(err).__name__}", status=0, url=redact_url(url)
                ) from None
            if response.status_code == 401 and not relogged:
                self._token = None
                relogged = True
                continue
            if response.status_code == 429:
                raise LmsThrottledError(f"{where} throttled (HTTP 429)", status=429, url=redact_url(url))
            if response.status_code >= 400:
                raise dap_api_error(response, "GET", url)
            try:
                return DapJob.from_json(response.json())
            except ValueError as err:
                raise LmsError(f"{where}: {err}") from None

    async def _access_token(self) -> str:
        if self._token is None or not self._token.usable():
            self._token = await self._login()
            self.login_count += 1
        return self._token.access_token

    async def _login(self) -> DapAccessToken:
        settings = await self.settings()
        url = absolute_url(settings.base_url, LOGIN_PATH)
        where = f"POST {redact_url(url)}"
        try:
            response = await self.client.post(
                url,
                data={"grant_type": "client_credentials"},
                auth=httpx.BasicAuth(settings.client_id, settings.client_secret),
            )
        except httpx.TransportError as err:
            raise LmsUnavailableError(
                f"{where} failed: {type(err).__name__}", status=0, url=redact_url(url)
            ) from None
        if response.status_code == 429:
            raise LmsThrottledError(f"{where} throttled (HTTP 429)", status=429, url=redact_url(url))
        if response.status_code in (400, 401, 403):
            raise login_refused(response.status_code, dap_error_message(response), where)
        if response.status_code >= 300:
            raise dap_api_error(response, "POST", url)
        try:
            return DapAccessToken.from_login(response.json())
        except ValueError:
            raise login_refused(response.status_code, "not JSON", where) from None
