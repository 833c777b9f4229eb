"""SQL pieces every load step shares: identifiers, column types, keys, COPY streaming (psycopg 3 or 2)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from airflow_provider_canvas.brightspace.loading.extract import ExtractCsv
from airflow_provider_canvas.common.sql import sql_module, sqlstate
from airflow_provider_canvas.exceptions import ExtractFormatError

DELETED_COLUMN = "IsDeleted"
TEXT = "text"
_DELETED_VALUES = ("true", "1", "t", "yes")
_COPY_CHUNK_CHARS = 2**17


class Sql:
    """Statements for one schema, built with the connection's driver (``psycopg.sql`` or ``psycopg2.sql``)."""

    def __init__(self, connection: Any, schema: str) -> None:
        self.sql = sql_module(connection)
        self.conn = connection
        self.schema = schema

    def SQL(self, text: str) -> Any:
        return self.sql.SQL(text)

    def ident(self, *names: str) -> Any:
        return self.sql.Identifier(*names)

    def table(self, name: str) -> Any:
        return self.sql.Identifier(self.schema, name)

    def idents(self, names: Sequence[str], alias: str | None = None) -> Any:
        return self.sql.SQL(", ").join(self.ident(alias, n) if alias else self.ident(n) for n in names)

    def column_defs(self, names: Sequence[str], types: Mapping[str, str]) -> Any:
        """``"a" integer, "b" text, ...``; types are catalogue or catalog (format_type) names, never input."""
        return self.sql.SQL(", ").join(
            self.sql.SQL("{} {}").format(self.ident(c), self.sql.SQL(types.get(c, TEXT))) for c in names
        )

    def columns(self, cur: Any, table: str) -> dict[str, str]:
        """Column name -> type (``format_type``) of ``schema.table``, in order; {} if there is no table."""
        cur.execute(
            "SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a "
            "JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = %s AND c.relname = %s AND a.attnum > 0 AND NOT a.attisdropped "
            "ORDER BY a.attnum",
            (self.schema, table),
        )
        return {row[0]: row[1] for row in cur.fetchall()}

    def primary_key(self, cur: Any, table: str) -> tuple[str, list[str]] | None:
        """(constraint name, columns in key order) of the table's primary key, if it has one."""
        cur.execute(
            "SELECT con.conname, array_agg(a.attname::text ORDER BY k.n) FROM pg_constraint con "
            "JOIN pg_class c ON c.oid = con.conrelid JOIN pg_namespace ns ON ns.oid = c.relnamespace "
            "CROSS JOIN LATERAL unnest(con.conkey) WITH ORDINALITY AS k(attnum, n) "
            "JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = k.attnum "
            "WHERE ns.nspname = %s AND c.relname = %s AND con.contype = 'p' GROUP BY con.conname",
            (self.schema, table),
        )
        row = cur.fetchone()
        return (row[0], list(row[1])) if row else None

    def is_deleted(self, column_type: str, alias: str | None = None) -> Any:
        """True where ``IsDeleted`` says the row is deleted, for a boolean or a text column."""
        column = self.ident(alias, DELETED_COLUMN) if alias else self.ident(DELETED_COLUMN)
        if column_type == "boolean":
            return self.sql.SQL("coalesce({}, false)").format(column)
        values = self.sql.SQL(", ").join(map(self.sql.Literal, _DELETED_VALUES))
        return self.sql.SQL("coalesce(lower(trim({})) IN ({}), false)").format(column, values)

    def check_keys(self, cur: Any, csv_in: ExtractCsv, table: Any, keys: Sequence[str]) -> None:
        null_key = self.sql.SQL(" OR ").join(self.sql.SQL("{} IS NULL").format(self.ident(k)) for k in keys)
        cur.execute(self.sql.SQL("SELECT count(*) FROM {} WHERE {}").format(table, null_key))
        if (blank := int(cur.fetchone()[0])) > 0:
            raise ExtractFormatError(f"{csv_in.name}: {blank} rows have an empty key column {list(keys)}")

    def drop_repeated_keys(self, cur: Any, table: Any, keys: Sequence[str]) -> int:
        """Keep the last row of each key: ctid follows insertion order in a table filled by one COPY."""
        cur.execute(
            self.sql.SQL(
                "DELETE FROM {table} WHERE ctid IN (SELECT ctid FROM (SELECT ctid, row_number() OVER "
                "(PARTITION BY {keys} ORDER BY ctid DESC) AS n FROM {table}) AS ranked WHERE n > 1)"
            ).format(table=table, keys=self.idents(keys))
        )
        return int(cur.rowcount)

    def copy_statement(
        self, table: Any, header: Sequence[str], types: Mapping[str, str], *, freeze: bool
    ) -> str:
        """``COPY ... FROM STDIN`` of the CSV; an empty field of a typed column is NULL even when quoted."""
        options = [self.sql.SQL("FORMAT csv")]
        if freeze:
            options.append(self.sql.SQL("FREEZE"))
        typed = [c for c in header if types.get(c, TEXT) != TEXT]
        if typed:
            options.append(self.sql.SQL("FORCE_NULL ({})").format(self.idents(typed)))
        statement = self.sql.SQL("COPY {} ({}) FROM STDIN WITH ({})").format(
            table, self.idents(header), self.sql.SQL(", ").join(options)
        )
        return str(statement.as_string(self.conn))

    def copy(self, cur: Any, statement: str, csv_in: ExtractCsv) -> int:
        """Stream the CSV through ``COPY ... FROM STDIN``; returns the rows copied (both drivers say)."""
        if hasattr(cur, "copy"):  # psycopg 3
            with cur.copy(statement) as copy:
                while chunk := csv_in.read(_COPY_CHUNK_CHARS):
                    copy.write(chunk)
        else:  # psycopg2
            cur.copy_expert(statement, csv_in, size=_COPY_CHUNK_CHARS)
        return int(cur.rowcount)

    def add_key(
        self, cur: Any, csv_in: ExtractCsv, target: Any, keys: Sequence[str], name: str | None
    ) -> int:
        """Add the primary key to a table just filled by COPY; repeated keys keep their last row.

        Returns how many repeated rows were dropped. ``ADD PRIMARY KEY`` sorts once, far cheaper than
        an index kept up to date row by row during the COPY.
        """
        constraint = self.sql.SQL("CONSTRAINT {} ").format(self.ident(name)) if name else self.sql.SQL("")
        add_key = self.sql.SQL("ALTER TABLE {} ADD {}PRIMARY KEY ({})").format(
            target, constraint, self.idents(keys)
        )
        cur.execute("SAVEPOINT bds_key")
        try:
            cur.execute(add_key)
        except Exception as err:
            if sqlstate(err) not in ("23502", "23505"):  # not-null / unique violation
                raise
            cur.execute("ROLLBACK TO SAVEPOINT bds_key")
            self.check_keys(cur, csv_in, target, keys)
            dropped = self.drop_repeated_keys(cur, target, keys)
            cur.execute(add_key)
            return dropped
        return 0
