"""Merging an extract into a keyed table: COPY into a staging table, then delete and upsert by key.

The path of differentials (and of fulls into tables that cannot be replaced): rows the extract does
not mention stay, identical rows are not rewritten, readers keep reading the old rows meanwhile.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from airflow_provider_canvas.brightspace.loading.extract import ExtractCsv
from airflow_provider_canvas.brightspace.loading.sql import DELETED_COLUMN, TEXT, Sql

log = logging.getLogger(__name__)


def merge(
    sql: Sql,
    cur: Any,
    csv_in: ExtractCsv,
    table: str,
    keys: list[str],
    types: Mapping[str, str],
    missing: list[str],
    delete: bool,
    *,
    full: bool,
) -> tuple[int, int, int]:
    """Upsert the extract into ``table``; returns (rows read, rows inserted or changed, rows deleted).

    ``types`` are the table's column types (the staging table gets the same, so a bad value fails
    at the COPY, with its line). A full extract holds every row of the data set, so rows of the
    table whose key it lacks were deleted in Brightspace (differentials carry no row for a hard
    delete): they go too. ``missing`` are table columns the extract lacks: a full (which stands
    for the whole data set) empties them, as a replace does; a differential updates only the
    columns it carries, so they keep their values on the rows it updates (and are NULL on rows it adds).
    """
    header = csv_in.header
    target = sql.table(table)
    stage = sql.ident("bds_stage")
    cur.execute(
        sql.SQL("CREATE TEMP TABLE {} ({}) ON COMMIT DROP").format(stage, sql.column_defs(header, types))
    )
    rows_read = sql.copy(cur, sql.copy_statement(stage, header, types, freeze=False), csv_in)
    sql.check_keys(cur, csv_in, stage, keys)
    sql.drop_repeated_keys(cur, stage, keys)

    matches = sql.SQL(" AND ").join(sql.SQL("t.{k} = s.{k}").format(k=sql.ident(k)) for k in keys)
    rows_deleted = 0
    only_live = sql.SQL("")
    if delete and DELETED_COLUMN in header:
        is_deleted = sql.is_deleted(types.get(DELETED_COLUMN, TEXT), "s")
        cur.execute(
            sql.SQL("DELETE FROM {} AS t USING {} AS s WHERE {} AND {}").format(
                target, stage, matches, is_deleted
            )
        )
        rows_deleted = cur.rowcount
        only_live = sql.SQL(" WHERE NOT {}").format(is_deleted)
    if full:
        cur.execute(
            sql.SQL("DELETE FROM {} AS t WHERE NOT EXISTS (SELECT FROM {} AS s WHERE {})").format(
                target, stage, matches
            )
        )
        if cur.rowcount:
            log.info("%s: %d rows not in this full extract deleted from the table", csv_in.name, cur.rowcount)
        rows_deleted += cur.rowcount
    emptied = missing if full else []
    upserted = _upsert(sql, cur, target, stage, header, keys, types, emptied, only_live)
    return rows_read, upserted, rows_deleted


def _upsert(
    sql: Sql,
    cur: Any,
    target: Any,
    stage: Any,
    header: list[str],
    keys: list[str],
    types: Mapping[str, str],
    missing: list[str],
    where: Any,
) -> int:
    values = [c for c in header if c not in keys]
    insert = sql.SQL("INSERT INTO {} AS t ({}) SELECT {} FROM {} AS s{} ON CONFLICT ({})").format(
        target, sql.idents(header), sql.idents(header, "s"), stage, where, sql.idents(keys)
    )
    if not values and not missing:
        cur.execute(insert + sql.SQL(" DO NOTHING"))
        return int(cur.rowcount)
    new_values = [sql.SQL("EXCLUDED.{}").format(sql.ident(c)) for c in values]
    new_values += [sql.SQL("NULL::{}").format(sql.SQL(types.get(c, TEXT))) for c in missing]
    updated = values + missing
    assignments = sql.SQL(", ").join(
        sql.SQL("{} = {}").format(sql.ident(c), v) for c, v in zip(updated, new_values, strict=True)
    )
    # The WHERE keeps a re-run from rewriting identical rows (no dead tuples, no "changes").
    changed = sql.SQL("ROW({}) IS DISTINCT FROM ROW({})").format(
        sql.idents(updated, "t"), sql.SQL(", ").join(new_values)
    )
    cur.execute(insert + sql.SQL(" DO UPDATE SET {} WHERE {}").format(assignments, changed))
    return int(cur.rowcount)
