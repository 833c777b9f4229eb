"""Brightspace Advanced Data Sets: run one export job, wait for it (triggerer or task), download it."""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Mapping, Sequence
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator
from airflow.sdk.configuration import conf

from airflow_provider_canvas.brightspace.hooks.brightspace import (
    SCOPE_ADS_CREATE,
    SCOPE_ADS_DOWNLOAD,
    SCOPE_ADS_FETCH,
    SCOPE_ADS_LIST,
    BrightspaceHook,
)
from airflow_provider_canvas.brightspace.hooks.models import ExportJobState, export_job_state
from airflow_provider_canvas.common.locations import (
    copy_to_object_store,
    local_path,
    location_uri,
    object_store_path,
)
from airflow_provider_canvas.common.polling import Poll
from airflow_provider_canvas.exceptions import ExportJobError

if TYPE_CHECKING:
    from airflow.sdk import Context, ObjectStoragePath


class BrightspaceAdvancedDataSetOperator(BaseOperator):
    """Run an Advanced Data Sets export (by name or DataSetId, with filters) and download the ZIP.

    With ``deferrable`` (default: ``[operators] default_deferrable``, as Airflow's own operators)
    the task frees its worker slot after creating the job while
    :class:`~airflow_provider_canvas.brightspace.triggers.ads.BrightspaceExportJobTrigger` polls it;
    without, it polls in the task. Both read the job's state with ``export_job_state``.
    ``destination`` is the ZIP's path (local, or an ObjectStoragePath); it appears only complete.
    Returns (XCom) the job id, data set, destination and size.
    """

    template_fields: Sequence[str] = ("brightspace_conn_id", "data_set", "filters", "destination")
    required_scopes: tuple[str, ...] = (SCOPE_ADS_LIST, SCOPE_ADS_CREATE, SCOPE_ADS_FETCH, SCOPE_ADS_DOWNLOAD)

    def __init__(
        self,
        *,
        data_set: str,
        destination: str | os.PathLike[str] | ObjectStoragePath,
        filters: Mapping[str, Any] | None = None,
        brightspace_conn_id: str = BrightspaceHook.default_conn_name,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        poll_interval: float = 30.0,
        job_timeout: timedelta = timedelta(hours=6),
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.data_set = data_set
        self.destination = destination
        self.filters = dict(filters or {})
        self.brightspace_conn_id = brightspace_conn_id
        self.deferrable = deferrable
        self.poll_interval = poll_interval
        self.job_timeout = job_timeout

    def execute(self, context: Context) -> dict[str, Any]:
        hook = BrightspaceHook(self.brightspace_conn_id)
        data_set = hook.resolve_ads_data_set(self.data_set)
        job = hook.create_export_job(data_set["DataSetId"], self.filters)
        job_id = str(job["ExportJobId"])
        deadline = time.time() + self.job_timeout.total_seconds()
        if self.deferrable:
            from airflow_provider_canvas.brightspace.triggers.ads import BrightspaceExportJobTrigger

            self.defer(
                trigger=BrightspaceExportJobTrigger(
                    self.brightspace_conn_id, job_id, poll_interval=self.poll_interval, timeout_at=deadline
                ),
                method_name="execute_complete",
            )

        def look() -> ExportJobState | None:
            state = export_job_state(hook.get_export_job(job_id))
            self.log.info("Export job %s is %s", job_id, state)
            return state if state.complete or state.failed else None

        waited = Poll(self.poll_interval, deadline).until_in_task(
            look, what=f"export job {job_id}", log=self.log
        )
        if waited.status == "timeout":
            raise ExportJobError(f"export job {job_id} did not complete within {self.job_timeout}")
        if waited.status == "error" or waited.value is None or waited.value.failed:
            raise ExportJobError(waited.message or f"export job {job_id} ended with status {waited.value}")
        return self._download(hook, job_id)

    def execute_complete(self, context: Context, event: dict[str, Any]) -> dict[str, Any]:
        if event.get("status") != "complete":
            raise ExportJobError(str(event.get("message") or f"export job ended: {event}"))
        return self._download(BrightspaceHook(self.brightspace_conn_id), str(event["job_id"]))

    def _download(self, hook: BrightspaceHook, job_id: str) -> dict[str, Any]:
        target = local_path(self.destination)
        if target is not None:
            size = hook.download_export(job_id, target).size
        else:
            with tempfile.TemporaryDirectory(prefix="ads-") as scratch:
                local = Path(scratch) / "export.zip"
                size = hook.download_export(job_id, local).size
                copy_to_object_store(local, object_store_path(self.destination))
        return {
            "job_id": job_id,
            "data_set": self.data_set,
            "destination": location_uri(self.destination),
            "size": size,
        }
