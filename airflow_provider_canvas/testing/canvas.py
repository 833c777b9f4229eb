"""Canvas LMS behaviour for the emulator: OAuth2, developer-key scopes, throttling, accounts, SSO settings."""

from __future__ import annotations

import base64
import binascii
import bisect
import hashlib
import json
import math
import re
import secrets
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

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
    text_response,
    utcnow,
)

REALM = {"WWW-Authenticate": 'Bearer realm="canvas-lms"'}
NOT_FOUND = {"errors": [{"message": "The specified resource does not exist."}]}
USER_NOT_AUTHORIZED = {
    "status": "unauthorized",
    "errors": [{"message": "user not authorized to perform that action"}],
}
UNAUTHENTICATED = {"status": "unauthenticated", "errors": [{"message": "user authorization required"}]}
SSO_KEYS = ("login_handle_name", "change_password_url", "auth_discovery_url", "unknown_user_url")

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
class _Grant:
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


@dataclass(slots=True)
class Account:
    id: int
    name: str
    parent_account_id: int | None
    root_account_id: int | None
    sis_account_id: str | None = None
    workflow_state: str = "active"
    integration_id: str | None = None
    default_time_zone: str = "America/Denver"
    default_storage_quota_mb: int = 500

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            # Derived, not stored: keeps generating 100,000 accounts cheap.
            "uuid": hashlib.sha1(f"canvas-account-{self.id}".encode()).hexdigest(),
            "parent_account_id": self.parent_account_id,
            "root_account_id": self.root_account_id,
            "workflow_state": self.workflow_state,
            "default_time_zone": self.default_time_zone,
            "sis_account_id": self.sis_account_id,
            "integration_id": self.integration_id,
            "default_storage_quota_mb": self.default_storage_quota_mb,
        }


@dataclass(frozen=True)
class SsoWrite:
    """One successful PUT of SSO settings: which keys it changed to what (None = unset)."""

    account_id: int
    changes: dict[str, str | None]
    at: datetime


_Handler = Callable[[Request, _Grant, dict[str, str]], Response]


@dataclass(frozen=True)
class _Route:
    method: str
    pattern: re.Pattern[str]
    scope: str
    cost: float
    handler: _Handler


class CanvasEmulator(OAuthServer):
    """Canvas state and request handling; reach it as `LmsEmulator().canvas`."""

    def __init__(self, emulator: EmulatorHost) -> None:
        super().__init__(emulator, OAUTH_RULES, auth_user_id=1)
        self._grants: list[_Grant] = []
        self._by_refresh: dict[str, _Grant] = {}
        # Superseded access tokens stay mapped so they answer "Invalid access token." like Canvas.
        self._by_access: dict[str, _Grant] = {}
        self.users: dict[int, str] = {}
        self.unauthorized_users: set[int] = set()  # users who are not account admins
        self.per_page_default = 10
        self.per_page_clamp = 50
        self.include_last_link = False
        self.throttle_status = 403
        self.bucket_capacity = 700.0
        self.bucket_drain_per_second = 10.0
        self.token_request_cost = 200.0
        self.accounts: dict[int, Account] = {}
        # Children lists (key None = root accounts) are kept sorted so pages are slices, not scans.
        self._children: dict[int | None, list[int]] = {}
        self._sis: dict[str, int] = {}
        self._descendants: dict[int, list[int]] = {}
        self._sso: dict[int, dict[str, str | None]] = {}
        self._sso_writes: list[SsoWrite] = []
        param = r"(?P<{}>[^/]+)"
        self._routes = [
            _Route(
                "GET", re.compile(r"^/api/v1/accounts$"), "url:GET|/api/v1/accounts", 2.0, self._list_roots
            ),
            _Route(
                "GET",
                re.compile(rf"^/api/v1/accounts/{param.format('account_id')}/sub_accounts$"),
                "url:GET|/api/v1/accounts/:account_id/sub_accounts",
                2.0,
                self._sub_accounts,
            ),
            _Route(
                "GET",
                re.compile(rf"^/api/v1/accounts/{param.format('account_id')}/sso_settings$"),
                "url:GET|/api/v1/accounts/:account_id/sso_settings",
                1.0,
                self._get_sso,
            ),
            _Route(
                "PUT",
                re.compile(rf"^/api/v1/accounts/{param.format('account_id')}/sso_settings$"),
                "url:PUT|/api/v1/accounts/:account_id/sso_settings",
                1.5,
                self._put_sso,
            ),
            _Route(
                "GET",
                re.compile(rf"^/api/v1/accounts/{param.format('id')}$"),
                "url:GET|/api/v1/accounts/:id",
                1.0,
                self._get_account,
            ),
            _Route(
                "GET",
                re.compile(rf"^/api/v1/users/{param.format('id')}$"),
                "url:GET|/api/v1/users/:id",
                1.0,
                self._get_user,
            ),
        ]

    # ================================================================= setup API
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

    def add_account(
        self,
        id: int,
        name: str,
        parent_account_id: int | None = None,
        sis_account_id: str | None = None,
        workflow_state: str = "active",
        integration_id: str | None = None,
    ) -> Account:
        with self._lock:
            if id in self.accounts:
                raise ValueError(f"account {id} already exists")
            root_id: int | None = None
            if parent_account_id is not None:
                parent = self.accounts.get(parent_account_id)
                if parent is None:
                    raise ValueError(f"parent account {parent_account_id} does not exist")
                root_id = parent.root_account_id or parent.id
            account = Account(
                id, name, parent_account_id, root_id, sis_account_id, workflow_state, integration_id
            )
            self._insert(account)
            return account

    def generate_account_tree(self, count: int, root_id: int = 1, fanout: int = 10) -> None:
        """`count` accounts in all (root included), ids root_id.., breadth-first, `fanout` children each."""
        if count < 1 or fanout < 1:
            raise ValueError("count and fanout must be positive")
        with self._lock:
            if any(aid in self.accounts for aid in range(root_id, root_id + count)):
                raise ValueError("generated account ids collide with existing accounts")
            self._insert(Account(root_id, "Root Account", None, None, f"ROOT-{root_id}"))
            for index in range(1, count):
                aid = root_id + index
                parent = root_id + (index - 1) // fanout
                self._insert(Account(aid, f"Account {aid}", parent, root_id, f"A{aid}"))

    def set_sso_settings(self, account_id: int, **values: str | None) -> None:
        unknown = set(values) - set(SSO_KEYS)
        if unknown:
            raise ValueError(f"unknown SSO settings {sorted(unknown)}")
        with self._lock:
            self._sso_for(account_id).update({k: v or None for k, v in values.items()})

    def get_sso_settings(self, account_id: int) -> dict[str, str | None]:
        with self._lock:
            return dict(self._sso_for(account_id))

    @property
    def sso_writes(self) -> list[SsoWrite]:
        with self._lock:
            return list(self._sso_writes)

    def expire_access_tokens(self) -> None:
        with self._lock:
            past = time.time() - 1
            for grant in self._grants:
                grant.expires_at = min(grant.expires_at, past)

    def reset_records(self) -> None:
        with self._lock:
            self._sso_writes.clear()

    def apply_seed(self, seed: dict[str, Any]) -> dict[str, IssuedTokens]:
        self._seed_settings(
            seed,
            (
                "per_page_default",
                "per_page_clamp",
                "include_last_link",
                "throttle_status",
                "bucket_capacity",
                "bucket_drain_per_second",
            ),
        )
        self._seed_oauth(seed)
        tree = seed.get("account_tree")
        if isinstance(tree, int):
            tree = {"count": tree}
        if tree:
            self.generate_account_tree(
                int(tree["count"]), int(tree.get("root_id", 1)), int(tree.get("fanout", 10))
            )
        for account in seed.get("accounts", []):
            self.add_account(**account)
        for account_id, values in (seed.get("sso_settings") or {}).items():
            self.set_sso_settings(int(account_id), **values)
        issued: dict[str, IssuedTokens] = {}
        for token in seed.get("tokens", []):
            issued[token.get("name") or token["client_id"]] = self.issue_tokens(
                token["client_id"],
                user_id=int(token.get("user_id", 1)),
                scopes=token.get("scopes"),
                expires_in=token.get("expires_in"),
            )
        return issued

    # ================================================================= internals: state
    def _insert(self, account: Account) -> None:
        self.accounts[account.id] = account
        if account.sis_account_id:
            self._sis[account.sis_account_id] = account.id
        self._descendants.clear()
        if account.workflow_state == "deleted":
            return  # deleted accounts are fetchable by id but never listed
        siblings = self._children.setdefault(account.parent_account_id, [])
        if not siblings or siblings[-1] < account.id:
            siblings.append(account.id)
        else:
            bisect.insort(siblings, account.id)

    def _descendants_of(self, account_id: int) -> list[int]:
        with self._lock:
            cached = self._descendants.get(account_id)
            if cached is None:
                # Computed once per tree version; every page after that is a bisect and a slice.
                cached = []
                queue = deque(self._children.get(account_id, ()))
                while queue:
                    aid = queue.popleft()
                    cached.append(aid)
                    queue.extend(self._children.get(aid, ()))
                cached.sort()
                self._descendants[account_id] = cached
            return cached

    def _sso_for(self, account_id: int) -> dict[str, str | None]:
        return self._sso.setdefault(account_id, dict.fromkeys(SSO_KEYS))

    def _new_grant(
        self, client_id: str, user_id: int, scopes: frozenset[str] | None, ttl: int | None
    ) -> _Grant:
        grant = _Grant(
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

    def _charge(self, grant: _Grant, cost: float) -> tuple[bool, float]:
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

    # ================================================================= request handling
    def handle(self, request: Request) -> Response:
        if request.path == "/login/oauth2/token":
            if request.method == "POST":
                return self._token(request)
            if request.method == "DELETE":
                return self._logout(request)
        elif request.path == "/login/oauth2/auth" and request.method in ("GET", "HEAD"):
            return self._authorize(request)
        elif request.path.startswith("/api/v1/"):
            return self._api(request)
        return json_response(404, NOT_FOUND)

    def throttled_response(self, status: int | None, retry_after: int) -> Response:
        return self._throttled(status or self.throttle_status, retry_after, 0.0)

    def _throttled(self, status: int, retry_after: int, remaining: float) -> Response:
        headers = {"X-Request-Cost": "0", "X-Rate-Limit-Remaining": _fmt(remaining)}
        if status == 429:
            headers["Retry-After"] = str(retry_after)
        return text_response(status, "Rate Limit Exceeded", headers)

    # ----------------------------------------------------------------- OAuth2 grants
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

    def _charge_token_call(self, grant: _Grant) -> None:
        self._charge(grant, 0.0)  # drain first
        grant.bucket_level += self.token_request_cost

    def _token_body(self, grant: _Grant, *, with_refresh_token: bool) -> dict[str, Any]:
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

    # ----------------------------------------------------------------- API
    def _authenticate(self, request: Request) -> _Grant | Response:
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

    def _api(self, request: Request) -> Response:
        path = request.path.removesuffix(".json")  # Canvas routes accept an optional .json suffix
        method = "GET" if request.method == "HEAD" else request.method
        for route in self._routes:
            match = route.pattern.match(path)
            if match and route.method == method:
                break
        else:
            return json_response(404, NOT_FOUND)
        with self._lock:
            grant = self._authenticate(request)
            if isinstance(grant, Response):
                return grant
            allowed, remaining = self._charge(grant, route.cost)
            if not allowed:
                retry = (
                    math.ceil(route.cost / self.bucket_drain_per_second)
                    if self.bucket_drain_per_second
                    else 1
                )
                return self._throttled(self.throttle_status, max(1, retry), remaining)
            rate = {"X-Request-Cost": _fmt(route.cost), "X-Rate-Limit-Remaining": _fmt(remaining)}
            client = self.clients.get(grant.client_id)
            if client is not None and client.scopes is not None and route.scope not in (grant.scopes or ()):
                return json_response(
                    401, {"errors": [{"message": "Insufficient scopes on access token."}]}, rate
                )
            if grant.user_id in self.unauthorized_users:
                return json_response(401, USER_NOT_AUTHORIZED, rate)
        response = route.handler(request, grant, match.groupdict())
        response.headers.update(rate)
        return response

    def _resolve(self, ref: str) -> Account | None:
        if ref == "self":
            roots = self._children.get(None)
            return self.accounts.get(roots[0]) if roots else None
        if ref.startswith("sis_account_id:"):
            aid = self._sis.get(ref[len("sis_account_id:") :])
            return None if aid is None else self.accounts.get(aid)
        return self.accounts.get(int(ref)) if ref.isdigit() else None

    def _get_account(self, request: Request, grant: _Grant, params: dict[str, str]) -> Response:
        account = self._resolve(params["id"])
        return json_response(404, NOT_FOUND) if account is None else json_response(200, account.to_json())

    def _get_user(self, request: Request, grant: _Grant, params: dict[str, str]) -> Response:
        if params["id"] not in ("self", str(grant.user_id)):
            return json_response(401, USER_NOT_AUTHORIZED)
        return json_response(200, self._user_json(grant.user_id))

    def _list_roots(self, request: Request, grant: _Grant, params: dict[str, str]) -> Response:
        return self._paginate(request, self._children.get(None, []))

    def _sub_accounts(self, request: Request, grant: _Grant, params: dict[str, str]) -> Response:
        account = self._resolve(params["account_id"])
        if account is None:
            return json_response(404, NOT_FOUND)
        if (request.arg("recursive") or "").lower() in ("true", "1"):
            ids = self._descendants_of(account.id)
        else:
            ids = self._children.get(account.id, [])
        return self._paginate(request, ids)

    def _get_sso(self, request: Request, grant: _Grant, params: dict[str, str]) -> Response:
        account = self._resolve(params["account_id"])
        if account is None:
            return json_response(404, NOT_FOUND)
        if account.parent_account_id is not None:
            return json_response(401, USER_NOT_AUTHORIZED)  # SSO settings need root-account admin rights
        return json_response(200, {"sso_settings": self.get_sso_settings(account.id)})

    def _put_sso(self, request: Request, grant: _Grant, params: dict[str, str]) -> Response:
        account = self._resolve(params["account_id"])
        if account is None:
            return json_response(404, NOT_FOUND)
        if account.parent_account_id is not None:
            return json_response(401, USER_NOT_AUTHORIZED)
        changes: dict[str, str | None] = {}
        body = request.json()
        if isinstance(body, dict) and isinstance(body.get("sso_settings"), dict):
            for key in SSO_KEYS:
                if key in body["sso_settings"]:
                    changes[key] = body["sso_settings"][key] or None
        for source in (request.query, request.form):
            for key in SSO_KEYS:
                values = source.get(f"sso_settings[{key}]")
                if values is not None:
                    changes[key] = values[-1] or None  # an empty value unsets the setting
        with self._lock:
            settings = self._sso_for(account.id)
            settings.update(changes)
            if changes:
                self._sso_writes.append(SsoWrite(account.id, changes, utcnow()))
            return json_response(200, {"sso_settings": dict(settings)})

    # ----------------------------------------------------------------- pagination
    def _paginate(self, request: Request, ids: Sequence[int]) -> Response:
        try:
            per_page = int(request.arg("per_page") or self.per_page_default)
        except ValueError:
            per_page = self.per_page_default
        if per_page < 1:
            per_page = self.per_page_default
        per_page = min(per_page, self.per_page_clamp)  # silently, as Canvas does
        page = request.arg("page") or "first"
        if page == "first":
            start = 0
        elif page.isdigit():
            start = (max(int(page), 1) - 1) * per_page
        elif page.startswith("bookmark:"):
            last_id = _decode_bookmark(page)
            if last_id is None:
                return json_response(400, {"errors": [{"message": "invalid bookmark"}]})
            start = bisect.bisect_right(ids, last_id)  # ids are sorted: the bookmark is the last id seen
        else:
            return json_response(400, {"errors": [{"message": "invalid page"}]})
        page_ids = ids[start : start + per_page]
        accounts = [self.accounts[aid].to_json() for aid in page_ids]

        def link(page_value: str, rel: str) -> str:
            return f'<{self._page_url(request, page_value, per_page)}>; rel="{rel}"'

        links = [link(page, "current")]
        if start + per_page < len(ids):
            links.append(link(_bookmark(ids[start + per_page - 1]), "next"))
        if start > 0:
            prev_start = max(0, start - per_page)
            links.append(link("first" if prev_start == 0 else _bookmark(ids[prev_start - 1]), "prev"))
        links.append(link("first", "first"))
        if self.include_last_link:
            last_start = max(0, (len(ids) - 1) // per_page * per_page)
            links.append(link("first" if last_start == 0 else _bookmark(ids[last_start - 1]), "last"))
        return json_response(200, accounts, {"Link": ",".join(links)})

    def _page_url(self, request: Request, page: str, per_page: int) -> str:
        # access_token never goes into a Link: clients log links.
        kept = [
            (key, value)
            for key, values in request.query.items()
            if key not in ("page", "per_page", "access_token")
            for value in values
        ]
        kept += [("page", page), ("per_page", str(per_page))]
        return f"{self._emu.url}{request.path}?{urlencode(kept)}"


def _invalid_token(message: str) -> Response:
    return json_response(401, {"errors": [{"message": message}]}, dict(REALM))


def _token() -> str:
    return f"1~{secrets.token_urlsafe(48)}"


def _fmt(value: float) -> str:
    return f"{value:.3f}"


def _bookmark(last_id: int) -> str:
    raw = base64.urlsafe_b64encode(json.dumps([last_id]).encode()).decode().rstrip("=")
    return f"bookmark:{raw}"


def _decode_bookmark(page: str) -> int | None:
    raw = page[len("bookmark:") :]
    try:
        value = json.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
    except (ValueError, binascii.Error):
        return None
    if isinstance(value, list) and len(value) == 1 and isinstance(value[0], int):
        return value[0]
    return None
