"""The connection fields every OAuth connection (Canvas, Brightspace) shares, parsed and checked once."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from airflow_provider_canvas.common.connection import parse_scopes
from airflow_provider_canvas.exceptions import LmsConfigurationError
from airflow_provider_canvas.tokens.oauth_client import OAuthSettings


@dataclass(frozen=True)
class LmsSettings(OAuthSettings):
    """A ``canvas`` or ``brightspace`` connection as the hooks use it. Holds no token."""

    platform: ClassVar[str]
    #: What the host field should look like, for messages.
    example_host: ClassVar[str]

    #: The space-separated ``scopes`` field (None: not set).
    scopes: str | None
    expiry_buffer_seconds: int
    lock_conn_id: str | None
    redirect_uri: str | None
    #: The connection's extra, legacy key names folded (see ``plain_extras``).
    extras: Mapping[str, Any] = field(repr=False)

    @classmethod
    def common_fields(cls, conn: Any, extras: Mapping[str, Any], conn_label: str) -> dict[str, Any]:
        """The shared fields (the scopes checked); what a product's ``parse`` starts from."""
        base_url = conn.host.strip().rstrip("/") if isinstance(conn.host, str) else conn.host
        scopes = extras.get("scopes")
        if scopes:
            try:
                parse_scopes(cls.platform, [scopes])
            except LmsConfigurationError as err:
                raise LmsConfigurationError(f"the scopes of {conn_label}: {err}") from None
        return {
            "base_url": base_url,
            "client_id": conn.login,
            "client_secret": conn.password,
            "scopes": scopes,
            "expiry_buffer_seconds": int(extras.get("expiry_buffer_seconds", 300)),
            "lock_conn_id": extras.get("lock_conn_id"),
            "redirect_uri": extras.get("redirect_uri"),
            "extras": extras,
        }
