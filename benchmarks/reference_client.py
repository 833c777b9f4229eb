"""The approach of D2L's bds-headless-client-example, re-implemented small for comparison.

That client downloads an extract with ``requests.get(...).content`` (the whole ZIP in memory), reads
the CSV out of it in memory, and loads it into PostgreSQL by COPY into a temporary table followed by
``INSERT ... ON CONFLICT (key) DO UPDATE`` (see shared/notes/lms-apis.md). This module follows that
description; none of that client's code is copied. It is a baseline, not something to use.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Sequence

import requests


def download_buffered(url: str, access_token: str | None = None) -> bytes:
    """The whole body in memory, as the reference client does (redirects followed, token not resent)."""
    headers = {"Authorization": f"Bearer {access_token}"} if access_token else {}
    response = requests.get(url, headers=headers, timeout=(10, 600))
    response.raise_for_status()
    return response.content


def load_zip_bytes(zip_bytes: bytes, dsn: str, schema: str, table: str, key_columns: Sequence[str]) -> int:
    """Upsert the CSV inside an in-memory extract ZIP into ``schema.table``; returns rows upserted."""
    import psycopg2
    from psycopg2 import sql

    with zipfile.ZipFile(io.BytesIO(zip_bytes)) as archive:
        csv_bytes = archive.read(archive.namelist()[0])
    header = csv_bytes[: csv_bytes.index(b"\n")].decode("utf-8-sig").strip().split(",")
    columns = sql.SQL(", ").join(map(sql.Identifier, header))
    target = sql.Identifier(schema, table)
    connection = psycopg2.connect(dsn)
    try:
        with connection, connection.cursor() as cur:
            cur.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
            cur.execute(
                sql.SQL("CREATE TABLE IF NOT EXISTS {} ({}, PRIMARY KEY ({}))").format(
                    target,
                    sql.SQL(", ").join(sql.SQL("{} text").format(sql.Identifier(c)) for c in header),
                    sql.SQL(", ").join(map(sql.Identifier, key_columns)),
                )
            )
            cur.execute(
                sql.SQL("CREATE TEMP TABLE staging ({}) ON COMMIT DROP").format(
                    sql.SQL(", ").join(sql.SQL("{} text").format(sql.Identifier(c)) for c in header)
                )
            )
            cur.copy_expert(
                sql.SQL("COPY staging ({}) FROM STDIN WITH (FORMAT csv, HEADER true)")
                .format(columns)
                .as_string(cur),
                io.BytesIO(csv_bytes),
            )
            values = [c for c in header if c not in key_columns]
            assign = sql.SQL("{0} = EXCLUDED.{0}")
            updates = sql.SQL(", ").join(assign.format(sql.Identifier(c)) for c in values)
            upsert = sql.SQL("INSERT INTO {} ({}) SELECT {} FROM staging ON CONFLICT ({}) DO UPDATE SET {}")
            keys = sql.SQL(", ").join(map(sql.Identifier, key_columns))
            cur.execute(upsert.format(target, columns, columns, keys, updates))
            return int(cur.rowcount)
    finally:
        connection.close()
