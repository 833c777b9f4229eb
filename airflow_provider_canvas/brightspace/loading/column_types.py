"""Typed columns: errors for values that do not fit, and the opt-in retyping of text tables."""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any

from airflow_provider_canvas.brightspace.loading.sql import TEXT, Sql
from airflow_provider_canvas.common.sql import sqlstate
from airflow_provider_canvas.exceptions import ExtractFormatError, LmsConfigurationError

log = logging.getLogger(__name__)

# The server's CONTEXT of a COPY error: 'COPY users, line 3, column OrgRoleId: "abc"' (a type error)
# or 'COPY users, line 3: "<the whole row>"' (a malformed row).
_LINE = re.compile(r"line (\d+)")
_COLUMN = re.compile(r"line \d+, column (.+?)(?::|$)")
_MAX_VALUE_CHARS = 60


def copy_error(
    err: BaseException, label: str, types: Mapping[str, str], data_set: str | None
) -> ExtractFormatError:
    """An ``ExtractFormatError`` for a data exception (SQLSTATE 22...) raised by a COPY of an extract.

    A value that does not fit its column's type names the row, the CSV line, the column, the value
    and the type, and says what to do. A malformed row names only its line: the server quotes the
    whole row, which is not repeated here.
    """
    diag = getattr(err, "diag", None)
    context = getattr(diag, "context", None) or ""
    primary = getattr(diag, "message_primary", None) or str(err).splitlines()[0]
    line = _LINE.search(context)
    column = _COLUMN.search(context)
    if line and column and column.group(1) in types and types[column.group(1)] != TEXT:
        row, name = int(line.group(1)), column.group(1)
        value = _quoted_value(primary)
        kind = types[name]
        fix = f"text_columns={{{(data_set or '<data set>')!r}: [{name!r}]}}"
        widen = (
            " or widen the column (ALTER TABLE ... TYPE bigint/numeric)," if sqlstate(err) == "22003" else ""
        )
        return ExtractFormatError(
            f"{label}: row {row} (CSV line {row + 1}), column {name!r}: value {value} does not fit {kind} "
            f"({primary.split(':')[0]}); the table is unchanged. Fix the extract,{widen} or load the column "
            f"as text: BrightspaceDataSetsToPostgresOperator({fix}) (['*'] for every column)"
        )
    where = f" at CSV line {int(line.group(1)) + 1}" if line else ""
    return ExtractFormatError(f"{label}: the CSV does not match its header{where}: {_without_value(primary)}")


def _quoted_value(primary: str) -> str:
    match = re.search(r': "(.*)"$', primary, re.DOTALL)
    if not match:
        return "(not shown)"
    value = match.group(1)
    return repr(value if len(value) <= _MAX_VALUE_CHARS else value[:_MAX_VALUE_CHARS] + "...")


def _without_value(primary: str) -> str:
    return re.sub(r': ".*"$', "", primary, flags=re.DOTALL)


def retype_text_columns(
    sql: Sql, cur: Any, table: str, existing: Mapping[str, str], types: Mapping[str, str]
) -> list[str]:
    """Convert the table's text columns that the catalogue types (one ALTER TABLE, this transaction).

    Empty strings become NULL. A value that does not convert fails the whole load, the table
    unchanged, with the column named. Returns the converted columns.
    """
    todo = {c: t for c, t in types.items() if existing.get(c) == TEXT and t != TEXT}
    if not todo:
        return []
    target = sql.table(table)
    changes = sql.SQL(", ").join(
        sql.SQL("ALTER COLUMN {c} TYPE {t} USING nullif({c}, '')::{t}").format(c=sql.ident(c), t=sql.SQL(t))
        for c, t in todo.items()
    )
    cur.execute("SAVEPOINT bds_retype")
    try:
        cur.execute(sql.SQL("ALTER TABLE {} ").format(target) + changes)
    except Exception as err:
        if not sqlstate(err).startswith("22"):
            raise
        cur.execute("ROLLBACK TO SAVEPOINT bds_retype")
        column = _failing_column(sql, cur, target, todo)
        # None: each cast went through on its own, only all of them together did not; name them all.
        if column is not None:
            what, keep = f"column {column!r} holds a value that is not {todo[column]}", [column]
        else:
            what, keep = f"a value in {sorted(todo)} does not convert", sorted(todo)
        raise LmsConfigurationError(
            f"{sql.schema}.{table}: {what} ({str(err).splitlines()[0]}); the table is unchanged. Fix those "
            f"rows, or keep the column as text with text_columns={{<data set>: {keep!r}}}, or leave "
            "migrate_text_columns off"
        ) from None
    log.info("%s.%s: columns converted from text to their documented types: %s", sql.schema, table, todo)
    return list(todo)


def _failing_column(sql: Sql, cur: Any, target: Any, todo: Mapping[str, str]) -> str | None:
    """Which column's cast fails (only asked after the ALTER failed, which does not say)."""
    for column, kind in todo.items():
        cur.execute("SAVEPOINT bds_probe")
        try:
            cur.execute(
                sql.SQL("SELECT count(nullif({c}, '')::{t}) FROM {table}").format(
                    c=sql.ident(column), t=sql.SQL(kind), table=target
                )
            )
        except Exception as err:
            cur.execute("ROLLBACK TO SAVEPOINT bds_probe")
            if sqlstate(err).startswith("22"):
                return column
            raise
    return None
