"""Brightspace's authorization server for the emulator: token families, single-use refresh tokens, scopes."""

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
    BRIGHTSPACE,
    EmulatorHost,
    IssuedTokens,
    Request,
    Response,
)


@dataclass
class TokenFamily:
    """Every token descended from one consent; reuse of a consumed refresh token may revoke it all."""

    family_id: int
    client_id: str
    user_id: int
    scopes: frozenset[str] | None
    revoked: bool = False
    window_start: float = field(default_factory=time.monotonic)
    window_used: int = 0


@dataclass
class RefreshToken:
    family: TokenFamily
    consumed: bool = False


@dataclass
class AccessToken:
    family: TokenFamily
    scopes: frozenset[str] | None
    expires_at: float


BrightspaceClient = OAuthClient  # an OAuth2 app registration; the name stays importable from here


def _code_scopes(client: OAuthClient, requested: frozenset[str]) -> Scopes:
    # A client that enforces no scopes still has what it asked for written on its tokens.
    return requested if client.scopes is not None else (requested or None)


def scope_allows(granted: Scopes, needed: tuple[str, ...]) -> bool:
    """Scopes are group:resource:action; a `*` part in a granted scope matches anything."""
    if granted is None:
        return True  # the client does not enforce scopes
    for want in needed:
        want_parts = want.split(":")
        for have in granted:
            have_parts = have.split(":")
            if len(have_parts) == len(want_parts) and all(
                h in ("*", w) for h, w in zip(have_parts, want_parts, strict=True)
            ):
                return True
    return False


def _scopes_within(requested: frozenset[str], allowed: Scopes) -> bool:
    """Each requested scope is covered by an allowed one (`datahub:dataexports:*` covers `...:read`)."""
    return all(scope_allows(allowed, (scope,)) for scope in requested)


OAUTH_RULES = OAuthRules(
    platform=BRIGHTSPACE,
    display_name="Brightspace",
    authorize_unknown_client=(400, "invalid_request", "unknown client"),
    authorize_missing_redirect=(400, "invalid_request", "unknown client"),
    redirect_descriptions={},  # Brightspace redirects with the bare error code
    bad_client_description="unknown client or bad secret",
    disabled_client=(400, "unauthorized_client", "client disabled"),
    bad_code_description="invalid authorization code",
    scopes_within=_scopes_within,
    code_scopes=_code_scopes,
)


class BrightspaceOAuth(OAuthServer):
    """The token side of the Brightspace emulator: what each access and refresh token belongs to."""

    def __init__(self, emulator: EmulatorHost) -> None:
        super().__init__(emulator, OAUTH_RULES, auth_user_id=169)
        self._families: list[TokenFamily] = []
        self._refresh: dict[str, RefreshToken] = {}
        self._access: dict[str, AccessToken] = {}
        # Strict mode: presenting a consumed refresh token revokes every token of its family.
        self.revoke_family_on_reuse = True

    # ================================================================= setup API: OAuth
    def issue_tokens(
        self,
        client_id: str,
        *,
        scopes: list[str] | None = None,
        expires_in: int | None = None,
        user_id: int | None = None,
    ) -> IssuedTokens:
        """Tokens as if the consent was done (scopes None = all of the client's scopes)."""
        with self._lock:
            client = self._client_to_issue(client_id)
            granted = client.scopes if scopes is None else frozenset(scopes)
            family = self._new_family(client_id, self.auth_user_id if user_id is None else user_id, granted)
            access, refresh, ttl = self._mint(family, granted, expires_in)
            return issued_tokens(access, refresh, self._access[access].expires_at, ttl)

    def expire_access_tokens(self) -> None:
        with self._lock:
            past = time.time() - 1
            for token in self._access.values():
                token.expires_at = min(token.expires_at, past)

    # ================================================================= internals: tokens
    def _new_family(self, client_id: str, user_id: int, scopes: frozenset[str] | None) -> TokenFamily:
        family = TokenFamily(len(self._families) + 1, client_id, user_id, scopes)
        self._families.append(family)
        return family

    def _mint(
        self, family: TokenFamily, scopes: frozenset[str] | None, ttl: int | None
    ) -> tuple[str, str, int]:
        ttl = int(ttl if ttl is not None else self._emu.access_token_ttl)
        access = secrets.token_urlsafe(64)
        refresh = f"rt.{secrets.token_urlsafe(32)}"
        self._access[access] = AccessToken(family, scopes, time.time() + ttl)
        self._refresh[refresh] = RefreshToken(family)
        return access, refresh, ttl

    def _revoke_family(self, family: TokenFamily) -> None:
        family.revoked = True  # access and refresh tokens all check their family

    # ================================================================= request handling

    # ----------------------------------------------------------------- OAuth2 grants
    def _token_body(self, family: TokenFamily, scopes: frozenset[str] | None) -> dict[str, Any]:
        access, refresh, ttl = self._mint(family, scopes, None)
        return {
            "access_token": access,
            "token_type": "Bearer",
            "expires_in": ttl,
            "refresh_token": refresh,
            "scope": " ".join(sorted(scopes or ())),
        }

    def _refresh_grant(self, request: Request, client: OAuthClient) -> Response:
        # Brightspace refresh tokens are single use: each refresh answers a new one.
        token = self._refresh.get(request.param("refresh_token") or "")
        if token is None:
            return self._token_error(request, 400, "invalid_grant", "invalid refresh token", "unknown")
        family = token.family
        if token.consumed:
            if self.revoke_family_on_reuse:
                self._revoke_family(family)
            return self._token_error(request, 400, "invalid_grant", "refresh token already used", "consumed")
        if family.revoked:
            return self._token_error(request, 400, "invalid_grant", "refresh token revoked", "revoked")
        if family.client_id != client.client_id:
            return self._token_error(request, 400, "invalid_grant", "refresh token of another client", "live")
        requested = frozenset((request.param("scope") or "").split())
        if not _scopes_within(requested, family.scopes):
            return self._token_error(
                request, 400, "invalid_scope", "scope exceeds the original grant", "live"
            )
        token.consumed = True  # single use: from here on only the new refresh token works
        return self._token_granted(request, self._token_body(family, requested or family.scopes), "live")

    def _code_grant(self, request: Request, client: OAuthClient, code: AuthCode) -> Response:
        family = self._new_family(client.client_id, code.user_id, code.scopes)
        return self._token_granted(request, self._token_body(family, code.scopes))
