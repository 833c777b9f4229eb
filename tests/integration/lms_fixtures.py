"""Constants and helpers shared by the integration tests."""

from __future__ import annotations

from typing import Any

from airflow.models import Connection

CLIENT_ID = "10000000000042"
CLIENT_SECRET = "client-secret-value-Zq8"


def stored_extra(conn_id: str) -> dict[str, Any]:
    """The connection's extra as the metadata DB holds it now."""
    return Connection.get_connection_from_secrets(conn_id).extra_dejson
