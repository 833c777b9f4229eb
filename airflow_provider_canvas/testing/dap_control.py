"""The DAP emulator's control endpoint: publish changes, bump a schema, reload a table, inject failures.

``POST /_emulator/dap/<action>`` with a JSON object on the API host, for a demo or a test that
drives an emulator in another process (``python -m airflow_provider_canvas.testing``).
"""

from __future__ import annotations

from typing import Any, Protocol

from airflow_provider_canvas.testing.dap_jobs import CallLimit, dap_error
from airflow_provider_canvas.testing.primitives import Request, Response, json_response

CONTROL_PREFIX = "/_emulator/dap/"


class Controlled(Protocol):
    """The knobs of :class:`~airflow_provider_canvas.testing.dap.DapEmulator` this endpoint turns."""

    def summary(self) -> dict[str, Any]: ...
    def publish(
        self, table: str, *, inserts: int = ..., updates: int = ..., deletes: int = ..., namespace: str = ...
    ) -> str: ...
    def bump_schema(self, table: str, column: str, schema: dict[str, Any] | None = None) -> int: ...
    def advance(self, inserts: int = ..., updates: int = ..., deletes: int = ...) -> None: ...
    def fail_next_jobs(self, count: int = 1) -> None: ...
    def expire_next_urls(self, count: int = 1) -> None: ...
    def expire_access_tokens(self) -> None: ...
    def reload_table(self, table: str) -> str: ...
    def require_snapshot(self, table: str) -> None: ...

    send_retry_after: bool
    job_seconds: float


#: The limits ``POST settings`` may change (attribute names of the emulator).
LIMITS = ("job_creation", "table_listing", "job_status", "schema_reads", "object_urls")


def control(emulator: Controlled, request: Request) -> Response:
    """``GET summary``; ``POST publish {table, inserts, updates, deletes}``, ``advance``,
    ``bump_schema {table, column, schema}``, ``fail_next_jobs {count}``, ``expire_next_urls {count}``,
    ``expire_access_tokens``, ``reload_table {table}`` or ``require_snapshot {table}`` (then
    SnapshotRequiredError), ``settings {job_seconds, send_retry_after, limits: {job_creation:
    [count, window_seconds], ...}}``."""
    action = request.path.removeprefix(CONTROL_PREFIX)
    payload = request.json() or {}
    try:
        if action == "summary" and request.method == "GET":
            return json_response(200, emulator.summary())
        if request.method != "POST" or not isinstance(payload, dict):
            return dap_error(404, "NotFound", f"unknown control action {request.method} {action}")
        if action == "publish":
            return json_response(200, {"committed": emulator.publish(payload.pop("table"), **payload)})
        if action == "bump_schema":
            version = emulator.bump_schema(payload["table"], payload["column"], payload.get("schema"))
            return json_response(200, {"version": version})
        if action == "reload_table":
            return json_response(200, {"reloaded": emulator.reload_table(payload["table"])})
        if action == "advance":
            emulator.advance(**payload)
        elif action == "fail_next_jobs":
            emulator.fail_next_jobs(int(payload.get("count", 1)))
        elif action == "expire_next_urls":
            emulator.expire_next_urls(int(payload.get("count", 1)))
        elif action == "expire_access_tokens":
            emulator.expire_access_tokens()
        elif action == "settings":
            _settings(emulator, payload)
        elif action == "require_snapshot":
            emulator.require_snapshot(str(payload["table"]))
        else:
            return dap_error(404, "NotFound", f"unknown control action {action}")
    except (KeyError, TypeError, ValueError) as err:
        return dap_error(400, "ValidationError", f"bad control request: {err!r}")
    return json_response(200, {"ok": True})


def _settings(emulator: Controlled, payload: dict[str, Any]) -> None:
    if "job_seconds" in payload:
        emulator.job_seconds = float(payload["job_seconds"])
    if "send_retry_after" in payload:
        emulator.send_retry_after = bool(payload["send_retry_after"])
    for name, (count, window) in (payload.get("limits") or {}).items():
        if name not in LIMITS:
            raise ValueError(f"unknown limit {name!r}; one of {', '.join(LIMITS)}")
        setattr(emulator, name, CallLimit(int(count), float(window)))
