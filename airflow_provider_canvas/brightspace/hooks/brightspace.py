"""BrightspaceHook: the D2L Brightspace API with single-use OAuth refresh tokens kept safe."""

from __future__ import annotations

import difflib
import os
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, ClassVar
from urllib.parse import urljoin

import requests

from airflow_provider_canvas.brightspace.hooks.models import (
    BdsDataSet,
    BdsExtract,
    legacy_data_sets,
)
from airflow_provider_canvas.common.connection_checks import check_base_url
from airflow_provider_canvas.common.download import DownloadedFile
from airflow_provider_canvas.common.net import absolute_url, redact_url, same_host
from airflow_provider_canvas.exceptions import (
    ExportJobError,
    LmsConfigurationError,
    LmsError,
    LmsNotFoundError,
)
from airflow_provider_canvas.get_provider_info import extra_defaults
from airflow_provider_canvas.tokens.hook import LmsHook
from airflow_provider_canvas.tokens.model import MASKED, extra_value

DEFAULT_TOKEN_URL: str = extra_defaults("brightspace")["oauth_url"]
#: Enough for the Data Sets pull through either listing API (``datasets:bds:read`` is the current one's).
DEFAULT_SCOPES: str = extra_defaults("brightspace")["scopes"]
#: The extra key of the token endpoint. Not ``token_url``: Airflow's secrets masker hides every
#: field whose name holds "token", so the form showed (and saved) ``***``. That key is still read.
TOKEN_URL_KEY = "oauth_url"
LEGACY_TOKEN_URL_KEY = "token_url"


def stored_token_url(extra: Mapping[str, Any]) -> str:
    """The token endpoint a connection's extra names (``oauth_url``, or 0.1's ``token_url``), else D2L's.

    ``***`` is what the 0.1 form saved for the masked default: it means the default.
    """
    for key in (TOKEN_URL_KEY, LEGACY_TOKEN_URL_KEY):
        value = extra_value(extra, "brightspace", key)
        if value and value != MASKED:
            return str(value)
    return DEFAULT_TOKEN_URL


DEFAULT_LP_VERSION: str = extra_defaults("brightspace")["lp_version"]
#: From this LP version on, data sets are listed through ``datasets/bds`` (D2L's own Data Hub
#: walkthrough uses 1.43); older versions use ``dataExport/bds``. The ``bds_api`` extra overrides.
DATASETS_API_MIN_LP_VERSION = (1, 43)

SCOPE_BDS_LIST = "datasets:bds:read"
SCOPE_BDS_LIST_LEGACY = "datahub:dataexports:read"
SCOPE_BDS_DOWNLOAD = "datahub:dataexports:download"
SCOPE_ADS_LIST = "reporting:dataset:list"
SCOPE_ADS_CREATE = "reporting:job:create"
SCOPE_ADS_FETCH = "reporting:job:fetch"
SCOPE_ADS_DOWNLOAD = "reporting:job:download"


class BrightspaceHook(LmsHook):
    """Talks to one Brightspace instance through a ``brightspace`` connection.

    host: the Brightspace base URL; login/password: OAuth 2.0 client ID and secret; extra:
    tokens (kept up to date by the hook), ``oauth_url`` (the token endpoint; ``token_url`` before
    0.2), ``scopes``, ``lp_version``, ``bds_api`` (``datasets``, ``dataExport`` or ``auto``: by
    ``lp_version``),
    ``expiry_buffer_seconds``, ``lock_conn_id``.

    :param conn_id: a ``brightspace`` connection; default ``brightspace_default`` (also as
        ``brightspace_conn_id=``).
    :param timeout: (connect, read) seconds of every request.
    :param max_retries: retries of connection errors, 5xx answers to reads and throttled requests.
        A token request that may have reached Brightspace is never sent again.
    :param backoff_seconds: the first retry's wait, doubled for each further retry (with jitter).
    :param max_backoff_seconds: the longest wait between two retries.
    """

    conn_name_attr = "brightspace_conn_id"
    default_conn_name = "brightspace_default"
    conn_type = "brightspace"
    hook_name = "D2L Brightspace"

    platform: ClassVar[str] = "brightspace"
    example_host = "https://myschool.brightspace.com"
    token_client_auth = "basic"
    single_use_refresh_tokens = True

    @property
    def token_url(self) -> str:
        return stored_token_url(self.connection.extra_dejson)

    def _check_connection(self, conn: Any) -> None:
        super()._check_connection(conn)
        # Checked as it will be used: a legacy ``token_url`` that the 0.1 form saved as ``***`` is refused.
        where = f"the token URL (oauth_url) of {self.conn_label}"
        check_base_url(where, stored_token_url(conn.extra_dejson), DEFAULT_TOKEN_URL)

    @property
    def refresh_scope(self) -> str:
        return self.extra("scopes", DEFAULT_SCOPES)

    @property
    def authorization_endpoint(self) -> str:
        # D2L serves consent and tokens on one host: /oauth2/auth beside /core/connect/token.
        return self.extra("auth_url") or urljoin(self.token_url, "/oauth2/auth")

    @property
    def whoami_path(self) -> str:
        return self.lp_path("users/whoami")

    def _describe_user(self, body: Any) -> str:
        if not isinstance(body, dict):
            return "user unknown"
        return f"user {body.get('UniqueName')!r}, id {body.get('Identifier')}"

    @property
    def lp_version(self) -> str:
        return str(self.extra("lp_version", DEFAULT_LP_VERSION))

    def lp_path(self, path: str) -> str:
        """``/d2l/api/lp/{version}/<path>`` for this connection's LP API version."""
        return f"/d2l/api/lp/{self.lp_version}/{path.lstrip('/')}"

    def whoami(self) -> dict[str, Any]:
        return self.get_json(self.lp_path("users/whoami"))

    def _pacing_delay(self, response: requests.Response) -> float:
        try:
            remaining = float(response.headers["X-Rate-Limit-Remaining"])
            reset = float(response.headers.get("X-Rate-Limit-Reset", 0))
        except (KeyError, ValueError):
            return 0.0
        return min(60.0, reset) if remaining <= 0 else 0.0

    def _permission_message(self, where: str, said: str, scope: str | None) -> str:
        return (
            f"{where} was refused: {said}. The OAuth 2.0 app or the token of "
            f"{self.conn_label} lacks scope {scope or '(see the error)'}, or its user lacks the role "
            "permission; add it and authorize again."
        )

    # Brightspace Data Sets: listings -----------------------------------------------------------

    @property
    def bds_api(self) -> str:
        """``datasets`` (ObjectListPage listing) or ``dataExport`` (the older BrightspaceDataSets one)."""
        configured = self.extra("bds_api")
        if configured and configured != "auto":
            if configured not in ("datasets", "dataExport"):
                raise LmsConfigurationError(
                    f"{self.conn_label}: bds_api must be 'datasets', 'dataExport' or 'auto', "
                    f"got {configured!r}"
                )
            return str(configured)
        try:
            version = tuple(int(part) for part in self.lp_version.split("."))
        except ValueError:
            raise LmsConfigurationError(
                f"{self.conn_label}: lp_version must look like 1.49, got {self.lp_version!r}"
            ) from None
        return "datasets" if version >= DATASETS_API_MIN_LP_VERSION else "dataExport"

    def _api_url(self, url: str) -> str:
        """An absolute URL on this instance; links on another host would receive the bearer token."""
        absolute = absolute_url(self.base_url, url)
        if not same_host(absolute, self.base_url):
            raise LmsError(
                f"Brightspace returned a link to another host ({redact_url(absolute)}); not following it"
            )
        return absolute

    def _paged(self, url: str, items_key: str, next_key: str, scope: str, **params: Any) -> Iterator[Any]:
        """Every item of a paged listing, following the server's own next link to the end."""
        seen: set[str] = set()
        next_url: str | None = self._api_url(url)
        first_params: dict[str, Any] | None = params or None
        while next_url:
            if next_url in seen:
                raise LmsError(
                    f"{redact_url(next_url)}: the listing's next link points back at a page already read"
                )
            seen.add(next_url)
            page = self.get_json(next_url, scope=scope, params=first_params)
            first_params = None  # the next link already carries its query
            yield from page.get(items_key) or []
            link = page.get(next_key)
            next_url = self._api_url(link) if link else None

    def list_data_sets(self) -> list[BdsDataSet]:
        """Every Brightspace Data Set of the instance, through the API chosen by :attr:`bds_api`."""
        if self.bds_api == "datasets":
            return [
                BdsDataSet.from_json(item)
                for item in self._paged(self.lp_path("datasets/bds"), "Objects", "Next", SCOPE_BDS_LIST)
            ]
        return self._legacy_data_sets()

    def _legacy_data_sets(self) -> list[BdsDataSet]:
        entries = self._paged(
            self.lp_path("dataExport/bds"),
            "BrightspaceDataSets",
            "NextPageUrl",
            SCOPE_BDS_LIST_LEGACY,
            page=1,
        )
        return legacy_data_sets(entries)

    def get_data_set(self, name: str, data_sets: Sequence[BdsDataSet] | None = None) -> BdsDataSet:
        """The data set called ``name`` (from ``data_sets`` if given, else a fresh listing)."""
        data_sets = self.list_data_sets() if data_sets is None else data_sets
        for data_set in data_sets:
            if data_set.name == name:
                return data_set
        close = difflib.get_close_matches(name, [d.name for d in data_sets], n=1, cutoff=0.6)
        raise LmsNotFoundError(
            f"Brightspace has no data set named {name!r}"
            + (f"; did you mean {close[0]!r}?" if close else ""),
            status=404,
            url=redact_url(self.base_url),
        )

    def list_extracts(self, data_set: str | BdsDataSet, bds_type: str | None = None) -> list[BdsExtract]:
        """The extracts still available for a data set (Full, Differential or both), newest first."""
        if bds_type not in (None, "Full", "Differential"):
            raise LmsConfigurationError(f"bds_type must be 'Full', 'Differential' or None, got {bds_type!r}")
        if isinstance(data_set, str):
            data_set = self.get_data_set(data_set)
        if data_set.extracts or self.bds_api == "dataExport":
            found = [e for e in data_set.extracts if bds_type in (None, e.bds_type)]
        else:
            found = []
            for kind in ("Full", "Differential"):
                plugin_id = data_set.full_plugin_id if kind == "Full" else data_set.differential_plugin_id
                if bds_type not in (None, kind) or not plugin_id:
                    continue
                link = data_set.extracts_links.get(kind) or self.lp_path(
                    f"datasets/bds/{data_set.schema_id}/plugins/{plugin_id}/extracts"
                )
                found += [
                    BdsExtract.from_json(item, data_set.name, kind)
                    for item in self._paged(link, "Objects", "Next", SCOPE_BDS_LIST)
                ]
        return sorted(found, key=lambda e: e.created, reverse=True)

    # Downloads ----------------------------------------------------------------------------------

    def download_extract(
        self, extract: BdsExtract, destination: str | os.PathLike[str], **options: Any
    ) -> DownloadedFile:
        """Download an extract to ``destination``: of size ``DownloadSize``, one ZIP member, CRC checked."""
        return self.download(
            extract.download_link,
            destination,
            expected_size=extract.download_size,
            size_name="Brightspace's DownloadSize",
            scope=SCOPE_BDS_DOWNLOAD,
            **{"check_zip": True, **options},
        )

    # Advanced Data Sets -------------------------------------------------------------------------

    def list_ads_data_sets(self) -> list[dict[str, Any]]:
        """Advanced Data Sets: ``DataSetId``, ``Name``, ``Category``, ``Filters``, ..."""
        return list(self.get_json(self.lp_path("dataExport/list"), scope=SCOPE_ADS_LIST))

    def resolve_ads_data_set(self, name_or_id: str) -> dict[str, Any]:
        data_sets = self.list_ads_data_sets()
        for data_set in data_sets:
            if name_or_id in (data_set.get("DataSetId"), data_set.get("Name")):
                return data_set
        raise LmsNotFoundError(
            f"no Advanced Data Set named or with id {name_or_id!r}; available: "
            f"{sorted(str(d.get('Name')) for d in data_sets)[:20]}",
            status=404,
            url=redact_url(self.base_url),
        )

    def create_export_job(
        self, data_set_id: str, filters: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None = None
    ) -> dict[str, Any]:
        """Submit an export job; ``filters`` as ``{"startDate": "...", ...}`` or ``[{"Name", "Value"}]``."""
        if isinstance(filters, Mapping):
            body_filters = [{"Name": name, "Value": str(value)} for name, value in filters.items()]
        else:
            body_filters = [{"Name": f["Name"], "Value": str(f["Value"])} for f in filters or []]
        job = self.request(
            "POST",
            self.lp_path("dataExport/create"),
            scope=SCOPE_ADS_CREATE,
            json={"DataSetId": data_set_id, "Filters": body_filters},
        ).json()
        self.log.info("Created export job %s for data set %s", job.get("ExportJobId"), data_set_id)
        return job

    def get_export_job(self, job_id: str) -> dict[str, Any]:
        return self.get_json(self.lp_path(f"dataExport/jobs/{job_id}"), scope=SCOPE_ADS_FETCH)

    def download_export(
        self, job_id: str, destination: str | os.PathLike[str], **options: Any
    ) -> DownloadedFile:
        """Download the result of a completed export job."""
        try:
            return self.download(
                self.lp_path(f"dataExport/download/{job_id}"),
                destination,
                scope=SCOPE_ADS_DOWNLOAD,
                **options,
            )
        except LmsNotFoundError as err:
            raise ExportJobError(
                f"export job {job_id} cannot be downloaded: it is unknown, not complete, expired or deleted "
                f"({err}). Create a new export job."
            ) from None
