"""A trigger that waits for a Brightspace Advanced Data Sets export job without holding a worker slot."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_provider_canvas.exceptions import LmsError, LmsThrottledError, LmsUnavailableError
from airflow_provider_canvas.hooks.brightspace import BrightspaceHook
from airflow_provider_canvas.hooks.brightspace_models import ExportJobStatus


class BrightspaceExportJobTrigger(BaseTrigger):
    """Polls an export job until it is complete, failed or deleted, or ``timeout_at`` passes.

    Fires one event ``{"status": "complete" | "failed" | "timeout" | "error", "job_id", "message",
    "job"}``. Throttling and unavailability are retried at the next poll, up to
    ``max_transient_errors`` in a row. Only the connection id is serialised: tokens stay in the
    connection and never reach the trigger table or the logs.
    """

    def __init__(
        self,
        conn_id: str,
        job_id: str,
        *,
        poll_interval: float = 30.0,
        timeout_at: float | None = None,
        max_transient_errors: int = 10,
    ) -> None:
        super().__init__()
        self.conn_id = conn_id
        self.job_id = job_id
        self.poll_interval = poll_interval
        # An absolute deadline (epoch seconds) survives a triggerer restart; a duration would not.
        self.timeout_at = timeout_at
        self.max_transient_errors = max_transient_errors

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "conn_id": self.conn_id,
                "job_id": self.job_id,
                "poll_interval": self.poll_interval,
                "timeout_at": self.timeout_at,
                "max_transient_errors": self.max_transient_errors,
            },
        )

    def _event(self, status: str, message: str, job: dict[str, Any] | None = None) -> TriggerEvent:
        return TriggerEvent({"status": status, "job_id": self.job_id, "message": message, "job": job})

    async def run(self) -> AsyncIterator[TriggerEvent]:
        hook = BrightspaceHook(self.conn_id)
        transient = 0
        while True:
            try:
                job = await hook.aget_export_job(self.job_id)
                transient = 0
            except (LmsThrottledError, LmsUnavailableError) as err:
                transient += 1
                if transient > self.max_transient_errors:
                    yield self._event("error", f"export job {self.job_id}: {err}")
                    return
                self.log.warning("Export job %s: %s; polling again", self.job_id, err)
                job = None
            except LmsError as err:
                yield self._event("error", f"export job {self.job_id}: {err}")
                return
            if job is not None:
                status = _status(job.get("Status"))
                if status is ExportJobStatus.COMPLETE:
                    yield self._event("complete", f"export job {self.job_id} is complete", job)
                    return
                if status in (ExportJobStatus.ERROR, ExportJobStatus.DELETED):
                    yield self._event(
                        "failed", f"export job {self.job_id} ended with status {status.name}", job
                    )
                    return
                self.log.info(
                    "Export job %s is %s", self.job_id, status.name if status else job.get("Status")
                )
            if self.timeout_at is not None and time.time() >= self.timeout_at:
                yield self._event(
                    "timeout", f"export job {self.job_id} did not complete before the deadline", job
                )
                return
            await asyncio.sleep(self.poll_interval)


def _status(value: Any) -> ExportJobStatus | None:
    try:
        return ExportJobStatus(int(value))
    except (TypeError, ValueError):
        return None
