"""The OAuth2 authorization-server side both emulated platforms share: clients, consent, code exchange.

Each platform states its differences as an `OAuthRules` value and implements its own two grants.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from airflow_provider_canvas.testing.primitives import (
    EmulatorHost,
    IssuedTokens,
    Request,
    Response,
    append_query,
    json_response,
    redirect_response,
)

CODE_TTL_SECONDS = 600

# (status, error, error_description) of a JSON error answer.
ErrorAnswer = tuple[int, str, str]
Scopes = frozenset[str] | None


@dataclass
class OAuthClient:
    """A registered client (a Canvas developer key, a Brightspace app). `scopes=None`: no scope checks."""

    client_id: str
    client_secret: str = field(repr=False)
    scopes: frozenset[str] | None = None
    enabled: bool = True


@dataclass(frozen=True)
class AuthCode:
    client_id: str
    redirect_uri: str
    scopes: frozenset[str] | None
    user_id: int
    expires_at: float  # time.time()


@dataclass(frozen=True)
class OAuthRules:
    """What one platform's authorization server answers where the two platforms differ."""

    platform: str  # as recorded in TokenRequest.platform
    display_name: str
    # Authorize endpoint, rendered directly (an unknown client's redirect_uri is not trusted).
    authorize_unknown_client: ErrorAnswer
    authorize_missing_redirect: ErrorAnswer
    # error_description sent with each error redirect; an error missing here is sent bare.
    redirect_descriptions: dict[str, str]
    # Token endpoint.
    bad_client_description: str
    disabled_client: ErrorAnswer
    bad_code_description: str
    # Whether every requested scope is covered by a client's scopes (None: the client enforces none).
    scopes_within: Callable[[frozenset[str], Scopes], bool]
    # The scopes an authorization code carries, from the client and what was requested.
    code_scopes: Callable[[OAuthClient, frozenset[str]], Scopes]


def issued_tokens(access_token: str, refresh_token: str, expires_at: float, expires_in: int) -> IssuedTokens:
    return IssuedTokens(
        access_token=access_token,
        refresh_token=refresh_token,
        expires_at=datetime.fromtimestamp(expires_at, timezone.utc),
        expires_in=expires_in,
    )


class OAuthServer:
    """Clients, the authorize endpoint and the token endpoint's client authentication and dispatch.

    A platform subclasses it and implements its two grants, `_refresh_grant` and `_code_grant`; both
    run under the lock and answer through `_token_granted` or `_token_error`.
    """

    def __init__(self, emulator: EmulatorHost, rules: OAuthRules, auth_user_id: int) -> None:
        self._emu = emulator
        self._lock = emulator.lock
        self._rules = rules
        self.clients: dict[str, OAuthClient] = {}
        self._codes: dict[str, AuthCode] = {}
        self.auth_decision = "approve"  # or "deny": the authorize endpoint answers access_denied
        self.auth_user_id = auth_user_id  # the user who "consents" on the authorize endpoint

    # ----------------------------------------------------------------- setup API
    def register_client(
        self,
        client_id: str,
        client_secret: str,
        scopes: list[str] | None = None,
        enabled: bool = True,
    ) -> OAuthClient:
        client = OAuthClient(client_id, client_secret, None if scopes is None else frozenset(scopes), enabled)
        with self._lock:
            self.clients[client_id] = client
        return client

    def _client_to_issue(self, client_id: str) -> OAuthClient:
        """The client `issue_tokens` mints for; call under the lock."""
        client = self.clients.get(client_id)
        if client is None:
            raise ValueError(f"unknown {self._rules.display_name} client {client_id!r}")
        return client

    def _seed_settings(self, seed: dict[str, Any], names: tuple[str, ...]) -> None:
        for name in names:
            if name in seed:
                setattr(self, name, seed[name])

    def _seed_oauth(self, seed: dict[str, Any]) -> None:
        """The seed's OAuth part: the consent decision and the registered clients."""
        self._seed_settings(seed, ("auth_decision",))
        for client in seed.get("clients", []):
            self.register_client(
                client["client_id"],
                client["client_secret"],
                client.get("scopes"),
                enabled=client.get("enabled", True),
            )

    # ----------------------------------------------------------------- authorize endpoint
    def _authorize(self, request: Request) -> Response:
        rules = self._rules
        client_id = request.arg("client_id") or ""
        redirect_uri = request.arg("redirect_uri")
        state = request.arg("state")
        with self._lock:
            client = self.clients.get(client_id)
            if client is None:
                return _error_json(rules.authorize_unknown_client)
            if not redirect_uri:
                return _error_json(rules.authorize_missing_redirect)
            requested = frozenset((request.arg("scope") or "").split())
            error = self._consent_error(request, client, requested)
            if error is not None:
                description = rules.redirect_descriptions.get(error)
                return redirect_response(
                    append_query(
                        redirect_uri, {"error": error, "error_description": description, "state": state}
                    )
                )
            code = secrets.token_urlsafe(24)
            self._codes[code] = AuthCode(
                client_id,
                redirect_uri,
                rules.code_scopes(client, requested),
                self.auth_user_id,
                time.time() + CODE_TTL_SECONDS,
            )
        return redirect_response(append_query(redirect_uri, {"code": code, "state": state}))

    def _consent_error(self, request: Request, client: OAuthClient, requested: frozenset[str]) -> str | None:
        """The RFC 6749 4.1.2.1 error the consent ends in, in the order both platforms check, or None."""
        if request.arg("response_type") != "code":
            return "unsupported_response_type"
        if not client.enabled:
            return "unauthorized_client"
        if not self._rules.scopes_within(requested, client.scopes):
            return "invalid_scope"
        if self.auth_decision == "deny":
            return "access_denied"
        return None

    # ----------------------------------------------------------------- token endpoint
    def _token(self, request: Request) -> Response:
        # Client credentials come as HTTP Basic or as form fields (client_secret_post).
        client_id, secret = request.client_credentials()
        grant_type = request.param("grant_type")
        with self._lock:
            client = self.clients.get(client_id or "")
            if client is None or not secrets.compare_digest(
                client.client_secret.encode(), (secret or "").encode()
            ):
                return self._token_error(request, 401, "invalid_client", self._rules.bad_client_description)
            if not client.enabled:
                return self._token_error(request, *self._rules.disabled_client)
            if grant_type == "refresh_token":
                return self._refresh_grant(request, client)
            if grant_type == "authorization_code":
                code = self._redeem_code(request, client)
                return code if isinstance(code, Response) else self._code_grant(request, client, code)
            return self._token_error(request, 400, "unsupported_grant_type", f"{grant_type} is not supported")

    def _refresh_grant(self, request: Request, client: OAuthClient) -> Response:
        raise NotImplementedError

    def _code_grant(self, request: Request, client: OAuthClient, code: AuthCode) -> Response:
        """Tokens for a valid, unexpired authorization code of `client` (already burnt)."""
        raise NotImplementedError

    def _redeem_code(self, request: Request, client: OAuthClient) -> AuthCode | Response:
        """The authorization code of this exchange, or the token error that refuses it."""
        # Codes are single-use: popped before any check, so a failed exchange burns it too.
        code = self._codes.pop(request.param("code") or "", None)
        if code is None or code.client_id != client.client_id or code.expires_at < time.time():
            return self._token_error(request, 400, "invalid_grant", self._rules.bad_code_description)
        if request.param("redirect_uri") != code.redirect_uri:
            return self._token_error(request, 400, "invalid_grant", "redirect_uri does not match")
        return code

    def _token_error(
        self, request: Request, status: int, error: str, description: str, state: str | None = None
    ) -> Response:
        self._emu.record_token_request(self._rules.platform, request, status, error, state)
        return json_response(status, {"error": error, "error_description": description})

    def _token_granted(self, request: Request, body: dict[str, Any], state: str | None = None) -> Response:
        self._emu.record_token_request(self._rules.platform, request, 200, None, state)
        return json_response(200, body)


def _error_json(answer: ErrorAnswer) -> Response:
    status, error, description = answer
    return json_response(status, {"error": error, "error_description": description})
