"""The emulator's admin endpoint: records and fault injection over HTTP, for the CLI-run emulator."""

from __future__ import annotations

from typing import Any, Protocol

from airflow_provider_canvas.testing.primitives import (
    ApiRequest,
    Request,
    Response,
    TokenRequest,
    json_response,
)


class LmsEmulator(Protocol):
    """What the endpoint uses of ``emulator.LmsEmulator``; a Protocol, so emulator.py is not imported back."""

    @property
    def token_requests(self) -> list[TokenRequest]: ...
    @property
    def api_requests(self) -> list[ApiRequest]: ...
    def summary(self) -> dict[str, Any]: ...
    def expire_access_tokens(self, platform: str | None = None) -> None: ...
    def throttle_next(
        self, platform: str, count: int, status: int | None = None, retry_after: int = 1
    ) -> None: ...
    def fail_next(self, platform: str, count: int, status: int = 500) -> None: ...
    def fail_for(self, seconds: float, status: int = 500) -> None: ...
    def reset_records(self) -> None: ...


def handle_admin(emulator: LmsEmulator, request: Request) -> Response:
    """``/_emulator/<action>``: what the seed cannot say, for a standalone emulator (records, faults)."""
    action = request.path[len("/_emulator/") :]
    payload = request.json() or {}
    if not isinstance(payload, dict):
        return json_response(400, {"error": "JSON object expected"})
    try:
        if request.method == "GET" and action == "token_requests":
            return json_response(200, [r.to_json() for r in emulator.token_requests])
        if request.method == "GET" and action == "api_requests":
            return json_response(200, [r._asdict() for r in emulator.api_requests])
        if request.method == "GET" and action == "summary":
            return json_response(200, emulator.summary())
        if request.method == "POST" and action == "expire_access_tokens":
            emulator.expire_access_tokens(payload.get("platform"))
        elif request.method == "POST" and action == "throttle_next":
            emulator.throttle_next(
                payload["platform"],
                int(payload.get("count", 1)),
                payload.get("status"),
                int(payload.get("retry_after", 1)),
            )
        elif request.method == "POST" and action == "fail_next":
            emulator.fail_next(
                payload["platform"], int(payload.get("count", 1)), int(payload.get("status", 500))
            )
        elif request.method == "POST" and action == "fail_for":
            emulator.fail_for(float(payload.get("seconds", 1)), int(payload.get("status", 500)))
        elif request.method == "POST" and action == "reset_records":
            emulator.reset_records()
        else:
            return json_response(404, {"error": f"unknown admin action {request.method} {action}"})
    except (KeyError, TypeError, ValueError) as exc:
        return json_response(400, {"error": f"bad admin request: {exc!r}"})
    return json_response(200, {"ok": True})
