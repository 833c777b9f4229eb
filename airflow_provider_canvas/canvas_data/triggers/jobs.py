"""A trigger that waits for Canvas Data 2 (DAP) query jobs without holding a worker slot."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_provider_canvas.canvas_data.hooks.canvas_data_async import CanvasDataAsyncHook
from airflow_provider_canvas.exceptions import LmsError, LmsThrottledError, LmsUnavailableError

#: How long the poll after the deadline may take (a hanging server is cut off then).
_LAST_LOOK_SECONDS = 5.0


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

    def _left(self) -> float | None:
        return None if self.timeout_at is None else self.timeout_at - time.time()

    async def run(self) -> AsyncIterator[TriggerEvent]:
        jobs: dict[str, Any] = {}
        done: set[str] = set()
        transient = 0
        async with CanvasDataAsyncHook(self.conn_id) as hook:
            # The operator saw every job unfinished just now: the first look comes one interval
            # later. That also lets the deferring worker exit first: Airflow 3.3 fails a task whose
            # trigger fires before the executor has seen that worker end (seen in the demo).
            await asyncio.sleep(self._first_wait())
            while True:
                for job_id in [j for j in self.job_ids if j not in done]:
                    left = self._left()
                    bound = None if left is None else (left if left > 0 else _LAST_LOOK_SECONDS)
                    try:
                        job = await asyncio.wait_for(hook.get_job(job_id), timeout=bound)
                        transient = 0
                    except asyncio.TimeoutError:
                        yield self._timeout(jobs, done)
                        return
                    except (LmsThrottledError, LmsUnavailableError) as err:
                        transient += 1
                        if transient > self.max_transient_errors:
                            yield self._event("error", f"DAP job {job_id}: {err}", jobs)
                            return
                        self.log.warning("DAP job %s: %s; polling again", job_id, err)
                        break
                    except LmsError as err:
                        yield self._event("error", f"DAP job {job_id}: {err}", jobs)
                        return
                    jobs[job_id] = job.to_json()
                    self.log.info("DAP job %s is %s", job_id, job.status)
                    if job.terminal:
                        done.add(job_id)
                if len(done) == len(self.job_ids):
                    failed = sorted(j for j in done if jobs[j]["status"] != "complete")
                    summary = f"{len(done) - len(failed)} complete, {len(failed)} failed"
                    yield self._event("done", f"DAP jobs ended: {summary}", jobs)
                    return
                left = self._left()
                if left is not None and left <= 0:
                    yield self._timeout(jobs, done)
                    return
                await asyncio.sleep(self.poll_interval if left is None else min(self.poll_interval, left))

    def _first_wait(self) -> float:
        left = self._left()
        return self.poll_interval if left is None else max(0.0, min(self.poll_interval, left))

    def _timeout(self, jobs: dict[str, Any], done: set[str]) -> TriggerEvent:
        waiting = [j for j in self.job_ids if j not in done]
        return self._event(
            "timeout", f"DAP job(s) {', '.join(waiting)} did not end before the deadline", jobs
        )
