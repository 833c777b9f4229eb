"""A Canvas report file into PostgreSQL: one table per CSV, all replaced in one transaction.

Columns Canvas documents for its reports are typed (``canvas_*_id`` bigint, ``created_by_sis``
boolean, dates timestamptz); every other column is text. The CSVs stream through ``COPY FROM STDIN``
straight out of the file (a ZIP's members are read as they are copied), so memory stays flat. A
value that does not fit its type rolls the whole load back; until the commit, readers of the tables
wait, then see the new rows: never a half-loaded table.
"""

from __future__ import annotations

import csv
import io
import re
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from airflow_provider_canvas.exceptions import LmsConfigurationError

_BLOCK = 2**20
_BOOLEAN = {"created_by_sis", "limit_section_privileges", "blueprint", "is_public", "available"}
_TIMESTAMP = {
    "start_date",
    "end_date",
    "created_at",
    "updated_at",
    "last_access_at",
    "last_activity_at",
    "start_at",
    "end_at",
    "conclude_at",
}


def column_type(name: str) -> str:
    """The PostgreSQL type of a report column Canvas documents; text for the rest."""
    if re.fullmatch(r"canvas_\w*_id", name):
        return "bigint"
    if name in _BOOLEAN:
        return "boolean"
    if name in _TIMESTAMP:
        return "timestamptz"
    return "text"


@dataclass(frozen=True)
class LoadedTable:
    table: str
    source: str
    rows: int
    columns: list[str]


def table_name(prefix: str, member: str) -> str:
    """``users_501_08_Dec_2026.csv`` of prefix ``provisioning`` -> ``provisioning_users``."""
    kind = re.sub(r"[^a-z0-9]+", "_", Path(member).stem.lower()).split("_")[0] or "report"
    return f"{prefix}_{kind}" if prefix else kind


def load_report(db: Any, path: str | Path, schema: str, prefix: str) -> list[LoadedTable]:
    """Replace ``<schema>.<prefix>_<kind>`` with each CSV of the report file, in one transaction."""
    from psycopg import sql

    loaded = []
    with db.transaction(), db.cursor() as cursor:
        cursor.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
        for member, source in _members(Path(path)):
            header_line = source.readline()
            columns = next(csv.reader(io.StringIO(header_line.decode("utf-8-sig"))), [])
            if not columns:
                raise LmsConfigurationError(f"{member} of {path} has no header row")
            table = sql.Identifier(schema, table_name(prefix, member))
            defs = sql.SQL(", ").join(
                sql.SQL("{} {}").format(sql.Identifier(c), sql.SQL(column_type(c))) for c in columns
            )
            cursor.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(table))
            cursor.execute(sql.SQL("CREATE TABLE {} ({})").format(table, defs))
            copy = sql.SQL("COPY {} ({}) FROM STDIN WITH (FORMAT csv)").format(
                table, sql.SQL(", ").join(sql.Identifier(c) for c in columns)
            )
            with cursor.copy(copy) as target:
                while block := source.read(_BLOCK):
                    target.write(block)
            rows = cursor.execute(sql.SQL("SELECT count(*) FROM {}").format(table)).fetchone()[0]
            loaded.append(LoadedTable(f"{schema}.{table_name(prefix, member)}", member, int(rows), columns))
    return loaded


def _members(path: Path) -> Iterator[tuple[str, IO[bytes]]]:
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                if info.filename.lower().endswith(".csv"):
                    with _opened(archive.open(info)) as member:
                        yield info.filename, member
        return
    with open(path, "rb") as single:
        yield path.name, single


@contextmanager
def _opened(handle: IO[bytes]) -> Iterator[IO[bytes]]:
    with io.BufferedReader(handle, _BLOCK) as buffered:  # type: ignore[arg-type]
        yield buffered
