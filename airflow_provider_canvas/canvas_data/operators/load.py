"""Canvas Data 2: load one pulled table into PostgreSQL (typed columns, one transaction per table)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from airflow.sdk import Asset, AssetAlias, BaseOperator

from airflow_provider_canvas.canvas_data.loading.state import DapTableFolder
from airflow_provider_canvas.common.assets import default_outlets, emit_asset_event
from airflow_provider_canvas.common.templating import is_template

if TYPE_CHECKING:
    from airflow.sdk import Context, ObjectStoragePath
    from pydantic import JsonValue

    from airflow_provider_canvas.canvas_data.loading.load import DapLoadResult

ASSET_SCHEME = "x-canvas-data-table"


def canvas_data_table_asset(postgres_conn_id: str, schema: str, table: str) -> Asset:
    """The asset a load updates: ``table`` in ``schema`` of the PostgreSQL connection. Schedule on it."""
    return Asset(uri=f"{ASSET_SCHEME}://{postgres_conn_id}/{schema}/{table}")


class CanvasDataLoadOperator(BaseOperator):
    """Load what the Canvas Data 2 pull wrote for one table into ``schema.<table>`` of PostgreSQL.

    Reads ``<location>/<namespace>/<table>/state.json`` and applies the batches the table's ledger
    does not list yet, in one transaction (see :mod:`airflow_provider_canvas.canvas_data.loading.load`):
    the first snapshot creates the table with columns typed from DAP's schema, a later snapshot
    replaces its rows, incrementals upsert and delete (``meta.action = D``). A new schema version
    that adds columns adds them; a breaking one fails with what to do. Running again with nothing
    new pulled changes nothing.

    The table is an Asset (:func:`canvas_data_table_asset`) in ``outlets``; with a templated
    ``postgres_conn_id``, ``schema``, ``table`` or ``target_table`` it is added through an AssetAlias
    at run time, as through an ``AssetAlias`` given as the only outlet (a load mapped over the
    tables of ``CanvasDataPullOperator(tables="all")``). Its event's extra says what the load did.
    OpenLineage (when its provider is installed): the pulled files loaded as inputs, the table
    with its columns as the output.

    :param namespace: DAP namespace, e.g. ``canvas`` (templated).
    :param table: DAP table name, e.g. ``accounts`` (templated).
    :param location: the pull's location: a local folder or an ObjectStoragePath / URL (templated).
    :param postgres_conn_id: a ``postgres`` connection (templated).
    :param schema: the PostgreSQL schema to load into, made if missing (templated).
    :param target_table: the table's name in PostgreSQL; default: DAP's table name (templated).

    Returns (XCom) the load's result: batches (job ids) loaded, records read, rows upserted and
    deleted, columns added, schema version, or ``skipped`` when there was nothing new.

    The load registers what it has applied in ``<table>/_loads/<connection>.<schema>.<table>.json``
    beside the pulled files, before loading and after: the pull removes only batches every
    registered load has applied (:mod:`~airflow_provider_canvas.canvas_data.loading.retention`).
    """

    template_fields: Sequence[str] = (
        "namespace",
        "table",
        "location",
        "postgres_conn_id",
        "schema",
        "target_table",
    )
    required_scopes: tuple[str, ...] = ()  # reads local files and PostgreSQL only

    def __init__(
        self,
        *,
        table: str,
        location: str | os.PathLike[str] | ObjectStoragePath,
        postgres_conn_id: str,
        namespace: str = "canvas",
        schema: str = "canvas_data",
        target_table: str | None = None,
        **kwargs: Any,
    ) -> None:
        named = (postgres_conn_id, schema, target_table or table)
        self.alias = default_outlets(
            kwargs,
            templated=any(is_template(v) for v in named),
            alias=f"canvas-data-load:{'/'.join(map(str, named))}",
            assets=lambda: [canvas_data_table_asset(*named)],
        )
        if self.alias is None and [type(o) for o in kwargs.get("outlets", [])] == [AssetAlias]:
            # Given one alias (a load mapped over tables known only at run time): events go through it.
            self.alias = kwargs["outlets"][0]
        super().__init__(**kwargs)
        self.namespace = namespace
        self.table = table
        self.location = location
        self.postgres_conn_id = postgres_conn_id
        self.schema = schema
        self.target_table = target_table
        self._lineage: dict[str, Any] | None = None

    def execute(self, context: Context) -> dict[str, Any]:
        from airflow.providers.postgres.hooks.postgres import PostgresHook

        from airflow_provider_canvas.canvas_data.loading.load import DapTableLoader
        from airflow_provider_canvas.canvas_data.loading.retention import load_name, register_load
        from airflow_provider_canvas.common.airflow_access import get_connection

        folder = DapTableFolder(self.location, self.namespace, self.table)
        target = self.target_table or self.table
        connection = get_connection(self.postgres_conn_id)
        hook = PostgresHook(postgres_conn_id=self.postgres_conn_id, connection=connection)
        self.log.info(
            "Loading %s.%s from %s into %s.%s", self.namespace, self.table, folder.uri, self.schema, target
        )
        name = load_name(self.postgres_conn_id, self.schema, target)
        db = hook.get_conn()
        try:
            loader = DapTableLoader(db, self.schema)
            # Registered first: a load that fails (even its first) holds back the removal of its batches.
            applied = loader.applied_jobs(target)
            register_load(folder, name, applied)
            result = loader.load(folder, target)
            register_load(folder, name, applied | set(result.batches))
        finally:
            db.close()
        self._remember_lineage(folder, result, connection)
        self._emit_asset_event(context, target, result)
        return result.to_dict()

    def _emit_asset_event(self, context: Context, target: str, result: DapLoadResult) -> None:
        events = context.get("outlet_events") if hasattr(context, "get") else None
        if events is None:
            return
        extra: dict[str, JsonValue] = {
            "namespace": result.namespace,
            "table": result.table,
            "target": result.target,
            "schema_version": result.schema_version,
            "batches": len(result.batches),
            "rows_upserted": result.rows_upserted,
            "rows_deleted": result.rows_deleted,
            "skipped": result.skipped,
        }
        asset = canvas_data_table_asset(self.postgres_conn_id, self.schema, target)
        emit_asset_event(context, asset, extra, self.alias)

    def _remember_lineage(self, folder: DapTableFolder, result: DapLoadResult, connection: Any) -> None:
        """What OpenLineage is told on completion: never a password, only where and what."""
        from airflow_provider_canvas.canvas_data.loading.schema import read_schema_file

        state = {b.job_id: b for b in folder.read_state().batches}
        files = [str(path) for job in result.batches if job in state for path in folder.files_of(state[job])]
        columns: list[tuple[str, str]] = []
        if result.schema_version is not None:
            schema = read_schema_file(folder.schema_file(result.schema_version))
            columns = [(c.name, c.pg_type) for c in schema.columns]
        self._lineage = {
            "files": files,
            "namespace": f"postgres://{connection.host or 'localhost'}:{connection.port or 5432}",
            "name": f"{connection.schema or 'postgres'}.{self.schema}.{self.target_table or self.table}",
            "columns": columns,
        }

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        """Inputs: the pulled files this run loaded; output: the table, with a schema facet."""
        from airflow.providers.common.compat.openlineage.facet import (
            Dataset,
            SchemaDatasetFacet,
            SchemaDatasetFacetFields,
        )
        from airflow.providers.openlineage.extractors import OperatorLineage

        lineage = self._lineage
        if lineage is None:
            return OperatorLineage()
        fields = [SchemaDatasetFacetFields(name=name, type=kind) for name, kind in lineage["columns"]]
        output = Dataset(
            namespace=lineage["namespace"],
            name=lineage["name"],
            facets={"schema": SchemaDatasetFacet(fields=fields)} if fields else {},
        )
        inputs = [Dataset(*_file_dataset(path)) for path in lineage["files"]]
        return OperatorLineage(inputs=inputs, outputs=[output])


def _file_dataset(path: str) -> tuple[str, str]:
    """OpenLineage's (namespace, name) of a pulled file: ``file`` and its path, or the bucket and key."""
    if "://" not in path:
        return "file", Path(path).as_posix()
    parts = urlsplit(path)
    return f"{parts.scheme}://{parts.hostname}", parts.path.lstrip("/")  # no connection id in it
