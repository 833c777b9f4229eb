"""The ledger table: which extract reached which table, so a load is never applied twice or backwards."""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Any

from airflow_provider_canvas.brightspace.loading.sql import Sql

LEDGER_TABLE = "_bds_extract_loads"


def advisory_key(*parts: str) -> int:
    digest = hashlib.sha256(":".join(("airflow_provider_canvas", "bds", *parts)).encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


class Ledger:
    """``LEDGER_TABLE`` in the loader's schema, read and written inside each load's transaction."""

    def __init__(self, sql: Sql) -> None:
        self.sql = sql
        self.ready = False

    def ensure(self, conn: Any) -> None:
        """Create the schema and the ledger if missing (own short transaction, serialised)."""
        if self.ready:
            return
        sql = self.sql
        conn.autocommit = False
        try:
            with conn.cursor() as cur:
                # Concurrent CREATE ... IF NOT EXISTS can still collide on the catalog: serialise.
                cur.execute("SELECT pg_advisory_xact_lock(%s)", (advisory_key(sql.schema),))
                cur.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.ident(sql.schema)))
                cur.execute(
                    sql.SQL(
                        "CREATE TABLE IF NOT EXISTS {} ("
                        "target_table text NOT NULL, extract_id text NOT NULL, bds_type text, "
                        "created_at timestamptz, rows_read bigint, rows_upserted bigint, "
                        "rows_deleted bigint, loaded_at timestamptz NOT NULL DEFAULT now(), "
                        "PRIMARY KEY (target_table, extract_id))"
                    ).format(sql.table(LEDGER_TABLE))
                )
            conn.commit()
        except BaseException:
            conn.rollback()
            raise
        self.ready = True

    def newest(self, cur: Any, table: str) -> tuple[str, datetime | None] | None:
        cur.execute(
            self.sql.SQL(
                "SELECT extract_id, created_at FROM {} WHERE target_table = %s "
                "ORDER BY created_at DESC NULLS LAST, loaded_at DESC LIMIT 1"
            ).format(self.sql.table(LEDGER_TABLE)),
            (table,),
        )
        row = cur.fetchone()
        return (row[0], row[1]) if row else None

    def lock_and_check(
        self, cur: Any, table: str, extract_id: str, created_at: datetime | None
    ) -> str | None:
        """Serialise loads into ``table``; why this extract must be skipped, or None."""
        # Two loads into one table must not interleave their ledger checks and writes.
        cur.execute("SELECT pg_advisory_xact_lock(%s)", (advisory_key(self.sql.schema, table),))
        cur.execute(
            self.sql.SQL(
                "SELECT extract_id, created_at >= %s FROM {} WHERE target_table = %s "
                "AND (extract_id = %s OR created_at > %s) ORDER BY extract_id = %s DESC LIMIT 1"
            ).format(self.sql.table(LEDGER_TABLE)),
            (created_at, table, extract_id, created_at, extract_id),
        )
        if (row := cur.fetchone()) is None:
            return None
        return "already loaded" if row[0] == extract_id else f"older than extract {row[0]!r}, loaded already"

    def record(self, cur: Any, table: str, extract_id: str, bds_type: str | None, created_at: datetime | None,
               counts: tuple[int, int, int]) -> None:  # fmt: skip
        cur.execute(
            self.sql.SQL(
                "INSERT INTO {} (target_table, extract_id, bds_type, created_at, rows_read, rows_upserted, "
                "rows_deleted) VALUES (%s, %s, %s, %s, %s, %s, %s)"
            ).format(self.sql.table(LEDGER_TABLE)),
            (table, extract_id, bds_type, created_at, *counts),
        )
