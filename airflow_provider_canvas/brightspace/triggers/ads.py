"""A trigger that waits for a Brightspace Advanced Data Sets export job without holding a worker slot."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_provider_canvas.brightspace.hooks.brightspace_async import BrightspaceAsyncHook
from airflow_provider_canvas.brightspace.hooks.models import export_job_state
from airflow_provider_canvas.exceptions import LmsError, LmsThrottledError, LmsUnavailableError

#: How long the poll after the deadline may take (a hanging server is cut off then).
_LAST_LOOK_SECONDS = 5.0


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

    def _left(self) -> float | None:
        """Seconds to the deadline (None: no deadline)."""
        return None if self.timeout_at is None else self.timeout_at - time.time()

    async def run(self) -> AsyncIterator[TriggerEvent]:
        job: dict[str, Any] | None = None
        transient = 0
        async with BrightspaceAsyncHook(self.conn_id) as hook:
            while True:
                left = self._left()
                try:
                    # Past the deadline one last look still runs: a job done just in time is complete.
                    bound = None if left is None else (left if left > 0 else _LAST_LOOK_SECONDS)
                    job = await asyncio.wait_for(hook.get_export_job(self.job_id), timeout=bound)
                    transient = 0
                except asyncio.TimeoutError:
                    yield self._timeout(job)
                    return
                except (LmsThrottledError, LmsUnavailableError) as err:
                    transient += 1
                    if transient > self.max_transient_errors:
                        yield self._event("error", f"export job {self.job_id}: {err}")
                        return
                    self.log.warning("Export job %s: %s; polling again", self.job_id, err)
                except LmsError as err:
                    yield self._event("error", f"export job {self.job_id}: {err}")
                    return
                else:
                    state = export_job_state(job)
                    if state.complete:
                        yield self._event("complete", f"export job {self.job_id} is complete", job)
                        return
                    if state.failed:
                        yield self._event(
                            "failed", f"export job {self.job_id} ended with status {state}", job
                        )
                        return
                    self.log.info("Export job %s is %s", self.job_id, state)
                left = self._left()
                if left is not None and left <= 0:
                    yield self._timeout(job)
                    return
                await asyncio.sleep(self.poll_interval if left is None else min(self.poll_interval, left))

    def _timeout(self, job: dict[str, Any] | None) -> TriggerEvent:
        return self._event("timeout", f"export job {self.job_id} did not complete before the deadline", job)
