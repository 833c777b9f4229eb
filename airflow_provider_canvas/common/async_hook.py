"""What the triggerer's async hooks share: the connection read and parsed, one httpx client, OAuth GETs."""

from __future__ import annotations

import asyncio
import functools
import ssl
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

import httpx

from airflow_provider_canvas.common import airflow_access
from airflow_provider_canvas.common.connection import ConnectedHook, parse_connection
from airflow_provider_canvas.common.net import absolute_url, is_throttled, redact_url
from airflow_provider_canvas.exceptions import LmsThrottledError, LmsUnavailableError
from airflow_provider_canvas.tokens.model import TokenSet

if TYPE_CHECKING:
    from types import TracebackType

    from typing_extensions import Self

Settings = TypeVar("Settings")


@functools.cache
def ssl_context() -> ssl.SSLContext:
    # Loading the CA bundle takes ~0.1 s: once per triggerer process, not once per trigger.
    import certifi

    return ssl.create_default_context(cafile=certifi.where())


class AsyncConnectedHook(Generic[Settings]):
    """The connection of ``conn_id`` (read with Airflow's async connection API), parsed by the settings
    of the sync hook (:attr:`sync_hook`) without I/O, and the httpx client of :attr:`client`, closed
    by :meth:`aclose` or ``async with``."""

    #: The sync hook whose connection type, checks and settings the async hook shares.
    sync_hook: ClassVar[type[ConnectedHook]]

    def __init__(self, conn_id: str, *, timeout: tuple[float, float] = (10.0, 60.0)) -> None:
        self.conn_id = conn_id
        self.conn_label = f"connection {conn_id!r}"
        self._timeout = httpx.Timeout(timeout[1], connect=timeout[0])
        self._client: httpx.AsyncClient | None = None
        self._settings: Settings | None = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(conn_id={self.conn_id!r})"

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    @property
    def client(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(
                timeout=self._timeout, follow_redirects=False, verify=ssl_context()
            )
        return self._client

    async def settings(self) -> Settings:
        """The connection read asynchronously, checked and parsed as the sync hook does it."""
        if self._settings is None:
            fields = await airflow_access.aget_connection(self.conn_id)
            self._settings = parse_connection(self.sync_hook, fields, self.conn_label)
            self._connection_read(fields)
        return self._settings

    def _connection_read(self, fields: Any) -> None:
        """What a subclass takes from the connection beside its settings (e.g. its stored tokens)."""


class LmsAsyncHook(AsyncConnectedHook[Settings]):
    """An async hook on an OAuth connection (Canvas, Brightspace): authorised GETs for the triggerer.

    Polls are plain async GETs with the stored access token. Only when that token is due or refused
    does a thread run the shared token lifecycle (lock, re-read, rescue, save-and-verify) of a sync
    hook: the rare path, which must never differ from a task's refresh. No retries here: a
    throttled or failed GET raises :class:`LmsThrottledError` / :class:`LmsUnavailableError` and the
    caller (the trigger) decides when to poll again.
    """

    #: The platform whose tokens the connection's extra holds.
    platform: ClassVar[str]

    def __init__(self, conn_id: str, *, timeout: tuple[float, float] = (10.0, 60.0)) -> None:
        super().__init__(conn_id, timeout=timeout)
        self._refresher: Any = None  # a full sync hook, used in a thread only
        self._tokens: TokenSet | None = None
        self._rejected: set[str] = set()

    async def aclose(self) -> None:
        await super().aclose()
        if self._refresher is not None:
            self._refresher.close()
            self._refresher = None

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
            if self.sync_hook.api_rules.token_refused(response) and not refreshed:
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
                raise self.sync_hook.api_rules.error(response, "GET", url, scope, self.conn_label)
            return response.json()

    def _connection_read(self, fields: Any) -> None:
        self._tokens = TokenSet.from_extra(fields.extra_dejson, self.platform)

    async def _access_token(self) -> str:
        buffer = (await self.settings()).expiry_buffer_seconds
        if self._tokens is None or not self._tokens.is_usable(buffer, rejected=self._rejected):
            # Another worker may have refreshed meanwhile: read the stored tokens first.
            fields = await airflow_access.aget_connection(self.conn_id)
            self._tokens = TokenSet.from_extra(fields.extra_dejson, self.platform)
        if not self._tokens.is_usable(buffer, rejected=self._rejected):
            self._tokens = await asyncio.to_thread(self._refresh, frozenset(self._rejected))
        assert self._tokens.access_token
        return self._tokens.access_token

    def _refresh(self, rejected: frozenset[str]) -> TokenSet:
        """In a thread: the task path's lifecycle hands out a live token, refreshing under the lock."""
        if self._refresher is None:
            self._refresher = self.sync_hook(self.conn_id)
        lifecycle = self._refresher.tokens
        for token in rejected:
            lifecycle.reject(token)
        access_token = lifecycle.access_token()
        return TokenSet(access_token=access_token, expires_at=lifecycle.expires_at)
