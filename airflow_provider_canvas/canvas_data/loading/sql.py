"""The SQL of the Canvas Data 2 load: table and staging DDL, COPY, last-row-wins, deletes and upserts.

Every identifier goes through psycopg's ``sql.Identifier``; types are the loader's own strings
(:mod:`~airflow_provider_canvas.canvas_data.loading.schema`), never text from a file.
"""

from __future__ import annotations

from typing import Any

from airflow_provider_canvas.canvas_data.loading.records import COPY_OPTIONS, DELETED_COLUMN, RecordDecoder
from airflow_provider_canvas.canvas_data.loading.schema import DapColumn, DapTableSchema
from airflow_provider_canvas.canvas_data.loading.stream import RecordStream, prefetched
from airflow_provider_canvas.common.sql import sql_module, sqlstate

STAGE = "_dap_stage"
DELETED = DELETED_COLUMN


class DapSql:
    """Statements on one schema's tables through a psycopg 3 (or psycopg2) connection."""

    def __init__(self, connection: Any, schema: str) -> None:
        self.conn = connection
        self.schema = schema
        self.sql = sql_module(connection)

    def _table(self, name: str) -> Any:
        return self.sql.Identifier(self.schema, name)

    def _names(self, names: list[str], alias: str | None = None) -> Any:
        ident = self.sql.Identifier
        return self.sql.SQL(", ").join(ident(alias, n) if alias else ident(n) for n in names)

    def _definitions(self, columns: tuple[DapColumn, ...] | list[DapColumn]) -> Any:
        sql = self.sql
        return sql.SQL(", ").join(
            sql.SQL("{} {}{}").format(
                sql.Identifier(c.name), sql.SQL(c.pg_type), sql.SQL(" NOT NULL" if c.role == "key" else "")
            )
            for c in columns
        )

    def _matches(self, schema: DapTableSchema) -> Any:
        return self.sql.SQL(" AND ").join(
            self.sql.SQL("t.{k} = s.{k}").format(k=self.sql.Identifier(k)) for k in schema.keys
        )

    # Tables -----------------------------------------------------------------------------------

    def table_exists(self, cur: Any, table: str) -> bool:
        cur.execute(
            "SELECT EXISTS (SELECT FROM pg_catalog.pg_tables WHERE schemaname = %s AND tablename = %s)",
            (self.schema, table),
        )
        return bool(cur.fetchone()[0])

    def create_table(self, cur: Any, table: str, schema: DapTableSchema) -> None:
        cur.execute(
            self.sql.SQL("CREATE TABLE {} ({})").format(self._table(table), self._definitions(schema.columns))
        )

    def add_column(self, cur: Any, table: str, column: DapColumn) -> None:
        cur.execute(
            self.sql.SQL("ALTER TABLE {} ADD COLUMN {} {}").format(
                self._table(table), self.sql.Identifier(column.name), self.sql.SQL(column.pg_type)
            )
        )

    def add_primary_key(self, cur: Any, table: str, schema: DapTableSchema) -> int:
        """Add the key after a first COPY; if a key repeats, keep its last row. Returns rows removed."""
        add_key = self.sql.SQL("ALTER TABLE {} ADD PRIMARY KEY ({})").format(
            self._table(table), self._names(schema.keys)
        )
        cur.execute("SAVEPOINT dap_key")
        try:
            cur.execute(add_key)
        except Exception as err:
            if sqlstate(err) != "23505":  # unique violation: a key repeats
                raise
            cur.execute("ROLLBACK TO SAVEPOINT dap_key")
            removed = self._keep_last(cur, self._table(table), schema)
            cur.execute(add_key)
            return removed
        cur.execute("RELEASE SAVEPOINT dap_key")
        return 0

    # Staging ----------------------------------------------------------------------------------

    def create_stage(self, cur: Any, schema: DapTableSchema) -> str:
        sql = self.sql
        cur.execute(
            sql.SQL("CREATE TEMP TABLE {} ({}, {} boolean NOT NULL) ON COMMIT DROP").format(
                sql.Identifier(STAGE), self._definitions(schema.columns), sql.Identifier(DELETED)
            )
        )
        return STAGE

    def drop_stage(self, cur: Any, stage: str) -> None:
        cur.execute(self.sql.SQL("DROP TABLE {}").format(self.sql.Identifier(stage)))

    def copy_statement(
        self, table: str, decoder: RecordDecoder, *, freeze: bool, temporary: bool = False
    ) -> str:
        sql = self.sql
        target = sql.Identifier(table) if temporary else self._table(table)
        options = sql.SQL(f" WITH ({COPY_OPTIONS}{', FREEZE' if freeze else ''})")
        statement = sql.SQL("COPY {} ({}) FROM STDIN{}").format(
            target, self._names(decoder.copy_columns), options
        )
        return statement.as_string(self.conn)

    def copy(self, cur: Any, statement: str, stream: RecordStream) -> int:
        """Stream the rows through ``COPY ... FROM STDIN``; returns the rows copied (both drivers say)."""
        if hasattr(cur, "copy"):  # psycopg 3
            with cur.copy(statement) as copy:
                for chunk in prefetched(stream.chunks()):
                    copy.write(chunk)
        else:  # psycopg2
            cur.copy_expert(statement, stream)
        return int(cur.rowcount)

    def keep_last_per_key(self, cur: Any, stage: str, schema: DapTableSchema) -> int:
        removed = self._keep_last(cur, self.sql.Identifier(stage), schema)
        cur.execute(self.sql.SQL("ANALYZE {}").format(self.sql.Identifier(stage)))
        return removed

    def _keep_last(self, cur: Any, table: Any, schema: DapTableSchema) -> int:
        """Delete all but the last row of each key (ctid follows insertion order after one COPY)."""
        cur.execute(
            self.sql.SQL(
                "DELETE FROM {table} WHERE ctid IN (SELECT ctid FROM (SELECT ctid, row_number() OVER "
                "(PARTITION BY {keys} ORDER BY ctid DESC) AS n FROM {table}) AS ranked WHERE n > 1)"
            ).format(table=table, keys=self._names(schema.keys))
        )
        return int(cur.rowcount)

    # Applying staged rows ---------------------------------------------------------------------

    def delete_marked(self, cur: Any, table: str, stage: str, schema: DapTableSchema) -> int:
        """Delete the keys whose last record is a ``D``."""
        cur.execute(
            self.sql.SQL("DELETE FROM {} AS t USING {} AS s WHERE {} AND s.{}").format(
                self._table(table),
                self.sql.Identifier(stage),
                self._matches(schema),
                self.sql.Identifier(DELETED),
            )
        )
        return int(cur.rowcount)

    def delete_missing(self, cur: Any, table: str, stage: str, schema: DapTableSchema) -> int:
        """Delete the rows a replacing snapshot does not have."""
        cur.execute(
            self.sql.SQL("DELETE FROM {} AS t WHERE NOT EXISTS (SELECT FROM {} AS s WHERE {})").format(
                self._table(table), self.sql.Identifier(stage), self._matches(schema)
            )
        )
        return int(cur.rowcount)

    def upsert(self, cur: Any, table: str, stage: str, schema: DapTableSchema) -> int:
        """Insert or update the staged rows that are not deletes; rows already equal are not written."""
        sql = self.sql
        names = schema.names
        others = [n for n in names if n not in schema.keys]
        insert = sql.SQL(
            "INSERT INTO {} AS t ({}) SELECT {} FROM {} AS s WHERE NOT s.{} ON CONFLICT ({})"
        ).format(
            self._table(table),
            self._names(names),
            self._names(names, "s"),
            sql.Identifier(stage),
            sql.Identifier(DELETED),
            self._names(schema.keys),
        )
        assignments = sql.SQL(", ").join(
            sql.SQL("{c} = EXCLUDED.{c}").format(c=sql.Identifier(n)) for n in others
        )
        changed = sql.SQL("ROW({}) IS DISTINCT FROM ROW({})").format(
            self._names(others, "t"), self._names(others, "excluded")
        )
        cur.execute(insert + sql.SQL(" DO UPDATE SET {} WHERE {}").format(assignments, changed))
        return int(cur.rowcount)
