"""Loading a Brightspace extract into PostgreSQL: one transaction per extract, typed columns, a ledger.

The steps live beside this module, one job each: :mod:`.catalogue` (documented types and keys),
:mod:`.full_replace` (first loads and newer fulls), :mod:`.upsert` (differentials), :mod:`.column_types`
(type errors, retyping text tables), :mod:`.ledger`, :mod:`.sql` (shared statement pieces).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import IO, Any, Literal

from airflow_provider_canvas.brightspace.loading.catalogue import DEFAULT_KEY_COLUMNS, key_columns_for
from airflow_provider_canvas.brightspace.loading.column_types import copy_error, retype_text_columns
from airflow_provider_canvas.brightspace.loading.extract import ExtractCsv, open_extract_csv
from airflow_provider_canvas.brightspace.loading.full_replace import fill_new_table, replace_rows
from airflow_provider_canvas.brightspace.loading.ledger import LEDGER_TABLE, Ledger
from airflow_provider_canvas.brightspace.loading.sql import TEXT, Sql
from airflow_provider_canvas.brightspace.loading.upsert import merge
from airflow_provider_canvas.common.sql import sqlstate
from airflow_provider_canvas.exceptions import ExtractFormatError, LmsConfigurationError

__all__ = ["DEFAULT_KEY_COLUMNS", "LEDGER_TABLE", "LoadResult", "PostgresExtractLoader", "key_columns_for"]

log = logging.getLogger(__name__)

DeletedRows = Literal["delete", "flag"]
FullExtracts = Literal["replace", "merge"]


@dataclass(frozen=True)
class LoadResult:
    """What one extract did to one table. Never holds row data.

    ``method``: ``create`` (first load), ``replace`` (a newer full: every row rewritten, so
    ``rows_upserted`` is the rows the table now holds) or ``merge`` (``rows_upserted`` counts rows
    inserted or changed; identical rows are not rewritten). ``rows_deleted``: rows the table held
    before that it no longer holds (deleted by ``IsDeleted`` or, for a full, missing from it).
    """

    table: str
    extract_id: str
    skipped: str | None = None  # why nothing was done (already loaded, older than loaded data)
    rows_read: int = 0
    rows_upserted: int = 0
    rows_deleted: int = 0
    added_columns: list[str] = field(default_factory=list)
    missing_columns: list[str] = field(default_factory=list)
    method: str | None = None
    retyped_columns: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class PostgresExtractLoader:
    """Loads extracts into tables of one schema through a psycopg (3, or 2) connection.

    Columns get the types passed as ``column_types`` when they are created (the operator passes the
    :mod:`.catalogue`'s documented types); others are ``text``. Each load is one transaction: the
    table, its new columns and the ledger row commit together or not at all. The ledger table
    (``LEDGER_TABLE`` in the same schema) records which extract reached which table, so loading the
    same extract again does nothing, and an extract older than the newest one loaded is skipped
    rather than rolling rows back.
    """

    def __init__(self, connection: Any, schema: str, *, progress_every_chars: int = 64 * 2**20) -> None:
        self.conn = connection
        self.schema = schema
        self.progress_every_chars = progress_every_chars
        self.sql = Sql(connection, schema)
        self.ledger = Ledger(self.sql)

    def ensure_ledger(self) -> None:
        """Create the schema and the ledger if missing (own short transaction, serialised)."""
        self.ledger.ensure(self.conn)

    def newest_loaded(self, table: str) -> tuple[str, datetime | None] | None:
        """(extract_id, created_at) of the newest extract loaded into ``table``, if any."""
        self.ensure_ledger()
        with self.conn.cursor() as cur:
            newest = self.ledger.newest(cur, table)
        self.conn.rollback()  # end the read-only transaction: no idle-in-transaction session
        return newest

    def load(
        self,
        source: str | os.PathLike[str] | IO[bytes],
        table: str,
        key_columns: Sequence[str],
        *,
        extract_id: str | None = None,
        bds_type: str | None = None,
        created_at: datetime | None = None,
        deleted_rows: DeletedRows = "delete",
        name: str | None = None,
        column_types: Mapping[str, str] | None = None,
        migrate_text_columns: bool = False,
        full_extracts: FullExtracts = "replace",
        data_set: str | None = None,
    ) -> LoadResult:
        """Load one extract ZIP into ``schema.table`` by ``key_columns``, in one transaction.

        Columns are matched by header name. Header columns the table lacks are added (Brightspace
        minor versions append columns) with their ``column_types`` type; table columns the header
        lacks stay, with a warning: a full leaves them NULL, a differential leaves them unchanged on
        the rows it updates (an upsert changes only the columns it carries). Existing columns keep their
        type: a table made by an earlier version (all ``text``) keeps loading as text unless
        ``migrate_text_columns`` converts its columns to ``column_types`` in this load's transaction.
        Rows whose ``IsDeleted`` is true are deleted (``deleted_rows="delete"``) or stored with the
        flag (``"flag"``). A full extract (``bds_type="Full"``) replaces the table's rows
        (``full_extracts="replace"``: TRUNCATE, COPY, rebuild the key; readers wait meanwhile) or is
        merged (``"merge"``: readers keep the old rows until the commit; slower); either way rows
        whose key it lacks are gone. If the key repeats inside the extract, the last row wins. A
        value that does not fit its column fails the load with its row and column named. On any
        error nothing is changed.
        """
        if deleted_rows not in ("delete", "flag"):
            raise LmsConfigurationError(f"deleted_rows must be 'delete' or 'flag', got {deleted_rows!r}")
        if full_extracts not in ("replace", "merge"):
            raise LmsConfigurationError(f"full_extracts must be 'replace' or 'merge', got {full_extracts!r}")
        if not key_columns:
            raise LmsConfigurationError(f"key_columns for table {table!r} must not be empty")
        if not extract_id and not hasattr(source, "read"):
            extract_id = os.path.basename(os.fspath(source))
        if not extract_id:
            raise LmsConfigurationError("extract_id is required when loading from a file object")
        label = name or extract_id
        wanted = dict(column_types or {})
        self.ensure_ledger()
        with open_extract_csv(source, name=label, progress_every_chars=self.progress_every_chars) as csv_in:
            missing_keys = [key for key in key_columns if key not in csv_in.header]
            if missing_keys:
                raise ExtractFormatError(
                    f"{label}: the CSV header does not match table {table!r}: key column(s) {missing_keys} "
                    f"missing; the header has {csv_in.header[:20]}"
                )
            self.conn.autocommit = False
            types: dict[str, str] = {}
            try:
                with self.conn.cursor() as cur:
                    skipped = self.ledger.lock_and_check(cur, table, extract_id, created_at)
                    if skipped:
                        self.conn.rollback()
                        log.info("%s -> %s.%s skipped: %s", label, self.schema, table, skipped)
                        return LoadResult(table, extract_id, skipped=skipped)
                    # Extracts are UTC: a timestamp without an offset is UTC, whatever the server's zone.
                    cur.execute("SET LOCAL TimeZone = 'UTC'")
                    result, types = self._load(
                        cur, csv_in, table, extract_id, list(key_columns), wanted, migrate_text_columns,
                        deleted_rows == "delete", full_extracts if bds_type == "Full" else None,
                    )  # fmt: skip
                    self.ledger.record(
                        cur, table, extract_id, bds_type, created_at,
                        (result.rows_read, result.rows_upserted, result.rows_deleted),
                    )  # fmt: skip
                self.conn.commit()
            except BaseException as err:
                self.conn.rollback()
                raise self._explain(
                    err, csv_in, label, table, key_columns, types or wanted, data_set
                ) from None
        log.info(
            "%s -> %s.%s (%s): %d rows read, %d upserted, %d deleted%s",
            label,
            self.schema,
            table,
            result.method,
            result.rows_read,
            result.rows_upserted,
            result.rows_deleted,
            f", columns added {result.added_columns}" if result.added_columns else "",
        )
        return result

    def _load(
        self,
        cur: Any,
        csv_in: ExtractCsv,
        table: str,
        extract_id: str,
        keys: list[str],
        wanted: dict[str, str],
        migrate: bool,
        delete: bool,
        full: FullExtracts | None,
    ) -> tuple[LoadResult, dict[str, str]]:
        sql = self.sql
        header = csv_in.header
        existing = sql.columns(cur, table)
        if not existing:
            types = {c: wanted.get(c, TEXT) for c in header}
            rows_read, rows = fill_new_table(sql, cur, csv_in, table, keys, types, delete)
            return LoadResult(
                table, extract_id, rows_read=rows_read, rows_upserted=rows, method="create"
            ), types
        retyped = retype_text_columns(sql, cur, table, existing, wanted) if migrate else []
        if retyped:
            existing = sql.columns(cur, table)
        elif any(existing.get(c) == TEXT and t != TEXT for c, t in wanted.items()):
            log.info(
                "%s.%s has text columns that are documented as typed; they stay text "
                "(migrate_text_columns=True converts them once)",
                self.schema,
                table,
            )
        added = [c for c in header if c not in existing]
        target = sql.table(table)
        for column in added:
            kind = wanted.get(column, TEXT)
            cur.execute(
                sql.SQL("ALTER TABLE {} ADD COLUMN {} {}").format(target, sql.ident(column), sql.SQL(kind))
            )
            existing[column] = kind
        if added:
            log.info("%s.%s: added columns %s (new in this extract)", self.schema, table, added)
        missing = [c for c in existing if c not in header]
        if missing:
            log.warning(
                "%s.%s: columns %s are not in extract %s; they stay in the table, %s",
                self.schema,
                table,
                missing,
                csv_in.name,
                "NULL for its rows" if full else "unchanged on the rows it updates, NULL on rows it adds",
            )
        counts = replace_rows(sql, cur, csv_in, table, keys, existing, delete) if full == "replace" else None
        method = "replace"
        if counts is None:
            counts = merge(sql, cur, csv_in, table, keys, existing, missing, delete, full=full is not None)
            method = "merge"
        rows_read, rows_upserted, rows_deleted = counts
        result = LoadResult(
            table,
            extract_id,
            rows_read=rows_read,
            rows_upserted=rows_upserted,
            rows_deleted=rows_deleted,
            added_columns=added,
            missing_columns=missing,
            method=method,
            retyped_columns=retyped,
        )
        return result, existing

    def _explain(
        self,
        err: BaseException,
        csv_in: ExtractCsv,
        label: str,
        table: str,
        keys: Sequence[str],
        types: Mapping[str, str],
        data_set: str | None,
    ) -> BaseException:
        """The error to raise for a failed (rolled back) load: the ZIP's own, a clear one, or ``err``."""
        if csv_in.error is not None and err is not csv_in.error:
            return csv_in.error
        if sqlstate(err).startswith("22"):  # data exception: a malformed row, a value of the wrong type
            return copy_error(err, label, types, data_set)
        if sqlstate(err) == "42P10":
            return LmsConfigurationError(
                f"table {self.schema}.{table} has no primary key or unique index on "
                f"{list(keys)}: create it with that key, or pass the key columns it has"
            )
        return err
