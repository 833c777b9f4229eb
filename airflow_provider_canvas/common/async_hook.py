"""What the triggerer's async hooks share: the connection read asynchronously and parsed, one httpx client."""

from __future__ import annotations

import functools
import ssl
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

import httpx

from airflow_provider_canvas.common import airflow_access
from airflow_provider_canvas.common.connection import ConnectedHook, parse_connection

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
