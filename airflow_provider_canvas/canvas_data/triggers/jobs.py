"""A trigger that waits for Canvas Data 2 (DAP) query jobs without holding a worker slot."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_provider_canvas.canvas_data.hooks.canvas_data_async import CanvasDataAsyncHook
from airflow_provider_canvas.common.polling import Poll


class CanvasDataJobsTrigger(BaseTrigger):
    """Polls DAP jobs until every one is complete or failed, or ``timeout_at`` passes.

    Fires one event ``{"status": "done" | "timeout" | "error", "message", "jobs": {job id: job}}``
    where ``jobs`` holds each job as DAP last described it (``done``: all terminal; a failed job
    is reported, not raised, so the operator can keep the tables that did complete). Throttling
    and unavailability are retried at the next poll, up to ``max_transient_errors`` in a row.
    Polls are async (httpx) and bounded by the deadline; cancelling the trigger stops it at once.
    Only the connection id is serialised: the client secret and the JWT never reach the trigger
    table or the logs.
    """

    def __init__(
        self,
        conn_id: str,
        job_ids: Sequence[str],
        *,
        poll_interval: float = 30.0,
        timeout_at: float | None = None,
        max_transient_errors: int = 10,
    ) -> None:
        super().__init__()
        self.conn_id = conn_id
        self.job_ids = list(job_ids)
        self.poll_interval = poll_interval
        # An absolute deadline (epoch seconds) survives a triggerer restart; a duration would not.
        self.timeout_at = timeout_at
        self.max_transient_errors = max_transient_errors

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "conn_id": self.conn_id,
                "job_ids": list(self.job_ids),
                "poll_interval": self.poll_interval,
                "timeout_at": self.timeout_at,
                "max_transient_errors": self.max_transient_errors,
            },
        )

    def _event(self, status: str, message: str, jobs: dict[str, Any]) -> TriggerEvent:
        return TriggerEvent({"status": status, "message": message, "jobs": jobs})

    async def run(self) -> AsyncIterator[TriggerEvent]:
        jobs: dict[str, Any] = {}
        pending = list(self.job_ids)
        what = f"DAP job(s) {', '.join(self.job_ids)}"
        # The operator saw every job unfinished just now: the first look comes one interval later.
        poll = Poll(self.poll_interval, self.timeout_at, self.max_transient_errors, first_wait=True)
        async with CanvasDataAsyncHook(self.conn_id) as hook:

            async def look() -> bool | None:
                for job_id in list(pending):
                    job = await hook.get_job(job_id)
                    jobs[job_id] = job.to_json()
                    self.log.info("DAP job %s is %s", job_id, job.status)
                    if job.terminal:
                        pending.remove(job_id)
                return True if not pending else None

            waited = await poll.until(look, what=what, log=self.log)
        if waited.status == "done":
            failed = sum(1 for j in self.job_ids if jobs[j]["status"] != "complete")
            summary = f"{len(self.job_ids) - failed} complete, {failed} failed"
            yield self._event("done", f"DAP jobs ended: {summary}", jobs)
        elif waited.status == "timeout":
            yield self._event(
                "timeout", f"DAP job(s) {', '.join(pending)} did not end before the deadline", jobs
            )
        else:
            yield self._event("error", waited.message, jobs)
