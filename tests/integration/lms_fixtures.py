"""Constants and helpers shared by the integration tests."""

from __future__ import annotations

from typing import Any

from airflow.models import Connection

CLIENT_ID = "10000000000042"
CLIENT_SECRET = "client-secret-value-Zq8"
#: The local PostgreSQL the Brightspace load tests write to (each in a schema of its own).
DSN = "host=127.0.0.1 port=5432 user=postgres dbname=test"
#: Columns of the small Users extracts the Brightspace tests build.
COLUMNS = ["UserId", "UserName", "OrgDefinedId", "IsDeleted"]


def stored_extra(conn_id: str) -> dict[str, Any]:
    """The connection's extra as the metadata DB holds it now."""
    return Connection.get_connection_from_secrets(conn_id).extra_dejson


def user(i: int, name: str | None = None, deleted: bool = False, **more: str) -> dict[str, str]:
    """One row of a Users extract with :data:`COLUMNS`."""
    return {
        "UserId": str(i),
        "UserName": name or f"user{i}",
        "OrgDefinedId": f"S{i:05d}",
        "IsDeleted": str(deleted),
        **more,
    }
