"""What the Canvas Data 2 load has put in PostgreSQL: two small tables beside the loaded ones.

``_dap_loads`` has one row per DAP job loaded into a table (its kind, schema version, ``since``/
``until`` and how many records its files held); ``_dap_tables`` has one row per loaded table: the
schema version and columns it was made from (to tell a new version's additions from a breaking change) and its
watermark. Both are written in the same transaction as the table's data, so they never claim a
batch the table does not hold.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from airflow_provider_canvas.canvas_data.loading.schema import DapColumn, DapTableSchema
from airflow_provider_canvas.canvas_data.loading.state import DapBatch

LOADS_TABLE = "_dap_loads"
TABLES_TABLE = "_dap_tables"


def advisory_key(*parts: str) -> int:
    digest = hashlib.sha256(":".join(("airflow_provider_canvas", "dap", *parts)).encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


@dataclass(frozen=True)
class LoadedTable:
    """The ledger's view of one target table."""

    namespace: str
    source_table: str
    schema_version: int
    columns: tuple[DapColumn, ...]
    watermark: datetime | None
    job_ids: frozenset[str] = field(default_factory=frozenset)


@dataclass(frozen=True)
class BatchCounts:
    """What one batch's files held: records, and of those ``meta.action = D`` records."""

    records: int = 0
    delete_records: int = 0


class DapLedger:
    """Reads and writes the two ledger tables of one PostgreSQL schema through a psycopg cursor."""

    def __init__(self, sql: Any, schema: str) -> None:
        self.sql = sql
        self.schema = schema
        self.loads = sql.Identifier(schema, LOADS_TABLE)
        self.tables = sql.Identifier(schema, TABLES_TABLE)

    def create(self, cur: Any) -> None:
        """Create the schema and the ledger tables if missing (callers serialise with a lock)."""
        sql = self.sql
        cur.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(self.schema)))
        cur.execute(
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} (target_table text PRIMARY KEY, namespace text NOT NULL, "
                "source_table text NOT NULL, schema_version integer NOT NULL, columns jsonb NOT NULL, "
                "watermark timestamptz, updated_at timestamptz NOT NULL DEFAULT now())"
            ).format(self.tables)
        )
        cur.execute(
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} (target_table text NOT NULL, job_id text NOT NULL, "
                "kind text NOT NULL, schema_version integer NOT NULL, since timestamptz, until timestamptz, "
                "records bigint, delete_records bigint, "
                "loaded_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (target_table, job_id))"
            ).format(self.loads)
        )

    def read(self, cur: Any, target: str) -> LoadedTable | None:
        cur.execute(
            self.sql.SQL(
                "SELECT namespace, source_table, schema_version, columns::text, watermark FROM {} "
                "WHERE target_table = %s"
            ).format(self.tables),
            (target,),
        )
        row = cur.fetchone()
        if row is None:
            return None
        cur.execute(
            self.sql.SQL("SELECT job_id FROM {} WHERE target_table = %s").format(self.loads), (target,)
        )
        jobs = frozenset(r[0] for r in cur.fetchall())
        columns = tuple(DapColumn.from_dict(c) for c in json.loads(row[3]))
        return LoadedTable(row[0], row[1], int(row[2]), columns, row[4], jobs)

    def forget(self, cur: Any, target: str) -> None:
        """Drop the ledger rows of a table that is gone (dropped by hand to start again)."""
        for table in (self.tables, self.loads):
            cur.execute(self.sql.SQL("DELETE FROM {} WHERE target_table = %s").format(table), (target,))

    def record(
        self,
        cur: Any,
        target: str,
        *,
        namespace: str,
        source_table: str,
        schema: DapTableSchema,
        batches: Sequence[tuple[DapBatch, BatchCounts]],
    ) -> None:
        """The loaded batches, and the table's schema and watermark after them."""
        for batch, counts in batches:
            cur.execute(
                self.sql.SQL(
                    "INSERT INTO {} (target_table, job_id, kind, schema_version, since, until, records, "
                    "delete_records) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
                ).format(self.loads),
                (
                    target,
                    batch.job_id,
                    batch.kind,
                    batch.schema_version,
                    batch.since,
                    batch.until,
                    counts.records,
                    counts.delete_records,
                ),
            )
        cur.execute(
            self.sql.SQL(
                "INSERT INTO {} (target_table, namespace, source_table, schema_version, columns, watermark) "
                "VALUES (%s, %s, %s, %s, %s::jsonb, %s) ON CONFLICT (target_table) DO UPDATE SET "
                "namespace = EXCLUDED.namespace, source_table = EXCLUDED.source_table, "
                "schema_version = EXCLUDED.schema_version, columns = EXCLUDED.columns, "
                "watermark = EXCLUDED.watermark, updated_at = now()"
            ).format(self.tables),
            (target, namespace, source_table, schema.version, schema.columns_json(), batches[-1][0].until),
        )
