"""A trigger that waits for a Canvas SIS import or account report without holding a worker slot."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Literal

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_provider_canvas.canvas.hooks.canvas_async import CanvasAsyncHook
from airflow_provider_canvas.canvas.hooks.sis_models import describe_progress, is_final
from airflow_provider_canvas.common.polling import Poll

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

    async def _look(self, hook: CanvasAsyncHook) -> dict[str, Any]:
        if self.kind == "sis_import":
            return await hook.get_sis_import(self.account_id, self.object_id)
        assert self.report is not None
        return await hook.get_report(self.account_id, self.report, self.object_id)

    async def run(self) -> AsyncIterator[TriggerEvent]:
        body: dict[str, Any] | None = None
        # The operator saw it unfinished just now (and Airflow 3.3's race: see Poll.first_wait).
        poll = Poll(self.poll_interval, self.timeout_at, self.max_transient_errors, first_wait=True)
        async with CanvasAsyncHook(self.conn_id) as hook:

            async def look() -> dict[str, Any] | None:
                nonlocal body
                body = await self._look(hook)
                self.log.info("%s is %s", self.what, describe_progress(self.kind, body))
                return body if is_final(self.kind, body) else None

            waited = await poll.until(look, what=self.what, log=self.log)
        if waited.status == "done" and waited.value is not None:
            yield self._event(
                "done", f"{self.what} ended: {describe_progress(self.kind, waited.value)}", waited.value
            )
        elif waited.status == "timeout":
            seen = describe_progress(self.kind, body) if body else "never read"
            yield self._event(
                "timeout", f"{self.what} had not ended at the deadline (last seen: {seen})", body
            )
        else:
            yield self._event("error", waited.message, body)
