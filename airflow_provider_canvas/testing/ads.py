"""Brightspace Advanced Data Sets for the emulator: the data sets, export jobs and their status clock."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from airflow_provider_canvas.testing.bds_api import NAMESPACE, BdsApi
from airflow_provider_canvas.testing.bds_files import ZipSource, make_source
from airflow_provider_canvas.testing.bds_legacy import iso
from airflow_provider_canvas.testing.brightspace_oauth import AccessToken
from airflow_provider_canvas.testing.primitives import (
    EmulatorHost,
    Request,
    Response,
    json_response,
    text_response,
    utcnow,
)

ADS_STATUS_QUEUED, ADS_STATUS_PROCESSING, ADS_STATUS_COMPLETE, ADS_STATUS_ERROR = 0, 1, 2, 3


@dataclass
class AdsDataSet:
    data_set_id: str
    name: str
    columns: list[str]
    rows: list[dict[str, Any]] | None = None
    rows_count: int | None = None
    category: str = "Users"
    description: str = ""
    filters: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "DataSetId": self.data_set_id,
            "Name": self.name,
            "Description": self.description,
            "Category": self.category,
            "Filters": self.filters,
        }


@dataclass
class AdsJob:
    job_id: str
    data_set: AdsDataSet
    filters: list[dict[str, Any]]
    submitted: datetime
    started: float  # time.monotonic()
    duration: float
    will_fail: bool = False
    expired: bool = False
    source: ZipSource | None = field(default=None, repr=False)

    @property
    def status(self) -> int:
        """Queued for the first third of `duration`, Processing until done, then Complete or Error."""
        elapsed = time.monotonic() - self.started
        if elapsed >= self.duration:
            return ADS_STATUS_ERROR if self.will_fail else ADS_STATUS_COMPLETE
        return ADS_STATUS_PROCESSING if elapsed >= self.duration / 3 else ADS_STATUS_QUEUED


def filter_definitions(filters: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    """A data set's filters as Brightspace lists them, defaults filled in."""
    return [
        {
            "Name": f["Name"],
            "Type": f.get("Type", 1),
            "Description": f.get("Description", ""),
            "DefaultValue": f.get("DefaultValue", ""),
        }
        for f in (filters or [])
    ]


class AdsApi(BdsApi):
    """Advanced Data Sets: the setup API tests use and the export-job handlers the routes call."""

    def __init__(self, emulator: EmulatorHost) -> None:
        super().__init__(emulator)
        self.ads_data_sets: dict[str, AdsDataSet] = {}
        self.ads_jobs: dict[str, AdsJob] = {}
        self.ads_job_seconds = 3.0  # Queued for the first third, Processing until done
        self.ads_job_ttl_seconds: float | None = None  # completed jobs expire after this
        self._ads_fail_next = 0

    def add_ads_data_set(
        self,
        name: str,
        columns: list[str],
        rows: list[dict[str, Any]] | None = None,
        *,
        rows_count: int | None = None,
        data_set_id: str | None = None,
        category: str = "Users",
        description: str = "",
        filters: list[dict[str, Any]] | None = None,
    ) -> AdsDataSet:
        data_set = AdsDataSet(
            data_set_id=data_set_id or str(uuid.uuid5(NAMESPACE, f"ads:{name}")),
            name=name,
            columns=list(columns),
            rows=rows,
            rows_count=rows_count,
            category=category,
            description=description or f"The {name} advanced data set",
            filters=filter_definitions(filters),
        )
        with self._lock:
            self.ads_data_sets[data_set.data_set_id] = data_set
        return data_set

    def fail_next_ads_jobs(self, count: int = 1) -> None:
        """The next `count` created ADS jobs end in Status 3 (Error) instead of Complete."""
        with self._lock:
            self._ads_fail_next = count

    def expire_ads_job(self, job_id: str) -> None:
        with self._lock:
            self.ads_jobs[job_id].expired = True

    def _ads_list(self, request: Request, token: AccessToken, params: dict[str, str]) -> Response:
        with self._lock:
            return json_response(200, [d.to_json() for d in self.ads_data_sets.values()])

    def _ads_get(self, request: Request, token: AccessToken, params: dict[str, str]) -> Response:
        data_set = self.ads_data_sets.get(params["id"])
        return text_response(404, "Not Found") if data_set is None else json_response(200, data_set.to_json())

    def _job_json(self, job: AdsJob) -> dict[str, Any]:
        return {
            "ExportJobId": job.job_id,
            "DataSetId": job.data_set.data_set_id,
            "Name": job.data_set.name,
            "SubmitDate": iso(job.submitted),
            "Status": job.status,
            "Category": job.data_set.category,
        }

    def _ads_create(self, request: Request, token: AccessToken, params: dict[str, str]) -> Response:
        body = request.json()
        if not isinstance(body, dict) or not body.get("DataSetId"):
            return text_response(400, "Body must be JSON with DataSetId and Filters")
        with self._lock:
            data_set = self.ads_data_sets.get(str(body["DataSetId"]))
            if data_set is None:
                return text_response(404, "Data set not found")
            known = {f["Name"] for f in data_set.filters}
            filters = body.get("Filters") or []
            if not isinstance(filters, list) or any(
                not isinstance(f, dict) or f.get("Name") not in known for f in filters
            ):
                return text_response(
                    400, f"Filters must be a list of {{Name, Value}} with Name in {sorted(known)}"
                )
            will_fail = self._ads_fail_next > 0
            self._ads_fail_next = max(0, self._ads_fail_next - 1)
            job = AdsJob(
                job_id=str(uuid.uuid4()),
                data_set=data_set,
                filters=filters,
                submitted=utcnow(),
                started=time.monotonic(),
                duration=float(self.ads_job_seconds),
                will_fail=will_fail,
            )
            self.ads_jobs[job.job_id] = job
            return json_response(200, self._job_json(job))

    def _ads_jobs(self, request: Request, token: AccessToken, params: dict[str, str]) -> Response:
        with self._lock:
            jobs = sorted(self.ads_jobs.values(), key=lambda j: j.started, reverse=True)
            items = [self._job_json(j) for j in jobs]
        return json_response(200, self._page(request, items))

    def _ads_job(self, request: Request, token: AccessToken, params: dict[str, str]) -> Response:
        job = self.ads_jobs.get(params["id"])
        return text_response(404, "Not Found") if job is None else json_response(200, self._job_json(job))

    def _ads_download(self, request: Request, token: AccessToken, params: dict[str, str]) -> Response:
        with self._lock:
            job = self.ads_jobs.get(params["id"])
            if job is None:
                return text_response(404, "Not Found")
            if job.status != ADS_STATUS_COMPLETE:
                return text_response(404, "Export job is not complete")
            ttl = self.ads_job_ttl_seconds
            if job.expired or (ttl is not None and time.monotonic() - job.started > job.duration + ttl):
                return text_response(404, "Export job has expired; submit a new export job")
            if job.source is None:
                ds = job.data_set
                member = f"{ds.name.replace(' ', '')}.csv"
                job.source = make_source(member, ds.columns, ds.rows, ds.rows_count, 1, job.submitted, None)
            source = job.source
        return self._file_response(source, f"{job.data_set.name.replace(' ', '')}.zip")
