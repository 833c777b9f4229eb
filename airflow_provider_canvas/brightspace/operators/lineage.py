"""OpenLineage for the Brightspace Data Sets operators: data set -> extract files -> PostgreSQL table.

Imported only by the operators' ``get_openlineage_facets_on_complete``, which the OpenLineage
provider's listener calls after a task succeeded: without that provider nothing here is imported.
Names follow the OpenLineage naming spec: a Brightspace data set is named in the namespace of its
instance URL; local files in ``file``, object-store files in ``<scheme>://<bucket>``; a table in
``postgres://host:port`` as ``database.schema.table``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from airflow_provider_canvas.brightspace.loading.pull_state import DataSetFolder, slug

if TYPE_CHECKING:
    from airflow.providers.openlineage.extractors import OperatorLineage
    from airflow.sdk import ObjectStoragePath
    from openlineage.client.event_v2 import Dataset


def _dataset(namespace: str, name: str, facets: dict[str, Any] | None = None) -> Dataset:
    from openlineage.client.event_v2 import Dataset

    return Dataset(namespace=namespace, name=name, facets=facets or {})


def file_dataset(location: str | os.PathLike[str] | ObjectStoragePath, data_set: str, file: str) -> Dataset:
    """The dataset of one pulled extract file (``file`` relative to the data set's folder)."""
    folder = DataSetFolder(location, data_set)
    if folder.is_local:
        return _dataset("file", str(folder.path / file))
    parts = urlsplit(f"{folder.uri.rstrip('/')}/{file}")
    return _dataset(f"{parts.scheme}://{parts.netloc}", parts.path.lstrip("/"))


def pull_lineage(
    instance_url: str,
    pulled: Mapping[str, Sequence[dict]],
    *,
    location: str | os.PathLike[str] | ObjectStoragePath,
) -> OperatorLineage:
    """Inputs: each Brightspace data set pulled; outputs: the extract files this run wrote."""
    from airflow.providers.openlineage.extractors import OperatorLineage

    namespace = instance_url.rstrip("/")
    return OperatorLineage(
        inputs=[_dataset(namespace, name) for name in pulled],
        outputs=[
            file_dataset(location, name, item["file"]) for name, items in pulled.items() for item in items
        ],
    )


def table_dataset(
    namespace: str, database: str, schema: str, table: str, columns: Iterable[tuple[str, str]]
) -> Dataset:
    """A PostgreSQL table with its schema facet (column names and types)."""
    from openlineage.client.facet_v2 import schema_dataset

    fields = [schema_dataset.SchemaDatasetFacetFields(name=name, type=kind) for name, kind in columns]
    return _dataset(
        namespace,
        f"{database}.{schema}.{table}",
        {"schema": schema_dataset.SchemaDatasetFacet(fields=fields)},
    )


def load_lineage(
    conn_id: str,
    location: str | os.PathLike[str] | ObjectStoragePath,
    schema: str,
    tables: Mapping[str, str],
    results: Mapping[str, Sequence[dict]],
) -> OperatorLineage:
    """Inputs: the files loaded this run; outputs: each data set's table, with its columns read back.

    :param tables: data set -> table, where not the data set's slug.
    :param results: data set -> the load results (``extract_id`` is the file, ``skipped`` when not loaded).
    """
    from airflow.providers.openlineage.extractors import OperatorLineage

    from airflow_provider_canvas.common.airflow_access import get_connection

    conn = get_connection(conn_id)
    namespace = f"postgres://{conn.host or 'localhost'}:{conn.port or 5432}"
    table_of = {name: tables.get(name) or slug(name) for name in results}
    columns = _columns(conn, schema, list(table_of.values()))
    files = [(name, r["extract_id"]) for name, done in results.items() for r in done if not r.get("skipped")]
    return OperatorLineage(
        inputs=[file_dataset(location, name, file) for name, file in files],
        outputs=[
            table_dataset(namespace, conn.schema or "postgres", schema, table, columns.get(table, []))
            for table in table_of.values()
        ],
    )


def _columns(conn: Any, schema: str, tables: Sequence[str]) -> dict[str, list[tuple[str, str]]]:
    """Column names and types of ``tables``, in table order, from information_schema."""
    from airflow.providers.postgres.hooks.postgres import PostgresHook

    hook = PostgresHook(postgres_conn_id=conn.conn_id, connection=conn)
    rows = hook.get_records(
        "SELECT table_name, column_name, data_type FROM information_schema.columns "
        "WHERE table_schema = %s AND table_name = ANY(%s) ORDER BY table_name, ordinal_position",
        parameters=(schema, list(tables)),
    )
    found: dict[str, list[tuple[str, str]]] = {}
    for table, column, kind in rows:
        found.setdefault(table, []).append((column, kind))
    return found
