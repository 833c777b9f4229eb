"""CanvasDataHook: Canvas Data 2 through Instructure's Data Access Platform (DAP) query API.

Speaks DAP's REST protocol over this provider's HTTP layer (:mod:`.transport`: timeouts, retries,
throttling, error mapping, no secrets in logs) rather than through ``instructure-dap-client``, whose
exact pins (PyJWT, rich, aiohttp, ...) cannot be installed beside Airflow's (see the README).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

import pendulum
import requests
from airflow.sdk import BaseHook

from airflow_provider_canvas.canvas_data.hooks.auth import DapTokenCache
from airflow_provider_canvas.canvas_data.hooks.models import (
    DEFAULT_API_URL,
    DEFAULT_NAMESPACE,
    JOB_CREATION_LIMIT,
    LOGIN_PATH,
    DapAccessToken,
    DapJob,
    dap_api_error,
    dap_error_message,
    login_refused,
)
from airflow_provider_canvas.canvas_data.hooks.objects import DapObjectDownloader, PulledObject
from airflow_provider_canvas.common.connected import ConnectedHook
from airflow_provider_canvas.common.connection_checks import check_base_url
from airflow_provider_canvas.common.net import absolute_url, redact_url
from airflow_provider_canvas.common.transport import LmsTransport
from airflow_provider_canvas.exceptions import (
    LmsError,
    LmsPermissionError,
    LmsThrottledError,
)


class CanvasDataHook(ConnectedHook, LmsTransport, BaseHook):
    """Canvas Data 2 tables of one ``canvas_data`` connection.

    host: the DAP API URL (empty: ``https://api-gateway.instructure.com``); login/password: the DAP
    client ID and secret from identity.instructure.com; extra ``namespace`` (default ``canvas``).
    The JWT that login buys lives in this hook's memory only and is replaced 5 minutes before it
    expires or when DAP refuses it (one new login, then the request once more).

    :param conn_id: a ``canvas_data`` connection; default ``canvas_data_default`` (also as
        ``canvas_data_conn_id=``).
    :param timeout: (connect, read) seconds of every request.
    :param max_retries: retries of connection errors, 5xx answers to reads and throttled requests.
    :param backoff_seconds: the first retry's wait, doubled for each further retry (with jitter).
    :param max_backoff_seconds: the longest wait between two retries.
    """

    conn_name_attr = "canvas_data_conn_id"
    default_conn_name = "canvas_data_default"
    conn_type = "canvas_data"
    hook_name = "Canvas Data 2 (DAP)"
    credentials_hint = (
        "the DAP client ID as login and the client secret as password (identity.instructure.com)"
    )

    def __init__(self, conn_id: str | None = None, **options: Any) -> None:
        super().__init__(conn_id, **options)
        self._last_retry_after: float | None = None

    def _check_connection(self, conn: Any) -> None:
        if conn.host:
            check_base_url(f"the API URL (host) of {self.conn_label}", conn.host, DEFAULT_API_URL)

    @cached_property
    def base_url(self) -> str:
        return str(self.connection.host or DEFAULT_API_URL).rstrip("/")

    @property
    def namespace(self) -> str:
        return str((self.connection.extra_dejson or {}).get("namespace") or DEFAULT_NAMESPACE)

    # Access token -----------------------------------------------------------------------------

    @cached_property
    def tokens(self) -> DapTokenCache:  # type: ignore[override]
        return DapTokenCache(self._login)

    def _login(self) -> DapAccessToken:
        """``POST /ids/auth/login``, client credentials by HTTP Basic. Nothing is saved anywhere."""
        url = absolute_url(self.base_url, LOGIN_PATH)
        where = f"POST {redact_url(url)}"
        attempt = 0
        while True:
            attempt += 1
            try:
                response = self.session.post(
                    url,
                    data={"grant_type": "client_credentials"},
                    auth=(self.connection.login, self.connection.password),
                    timeout=self.timeout,
                    allow_redirects=False,
                )
            except requests.RequestException as err:
                # A login changes nothing on the server: sending it again is always safe.
                if attempt > self.max_retries:
                    raise LmsError(f"{where} failed: {type(err).__name__}") from None
                self._wait(self._backoff(attempt), f"{where}: {type(err).__name__}")
                continue
            with response:
                transient = response.status_code == 429 or response.status_code >= 500
                if transient and attempt <= self.max_retries:
                    delay = self._retry_after(response) or self._backoff(attempt)
                    self._wait(delay, f"{where}: HTTP {response.status_code}")
                    continue
                if response.status_code in (400, 401, 403):
                    raise login_refused(response.status_code, dap_error_message(response), where)
                if response.status_code >= 300:
                    raise dap_api_error(response, "POST", url)
                try:
                    token = DapAccessToken.from_login(response.json())
                except ValueError:
                    raise login_refused(response.status_code, "not JSON", where) from None
            self.log.info(
                "Logged in to DAP at %s; token valid for %.0f min", self.base_url, self._minutes(token)
            )
            return token

    @staticmethod
    def _minutes(token: DapAccessToken) -> float:
        return (token.expires_at - time.time()) / 60

    # Requests ---------------------------------------------------------------------------------

    def request(self, method: str, path_or_url: str, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        """:meth:`LmsTransport.request`, and a refused token (401) buys one new login and one more try."""
        try:
            return super().request(method, path_or_url, **kwargs)
        except LmsPermissionError as err:
            if err.status != 401:
                raise
            self.log.info("DAP refused the access token (HTTP 401); logging in again")
            self.tokens.reject()
            return super().request(method, path_or_url, **kwargs)

    def _error(self, response: requests.Response, method: str, url: str, scope: str | None) -> LmsError:  # type: ignore[override]
        return dap_api_error(response, method, url)

    def _retry_after(self, response: requests.Response) -> float | None:  # type: ignore[override]
        seconds = super()._retry_after(response)
        if response.status_code == 429:
            self._last_retry_after = seconds
        return seconds

    # The query API ----------------------------------------------------------------------------

    def _table_path(self, namespace: str | None, table: str = "") -> str:
        path = f"/dap/query/{namespace or self.namespace}/table"
        return f"{path}/{table}" if table else path

    def list_tables(self, namespace: str | None = None) -> list[str]:
        """The tables of ``namespace`` (DAP allows about 5 listings per minute: call it rarely)."""
        return [str(t) for t in self.get_json(self._table_path(namespace)).get("tables", [])]

    def get_schema(self, table: str, namespace: str | None = None) -> dict[str, Any]:
        """``{"schema": <JSON schema>, "version": N}`` exactly as DAP returns it."""
        body = self.get_json(f"{self._table_path(namespace, table)}/schema")
        if not isinstance(body, dict) or "schema" not in body or "version" not in body:
            raise LmsError(f"DAP's schema of {table} has no schema/version: {str(body)[:200]}")
        return dict(body)

    def start_job(
        self,
        table: str,
        *,
        namespace: str | None = None,
        since: str | None = None,
        until: str | None = None,
        format: str = "jsonl",
    ) -> DapJob:
        """Start a snapshot job (``since`` None) or an incremental one from ``since``; returns the job.

        DAP allows job creation only about 5 times a minute per client: a throttled request waits
        (``Retry-After``) and is sent again up to ``max_retries`` times, then this fails saying when
        to try again. A throttled request was not taken, so sending it again creates no second job.
        """
        query: dict[str, Any] = {"format": format}
        if since:
            query["since"] = since
        if until:
            query["until"] = until
        path = f"{self._table_path(namespace, table)}/data"
        self._last_retry_after = None
        try:
            body = self.request("POST", path, json=query).json()
        except LmsThrottledError as err:
            wait = self._last_retry_after or 60.0
            again = pendulum.now("UTC").add(seconds=int(wait) + 1).to_iso8601_string()
            raise LmsThrottledError(
                f"DAP kept refusing to create a job for {namespace or self.namespace}.{table}: job creation "
                f"is limited to {JOB_CREATION_LIMIT}, and it was still throttled (HTTP 429) after "
                f"{self.max_retries} retries. Try again after {again} (DAP's Retry-After: {wait:.0f}s), "
                "or pull fewer tables per minute",
                status=err.status,
                url=err.url,
            ) from None
        return DapJob.from_json(body)

    def get_job(self, job_id: str) -> DapJob:
        return DapJob.from_json(self.get_json(f"/dap/job/{job_id}"))

    def object_urls(self, object_ids: Sequence[str]) -> dict[str, str]:
        """Presigned URLs (another host, about 15 minutes) for ``object_ids``; the bearer never goes there."""
        if not object_ids:
            return {}
        body = self.request("POST", "/dap/object/url", json=[{"id": o} for o in object_ids]).json()
        urls = body.get("urls") if isinstance(body, dict) else None
        if not isinstance(urls, Mapping):
            raise LmsError(f"DAP's object URL answer has no urls: {str(body)[:200]}")
        missing = [o for o in object_ids if o not in urls]
        if missing:
            raise LmsError(f"DAP gave no URL for {len(missing)} of {len(object_ids)} objects")
        return {o: str(urls[o]["url"] if isinstance(urls[o], Mapping) else urls[o]) for o in object_ids}

    def download_objects(
        self, job: DapJob, directory: str | Path, *, attempts: int = 5
    ) -> list[PulledObject]:
        """Every object of a complete job into ``directory``, each verified whole before its final name."""
        downloader = DapObjectDownloader(
            urls_for=self.object_urls,
            session=self.session,
            authorised_get=lambda url, headers, scope: self.request("GET", url, stream=True, headers=headers),
            base_url=self.base_url,
            timeout=self.timeout,
            backoff=self._backoff,
            log=self.log,
        )
        return downloader.download(job, Path(directory), attempts=attempts)

    # The Test button --------------------------------------------------------------------------

    def test_connection(self) -> tuple[bool, str]:
        """Log in once with the client ID and secret: no job, no listing (both are rate-limited)."""
        self.conn_label = "this connection"
        saved_retries, self.max_retries = self.max_retries, 0
        try:
            token = self._login()
        except (LmsError, ValueError) as err:
            return False, str(err)
        finally:
            self.max_retries = saved_retries
            self.close()
        return True, (
            f"DAP at {self.base_url} accepted the client ID and secret (a token valid for "
            f"{self._minutes(token):.0f} minutes; namespace {self.namespace!r})"
        )
