"""The DAP emulator's control endpoint: publish changes, bump a schema, inject failures, read records.

``POST /_emulator/dap/<action>`` with a JSON object on the API host, for a demo or a test that
drives an emulator in another process (``python -m airflow_provider_canvas.testing``).
"""

from __future__ import annotations

from typing import Any, Protocol

from airflow_provider_canvas.testing.dap_jobs import dap_error
from airflow_provider_canvas.testing.primitives import Request, Response, json_response

CONTROL_PREFIX = "/_emulator/dap/"


class Controlled(Protocol):
    """The knobs of :class:`~airflow_provider_canvas.testing.dap.DapEmulator` this endpoint turns."""

    def summary(self) -> dict[str, Any]: ...
    def publish(self, table: str, **changes: Any) -> str: ...
    def bump_schema(self, table: str, column: str, schema: dict[str, Any] | None = None) -> int: ...
    def advance(self, **changes: Any) -> None: ...
    def fail_next_jobs(self, count: int = 1) -> None: ...
    def expire_next_urls(self, count: int = 1) -> None: ...
    def expire_access_tokens(self) -> None: ...
    def require_snapshot(self, table: str) -> None: ...


def control(emulator: Controlled, request: Request) -> Response:
    """``GET summary``; ``POST publish {table, inserts, updates, deletes}``, ``advance``,
    ``bump_schema {table, column, schema}``, ``fail_next_jobs {count}``, ``expire_next_urls {count}``,
    ``expire_access_tokens``, ``require_snapshot {table}``."""
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
        if action == "advance":
            emulator.advance(**payload)
        elif action == "fail_next_jobs":
            emulator.fail_next_jobs(int(payload.get("count", 1)))
        elif action == "expire_next_urls":
            emulator.expire_next_urls(int(payload.get("count", 1)))
        elif action == "expire_access_tokens":
            emulator.expire_access_tokens()
        elif action == "require_snapshot":
            emulator.require_snapshot(str(payload["table"]))
        else:
            return dap_error(404, "NotFound", f"unknown control action {action}")
    except (KeyError, TypeError, ValueError) as err:
        return dap_error(400, "ValidationError", f"bad control request: {err!r}")
    return json_response(200, {"ok": True})
