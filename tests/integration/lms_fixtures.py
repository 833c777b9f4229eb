"""Constants and helpers shared by the integration tests."""

from __future__ import annotations

from typing import Any

from airflow.models import Connection

from airflow_provider_canvas.testing.postgres import TEST_DATABASE, configured_server

CLIENT_ID = "10000000000042"
CLIENT_SECRET = "client-secret-value-Zq8"
#: Columns of the small Users extracts the Brightspace tests build.
COLUMNS = ["UserId", "UserName", "OrgDefinedId", "IsDeleted"]


def dsn() -> str:
    """The database the Brightspace load tests write to (each in a schema of its own), on the session's
    PostgreSQL (tests/conftest.py chose it: the machine's or an embedded one)."""
    return configured_server().url(TEST_DATABASE)


def table_fingerprint(db: Any, schema: str, table: str, ledger: str) -> tuple:
    """Columns, row count and content digest of a table and its ledger's row count: equal before and
    after a load proves the load changed nothing."""
    columns = db.execute(
        "SELECT array_agg(column_name::text ORDER BY ordinal_position) FROM information_schema.columns "
        "WHERE table_schema = %s AND table_name = %s",
        (schema, table),
    ).fetchone()[0]
    digest = db.execute(
        f'SELECT count(*), md5(string_agg(t::text, \'|\' ORDER BY t::text)) FROM "{schema}"."{table}" t'
    ).fetchone()
    loaded = db.execute(f'SELECT count(*) FROM "{schema}"."{ledger}"').fetchone()[0]
    return columns, digest, loaded


def postgres_connection_fields() -> dict[str, Any]:
    """``conn_type``, host, port, login and schema of a ``postgres`` connection to that database."""
    return configured_server().connection_fields(TEST_DATABASE)


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
