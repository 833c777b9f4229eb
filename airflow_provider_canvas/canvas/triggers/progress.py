"""A trigger that waits for a Canvas SIS import or account report without holding a worker slot."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any, Literal

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_provider_canvas.canvas.hooks.canvas_async import CanvasAsyncHook
from airflow_provider_canvas.canvas.hooks.sis_models import describe_progress, is_final
from airflow_provider_canvas.exceptions import LmsError, LmsThrottledError, LmsUnavailableError

#: How long the poll after the deadline may take (a hanging server is cut off then).
_LAST_LOOK_SECONDS = 5.0

Kind = Literal["sis_import", "report"]


class CanvasProgressTrigger(BaseTrigger):
    """Polls one SIS import (``kind="sis_import"``) or report until it ends or ``timeout_at`` passes.

    Fires one event ``{"status": "done" | "timeout" | "error", "message", "object"}``: ``object`` is
    the import or report as Canvas last described it (``done``: it ended, well or not; the operator
    judges). Each poll logs the state and ``progress``. Throttling and unavailability are polled
    again, up to ``max_transient_errors`` in a row. Polls are async (httpx) and bounded by the
    deadline; cancelling the trigger stops it at once. Only the connection id is serialised.

    :param report: the report's name (``provisioning_csv``), for ``kind="report"``.
    :param timeout_at: the deadline, epoch seconds (survives a triggerer restart).
    """

    def __init__(
        self,
        conn_id: str,
        kind: Kind,
        account_id: int | str,
        object_id: int,
        *,
        report: str | None = None,
        poll_interval: float = 30.0,
        timeout_at: float | None = None,
        max_transient_errors: int = 10,
    ) -> None:
        super().__init__()
        if kind not in ("sis_import", "report") or (kind == "report") != (report is not None):
            raise ValueError(f"kind must be 'sis_import', or 'report' with a report name; got {kind!r}")
        self.conn_id = conn_id
        self.kind = kind
        self.account_id = account_id
        self.object_id = int(object_id)
        self.report = report
        self.poll_interval = poll_interval
        self.timeout_at = timeout_at
        self.max_transient_errors = max_transient_errors

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "conn_id": self.conn_id,
                "kind": self.kind,
                "account_id": self.account_id,
                "object_id": self.object_id,
                "report": self.report,
                "poll_interval": self.poll_interval,
                "timeout_at": self.timeout_at,
                "max_transient_errors": self.max_transient_errors,
            },
        )

    @property
    def what(self) -> str:
        name = "SIS import" if self.kind == "sis_import" else f"report {self.report}"
        return f"{name} {self.object_id} of account {self.account_id}"

    def _event(self, status: str, message: str, body: dict[str, Any] | None) -> TriggerEvent:
        return TriggerEvent({"status": status, "message": message, "object": body})

    def _left(self) -> float | None:
        return None if self.timeout_at is None else self.timeout_at - time.time()

    async def _look(self, hook: CanvasAsyncHook) -> dict[str, Any]:
        if self.kind == "sis_import":
            return await hook.get_sis_import(self.account_id, self.object_id)
        assert self.report is not None
        return await hook.get_report(self.account_id, self.report, self.object_id)

    async def run(self) -> AsyncIterator[TriggerEvent]:
        body: dict[str, Any] | None = None
        transient = 0
        async with CanvasAsyncHook(self.conn_id) as hook:
            # The operator saw it unfinished just now. Waiting one interval first also lets the
            # deferring worker exit: Airflow 3.3 fails a task whose trigger fires before the executor
            # has seen that worker end.
            await asyncio.sleep(self._first_wait())
            while True:
                left = self._left()
                bound = None if left is None else (left if left > 0 else _LAST_LOOK_SECONDS)
                try:
                    body = await asyncio.wait_for(self._look(hook), timeout=bound)
                    transient = 0
                except asyncio.TimeoutError:
                    yield self._timeout(body)
                    return
                except (LmsThrottledError, LmsUnavailableError) as err:
                    transient += 1
                    if transient > self.max_transient_errors:
                        yield self._event("error", f"{self.what}: {err}", body)
                        return
                    self.log.warning("%s: %s; polling again", self.what, err)
                except LmsError as err:
                    yield self._event("error", f"{self.what}: {err}", body)
                    return
                else:
                    self.log.info("%s is %s", self.what, describe_progress(self.kind, body))
                    if is_final(self.kind, body):
                        yield self._event(
                            "done", f"{self.what} ended: {describe_progress(self.kind, body)}", body
                        )
                        return
                left = self._left()
                if left is not None and left <= 0:
                    yield self._timeout(body)
                    return
                await asyncio.sleep(self.poll_interval if left is None else min(self.poll_interval, left))

    def _first_wait(self) -> float:
        left = self._left()
        return self.poll_interval if left is None else max(0.0, min(self.poll_interval, left))

    def _timeout(self, body: dict[str, Any] | None) -> TriggerEvent:
        seen = describe_progress(self.kind, body) if body else "never read"
        return self._event("timeout", f"{self.what} had not ended at the deadline (last seen: {seen})", body)
