"""Brightspace Data Sets for the emulator: data sets, extracts, both listing APIs and the downloads."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import datetime, timedelta, timezone
from typing import Any

from airflow_provider_canvas.brightspace.loading.catalogue import CATALOGUE, TEXT, column_types_for
from airflow_provider_canvas.testing.bds_files import (
    ZipSource,
    byte_range,
    file_response,
    make_source,
)
from airflow_provider_canvas.testing.bds_legacy import iso, legacy_entry
from airflow_provider_canvas.testing.bds_models import BdsDataSet, BdsExtract
from airflow_provider_canvas.testing.bds_plugins import published_ids
from airflow_provider_canvas.testing.brightspace_oauth import AccessToken, BrightspaceOAuth
from airflow_provider_canvas.testing.primitives import (
    EmulatorHost,
    Request,
    Response,
    json_response,
    redirect_response,
    text_response,
    utcnow,
)
from airflow_provider_canvas.testing.signed_storage import SignedDownload, SignedStorage

BDS_READ = ("datahub:dataexports:read", "datasets:bds:read")
BDS_DOWNLOAD = ("datahub:dataexports:download",)
NAMESPACE = uuid.UUID("5f0f7c1e-3d43-4f55-9a49-6f1bd2f0c0de")  # stable ids across runs


class BdsApi(BrightspaceOAuth):
    """Brightspace Data Sets: the setup API tests use, and the request handlers the routes call."""

    def __init__(self, emulator: EmulatorHost) -> None:
        super().__init__(emulator)
        self.data_sets: dict[str, BdsDataSet] = {}
        self.page_size = 100
        self.retention_days = 14  # differentials older than this are no longer listed
        self.redirect_downloads = True
        self.signed_url_ttl = 300
        # S3-style storage refuses a presigned URL that also carries an Authorization header.
        self.reject_signed_with_authorization = True
        self._extract_seq = 0
        self._storage: SignedStorage[BdsExtract] = SignedStorage(self._lock)
        self._truncate_next: int | None = None

    # ================================================================= setup API: BDS
    def add_data_set(
        self,
        name: str,
        columns: list[str] | None = None,
        rows: list[dict[str, Any]] | None = None,
        *,
        rows_count: int | None = None,
        schema_id: str | None = None,
        plugin_id: str | None = None,
        differential_plugin_id: str | None = None,
        description: str = "",
        version: str = "1.0",
        created: datetime | None = None,
        types: Mapping[str, str] | None = None,
    ) -> BdsDataSet:
        """Register a data set; with `rows` or `rows_count` it also gets a Full extract created now.

        IDs default to the ones D2L publishes (:mod:`.bds_plugins`), else to generated ones. Generated
        values fit the catalogue's documented types, then `types` (column -> PostgreSQL type). Without
        `columns` a catalogued data set takes the catalogue's: its keys, then its typed columns, every
        column not typed there being text.
        """
        if columns is None:
            columns, catalogued = catalogue_columns(name)
            types = {**catalogued, **(types or {})}
        published = published_ids(name)
        with self._lock:
            taken = {i for ds in self.data_sets.values() if ds.name != name for i in _ids(ds)}

            def pick(given: str | None, known: str | None, key: str) -> str:
                # A published ID serves one data set here ("Org Units" and its long name share theirs).
                if given:
                    return given
                return known if known and known not in taken else str(uuid.uuid5(NAMESPACE, key))

            data_set = BdsDataSet(
                name=name,
                columns=list(columns),
                schema_id=pick(schema_id, published and published.schema, f"schema:{name}"),
                full_plugin_id=pick(plugin_id, published and published.full, f"plugin:{name}:Full"),
                differential_plugin_id=pick(
                    differential_plugin_id, published and published.differential, f"plugin:{name}:Diff"
                ),
                description=description or f"The {name} data set",
                version=version,
                types={**column_types_for(name), **(types or {})},
            )
            self.data_sets[name] = data_set
        if rows is not None or rows_count is not None:
            self.add_extract(name, "Full", created, rows, rows_count=rows_count)
        return data_set

    def add_extract(
        self,
        name: str,
        bds_type: str = "Full",
        created: datetime | None = None,
        rows: list[dict[str, Any]] | None = None,
        *,
        columns: list[str] | None = None,
        rows_count: int | None = None,
        row_id_start: int = 1,
        version: str | None = None,
        zip_members: list[tuple[str, bytes | str]] | None = None,
    ) -> BdsExtract:
        """One extract of data set `name`.

        `columns` overrides the data set's (a minor version adds columns at the end; the data set's
        columns follow the newest extract). `rows_count` generates deterministic rows streamed from a
        formula instead of memory. `zip_members` replaces the archive content verbatim (two files,
        `../escape.csv`, ...).
        """
        if bds_type not in ("Full", "Differential"):
            raise ValueError("bds_type must be 'Full' or 'Differential'")
        created = created or utcnow()
        if created.tzinfo is None:
            created = created.replace(tzinfo=timezone.utc)
        with self._lock:
            data_set = self.data_sets.get(name)
            if data_set is None:
                raise ValueError(f"unknown data set {name!r}")
            cols = list(columns or data_set.columns)
            member = f"{name.replace(' ', '')}.csv"
            source = make_source(
                member, cols, rows, rows_count, row_id_start, created, zip_members, data_set.types
            )
            self._extract_seq += 1
            extract = BdsExtract(
                self._extract_seq, data_set, bds_type, created, cols, version or data_set.version, source
            )
            data_set.extracts.append(extract)
            if columns is not None and extract is max(data_set.extracts, key=lambda e: e.created):
                data_set.columns = cols
                data_set.version = extract.version
            return extract

    def corrupt_extract(self, name: str, extract_id: int | None = None) -> BdsExtract:
        """Serve non-ZIP bytes (same length) for the newest extract of `name`, or the given one."""
        with self._lock:
            extracts = self.data_sets[name].extracts
            candidates = [e for e in extracts if extract_id is None or e.extract_id == extract_id]
            if not candidates:
                raise ValueError(f"no extract {extract_id} in {name!r}")
            extract = max(candidates, key=lambda e: e.created)
            extract.corrupt = True
            return extract

    def truncate_next_download(self, n_bytes: int) -> None:
        """The next file body served (BDS or ADS) stops after `n_bytes`; Content-Length promises all."""
        with self._lock:
            self._truncate_next = n_bytes

    @property
    def signed_downloads(self) -> list[SignedDownload]:
        return self._storage.downloads

    # ================================================================= shared by BDS and ADS handlers
    def _lp(self, version: str) -> str:
        return f"{self._emu.url}/d2l/api/lp/{version}"

    def _page(self, request: Request, items: list[Any]) -> dict[str, Any]:
        """An ObjectListPage: an opaque bookmark points at the next slice."""
        try:
            start = int(request.arg("bookmark") or 0)
        except ValueError:
            start = 0
        stop = start + self.page_size
        next_url = None
        if stop < len(items):
            next_url = f"{self._emu.url}{request.path}?bookmark={stop}"
        return {"Objects": items[start:stop], "Next": next_url}

    def _take_truncate(self) -> int | None:
        with self._lock:
            value, self._truncate_next = self._truncate_next, None
            return value

    def _file_response(
        self, source: ZipSource, filename: str, status: int = 200, start: int = 0, stop: int | None = None
    ) -> Response:
        return file_response(source, filename, self._take_truncate(), status, start, stop)

    # ----------------------------------------------------------------- BDS listings
    def _listed(self, data_set: BdsDataSet, bds_type: str | None = None) -> list[BdsExtract]:
        """Extracts still listed (differentials expire after `retention_days`), newest first."""
        horizon = utcnow() - timedelta(days=self.retention_days)
        kept = [
            e
            for e in data_set.extracts
            if (bds_type is None or e.bds_type == bds_type) and (e.bds_type == "Full" or e.created >= horizon)
        ]
        return sorted(kept, key=lambda e: e.created, reverse=True)

    def _extract_link(self, extract: BdsExtract, version: str) -> str:
        ds = extract.data_set
        return (
            f"{self._lp(version)}/datasets/bds/{ds.schema_id}/plugins/{extract.plugin_id}"
            f"/extracts/{extract.bds_type}/{iso(extract.created)}"
        )

    def _extract_json(self, extract: BdsExtract, version: str) -> dict[str, Any]:
        return {
            "SchemaId": extract.data_set.schema_id,
            "PluginId": extract.plugin_id,
            "BdsType": extract.bds_type,
            "CreatedDate": iso(extract.created),
            "DownloadLink": self._extract_link(extract, version),
            "DownloadSize": extract.download_size,
            "QueuedForProcessingDate": iso(extract.created - timedelta(minutes=20)),
            "Version": extract.version,
        }

    def _list_data_sets(self, request: Request, token: AccessToken, params: dict[str, str]) -> Response:
        base = f"{self._lp(params['v'])}/datasets/bds"

        def plugin(ds: BdsDataSet, plugin_id: str) -> dict[str, Any]:
            # Full and Differential carry the same Name: they feed the same table; BdsType tells them apart.
            return {
                "PluginId": plugin_id,
                "Name": ds.name,
                "Description": ds.description,
                "ExtractsLink": f"{base}/{ds.schema_id}/plugins/{plugin_id}/extracts",
            }

        with self._lock:
            items = [
                {
                    "SchemaId": ds.schema_id,
                    "Full": plugin(ds, ds.full_plugin_id),
                    "Differential": plugin(ds, ds.differential_plugin_id),
                    "ExtractsLink": f"{base}/{ds.schema_id}/extracts",
                }
                for ds in sorted(self.data_sets.values(), key=lambda d: d.name)
            ]
        return json_response(200, self._page(request, items))

    def _find(self, schema_id: str | None, plugin_id: str | None) -> tuple[BdsDataSet, str | None] | None:
        for ds in self.data_sets.values():
            if schema_id is not None and ds.schema_id != schema_id:
                continue
            if plugin_id is None and schema_id is not None:
                return ds, None
            if plugin_id == ds.full_plugin_id:
                return ds, "Full"
            if plugin_id == ds.differential_plugin_id:
                return ds, "Differential"
        return None

    def _extracts(self, request: Request, token: AccessToken, params: dict[str, str]) -> Response:
        with self._lock:
            found = self._find(params["schema"], params.get("plugin"))
            if found is None:
                return text_response(404, "Not Found")
            data_set, bds_type = found
            items = [self._extract_json(e, params["v"]) for e in self._listed(data_set, bds_type)]
        return json_response(200, self._page(request, items))

    def _legacy_entry(self, ds: BdsDataSet, bds_type: str, version: str) -> dict[str, Any]:
        plugin = ds.full_plugin_id if bds_type == "Full" else ds.differential_plugin_id
        latest = f"{self._lp(version)}/dataExport/bds/download/{plugin}"
        return legacy_entry(
            ds, bds_type, self._listed(ds, bds_type), latest, lambda e: self._extract_link(e, version)
        )

    def _legacy_list(self, request: Request, token: AccessToken, params: dict[str, str]) -> Response:
        try:
            page = max(1, int(request.arg("page") or 1))
            size = max(1, int(request.arg("pageSize") or self.page_size))
        except ValueError:
            return text_response(400, "page and pageSize must be integers")
        with self._lock:
            entries = [
                self._legacy_entry(ds, bds_type, params["v"])
                for ds in sorted(self.data_sets.values(), key=lambda d: d.name)
                for bds_type in ("Full", "Differential")
            ]
        chunk = entries[(page - 1) * size : page * size]
        base = f"{self._emu.url}{request.path}"
        return json_response(
            200,
            {
                "BrightspaceDataSets": chunk,
                "NextPageUrl": f"{base}?page={page + 1}&pageSize={size}"
                if page * size < len(entries)
                else None,
                "PrevPageUrl": f"{base}?page={page - 1}&pageSize={size}" if page > 1 else None,
            },
        )

    # ----------------------------------------------------------------- BDS downloads
    def _download_extract(self, request: Request, token: AccessToken, params: dict[str, str]) -> Response:
        with self._lock:
            found = self._find(params["schema"], params["plugin"])
            if found is None or found[1] != params["bds_type"]:
                return text_response(404, "Not Found")
            wanted = params["created"]
            extract = next((e for e in self._listed(found[0], found[1]) if iso(e.created) == wanted), None)
            if extract is None:
                return text_response(404, "Not Found")  # includes differentials past retention
        return self._serve(extract)

    def _latest(self, request: Request, token: AccessToken, params: dict[str, str]) -> Response:
        with self._lock:
            found = self._find(None, params["plugin"])
            listed = self._listed(found[0], found[1]) if found else []
        if not listed:
            return text_response(404, "Not Found")
        return self._serve(listed[0])

    def _serve(self, extract: BdsExtract) -> Response:
        if not self.redirect_downloads:
            return self._file_response(extract.served, _filename(extract))
        return redirect_response(self._storage.url_for(extract, self._emu.signed_url, self.signed_url_ttl))

    def handle_signed(self, request: Request) -> Response:
        """The storage host a DownloadLink redirects to: no bearer token expected, Range supported."""
        return self._storage.handle(request, self.reject_signed_with_authorization, self._serve_signed)

    def _serve_signed(self, request: Request, extract: BdsExtract) -> Response:
        source, filename = extract.served, _filename(extract)
        header = request.header("range")
        if not header:
            return self._file_response(source, filename)
        span = byte_range(header, source.size)
        if span is None:
            return Response(416, b"", {"Content-Range": f"bytes */{source.size}"})
        start, stop = span
        response = self._file_response(source, filename, 206, start, stop)
        response.headers["Content-Range"] = f"bytes {start}-{stop - 1}/{source.size}"
        return response


def _ids(data_set: BdsDataSet) -> tuple[str, str, str]:
    return data_set.schema_id, data_set.full_plugin_id, data_set.differential_plugin_id


def catalogue_columns(name: str) -> tuple[list[str], dict[str, str]]:
    """A catalogued data set's columns (keys first, then its typed columns) and their types, text
    where the catalogue types none; :class:`ValueError` for a data set the catalogue does not know."""
    schema = CATALOGUE.get(name)
    if schema is None:
        raise ValueError(f"data set {name!r} is not in the catalogue: give its columns")
    columns = list(dict.fromkeys([*schema.keys, *schema.columns]))
    return columns, {column: schema.columns.get(column, TEXT) for column in columns}


def _filename(extract: BdsExtract) -> str:
    stamp = extract.created.strftime("%Y%m%d%H%M%S")
    return f"{extract.data_set.name.replace(' ', '')}_{extract.bds_type}_{stamp}.zip"
