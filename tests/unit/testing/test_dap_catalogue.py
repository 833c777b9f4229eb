"""The DAP emulator's namespace: 60 tables of varied schemas, each one the loader can type."""

from __future__ import annotations

import time
from collections import Counter

from airflow_provider_canvas.canvas_data.loading.schema import parse_schema
from airflow_provider_canvas.testing.dap_tables import CATALOGUE, canvas_tables


def test_the_namespace_holds_60_tables_of_varied_widths_and_every_column_kind():
    tables = canvas_tables(7, at=time.time())
    schemas = {name: parse_schema(table.schema_json()) for name, table in tables.items()}
    widths = {len(schema.columns) for schema in schemas.values()}
    kinds = Counter(c.pg_type for schema in schemas.values() for c in schema.columns)

    assert len(tables) == 4 + len(CATALOGUE) >= 60
    assert min(widths) <= 6 and max(widths) >= 40  # narrow and wide tables
    assert {
        "bigint",
        "integer",
        "text",
        "timestamptz",
        "boolean",
        "double precision",
        "jsonb",
    } <= set(kinds)
    assert all(len(table.rows) == 40 for name, table in tables.items() if name in CATALOGUE)
    # The same name gives the same schema on every run: a benchmark's tables do not drift.
    again = canvas_tables(7, at=time.time())
    assert all(again[n].schema_json() == tables[n].schema_json() for n in CATALOGUE)
