"""A trigger that waits for a Brightspace Advanced Data Sets export job without holding a worker slot."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_provider_canvas.brightspace.hooks.brightspace_async import BrightspaceAsyncHook
from airflow_provider_canvas.brightspace.hooks.models import ExportJobState, export_job_state
from airflow_provider_canvas.common.polling import Poll


class BrightspaceExportJobTrigger(BaseTrigger):
    """Polls an export job until it is complete, failed or deleted, or ``timeout_at`` passes.

    Fires one event ``{"status": "complete" | "failed" | "timeout" | "error", "job_id", "message",
    "job"}``. Throttling and unavailability are retried at the next poll, up to
    ``max_transient_errors`` in a row. Polls are async (httpx) and bounded by the deadline, so a
    hanging server cannot hold the trigger past it, and cancelling the trigger stops it at once.
    Only the connection id is serialised: tokens stay in the connection and never reach the
    trigger table or the logs.
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
        job: dict[str, Any] | None = None
        # The operator saw the job unfinished just now (and Airflow 3.3's race: see Poll.first_wait).
        poll = Poll(self.poll_interval, self.timeout_at, self.max_transient_errors, first_wait=True)
        async with BrightspaceAsyncHook(self.conn_id) as hook:

            async def look() -> ExportJobState | None:
                nonlocal job
                job = await hook.get_export_job(self.job_id)
                state = export_job_state(job)
                if state.complete or state.failed:
                    return state
                self.log.info("Export job %s is %s", self.job_id, state)
                return None

            waited = await poll.until(look, what=f"export job {self.job_id}", log=self.log)
        if waited.status == "timeout":
            yield self._event(
                "timeout", f"export job {self.job_id} did not complete before the deadline", job
            )
        elif waited.status == "error":
            yield self._event("error", waited.message)
        elif waited.value is not None and waited.value.complete:
            yield self._event("complete", f"export job {self.job_id} is complete", job)
        else:
            yield self._event("failed", f"export job {self.job_id} ended with status {waited.value}", job)
