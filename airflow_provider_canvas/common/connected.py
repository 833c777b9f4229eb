"""What every hook of this provider does with its connection: find it, check it, mask its secret."""

from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING, Any, ClassVar

from airflow_provider_canvas.common import airflow_access as metadata
from airflow_provider_canvas.exceptions import LmsConfigurationError

if TYPE_CHECKING:
    from typing_extensions import Self


class ConnectedHook:
    """The connection side of a hook: mixed in before ``BaseHook`` by :class:`LmsHook` and
    :class:`CanvasDataHook`, which add what to check in :meth:`_check_connection`."""

    conn_name_attr: ClassVar[str]
    conn_type: ClassVar[str]
    #: What the login and password fields must hold, for the message when one is empty.
    credentials_hint: ClassVar[str] = "the client ID as login and the client secret as password"

    def __init__(
        self,
        conn_id: str | None = None,
        *,
        timeout: tuple[float, float] = (10.0, 60.0),
        max_retries: int = 5,
        backoff_seconds: float = 1.0,
        max_backoff_seconds: float = 60.0,
        **conn_id_by_name: str,
    ) -> None:
        super().__init__()
        # Airflow builds a hook as ``Hook(canvas_conn_id=...)`` (``conn_name_attr``), e.g. for the
        # connection form's Test button.
        named = conn_id_by_name.pop(self.conn_name_attr, None)
        if conn_id_by_name:
            raise TypeError(f"{type(self).__name__} got unexpected arguments {sorted(conn_id_by_name)}")
        self.conn_id = conn_id or named or getattr(self, "default_conn_name")  # noqa: B009
        #: How messages name the connection. The Test button runs on a copy under a random id,
        #: which would mean nothing to the person reading the message.
        self.conn_label = f"connection {self.conn_id!r}"
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff_seconds = backoff_seconds
        self.max_backoff_seconds = max_backoff_seconds

    def __repr__(self) -> str:
        return f"{type(self).__name__}(conn_id={self.conn_id!r})"

    @classmethod
    def for_connection(cls, connection: Any, *, mask: bool = True, **options: Any) -> Self:
        """A hook on a connection it does not read itself: the CLI's connection to be, the triggerer's.

        The connection is checked as a stored one is. ``mask=False``: the caller has registered
        its secrets with the masker already (Airflow's async connection API does). ``options``
        go to the constructor.
        """
        hook = cls(connection.conn_id, **options)
        hook._check(connection)
        if mask:
            _mask_password(connection)
        hook.__dict__["connection"] = connection
        return hook

    @cached_property
    def connection(self) -> Any:
        """The stored connection, checked: right type, a client ID and secret, what the hook adds."""
        conn = metadata.get_connection(self.conn_id)
        self._check(conn)
        _mask_password(conn)
        return conn

    def _check(self, conn: Any) -> None:
        if conn.conn_type != self.conn_type:
            raise LmsConfigurationError(
                f"{self.conn_label} has type {conn.conn_type!r}; "
                f"{type(self).__name__} needs a connection of type {self.conn_type!r}"
            )
        if not conn.login or not conn.password:
            raise LmsConfigurationError(f"{self.conn_label} needs {self.credentials_hint}")
        self._check_connection(conn)

    def _check_connection(self, conn: Any) -> None:
        """Refuse what a person mistyped before any request leaves; say what to type instead."""


def _mask_password(conn: Any) -> None:
    from airflow.sdk.log import mask_secret

    mask_secret(conn.password)
