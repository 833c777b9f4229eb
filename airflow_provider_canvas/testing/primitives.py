"""The emulator's ground floor: requests, responses and records that every platform module shares.

Nothing here imports another module of the emulator, so the platform emulators and the server
build on it without importing each other.
"""

from __future__ import annotations

import base64
import json
import socket
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, NamedTuple, Protocol
from urllib.parse import parse_qs, unquote, urlencode

CANVAS = "canvas"
BRIGHTSPACE = "brightspace"
PLATFORMS = (CANVAS, BRIGHTSPACE)
CANVAS_TOKEN_PATH = "/login/oauth2/token"
BRIGHTSPACE_TOKEN_PATH = "/core/connect/token"


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


@dataclass(frozen=True)
class IssuedTokens:
    """Tokens handed out as if a person had completed the authorization-code consent."""

    # repr=False: a failing assertion must not print live credentials into CI logs.
    access_token: str = field(repr=False)
    refresh_token: str = field(repr=False)
    expires_at: datetime
    expires_in: int


@dataclass(frozen=True)
class TokenRequest:
    """One call to a token endpoint, as the emulator answered it (never holds token values)."""

    platform: str
    grant_type: str | None
    client_id: str | None
    status: int
    error: str | None
    # "live" | "consumed" | "revoked" | "unknown" for refresh_token grants, None otherwise.
    refresh_token_state: str | None
    at: datetime

    def to_json(self) -> dict[str, Any]:
        return {
            "platform": self.platform,
            "grant_type": self.grant_type,
            "client_id": self.client_id,
            "status": self.status,
            "error": self.error,
            "refresh_token_state": self.refresh_token_state,
            "at": self.at.isoformat(),
        }


class ApiRequest(NamedTuple):
    """One API (non-token) call; a tuple so callers can unpack it."""

    platform: str
    method: str
    path: str
    status: int
    had_authorization: bool


@dataclass
class Request:
    """The parts of an HTTP request the platform handlers need."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]  # lower-cased names
    body: bytes
    role: str  # "api" (main listener) or "signed" (the download host)
    #: A large body is spooled to this file instead of ``body`` (the handler may take the file over).
    body_path: str | None = None
    _form: dict[str, list[str]] | None = field(default=None, repr=False)

    def arg(self, name: str, default: str | None = None) -> str | None:
        values = self.query.get(name)
        return values[0] if values else default

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())

    @property
    def form(self) -> dict[str, list[str]]:
        if self._form is None:
            ctype = self.header("content-type") or ""
            self._form = {}
            if self.body and "application/x-www-form-urlencoded" in ctype:
                # keep_blank_values: Canvas treats an empty value as "unset", so it must survive parsing.
                self._form = parse_qs(self.body.decode("utf-8", "replace"), keep_blank_values=True)
            elif self.body and "json" in ctype and isinstance(body := self.json(), dict):
                # Rails (Canvas) takes the same parameters as a flat JSON object.
                self._form = {k: [str(v)] for k, v in body.items() if isinstance(v, (str, int, float))}
        return self._form

    def param(self, name: str) -> str | None:
        """A form field, falling back to the query string (Canvas merges both)."""
        values = self.form.get(name) or self.query.get(name)
        return values[0] if values else None

    def json(self) -> Any:
        if not self.body:
            return None
        try:
            return json.loads(self.body)
        except ValueError:
            return None

    def bearer(self) -> str | None:
        auth = self.header("authorization") or ""
        scheme, _, value = auth.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
        return None

    def basic_auth(self) -> tuple[str, str] | None:
        auth = self.header("authorization") or ""
        scheme, _, value = auth.partition(" ")
        if scheme.lower() != "basic":
            return None
        try:
            user, _, password = base64.b64decode(value.strip()).decode("utf-8").partition(":")
        except (ValueError, UnicodeDecodeError):
            return None
        # RFC 6749 2.3.1: client credentials are form-urlencoded before Basic encoding.
        return unquote(user.replace("+", " ")), unquote(password.replace("+", " "))

    def client_credentials(self) -> tuple[str | None, str | None]:
        basic = self.basic_auth()
        if basic is not None:
            return basic
        return self.param("client_id"), self.param("client_secret")


@dataclass
class Response:
    """A response body is either `body` or `stream` (then `length` is its exact size)."""

    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    stream: Iterable[bytes] | None = None
    length: int | None = None
    # Fault injection: close the connection after this many body bytes while Content-Length promised more.
    truncate_after: int | None = None


def json_response(status: int, payload: Any, headers: dict[str, str] | None = None) -> Response:
    merged = {"Content-Type": "application/json; charset=utf-8"}
    merged.update(headers or {})
    return Response(status, json.dumps(payload).encode("utf-8"), merged)


def text_response(status: int, text: str, headers: dict[str, str] | None = None) -> Response:
    merged = {"Content-Type": "text/plain; charset=utf-8"}
    merged.update(headers or {})
    return Response(status, text.encode("utf-8"), merged)


def redirect_response(location: str) -> Response:
    return Response(302, b"", {"Location": location})


def redact_path(path: str) -> str:
    """The path as it may be logged: no query string, no signed-URL token."""
    if path.startswith("/signed/"):
        return "/signed/<redacted>"
    return path


def append_query(url: str, params: dict[str, str | None]) -> str:
    """`url` with `params` (None values dropped) added to its query string, as OAuth redirects do."""
    extra = urlencode({k: v for k, v in params.items() if v is not None})
    if not extra:
        return url
    return f"{url}{'&' if '?' in url else '?'}{extra}"


class EmulatorHost(Protocol):
    """What a platform emulator needs from the emulator that hosts it."""

    lock: threading.RLock
    access_token_ttl: int

    @property
    def url(self) -> str: ...

    @property
    def signed_url(self) -> str: ...

    def record_token_request(
        self,
        platform: str,
        request: Request,
        status: int,
        error: str | None = None,
        refresh_token_state: str | None = None,
    ) -> None: ...


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
