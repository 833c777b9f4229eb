"""CanvasDataHook: Canvas Data 2 through Instructure's Data Access Platform (DAP) query API.

Speaks DAP's REST protocol over this provider's HTTP layer (:mod:`.transport`: timeouts, retries,
throttling, error mapping, no secrets in logs) rather than through ``instructure-dap-client``, whose
exact pins (PyJWT, rich, aiohttp, ...) cannot be installed beside Airflow's (see
docs/operators/canvas-data-2.md).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from functools import cached_property
from os import PathLike
from typing import TYPE_CHECKING, Any

import pendulum
import requests

from airflow_provider_canvas.canvas_data.connection import DapSettings
from airflow_provider_canvas.canvas_data.hooks.auth import DapLogin, DapTokenCache, token_minutes
from airflow_provider_canvas.canvas_data.hooks.models import (
    JOB_CREATION_LIMIT,
    JOB_CREATION_RATE,
    THROTTLE_WINDOW_SECONDS,
    DapJob,
    dap_api_error,
)
from airflow_provider_canvas.canvas_data.hooks.objects import DapObjectDownloader, PulledObject
from airflow_provider_canvas.canvas_data.hooks.pacing import JobCreationPacer
from airflow_provider_canvas.common.connection import ConnectedHook
from airflow_provider_canvas.common.locations import storage_root
from airflow_provider_canvas.common.retry import RetryPolicy
from airflow_provider_canvas.common.transport import ApiRules
from airflow_provider_canvas.exceptions import (
    LmsConfigurationError,
    LmsError,
    LmsNotFoundError,
    LmsThrottledError,
)

if TYPE_CHECKING:
    import httpx
    from airflow.sdk import ObjectStoragePath


class DapApiRules(ApiRules):
    """DAP's answers: any 401 means the JWT is dead; errors carry DAP's type and uuid."""

    def token_refused(self, response: requests.Response | httpx.Response) -> bool:
        return response.status_code == 401

    def error(self, response: Any, method: str, url: str, scope: str | None, conn_label: str) -> LmsError:
        return dap_api_error(response, method, url)


class CanvasDataHook(ConnectedHook):
    """Canvas Data 2 tables of one ``canvas_data`` connection (see :class:`DapSettings`).

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
    :param throttle_window_seconds: how long a 429 without ``Retry-After`` waits before the retry
        (DAP's limits count per minute: default 60).
    :param job_creation_rate: (calls, seconds): job creations are paced to at most this many in
        any such window (DAP publishes 5 per minute per client: default ``(5, 60.0)``).
    """

    conn_name_attr = "canvas_data_conn_id"
    default_conn_name = "canvas_data_default"
    conn_type = "canvas_data"
    hook_name = "Canvas Data 2 (DAP)"
    credentials_hint = (
        "the DAP client ID as login and the client secret as password (identity.instructure.com)"
    )
    settings_class = DapSettings
    api_rules = DapApiRules()

    settings: DapSettings

    def __init__(
        self,
        conn_id: str | None = None,
        *,
        throttle_window_seconds: float = THROTTLE_WINDOW_SECONDS,
        job_creation_rate: tuple[int, float] = JOB_CREATION_RATE,
        **options: Any,
    ) -> None:
        super().__init__(conn_id, **options)
        self.throttle_window_seconds = throttle_window_seconds
        self.job_creation_rate = (int(job_creation_rate[0]), float(job_creation_rate[1]))

    @property
    def namespace(self) -> str:
        return self.settings.namespace

    # Composition ------------------------------------------------------------------------------

    @cached_property
    def retry(self) -> RetryPolicy:
        # A 429 without Retry-After waits out DAP's window: backoff from 1 s would spend the
        # retries inside the minute the limit counts.
        return RetryPolicy(
            self.max_retries,
            self.backoff_seconds,
            self.max_backoff_seconds,
            throttle_seconds=self.throttle_window_seconds,
            log=self.log,
        )

    @cached_property
    def pacer(self) -> JobCreationPacer:
        return JobCreationPacer(*self.job_creation_rate, log=self.log)

    @cached_property
    def login(self) -> DapLogin:
        settings = self.settings
        return DapLogin(
            base_url=settings.base_url,
            client_id=settings.client_id,
            client_secret=settings.client_secret,
            session=self.session,
            retry=self.retry,
            timeout=self.timeout,
            log=self.log,
        )

    def token_keeper(self) -> DapTokenCache:
        return self.tokens

    @cached_property
    def tokens(self) -> DapTokenCache:
        return DapTokenCache(self.login)

    # The query API ----------------------------------------------------------------------------

    def _table_path(self, namespace: str | None, table: str = "") -> str:
        path = f"/dap/query/{namespace or self.namespace}/table"
        return f"{path}/{table}" if table else path

    def list_tables(self, namespace: str | None = None) -> list[str]:
        """The tables of ``namespace`` (DAP allows about 5 listings per minute: call it rarely)."""
        with self._unknown_as_configuration(namespace):
            body = self.get_json(self._table_path(namespace))
        return [str(t) for t in body.get("tables", [])]

    def get_schema(self, table: str, namespace: str | None = None) -> dict[str, Any]:
        """``{"schema": <JSON schema>, "version": N}`` exactly as DAP returns it."""
        with self._unknown_as_configuration(namespace, table):
            body = self.get_json(f"{self._table_path(namespace, table)}/schema")
        if not isinstance(body, dict) or "schema" not in body or "version" not in body:
            raise LmsError(f"DAP's schema of {table} has no schema/version: {str(body)[:200]}")
        return dict(body)

    @contextmanager
    def _unknown_as_configuration(self, namespace: str | None, table: str = "") -> Iterator[None]:
        """DAP's 404 for a namespace or table: a name to fix in the DAG or connection, not to retry."""
        try:
            yield
        except LmsNotFoundError as err:
            where = namespace or self.namespace
            name = f"{where}.{table}" if table else f"namespace {where!r}"
            raise LmsConfigurationError(
                f"DAP has no {name} ({err}). Check the pull's tables= and namespace= (or the "
                f"connection's namespace); tables='all' pulls what DAP lists"
            ) from None

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

        Job creations are paced under ``job_creation_rate`` (DAP: about 5 a minute per client). A
        throttled request waits (``Retry-After``, else ``throttle_window_seconds``) and is sent again up
        to ``max_retries`` times, then this fails saying when to try again. A throttled request was
        not taken, so sending it again creates no second job. Raises
        :class:`DapSnapshotRequiredError` when DAP refuses an incremental after reloading the table.
        """
        query: dict[str, Any] = {"format": format}
        if since:
            query["since"] = since
        if until:
            query["until"] = until
        name = f"{namespace or self.namespace}.{table}"
        path = f"{self._table_path(namespace, table)}/data"
        self.pacer.wait_for_slot(name)
        try:
            with self._unknown_as_configuration(namespace, table):
                body = self.request("POST", path, json=query).json()
        except LmsThrottledError as err:
            raise self._still_throttled(name, err) from None
        finally:
            self.pacer.answered()
        return DapJob.from_json(body)

    def _still_throttled(self, name: str, err: LmsThrottledError) -> LmsThrottledError:
        """The error after the last retry: says what DAP said (or did not) and when to try again."""
        said = err.retry_after is not None
        wait = err.retry_after if err.retry_after is not None else self.throttle_window_seconds
        again = pendulum.now("UTC").add(seconds=int(wait) + 1).to_iso8601_string()
        heard = (
            f"DAP's Retry-After: {wait:.0f}s"
            if said
            else f"DAP sent no Retry-After; each retry waited throttle_window_seconds={wait:.0f}s"
        )
        return LmsThrottledError(
            f"DAP kept refusing to create a job for {name}: job creation is limited to "
            f"{JOB_CREATION_LIMIT}, and it was still throttled (HTTP 429) after {self.max_retries} "
            f"retries ({heard}). Another client with the same DAP credentials may be pulling. Try "
            f"again after {again}, or lower job_creation_rate",
            status=err.status,
            url=err.url,
            retry_after=err.retry_after,
        )

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
        self, job: DapJob, directory: str | PathLike[str] | ObjectStoragePath, *, attempts: int = 5
    ) -> list[PulledObject]:
        """Every object of a complete job into ``directory``, each verified whole before its final name.

        ``directory``: a local folder, or an ObjectStoragePath / URL (``s3://conn_id@bucket/...``).
        """
        downloader = DapObjectDownloader(
            urls_for=self.object_urls,
            session=self.session,
            authorised_get=lambda url, headers, scope: self.request("GET", url, stream=True, headers=headers),
            base_url=self.base_url,
            timeout=self.timeout,
            retry=self.retry,
            log=self.log,
        )
        return downloader.download(job, storage_root(directory), attempts=attempts)

    # The Test button --------------------------------------------------------------------------

    def test_connection(self) -> tuple[bool, str]:
        """Log in once with the client ID and secret: no job, no listing (both are rate-limited)."""
        self.conn_label = "this connection"
        self.__dict__["retry"] = RetryPolicy(0, log=self.log)
        try:
            token = self.login()
        except (LmsError, ValueError) as err:
            return False, str(err)
        finally:
            self.close()
        return True, (
            f"DAP at {self.base_url} accepted the client ID and secret (a token valid for "
            f"{token_minutes(token):.0f} minutes; namespace {self.namespace!r})"
        )
