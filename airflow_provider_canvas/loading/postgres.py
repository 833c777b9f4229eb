"""Loading a Brightspace extract into PostgreSQL: COPY into a staging table, then one upsert transaction."""

from __future__ import annotations

import hashlib
import logging
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import IO, Any, Literal

from airflow_provider_canvas.exceptions import LmsConfigurationError
from airflow_provider_canvas.loading.extract import ExtractCsv, ExtractFormatError, open_extract_csv

log = logging.getLogger(__name__)

#: Key columns of common Brightspace Data Sets. Others must be given per data set.
DEFAULT_KEY_COLUMNS: dict[str, list[str]] = {
    "Users": ["UserId"],
    "Org Units": ["OrgUnitId"],
    "Organizational Units": ["OrgUnitId"],
    "User Enrollments": ["OrgUnitId", "UserId"],
    "Role Details": ["RoleId"],
    "Grade Objects": ["GradeObjectId"],
    "Grade Results": ["OrgUnitId", "GradeObjectId", "UserId"],
    "Content Objects": ["ContentObjectId"],
    "Content User Progress": ["ContentObjectId", "UserId"],
    "Quiz Attempts": ["AttemptId"],
    "Assignment Submissions": ["SubmissionId", "UserId", "FileId"],
    "Course Access": ["OrgUnitId", "UserId", "DayAccessed"],
}
LEDGER_TABLE = "_bds_extract_loads"
DELETED_COLUMN = "IsDeleted"
_DELETED_VALUES = ("true", "1", "t", "yes")
_COPY_CHUNK_CHARS = 2**17
_LINE = re.compile(r"line (\d+)")

DeletedRows = Literal["delete", "flag"]


@dataclass(frozen=True)
class LoadResult:
    """What one extract did to one table. Never holds row data."""

    table: str
    extract_id: str
    skipped: str | None = None  # why nothing was done (already loaded, older than loaded data)
    rows_read: int = 0
    rows_upserted: int = 0
    rows_deleted: int = 0
    added_columns: list[str] = field(default_factory=list)
    missing_columns: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def key_columns_for(data_set: str, overrides: Mapping[str, Sequence[str]] | None = None) -> list[str]:
    """The upsert key of a data set: the operator's mapping first, then :data:`DEFAULT_KEY_COLUMNS`."""
    keys = (overrides or {}).get(data_set) or DEFAULT_KEY_COLUMNS.get(data_set)
    if not keys:
        raise LmsConfigurationError(
            f"no key columns known for data set {data_set!r}: pass key_columns={{{data_set!r}: [...]}} "
            "with the columns that identify a row (see the data set's documentation)"
        )
    return list(keys)


def _advisory_key(*parts: str) -> int:
    digest = hashlib.sha256(":".join(("airflow_provider_canvas", "bds", *parts)).encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


class PostgresExtractLoader:
    """Upserts extracts into tables of one schema through a psycopg (3, or 2) connection.

    Every column is ``text`` (Brightspace sends every value as a string; type it downstream).
    Each load is one transaction: the table, its new columns and the ledger row commit together
    or not at all. The ledger table (``LEDGER_TABLE`` in the same schema) records which extract
    reached which table, so loading the same extract again does nothing, and an extract older
    than the newest one loaded is skipped rather than rolling rows back.
    """

    def __init__(self, connection: Any, schema: str, *, progress_every_chars: int = 64 * 2**20) -> None:
        self.conn = connection
        self.schema = schema
        self.progress_every_chars = progress_every_chars
        if type(connection).__module__.startswith("psycopg2"):
            from psycopg2 import sql
        else:
            from psycopg import sql
        self.sql = sql
        self._ledger_ready = False

    # Ledger -----------------------------------------------------------------------------------

    def _ident(self, *names: str) -> Any:
        return self.sql.Identifier(*names)

    def ensure_ledger(self) -> None:
        """Create the schema and the ledger if missing (own short transaction, serialised)."""
        if self._ledger_ready:
            return
        sql = self.sql
        self.conn.autocommit = False
        try:
            with self.conn.cursor() as cur:
                # Concurrent CREATE ... IF NOT EXISTS can still collide on the catalog: serialise.
                cur.execute("SELECT pg_advisory_xact_lock(%s)", (_advisory_key(self.schema),))
                cur.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(self._ident(self.schema)))
                cur.execute(
                    sql.SQL(
                        "CREATE TABLE IF NOT EXISTS {} ("
                        "target_table text NOT NULL, extract_id text NOT NULL, bds_type text, "
                        "created_at timestamptz, rows_read bigint, rows_upserted bigint, "
                        "rows_deleted bigint, loaded_at timestamptz NOT NULL DEFAULT now(), "
                        "PRIMARY KEY (target_table, extract_id))"
                    ).format(self._ident(self.schema, LEDGER_TABLE))
                )
            self.conn.commit()
        except BaseException:
            self.conn.rollback()
            raise
        self._ledger_ready = True

    def newest_loaded(self, table: str) -> tuple[str, datetime | None] | None:
        """(extract_id, created_at) of the newest extract loaded into ``table``, if any."""
        self.ensure_ledger()
        with self.conn.cursor() as cur:
            cur.execute(
                self.sql.SQL(
                    "SELECT extract_id, created_at FROM {} WHERE target_table = %s "
                    "ORDER BY created_at DESC NULLS LAST, loaded_at DESC LIMIT 1"
                ).format(self._ident(self.schema, LEDGER_TABLE)),
                (table,),
            )
            row = cur.fetchone()
        self.conn.rollback()  # end the read-only transaction: no idle-in-transaction session
        return (row[0], row[1]) if row else None

    # Load -------------------------------------------------------------------------------------

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
    ) -> LoadResult:
        """Upsert one extract ZIP into ``schema.table`` by ``key_columns``, in one transaction.

        Columns are matched by header name. Header columns the table lacks are added (Brightspace
        minor versions append columns); table columns the header lacks stay, set to NULL on the
        rows of this extract, with a warning. Rows whose ``IsDeleted`` is true are deleted from
        the table (``deleted_rows="delete"``) or stored with the flag (``"flag"``). A full extract
        (``bds_type="Full"``) replaces the table's rows: rows whose key it lacks are deleted. If
        the key repeats inside the extract, the last row wins. On any error nothing is changed.
        """
        if deleted_rows not in ("delete", "flag"):
            raise LmsConfigurationError(f"deleted_rows must be 'delete' or 'flag', got {deleted_rows!r}")
        if not key_columns:
            raise LmsConfigurationError(f"key_columns for table {table!r} must not be empty")
        if not extract_id and not hasattr(source, "read"):
            extract_id = os.path.basename(os.fspath(source))  # type: ignore[arg-type]
        if not extract_id:
            raise LmsConfigurationError("extract_id is required when loading from a file object")
        label = name or extract_id
        self.ensure_ledger()
        with open_extract_csv(source, name=label, progress_every_chars=self.progress_every_chars) as csv_in:
            missing_keys = [key for key in key_columns if key not in csv_in.header]
            if missing_keys:
                raise ExtractFormatError(
                    f"{label}: the CSV header does not match table {table!r}: key column(s) {missing_keys} "
                    f"missing; the header has {csv_in.header[:20]}"
                )
            self.conn.autocommit = False
            try:
                with self.conn.cursor() as cur:
                    result = self._load(
                        cur, csv_in, table, list(key_columns), extract_id, bds_type, created_at, deleted_rows
                    )
                if result.skipped:
                    self.conn.rollback()
                    log.info("%s -> %s.%s skipped: %s", label, self.schema, table, result.skipped)
                    return result
                self.conn.commit()
            except BaseException as err:
                self.conn.rollback()
                if csv_in.error is not None and err is not csv_in.error:
                    raise csv_in.error from None
                if _sqlstate(err).startswith("22"):  # data exception, e.g. 22P04 bad COPY format
                    raise self._as_format_error(err, label) from None
                if _sqlstate(err) == "42P10":
                    raise LmsConfigurationError(
                        f"table {self.schema}.{table} has no primary key or unique index on "
                        f"{list(key_columns)}: create it with that key, or pass the key columns it has"
                    ) from None
                raise
        log.info(
            "%s -> %s.%s: %d rows read, %d upserted, %d deleted%s",
            label,
            self.schema,
            table,
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
        keys: list[str],
        extract_id: str,
        bds_type: str | None,
        created_at: datetime | None,
        deleted_rows: DeletedRows,
    ) -> LoadResult:
        sql = self.sql
        target = self._ident(self.schema, table)
        ledger = self._ident(self.schema, LEDGER_TABLE)
        # Two loads into one table must not interleave their ledger checks and upserts.
        cur.execute("SELECT pg_advisory_xact_lock(%s)", (_advisory_key(self.schema, table),))
        cur.execute(
            sql.SQL(
                "SELECT extract_id, created_at >= %s FROM {} WHERE target_table = %s "
                "AND (extract_id = %s OR created_at > %s) ORDER BY extract_id = %s DESC LIMIT 1"
            ).format(ledger),
            (created_at, table, extract_id, created_at, extract_id),
        )
        if (row := cur.fetchone()) is not None:
            why = (
                "already loaded" if row[0] == extract_id else f"older than extract {row[0]!r}, loaded already"
            )
            return LoadResult(table, extract_id, skipped=why)

        header = csv_in.header
        existing = self._columns(cur, table)
        added: list[str] = []
        missing: list[str] = []
        if not existing:
            rows_read, rows_upserted = self._fill_new_table(cur, csv_in, target, header, keys, deleted_rows)
            rows_deleted = 0
        else:
            added = [c for c in header if c not in existing]
            for column in added:
                cur.execute(sql.SQL("ALTER TABLE {} ADD COLUMN {} text").format(target, self._ident(column)))
            if added:
                log.info("%s.%s: added columns %s (new in this extract)", self.schema, table, added)
            missing = [c for c in existing if c not in header]
            if missing:
                log.warning(
                    "%s.%s: columns %s are not in extract %s; they stay in the table, NULL for its rows",
                    self.schema,
                    table,
                    missing,
                    extract_id,
                )
            rows_read, rows_upserted, rows_deleted = self._merge(
                cur, csv_in, target, header, keys, missing, deleted_rows, full=bds_type == "Full"
            )
        cur.execute(
            sql.SQL(
                "INSERT INTO {} (target_table, extract_id, bds_type, created_at, rows_read, rows_upserted, "
                "rows_deleted) VALUES (%s, %s, %s, %s, %s, %s, %s)"
            ).format(ledger),
            (table, extract_id, bds_type, created_at, rows_read, rows_upserted, rows_deleted),
        )
        return LoadResult(
            table,
            extract_id,
            rows_read=rows_read,
            rows_upserted=rows_upserted,
            rows_deleted=rows_deleted,
            added_columns=added,
            missing_columns=missing,
        )

    def _fill_new_table(
        self,
        cur: Any,
        csv_in: ExtractCsv,
        target: Any,
        header: list[str],
        keys: list[str],
        deleted: DeletedRows,
    ) -> tuple[int, int]:
        """First load into a table: COPY straight into it, then build the key's index once.

        Nothing can conflict in a table this transaction creates, so the staging table and the
        upsert (a speculative insertion per row) are not needed; ``ADD PRIMARY KEY`` sorts once.
        Returns (rows read, rows stored).
        """
        sql = self.sql
        cur.execute(sql.SQL("CREATE TABLE {} ({})").format(target, self._text_columns(header)))
        # FREEZE: the table is new in this transaction, so its rows need no later hint-bit writes.
        copy = sql.SQL("COPY {} ({}) FROM STDIN WITH (FORMAT csv, FREEZE)").format(
            target, self._idents(header)
        )
        rows_read = self._copy(cur, copy.as_string(self.conn), csv_in)
        rows = rows_read
        add_key = sql.SQL("ALTER TABLE {} ADD PRIMARY KEY ({})").format(target, self._idents(keys))
        cur.execute("SAVEPOINT bds_key")
        try:
            cur.execute(add_key)
        except Exception as err:
            if _sqlstate(err) not in ("23502", "23505"):  # not-null / unique violation
                raise
            cur.execute("ROLLBACK TO SAVEPOINT bds_key")
            self._check_keys(cur, csv_in, target, keys)
            rows -= self._drop_repeated_keys(cur, target, keys)
            cur.execute(add_key)
        # After the last-row-wins step, as in _merge: a key whose last row is deleted is gone.
        if deleted == "delete" and DELETED_COLUMN in header:
            cur.execute(sql.SQL("DELETE FROM {} WHERE {}").format(target, self._is_deleted()))
            rows -= cur.rowcount
        return rows_read, rows

    def _merge(
        self,
        cur: Any,
        csv_in: ExtractCsv,
        target: Any,
        header: list[str],
        keys: list[str],
        missing: list[str],
        deleted: DeletedRows,
        *,
        full: bool,
    ) -> tuple[int, int, int]:
        """Later loads: COPY into a staging table, then delete and upsert by key.

        A full extract holds every row of the data set, so rows of the table whose key it lacks
        were deleted in Brightspace (differentials carry no row for a hard delete): they go too.
        Returns (rows read, rows inserted or changed, rows deleted).
        """
        sql = self.sql
        stage = self._ident("bds_stage")
        cur.execute(
            sql.SQL("CREATE TEMP TABLE {} ({}) ON COMMIT DROP").format(stage, self._text_columns(header))
        )
        copy = sql.SQL("COPY {} ({}) FROM STDIN WITH (FORMAT csv)").format(stage, self._idents(header))
        rows_read = self._copy(cur, copy.as_string(self.conn), csv_in)
        self._check_keys(cur, csv_in, stage, keys)
        self._drop_repeated_keys(cur, stage, keys)

        matches = sql.SQL(" AND ").join(sql.SQL("t.{k} = s.{k}").format(k=self._ident(k)) for k in keys)
        rows_deleted = 0
        only_live = sql.SQL("")
        if deleted == "delete" and DELETED_COLUMN in header:
            cur.execute(
                sql.SQL("DELETE FROM {} AS t USING {} AS s WHERE {} AND {}").format(
                    target, stage, matches, self._is_deleted("s")
                )
            )
            rows_deleted = cur.rowcount
            only_live = sql.SQL(" WHERE NOT coalesce({}, false)").format(self._is_deleted("s"))
        if full:
            cur.execute(
                sql.SQL("DELETE FROM {} AS t WHERE NOT EXISTS (SELECT FROM {} AS s WHERE {})").format(
                    target, stage, matches
                )
            )
            if cur.rowcount:
                log.info(
                    "%s: %d rows not in this full extract deleted from the table", csv_in.name, cur.rowcount
                )
            rows_deleted += cur.rowcount
        return rows_read, self._upsert(cur, target, stage, header, keys, missing, only_live), rows_deleted

    def _check_keys(self, cur: Any, csv_in: ExtractCsv, table: Any, keys: list[str]) -> None:
        null_key = self.sql.SQL(" OR ").join(self.sql.SQL("{} IS NULL").format(self._ident(k)) for k in keys)
        cur.execute(self.sql.SQL("SELECT count(*) FROM {} WHERE {}").format(table, null_key))
        if (blank := int(cur.fetchone()[0])) > 0:
            raise ExtractFormatError(f"{csv_in.name}: {blank} rows have an empty key column {keys}")

    def _drop_repeated_keys(self, cur: Any, table: Any, keys: list[str]) -> int:
        """Keep the last row of each key: ctid follows insertion order in a table filled by one COPY."""
        cur.execute(
            self.sql.SQL(
                "DELETE FROM {table} WHERE ctid IN (SELECT ctid FROM (SELECT ctid, row_number() OVER "
                "(PARTITION BY {keys} ORDER BY ctid DESC) AS n FROM {table}) AS ranked WHERE n > 1)"
            ).format(table=table, keys=self._idents(keys))
        )
        return int(cur.rowcount)

    def _is_deleted(self, alias: str | None = None) -> Any:
        column = self._ident(alias, DELETED_COLUMN) if alias else self._ident(DELETED_COLUMN)
        values = self.sql.SQL(", ").join(map(self.sql.Literal, _DELETED_VALUES))
        return self.sql.SQL("lower(trim({})) IN ({})").format(column, values)

    def _text_columns(self, names: Sequence[str]) -> Any:
        return self.sql.SQL(", ").join(self.sql.SQL("{} text").format(self._ident(c)) for c in names)

    def _upsert(
        self,
        cur: Any,
        target: Any,
        stage: Any,
        header: list[str],
        keys: list[str],
        missing: list[str],
        where: Any,
    ) -> int:
        sql = self.sql
        values = [c for c in header if c not in keys]
        insert = sql.SQL("INSERT INTO {} AS t ({}) SELECT {} FROM {} AS s{} ON CONFLICT ({})").format(
            target,
            self._idents(header),
            sql.SQL(", ").join(sql.SQL("s.{}").format(self._ident(c)) for c in header),
            stage,
            where,
            self._idents(keys),
        )
        if not values and not missing:
            cur.execute(insert + sql.SQL(" DO NOTHING"))
            return cur.rowcount
        new_values = [sql.SQL("EXCLUDED.{}").format(self._ident(c)) for c in values]
        new_values += [sql.SQL("NULL::text")] * len(missing)
        updated = values + missing
        assignments = sql.SQL(", ").join(
            sql.SQL("{} = {}").format(self._ident(c), v) for c, v in zip(updated, new_values, strict=True)
        )
        # The WHERE keeps a re-run from rewriting identical rows (no dead tuples, no "changes").
        changed = sql.SQL("ROW({}) IS DISTINCT FROM ROW({})").format(
            sql.SQL(", ").join(sql.SQL("t.{}").format(self._ident(c)) for c in updated),
            sql.SQL(", ").join(new_values),
        )
        cur.execute(insert + sql.SQL(" DO UPDATE SET {} WHERE {}").format(assignments, changed))
        return cur.rowcount

    def _columns(self, cur: Any, table: str) -> list[str]:
        cur.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = %s AND table_name = %s "
            "ORDER BY ordinal_position",
            (self.schema, table),
        )
        return [row[0] for row in cur.fetchall()]

    def _idents(self, names: Sequence[str]) -> Any:
        return self.sql.SQL(", ").join(self._ident(n) for n in names)

    def _copy(self, cur: Any, statement: str, csv_in: ExtractCsv) -> int:
        """Stream the CSV through ``COPY ... FROM STDIN``; returns the rows copied (both drivers say)."""
        if hasattr(cur, "copy"):  # psycopg 3
            with cur.copy(statement) as copy:
                while chunk := csv_in.read(_COPY_CHUNK_CHARS):
                    copy.write(chunk)
        else:  # psycopg2
            cur.copy_expert(statement, csv_in, size=_COPY_CHUNK_CHARS)
        return int(cur.rowcount)

    @staticmethod
    def _as_format_error(err: BaseException, label: str) -> ExtractFormatError:
        # The server's CONTEXT line quotes the offending row: keep only its line number (no data).
        diag = getattr(err, "diag", None)
        context = getattr(diag, "context", None) or ""
        primary = getattr(diag, "message_primary", None) or str(err).splitlines()[0]
        line = _LINE.search(context)
        where = f" at CSV line {int(line.group(1)) + 1}" if line else ""
        return ExtractFormatError(f"{label}: the CSV does not match its header{where}: {primary}")


def _sqlstate(err: BaseException) -> str:
    """The PostgreSQL error code of a psycopg 3 or psycopg2 error ("" for other errors)."""
    return str(getattr(err, "sqlstate", None) or getattr(err, "pgcode", None) or "")
