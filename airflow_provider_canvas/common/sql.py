"""What both PostgreSQL loaders need from the driver: its ``sql`` module and an error's SQLSTATE.

The loaders take whatever connection the PostgresHook gives: psycopg 3 or psycopg2.
"""

from __future__ import annotations

import importlib
from typing import Any


def sql_module(connection: Any) -> Any:
    """``psycopg.sql`` or ``psycopg2.sql``, whichever driver made ``connection``.

    Typed Any: the two modules have the same shape but no common type.
    """
    driver = "psycopg2" if type(connection).__module__.startswith("psycopg2") else "psycopg"
    return importlib.import_module(f"{driver}.sql")


def sqlstate(err: BaseException) -> str:
    """The PostgreSQL error code of a psycopg 3 or psycopg2 error ("" for other errors)."""
    return str(getattr(err, "sqlstate", None) or getattr(err, "pgcode", None) or "")
