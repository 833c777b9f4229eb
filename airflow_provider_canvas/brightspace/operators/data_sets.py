"""Brightspace Data Sets operators: pull extracts, load them into PostgreSQL.

The Advanced Data Sets operator lives in ``operators/brightspace_ads.py`` and is importable from here too.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping, Sequence
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pendulum
from airflow.sdk import Asset, BaseOperator

from airflow_provider_canvas.brightspace.hooks.brightspace import (
    SCOPE_BDS_DOWNLOAD,
    SCOPE_BDS_LIST,
    SCOPE_BDS_LIST_LEGACY,
    BrightspaceHook,
)
from airflow_provider_canvas.brightspace.hooks.models import BdsDataSet, BdsExtract
from airflow_provider_canvas.brightspace.loading.catalogue import column_types_for
from airflow_provider_canvas.brightspace.loading.postgres import DeletedRows, FullExtracts, key_columns_for
from airflow_provider_canvas.brightspace.loading.pull_state import (
    RETENTION,
    DataSetFolder,
    FullPolicy,
    PulledExtract,
    plan_load,
    plan_pull,
)
from airflow_provider_canvas.brightspace.loading.pulled_check import file_problem, merge_plans, recheck_pulled
from airflow_provider_canvas.brightspace.operators.ads import BrightspaceAdvancedDataSetOperator
from airflow_provider_canvas.common.assets import alias_location, default_outlets, emit_asset_event
from airflow_provider_canvas.common.templating import is_template, name_list
from airflow_provider_canvas.exceptions import LmsError

if TYPE_CHECKING:
    from airflow.sdk import Context, ObjectStoragePath

__all__ = [
    "BrightspaceAdvancedDataSetOperator",
    "BrightspaceDataSetsPullOperator",
    "BrightspaceDataSetsToPostgresOperator",
    "data_set_asset",
]


def data_set_asset(location: str | os.PathLike[str] | ObjectStoragePath, data_set: str) -> Asset:
    """The asset a pull updates for ``data_set`` under ``location``; schedule downstream DAGs on it."""
    return Asset(uri=DataSetFolder(location, data_set).uri)


def _names(data_sets: Any) -> list[str]:
    """Data set names from a list, or a rendered template (JSON / Python list, or comma-separated)."""
    return name_list(data_sets, refusal="data_sets must be a non-empty list of data set names")


def _raise_collected(failures: dict[str, BaseException], what: str) -> None:
    if len(failures) == 1:
        raise next(iter(failures.values()))
    if failures:
        details = "; ".join(f"{name}: {err}" for name, err in failures.items())
        raise LmsError(f"{what} failed for {len(failures)} data sets: {details}")


class BrightspaceDataSetsPullOperator(BaseOperator):
    """Download new Brightspace Data Sets extracts into ``location``/<data set>/.

    For each named data set: on the first run the newest full extract and every differential
    after it; afterwards every differential newer than the last extract pulled, and (with
    ``full="newer"``) a newly published full. What was pulled is kept in a ``manifest.json`` in
    each data set's folder (see :mod:`airflow_provider_canvas.brightspace.loading.pull_state` for why), so a
    re-run skips what is already there. When the last pull is older than the 14-day retention of
    differentials the task fails rather than leave a silent hole.

    Each data set is an Asset (``data_set_asset(location, name)``) in ``outlets``; its event's extra
    says how many extracts arrived (``new_extracts``) and describes the newest. With a templated
    ``data_sets`` or ``location`` the assets are added through an AssetAlias at run time.

    :param data_sets: data set names, a list or a template rendering to one (templated).
    :param location: a local folder or an ObjectStoragePath (templated).
    :param brightspace_conn_id: the ``brightspace`` connection (templated).
    :param full: ``first_run`` or ``newer`` (templated).

    Returns (XCom) ``{data set: [pulled extract, ...]}`` with relative file names and metadata.
    """

    template_fields: Sequence[str] = ("brightspace_conn_id", "data_sets", "location", "full")
    #: OAuth scopes the calls need (the listing scope depends on the connection's ``bds_api``).
    required_scopes: tuple[str, ...] = (SCOPE_BDS_LIST, SCOPE_BDS_LIST_LEGACY, SCOPE_BDS_DOWNLOAD)

    def __init__(
        self,
        *,
        data_sets: Sequence[str] | str,
        location: str | os.PathLike[str] | ObjectStoragePath,
        brightspace_conn_id: str = BrightspaceHook.default_conn_name,
        full: FullPolicy | str = "first_run",
        retention: timedelta = RETENTION,
        download_attempts: int = 5,
        lock_timeout: float = 3600.0,
        **kwargs: Any,
    ) -> None:
        self.alias = default_outlets(
            kwargs,
            templated=is_template(data_sets) or is_template(location),
            alias=f"brightspace-data-sets:{alias_location(location)}",
            assets=lambda: [data_set_asset(location, name) for name in _names(data_sets)],
        )
        super().__init__(**kwargs)
        self.data_sets = data_sets
        self.location = location
        self.brightspace_conn_id = brightspace_conn_id
        self.full = full
        self.retention = retention
        self.download_attempts = download_attempts
        self.lock_timeout = lock_timeout

    def execute(self, context: Context) -> dict[str, list[dict[str, Any]]]:
        names = _names(self.data_sets)
        hook = BrightspaceHook(self.brightspace_conn_id)
        try:
            listed = hook.list_data_sets()
            pulled: dict[str, list[dict[str, Any]]] = {}
            self._lineage_facts = (hook.base_url, pulled)
            failures: dict[str, BaseException] = {}
            for name in names:
                try:
                    pulled[name] = self._pull(hook, listed, name)
                except LmsError as err:
                    self.log.error("%s: %s", name, err)
                    failures[name] = err
                    continue
                self._emit_asset_event(context, name, pulled[name])
            _raise_collected(failures, "pull")
            return pulled
        finally:
            hook.close()

    def _pull(self, hook: BrightspaceHook, listed: Sequence[BdsDataSet], name: str) -> list[dict[str, Any]]:
        data_set = hook.get_data_set(name, listed)
        folder = DataSetFolder(self.location, name)
        new: list[dict[str, Any]] = []
        with folder.lock(self.lock_timeout):
            state = folder.read_manifest()
            extracts = hook.list_extracts(data_set)
            state, again = recheck_pulled(folder, state, extracts)  # bad files of older versions
            planned = plan_pull(extracts, state, full=self.full, retention=self.retention)
            todo = merge_plans(again, planned)
            self.log.info("%s: %d extract(s) to pull into %s", name, len(todo), folder.uri)
            for extract in todo:
                entry = self._fetch(hook, folder, extract)
                state = folder.record(state, entry)
                new.append({**extract.metadata(), "file": entry.file, "size": entry.size})
        return new

    def _fetch(self, hook: BrightspaceHook, folder: DataSetFolder, extract: BdsExtract) -> PulledExtract:
        name = folder.file_name(extract)
        options = {"attempts": self.download_attempts}
        if extract.download_size is not None and file_problem(folder, name, extract.download_size) is None:
            # Downloaded by a run that died before its manifest write: keep it.
            self.log.info("%s already present with the announced size", name)
        elif folder.is_local:
            hook.download_extract(extract, folder.local_file(name), **options)
        else:
            with tempfile.TemporaryDirectory(prefix="bds-") as scratch:
                local = Path(scratch) / Path(name).name
                hook.download_extract(extract, local, **options)
                folder.upload(local, name)
        return PulledExtract(
            file=name,
            bds_type=extract.bds_type,
            created=extract.created.to_iso8601_string(),
            size=extract.download_size if extract.download_size is not None else folder.size_of(name) or 0,
            version=extract.version,
            pulled_at=pendulum.now("UTC").to_iso8601_string(),
        )

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        """For the OpenLineage listener: the Brightspace data sets in, the extract files out."""
        from airflow_provider_canvas.brightspace.operators.lineage import pull_lineage

        return pull_lineage(*self._lineage_facts, location=self.location)

    def _emit_asset_event(self, context: Context, name: str, new: list[dict[str, Any]]) -> None:
        extra: dict[str, Any] = {
            "data_set": name,
            "new_extracts": len(new),
            "newest": new[-1] if new else None,
            "files": [item["file"] for item in new],
        }
        emit_asset_event(context, data_set_asset(self.location, name), extra, self.alias)


class BrightspaceDataSetsToPostgresOperator(BaseOperator):
    """Load the pulled extracts of each data set into ``schema.<table>`` of a PostgreSQL connection.

    Reads each data set's manifest under ``location`` (written by
    :class:`BrightspaceDataSetsPullOperator`) and loads, oldest first, what the table has not seen:
    the newest full if it is newer than the table's data, then the differentials after it. Each
    extract is one transaction (COPY into a staging table, upsert by the key, ledger row). Keys
    come from ``key_columns`` or, for common data sets, ``DEFAULT_KEY_COLUMNS``; tables default to
    the data set's slug (``"Org Units"`` -> ``org_units``). ``IsDeleted`` rows are deleted
    (``deleted_rows="delete"``) or kept with the flag (``"flag"``). Loading again does nothing.
    New columns of catalogued data sets get their documented types (:mod:`~airflow_provider_canvas.
    loading.catalogue`), except ``text_columns`` (``{"Users": ["OrgRoleId"]}``, ``["*"]`` for all);
    ``migrate_text_columns`` converts text tables of earlier versions once. ``full_extracts``:
    ``"replace"`` (default, first-load speed, readers wait) or ``"merge"`` (see the loader).
    """

    template_fields: Sequence[str] = ("postgres_conn_id", "data_sets", "location", "schema")
    required_scopes: tuple[str, ...] = ()  # reads local files and PostgreSQL only

    def __init__(
        self,
        *,
        data_sets: Sequence[str] | str,
        location: str | os.PathLike[str] | ObjectStoragePath,
        postgres_conn_id: str,
        schema: str = "brightspace",
        tables: Mapping[str, str] | None = None,
        key_columns: Mapping[str, Sequence[str]] | None = None,
        deleted_rows: DeletedRows = "delete",
        text_columns: Mapping[str, Sequence[str]] | None = None,
        migrate_text_columns: bool = False,
        full_extracts: FullExtracts = "replace",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.text_columns = {k: list(v) for k, v in (text_columns or {}).items()}
        self.migrate_text_columns = migrate_text_columns
        self.full_extracts = full_extracts
        self.data_sets = data_sets
        self.location = location
        self.postgres_conn_id = postgres_conn_id
        self.schema = schema
        self.tables = dict(tables or {})
        self.key_columns = {k: list(v) for k, v in (key_columns or {}).items()}
        self.deleted_rows = deleted_rows

    def execute(self, context: Context) -> dict[str, list[dict[str, Any]]]:
        from airflow.providers.postgres.hooks.postgres import PostgresHook

        from airflow_provider_canvas.brightspace.loading.postgres import PostgresExtractLoader
        from airflow_provider_canvas.common.airflow_access import get_connection

        names = _names(self.data_sets)
        keys = {name: key_columns_for(name, self.key_columns) for name in names}  # fail before loading
        hook = PostgresHook(
            postgres_conn_id=self.postgres_conn_id, connection=get_connection(self.postgres_conn_id)
        )
        db = hook.get_conn()
        results: dict[str, list[dict[str, Any]]] = {}
        self._loaded = results  # for OpenLineage
        failures: dict[str, BaseException] = {}
        try:
            loader = PostgresExtractLoader(db, self.schema)
            for name in names:
                try:
                    results[name] = self._load(loader, name, keys[name])
                except LmsError as err:
                    self.log.error("%s: %s", name, err)
                    failures[name] = err
        finally:
            db.close()
        _raise_collected(failures, "load")
        return results

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        """For the OpenLineage listener: the extract files in, the tables (with their columns) out."""
        from airflow_provider_canvas.brightspace.operators.lineage import load_lineage

        return load_lineage(self.postgres_conn_id, self.location, self.schema, self.tables, self._loaded)

    def _load(self, loader: Any, name: str, keys: list[str]) -> list[dict[str, Any]]:
        folder = DataSetFolder(self.location, name)
        pulled = folder.read_manifest()
        if not pulled:
            raise LmsError(f"{name}: nothing pulled yet under {folder.uri}; run the pull first")
        table = self.tables.get(name) or folder.slug
        newest = loader.newest_loaded(table)
        todo = plan_load(pulled, newest[1] if newest else None)
        self.log.info("%s: %d extract(s) to load into %s.%s", name, len(todo), self.schema, table)
        results = []
        for entry in todo:
            with folder.open(entry.file) as source:
                result = loader.load(
                    source,
                    table,
                    keys,
                    extract_id=entry.file,
                    bds_type=entry.bds_type,
                    created_at=entry.created_at,
                    deleted_rows=self.deleted_rows,
                    name=f"{name} {entry.bds_type} {entry.created}",
                    column_types=column_types_for(name, self.text_columns.get(name, ())),
                    migrate_text_columns=self.migrate_text_columns,
                    full_extracts=self.full_extracts,
                    data_set=name,
                )
            results.append(result.to_dict())
        return results
