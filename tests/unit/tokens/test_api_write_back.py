"""The token write-back through the REST API: a user's login or a static API token from ``airflow_api``."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from airflow_provider_canvas.common import airflow_access as metadata
from airflow_provider_canvas.common.airflow_access import MetadataWriteError

USER, PASSWORD = "canvas_token_writer", "writer-password-value"
JWT, STATIC_TOKEN = "jwt-from-login-value", "static-api-token-value"


class FakeApi:
    """Just enough of an api-server: ``POST /auth/token`` and ``PATCH /api/v2/connections/<id>``."""

    def __init__(self) -> None:
        self.accepted_tokens = {JWT, STATIC_TOKEN}
        self.patch_status = 200  # when the token is accepted
        self.requests: list[tuple[str, str, dict[str, str], Any]] = []
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _answer(self, status: int, body: dict[str, Any]) -> None:
                payload = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def _record(self) -> Any:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"null")
                api.requests.append((self.command, self.path, dict(self.headers), body))
                return body

            def do_POST(self) -> None:
                body = self._record()
                if self.path == "/auth/token" and body == {"username": USER, "password": PASSWORD}:
                    self._answer(201, {"access_token": JWT})
                else:
                    self._answer(401, {"detail": f"echoes the request: {body}"})

            def do_PATCH(self) -> None:
                body = self._record()
                token = self.headers.get("Authorization", "").removeprefix("Bearer ")
                if token not in api.accepted_tokens:
                    self._answer(401, {"detail": f"echoes the request: {body}"})
                else:
                    self._answer(api.patch_status, {"detail": f"echoes the request: {body}"})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"


@pytest.fixture
def api(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeApi]:
    fake = FakeApi()
    thread = threading.Thread(target=fake.server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("AIRFLOW__CANVAS_PROVIDER__AIRFLOW_API_URL", fake.url)
    monkeypatch.delenv("AIRFLOW_CONN_AIRFLOW_API", raising=False)
    try:
        yield fake
    finally:
        fake.server.shutdown()
        fake.server.server_close()


def _api_connection(monkeypatch: pytest.MonkeyPatch, **fields: str) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_AIRFLOW_API", json.dumps({"conn_type": "generic", **fields}))


def _write(extra: dict[str, Any] | None = None) -> None:
    metadata._patch_connection_via_api("brightspace_x", "brightspace", extra or {"refresh_token": "rt-new"})


def test_login_and_password_are_exchanged_for_a_jwt(api: FakeApi, monkeypatch: pytest.MonkeyPatch) -> None:
    _api_connection(monkeypatch, login=USER, password=PASSWORD)
    _write()
    [(_, login_path, _, _), (method, path, headers, body)] = api.requests
    assert login_path == "/auth/token"
    assert (method, path) == ("PATCH", "/api/v2/connections/brightspace_x?update_mask=extra")
    assert headers["Authorization"] == f"Bearer {JWT}"
    assert json.loads(body["extra"]) == {"refresh_token": "rt-new"}


def test_password_without_login_is_sent_as_a_bearer_token(
    api: FakeApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    _api_connection(monkeypatch, password=STATIC_TOKEN)
    _write()
    [(method, _, headers, _)] = api.requests  # no login exchange
    assert method == "PATCH" and headers["Authorization"] == f"Bearer {STATIC_TOKEN}"


def test_no_credentials_connection_sends_no_authorization(api: FakeApi) -> None:
    api.accepted_tokens.add("")
    _write()
    [(_, _, headers, _)] = api.requests
    assert "Authorization" not in headers


def test_refused_token_says_it_was_refused_or_expired_and_what_to_do(
    api: FakeApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    _api_connection(monkeypatch, password=STATIC_TOKEN)
    api.accepted_tokens.discard(STATIC_TOKEN)  # e.g. it expired
    with pytest.raises(MetadataWriteError) as caught:
        _write({"refresh_token": "rt-secret-value"})
    message = str(caught.value)
    assert "HTTP 401" in message and "'airflow_api' was refused" in message and "expired" in message
    assert "issue a new token" in message and "password (login empty)" in message
    assert STATIC_TOKEN not in message and "rt-secret-value" not in message and "echoes" not in message


def test_refused_login_names_the_connection_and_not_the_password(
    api: FakeApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    _api_connection(monkeypatch, login=USER, password="wrong-password-value")
    refused = r"refused the login of connection 'airflow_api' \(HTTP 401\)"
    with pytest.raises(MetadataWriteError, match=refused):
        _write()
    assert len(api.requests) == 1  # no update without a JWT


def test_forbidden_update_names_the_permission(api: FakeApi, monkeypatch: pytest.MonkeyPatch) -> None:
    _api_connection(monkeypatch, login=USER, password=PASSWORD)
    api.patch_status = 403
    with pytest.raises(MetadataWriteError) as caught:
        _write()
    assert "HTTP 403" in str(caught.value) and "can_edit on Connections" in str(caught.value)
    assert PASSWORD not in str(caught.value) and JWT not in str(caught.value)


def test_unauthenticated_update_says_to_create_the_connection(api: FakeApi) -> None:
    with pytest.raises(MetadataWriteError, match="create connection 'airflow_api'"):
        _write()


def test_connection_without_password_is_refused_before_any_request(
    api: FakeApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    _api_connection(monkeypatch, login=USER)
    with pytest.raises(MetadataWriteError, match="has no password"):
        _write()
    assert api.requests == []
