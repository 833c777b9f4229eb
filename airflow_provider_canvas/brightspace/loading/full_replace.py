"""Whole-table loads: the first extract into a new table, and a newer full replacing a keyed table's rows.

Both COPY straight into the target (``FREEZE``: its rows need no later hint-bit writes) and build the
primary key once afterwards, instead of a staging table and an upsert that probes the key's index
row by row (61% of a 1M-row newer full, benchmarks/README 3b).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from airflow_provider_canvas.brightspace.loading.extract import ExtractCsv
from airflow_provider_canvas.brightspace.loading.sql import DELETED_COLUMN, TEXT, Sql
from airflow_provider_canvas.common.sql import sqlstate

log = logging.getLogger(__name__)

# TRUNCATE refused: a foreign key of another table points here (0A000), or no TRUNCATE privilege (42501).
_CANNOT_TRUNCATE = ("0A000", "42501")


def fill_new_table(
    sql: Sql,
    cur: Any,
    csv_in: ExtractCsv,
    table: str,
    keys: list[str],
    types: Mapping[str, str],
    delete: bool,
) -> tuple[int, int]:
    """First load: create the table with its types, COPY into it, key it. Returns (rows read, rows stored)."""
    target = sql.table(table)
    header = csv_in.header
    cur.execute(sql.SQL("CREATE TABLE {} ({})").format(target, sql.column_defs(header, types)))
    rows_read, rows = _copy_and_key(sql, cur, csv_in, target, keys, types, delete, None)
    return rows_read, rows


def replace_rows(
    sql: Sql,
    cur: Any,
    csv_in: ExtractCsv,
    table: str,
    keys: list[str],
    types: Mapping[str, str],
    delete: bool,
) -> tuple[int, int, int] | None:
    """A newer full into a keyed table: TRUNCATE, COPY, rebuild the key, in the load's transaction.

    The table keeps its identity: views, grants, comments, triggers and other indexes stay (the
    other indexes are filled during the COPY). Until the commit, readers of the table wait (TRUNCATE
    takes an ACCESS EXCLUSIVE lock) rather than see a half-loaded table. Returns (rows read, rows
    stored, rows of the table before that it no longer holds), or None when the table cannot be
    replaced this way (no primary key on ``keys``, a foreign key pointing at it, no TRUNCATE
    privilege): the caller then merges.
    """
    target = sql.table(table)
    key = sql.primary_key(cur, table)
    if key is None or key[1] != keys:
        log.info(
            "%s.%s has no primary key on %s: merging the full instead of replacing", sql.schema, table, keys
        )
        return None
    # The keys the table holds now, to count afterwards which of them the full no longer has. Both
    # reads go through the primary key's index (index-only: COPY FREEZE set the visibility map), in
    # key order, so the count is a merge anti-join: ~40% cheaper than the planner's seq scan + hash.
    cur.execute("SET LOCAL enable_seqscan = off")
    cur.execute(
        sql.SQL("CREATE TEMP TABLE bds_old_keys ON COMMIT DROP AS SELECT {} FROM {}").format(
            sql.idents(keys), target
        )
    )
    cur.execute("RESET enable_seqscan")
    cur.execute("SAVEPOINT bds_replace")
    try:
        cur.execute(sql.SQL("TRUNCATE {}").format(target))
    except Exception as err:
        if sqlstate(err) not in _CANNOT_TRUNCATE:
            raise
        cur.execute("ROLLBACK TO SAVEPOINT bds_replace")
        log.info("%s.%s cannot be truncated (%s): merging the full instead", sql.schema, table, err)
        cur.execute("DROP TABLE bds_old_keys")
        return None
    cur.execute("RELEASE SAVEPOINT bds_replace")
    cur.execute(sql.SQL("ALTER TABLE {} DROP CONSTRAINT {}").format(target, sql.ident(key[0])))
    rows_read, rows = _copy_and_key(sql, cur, csv_in, target, keys, types, delete, key[0])
    matches = sql.SQL(" AND ").join(sql.SQL("t.{k} = o.{k}").format(k=sql.ident(k)) for k in keys)
    cur.execute("SET LOCAL enable_seqscan = off")
    cur.execute("SET LOCAL enable_hashjoin = off")
    cur.execute(
        sql.SQL(
            "SELECT count(*) FROM bds_old_keys AS o WHERE NOT EXISTS (SELECT FROM {} AS t WHERE {})"
        ).format(target, matches)
    )
    vanished = int(cur.fetchone()[0])
    cur.execute("RESET enable_seqscan")
    cur.execute("RESET enable_hashjoin")
    cur.execute("DROP TABLE bds_old_keys")
    if vanished:
        log.info("%s: %d rows not in this full extract are gone from the table", csv_in.name, vanished)
    return rows_read, rows, vanished


def _copy_and_key(
    sql: Sql,
    cur: Any,
    csv_in: ExtractCsv,
    target: Any,
    keys: list[str],
    types: Mapping[str, str],
    delete: bool,
    key_name: str | None,
) -> tuple[int, int]:
    """COPY FREEZE into an empty table of this transaction, add its key, drop deleted rows."""
    header = csv_in.header
    rows_read = sql.copy(cur, sql.copy_statement(target, header, types, freeze=True), csv_in)
    rows = rows_read - sql.add_key(cur, csv_in, target, keys, key_name)
    # After the last-row-wins step, as in a merge: a key whose last row is deleted is gone.
    if delete and DELETED_COLUMN in header:
        is_deleted = sql.is_deleted(types.get(DELETED_COLUMN, TEXT))
        cur.execute(sql.SQL("DELETE FROM {} WHERE {}").format(target, is_deleted))
        rows -= cur.rowcount
    return rows_read, rows
