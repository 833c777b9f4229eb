"""What the triggerer's async hooks share: one connection read asynchronously, one httpx client."""

from __future__ import annotations

import functools
import ssl
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

import httpx

from airflow_provider_canvas.common import airflow_access as metadata

if TYPE_CHECKING:
    from types import TracebackType

    from typing_extensions import Self

SyncHook = TypeVar("SyncHook")


@functools.cache
def ssl_context() -> ssl.SSLContext:
    # Loading the CA bundle takes ~0.1 s: once per triggerer process, not once per trigger.
    import certifi

    return ssl.create_default_context(cafile=certifi.where())


class AsyncConnectedHook(Generic[SyncHook]):
    """The connection of ``conn_id`` (read with Airflow's async connection API) checked by a sync
    hook built without I/O (:meth:`_rules`), and the httpx client of :attr:`client`, closed by
    :meth:`aclose` or ``async with``."""

    #: The sync hook whose checks, URLs and messages the async hook uses.
    sync_hook: ClassVar[Any]

    def __init__(self, conn_id: str, *, timeout: tuple[float, float] = (10.0, 60.0)) -> None:
        self.conn_id = conn_id
        self._timeout = httpx.Timeout(timeout[1], connect=timeout[0])
        self._client: httpx.AsyncClient | None = None
        self._hook: SyncHook | None = None  # the connection's rules, built without I/O

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

    async def _rules(self) -> SyncHook:
        """A sync hook on the connection read asynchronously: its checks and URLs, no I/O of its own."""
        if self._hook is None:
            fields = await metadata.aget_connection(self.conn_id)
            self._hook = self.sync_hook.for_connection(fields, mask=False)
            self._connection_read(fields)
        return self._hook  # type: ignore[return-value]

    def _connection_read(self, fields: Any) -> None:
        """What a subclass takes from the connection beside the checks (e.g. its stored tokens)."""
