"""What both PostgreSQL loaders need from the driver: its ``sql`` module and an error's SQLSTATE.

The loaders take whatever connection the PostgresHook gives: psycopg 3 or psycopg2.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any


def sql_module(connection: Any) -> ModuleType:
    """``psycopg.sql`` or ``psycopg2.sql``, whichever driver made ``connection``."""
    if type(connection).__module__.startswith("psycopg2"):
        from psycopg2 import sql
    else:
        from psycopg import sql
    return sql


def sqlstate(err: BaseException) -> str:
    """The PostgreSQL error code of a psycopg 3 or psycopg2 error ("" for other errors)."""
    return str(getattr(err, "sqlstate", None) or getattr(err, "pgcode", None) or "")
