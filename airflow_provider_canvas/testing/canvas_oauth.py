"""Canvas's authorization server for the emulator: one token row per consent, a leaky bucket per row."""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from airflow_provider_canvas.testing.oauth import (
    AuthCode,
    OAuthClient,
    OAuthRules,
    OAuthServer,
    Scopes,
    issued_tokens,
)
from airflow_provider_canvas.testing.primitives import (
    CANVAS,
    EmulatorHost,
    IssuedTokens,
    Request,
    Response,
    json_response,
)

REALM = {"WWW-Authenticate": 'Bearer realm="canvas-lms"'}
UNAUTHENTICATED = {"status": "unauthenticated", "errors": [{"message": "user authorization required"}]}

CanvasClient = OAuthClient  # a developer key; the name stays importable from here


def _scopes_subset(requested: frozenset[str], allowed: Scopes) -> bool:
    """Canvas matches developer-key scopes exactly: no wildcards."""
    return allowed is None or requested <= allowed


def _code_scopes(client: OAuthClient, requested: frozenset[str]) -> Scopes:
    # A scope-enforcing key's token gets exactly what was asked for, even if that is nothing.
    return requested if client.scopes is not None else None


OAUTH_RULES = OAuthRules(
    platform=CANVAS,
    display_name="Canvas",
    authorize_unknown_client=(401, "invalid_client", "unknown client"),
    authorize_missing_redirect=(400, "invalid_request", "redirect_uri required"),
    redirect_descriptions={
        "unsupported_response_type": "response_type must be code",
        "unauthorized_client": "Client does not have access to the specified Canvas account",
        "invalid_scope": "A requested scope is invalid, unknown, malformed, or exceeds the scope granted "
        "by the resource owner.",
        "access_denied": "The user denied the request",
    },
    bad_client_description="unknown client",
    # Canvas answers a disabled developer key with 401 invalid_client, as for a bad secret.
    disabled_client=(401, "invalid_client", "client not enabled for this account"),
    bad_code_description="authorization_code not found",
    scopes_within=_scopes_subset,
    code_scopes=_code_scopes,
)


@dataclass
class Grant:
    """Canvas keeps one AccessToken row per consent; a refresh regenerates that row's token in place,
    which is why the previous access token dies the moment anyone refreshes."""

    grant_id: int
    client_id: str
    user_id: int
    scopes: frozenset[str] | None
    refresh_token: str = field(repr=False)
    access_token: str = field(repr=False)
    expires_at: float  # time.time()
    revoked: bool = False
    # The rate-limit bucket belongs to the row, so refreshes (cost 200) drain the same bucket.
    bucket_level: float = 0.0
    bucket_at: float = field(default_factory=time.monotonic)


class CanvasOAuth(OAuthServer):
    """The token side of the Canvas emulator: grants, refreshes, logout and the rate-limit bucket."""

    def __init__(self, emulator: EmulatorHost) -> None:
        super().__init__(emulator, OAUTH_RULES, auth_user_id=1)
        self._grants: list[Grant] = []
        self._by_refresh: dict[str, Grant] = {}
        # Superseded access tokens stay mapped so they answer "Invalid access token." like Canvas.
        self._by_access: dict[str, Grant] = {}
        self.users: dict[int, str] = {}
        self.bucket_capacity = 700.0
        self.bucket_drain_per_second = 10.0
        self.token_request_cost = 200.0

    def issue_tokens(
        self,
        client_id: str,
        *,
        user_id: int = 1,
        scopes: list[str] | None = None,
        expires_in: int | None = None,
    ) -> IssuedTokens:
        """Tokens as if the authorization-code dance was done (scopes None = all of the key's scopes)."""
        with self._lock:
            client = self._client_to_issue(client_id)
            granted = client.scopes if scopes is None else frozenset(scopes)
            if client.scopes is not None and granted is not None and not granted <= client.scopes:
                raise ValueError("requested scopes are not a subset of the developer key's scopes")
            grant = self._new_grant(client_id, user_id, granted, expires_in)
            return issued_tokens(
                grant.access_token,
                grant.refresh_token,
                grant.expires_at,
                int(expires_in if expires_in is not None else self._emu.access_token_ttl),
            )

    def expire_access_tokens(self) -> None:
        with self._lock:
            past = time.time() - 1
            for grant in self._grants:
                grant.expires_at = min(grant.expires_at, past)

    def _new_grant(
        self, client_id: str, user_id: int, scopes: frozenset[str] | None, ttl: int | None
    ) -> Grant:
        grant = Grant(
            grant_id=len(self._grants) + 1,
            client_id=client_id,
            user_id=user_id,
            scopes=scopes,
            refresh_token=_token(),
            access_token=_token(),
            expires_at=time.time() + (ttl if ttl is not None else self._emu.access_token_ttl),
        )
        self._grants.append(grant)
        self._by_refresh[grant.refresh_token] = grant
        self._by_access[grant.access_token] = grant
        return grant

    def _user_json(self, user_id: int) -> dict[str, Any]:
        name = self.users.get(user_id, f"User {user_id}")
        return {"id": user_id, "name": name, "global_id": str(10_000_000_000_000 + user_id)}

    def _charge(self, grant: Grant, cost: float) -> tuple[bool, float]:
        """Leaky bucket: drain since the last request, refuse if this request would overflow."""
        now = time.monotonic()
        grant.bucket_level = max(
            0.0, grant.bucket_level - (now - grant.bucket_at) * self.bucket_drain_per_second
        )
        grant.bucket_at = now
        if grant.bucket_level + cost > self.bucket_capacity:
            return False, max(0.0, self.bucket_capacity - grant.bucket_level)
        grant.bucket_level += cost
        return True, self.bucket_capacity - grant.bucket_level

    def _refresh_grant(self, request: Request, client: OAuthClient) -> Response:
        # Canvas refresh tokens do not rotate: the same one keeps working until the grant is revoked.
        grant = self._by_refresh.get(request.param("refresh_token") or "")
        if grant is None or grant.revoked or grant.client_id != client.client_id:
            state = "unknown" if grant is None else "revoked" if grant.revoked else "live"
            return self._token_error(request, 400, "invalid_grant", "refresh_token not found", state)
        grant.access_token = _token()  # the old access token of this row is dead from now on
        grant.expires_at = time.time() + self._emu.access_token_ttl
        self._by_access[grant.access_token] = grant
        self._charge_token_call(grant)
        return self._token_granted(request, self._token_body(grant, with_refresh_token=False), "live")

    def _charge_token_call(self, grant: Grant) -> None:
        self._charge(grant, 0.0)  # drain first
        grant.bucket_level += self.token_request_cost

    def _token_body(self, grant: Grant, *, with_refresh_token: bool) -> dict[str, Any]:
        body: dict[str, Any] = {
            "access_token": grant.access_token,
            "token_type": "Bearer",
            "user": self._user_json(grant.user_id),
            "canvas_region": "us-east-1",
        }
        if with_refresh_token:
            body["refresh_token"] = grant.refresh_token
        body["expires_in"] = self._emu.access_token_ttl
        return body

    def _code_grant(self, request: Request, client: OAuthClient, code: AuthCode) -> Response:
        if request.param("replace_tokens") in ("1", "true"):
            for other in self._grants:
                if other.client_id == client.client_id and other.user_id == code.user_id:
                    other.revoked = True
        grant = self._new_grant(client.client_id, code.user_id, code.scopes, None)
        self._charge_token_call(grant)
        return self._token_granted(request, self._token_body(grant, with_refresh_token=True))

    def _logout(self, request: Request) -> Response:
        with self._lock:
            grant = self._authenticate(request)
            if isinstance(grant, Response):
                return grant
            grant.revoked = True
        return json_response(200, {})

    def _authenticate(self, request: Request) -> Grant | Response:
        token = request.bearer() or request.arg("access_token")
        if not token:
            return json_response(401, UNAUTHENTICATED)
        grant = self._by_access.get(token)
        if grant is None or grant.access_token != token:
            return _invalid_token("Invalid access token.")
        if grant.revoked:
            return _invalid_token("Revoked access token.")
        if grant.expires_at <= time.time():
            return _invalid_token("Expired access token.")
        return grant


def _invalid_token(message: str) -> Response:
    return json_response(401, {"errors": [{"message": message}]}, dict(REALM))


def _token() -> str:
    return f"1~{secrets.token_urlsafe(48)}"
