"""Every catalogued data set, seeded by name alone, pulled over HTTP and loaded into typed tables: full, then
a differential; each table holds exactly the rows the emulator served, in their documented types."""

from __future__ import annotations

import csv
import io
import uuid
import zipfile
from datetime import datetime
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from lms_fixtures import dsn, postgres_connection_fields

from airflow_provider_canvas.brightspace.loading.catalogue import _SCHEMAS, key_columns_for
from airflow_provider_canvas.brightspace.loading.pull_state import slug
from airflow_provider_canvas.brightspace.operators.data_sets import (
    BrightspaceDataSetsPullOperator,
    BrightspaceDataSetsToPostgresOperator,
)

NAMES = [schema.name for schema in _SCHEMAS]
FULL_ROWS, DIFF_ROWS, DIFF_START = 40, 12, 35  # the differential updates rows 35-40 and adds 41-46


def _parse(kind: str, value: str) -> Any:
    """A CSV value as PostgreSQL should hold it in a column of ``kind`` (read independently of it)."""
    if value == "":
        return None
    if kind in ("integer", "bigint", "smallint"):
        return int(value)
    if kind == "boolean":
        return {"True": True, "False": False}[value]
    if kind == "numeric":
        return Decimal(value)
    if kind == "double precision":
        return float(value)
    if kind in ("timestamptz", "timestamp"):
        return datetime.fromisoformat(value)
    return value


def served_rows(extract, types: dict[str, str]) -> tuple[list[str], list[dict[str, Any]]]:
    """The rows of the ZIP the emulator serves for ``extract``, typed by ``types``."""
    source = extract.served
    data = b"".join(source.iter_range(0, source.size))
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        (member,) = archive.namelist()
        text = archive.read(member).decode("utf-8")
    header, *rows = csv.reader(io.StringIO(text, newline=""))
    typed = [{c: _parse(types.get(c, "text"), v) for c, v in zip(header, row, strict=True)} for row in rows]
    return header, typed


def table_rows(schema: str, table: str) -> list[dict[str, Any]]:
    with psycopg.connect(dsn()) as db, db.cursor(row_factory=psycopg.rows.dict_row) as cur:
        cur.execute(f'SELECT * FROM "{schema}"."{table}"')
        return list(cur.fetchall())


def column_types(schema: str, table: str) -> dict[str, str]:
    with psycopg.connect(dsn()) as db:
        rows = db.execute(
            "SELECT column_name::text, data_type::text FROM information_schema.columns "
            "WHERE table_schema = %s AND table_name = %s",
            (schema, table),
        ).fetchall()
    return dict(rows)


@pytest.fixture
def conns(lms_connection, make_connection) -> tuple[str, str]:
    bs = lms_connection("brightspace", expired=False)
    pg = make_connection("bds_every_pg", extra={}, **postgres_connection_fields())
    return bs, pg


def test_every_catalogued_data_set_loads_full_then_differential(emulator, conns, schema, tmp_path):
    assert len(NAMES) == len(set(NAMES)) == 19  # the catalogue's data sets (plus two shorter names)
    emulator.brightspace.apply_seed(
        {
            "data_sets": [
                {
                    "name": name,  # by name alone: columns, key and types from the catalogue
                    "extracts": [
                        {"bds_type": "Full", "days_ago": 2, "rows_count": FULL_ROWS},
                        {
                            "bds_type": "Differential",
                            "days_ago": 1,
                            "rows_count": DIFF_ROWS,
                            "row_id_start": DIFF_START,
                        },
                    ],
                }
                for name in NAMES
            ]
        }
    )

    def operators(kind):
        return kind(task_id=f"t_{uuid.uuid4().hex[:6]}", location=tmp_path, data_sets=NAMES, **kwargs[kind])

    kwargs = {
        BrightspaceDataSetsPullOperator: {"brightspace_conn_id": conns[0]},
        BrightspaceDataSetsToPostgresOperator: {"postgres_conn_id": conns[1], "schema": schema},
    }
    pulled = operators(BrightspaceDataSetsPullOperator).execute({})
    loaded = operators(BrightspaceDataSetsToPostgresOperator).execute({})

    counts = {}
    for name in NAMES:
        data_set = emulator.brightspace.data_sets[name]
        assert [p["bds_type"] for p in pulled[name]] == ["Full", "Differential"], name
        assert [r["rows_read"] for r in loaded[name]] == [FULL_ROWS, DIFF_ROWS], name
        table = slug(name)
        keys = key_columns_for(name)
        expected: dict[tuple, dict[str, Any]] = {}
        for extract in sorted(data_set.extracts, key=lambda e: e.created):
            header, rows = served_rows(extract, data_set.types)
            assert header == data_set.columns
            expected.update({tuple(row[k] for k in keys): row for row in rows})  # later extract wins
        actual = {tuple(row[k] for k in keys): row for row in table_rows(schema, table)}
        assert actual == expected, name
        documented = {c: t for c, t in data_set.types.items() if t != "text"}
        pg_names = {"timestamptz": "timestamp with time zone", "timestamp": "timestamp without time zone"}
        assert {c: t for c, t in column_types(schema, table).items() if t != "text"} == {
            c: pg_names.get(t, t) for c, t in documented.items()
        }, name
        counts[name] = len(actual)
    print("\nrows loaded per data set (full", FULL_ROWS, "+ differential", DIFF_ROWS, "):")
    for name, count in counts.items():
        print(f"  {name}: {count}")
    assert sum(counts.values()) >= len(NAMES) * (FULL_ROWS + DIFF_ROWS - (FULL_ROWS - DIFF_START + 1))
