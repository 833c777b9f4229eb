"""BrightspaceHook: the D2L Brightspace API with single-use OAuth refresh tokens kept safe."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from functools import cached_property
from pathlib import PurePosixPath
from typing import Any, TypeVar

import requests

from airflow_provider_canvas.brightspace.connection import BrightspaceSettings
from airflow_provider_canvas.brightspace.hooks.listing import SCOPE_BDS_LIST as SCOPE_BDS_LIST
from airflow_provider_canvas.brightspace.hooks.listing import SCOPE_BDS_LIST_LEGACY as SCOPE_BDS_LIST_LEGACY
from airflow_provider_canvas.brightspace.hooks.listing import BdsListings, Plan, read_sync
from airflow_provider_canvas.brightspace.hooks.models import (
    BdsDataSet,
    BdsExtract,
)
from airflow_provider_canvas.brightspace.loading.catalogue import names_of
from airflow_provider_canvas.common.download import DownloadedFile, StreamingDownload
from airflow_provider_canvas.common.net import redact_url
from airflow_provider_canvas.common.transport import ApiRules
from airflow_provider_canvas.exceptions import (
    ExportJobError,
    ExtractFormatError,
    LmsNotFoundError,
)
from airflow_provider_canvas.tokens.hook import LmsHook

SCOPE_BDS_DOWNLOAD = "datahub:dataexports:download"
SCOPE_ADS_LIST = "reporting:dataset:list"
SCOPE_ADS_CREATE = "reporting:job:create"
SCOPE_ADS_FETCH = "reporting:job:fetch"
SCOPE_ADS_DOWNLOAD = "reporting:job:download"

T = TypeVar("T")


class BrightspaceApiRules(ApiRules):
    """Brightspace's answers: a bucket that resets each minute, refusals that name the scope."""

    def pacing_delay(self, response: requests.Response) -> float:
        try:
            remaining = float(response.headers["X-Rate-Limit-Remaining"])
            reset = float(response.headers.get("X-Rate-Limit-Reset", 0))
        except (KeyError, ValueError):
            return 0.0
        return min(60.0, reset) if remaining <= 0 else 0.0

    def permission_message(self, where: str, said: str, scope: str | None, conn_label: str) -> str:
        return (
            f"{where} was refused: {said}. The OAuth 2.0 app or the token of "
            f"{conn_label} lacks scope {scope or '(see the error)'}, or its user lacks the role "
            "permission; add it and authorize again."
        )

    def describe_user(self, body: Any) -> str:
        if not isinstance(body, dict):
            return "user unknown"
        return f"user {body.get('UniqueName')!r}, id {body.get('Identifier')}"


class BrightspaceHook(LmsHook):
    """Talks to one Brightspace instance through a ``brightspace`` connection (see
    :class:`BrightspaceSettings`).

    host: the Brightspace base URL; login/password: OAuth 2.0 client ID and secret; extra:
    tokens (kept up to date by the hook), ``oauth_url`` (the token endpoint; ``token_url`` in
    0.1), ``scopes``, ``lp_version``, ``bds_api`` (``datasets``, ``dataExport`` or ``auto``: by
    ``lp_version``), ``expiry_buffer_seconds``, ``lock_conn_id``.

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
    settings_class = BrightspaceSettings
    api_rules = BrightspaceApiRules()

    settings: BrightspaceSettings

    @property
    def token_url(self) -> str:
        return self.settings.token_url

    @property
    def refresh_scope(self) -> str | None:
        return self.settings.refresh_scope

    @property
    def authorization_endpoint(self) -> str:
        return self.settings.authorization_endpoint

    @property
    def whoami_path(self) -> str:
        return self.lp_path("users/whoami")

    @property
    def lp_version(self) -> str:
        return self.settings.lp_version

    @property
    def bds_api(self) -> str:
        """``datasets`` (ObjectListPage listing) or ``dataExport`` (the older BrightspaceDataSets one)."""
        return self.settings.bds_api

    def lp_path(self, path: str) -> str:
        """``/d2l/api/lp/{version}/<path>`` for this connection's LP API version."""
        return self.settings.lp_path(path)

    def whoami(self) -> dict[str, Any]:
        return self.get_json(self.lp_path("users/whoami"))

    # Brightspace Data Sets: listings -----------------------------------------------------------

    @cached_property
    def listings(self) -> BdsListings:
        return BdsListings(self.settings)

    def _read(self, plan: Plan[T]) -> T:
        return read_sync(plan, lambda page: self.get_json(page.url, scope=page.scope, params=page.params))

    def list_data_sets(self) -> list[BdsDataSet]:
        """Every Brightspace Data Set of the instance, through the API chosen by :attr:`bds_api`."""
        return self._read(self.listings.data_sets())

    def get_data_set(self, name: str, data_sets: Sequence[BdsDataSet] | None = None) -> BdsDataSet:
        """The data set called ``name`` (from ``data_sets`` if given, else a fresh listing)."""
        return self._read(self.listings.data_set(name, data_sets))

    def list_extracts(self, data_set: str | BdsDataSet, bds_type: str | None = None) -> list[BdsExtract]:
        """The extracts still available for a data set (Full, Differential or both), newest first."""
        return self._read(self.listings.extracts(data_set, bds_type))

    def download_extract(
        self, extract: BdsExtract, destination: str | os.PathLike[str], **options: Any
    ) -> DownloadedFile:
        """Download an extract to ``destination``: of size ``DownloadSize``, one ZIP member named after
        the data set, CRC checked."""
        return self.download(
            extract.download_link,
            destination,
            expected_size=extract.download_size,
            size_name="Brightspace's DownloadSize",
            scope=SCOPE_BDS_DOWNLOAD,
            **{"check_zip": True, "check_member": self._member_check(extract.data_set), **options},
        )

    @staticmethod
    def _member_check(data_set: str) -> Callable[[str, str], None]:
        return lambda member, label: check_member_name(member, data_set, label)

    def download(self, url: str, destination: str | os.PathLike[str], **options: Any) -> DownloadedFile:
        """Stream ``url`` to ``destination``, completely or not at all: see :class:`StreamingDownload`."""
        engine = StreamingDownload(
            base_url=self.base_url,
            authorised_get=lambda url, headers, scope: self.request(
                "GET", url, scope=scope, stream=True, headers=headers
            ),
            session=self.session,
            timeout=self.timeout,
            retry=self.retry,
            log=self.log,
        )
        return engine.fetch(url, destination, **options)

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


def check_member_name(member: str, data_set: str, label: str) -> None:
    """Refuse the ZIP of another data set: its CSV is named after the data set (``Users.csv``,
    ``OrganizationalUnits.csv``), perhaps with a suffix after ``_`` or ``-`` or digits.

    Raises :class:`ExtractFormatError` naming both, so a listing entry or link that points at another
    data set's file is caught at the pull, before the file is kept or recorded.
    """
    got = PurePosixPath(member).name.replace(" ", "").lower()
    got = got[: -len(".csv")] if got.endswith(".csv") else got
    for name in names_of(data_set):
        want = name.replace(" ", "").lower()
        if got == want or (got.startswith(want) and got[len(want)] in "_-0123456789"):
            return
    expected = " or ".join(f"{name.replace(' ', '')}.csv" for name in names_of(data_set))
    raise ExtractFormatError(
        f"{label}: the ZIP holds {member!r}, but an extract of data set {data_set!r} holds {expected}: "
        "this is another data set's file (check the data set's listing and DownloadLink)"
    )
