"""Canvas LMS for the emulator: the routes, scope checks, throttling answers and seeds.

The parts live one job per module, each class adding one layer: `canvas_oauth` (tokens and the
rate-limit bucket), `canvas_accounts` (accounts, SSO settings, pagination), and this module on top.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from airflow_provider_canvas.testing.canvas_accounts import (
    NOT_FOUND,
    SSO_KEYS,
    USER_NOT_AUTHORIZED,
    Account,
    CanvasAccounts,
    SsoWrite,
)
from airflow_provider_canvas.testing.canvas_oauth import REALM, CanvasClient, Grant
from airflow_provider_canvas.testing.canvas_reports import AccountReports, CanvasFiles
from airflow_provider_canvas.testing.canvas_sis import SisImports
from airflow_provider_canvas.testing.canvas_sis_routes import SisRoutes
from airflow_provider_canvas.testing.primitives import (
    EmulatorHost,
    IssuedTokens,
    Request,
    Response,
    json_response,
    text_response,
)

__all__ = [
    "NOT_FOUND",
    "REALM",
    "SSO_KEYS",
    "USER_NOT_AUTHORIZED",
    "Account",
    "CanvasClient",
    "CanvasEmulator",
    "SsoWrite",
]

_Handler = Callable[[Request, Grant, dict[str, str]], Response]


@dataclass(frozen=True)
class _Route:
    method: str
    pattern: re.Pattern[str]
    scope: str
    cost: float
    handler: _Handler


class CanvasEmulator(CanvasAccounts):
    """Canvas state and request handling; reach it as `LmsEmulator().canvas`."""

    def __init__(self, emulator: EmulatorHost) -> None:
        super().__init__(emulator)
        self.throttle_status = 403
        self._sso: dict[int, dict[str, str | None]] = {}
        self._sso_writes: list[SsoWrite] = []
        param = r"(?P<{}>[^/]+)"
        self.files = CanvasFiles(self._lock, lambda: emulator.url, lambda: emulator.signed_url)
        self.sis_imports = SisImports(self._lock, self.files.add)
        self.reports = AccountReports(self._lock, self.sis_imports, self.files)
        sis = SisRoutes(self._resolve, self.sis_imports, self.reports, self.files)
        self._sis_routes = sis
        imports = rf"^/api/v1/accounts/{param.format('account_id')}/sis_imports"
        reports = rf"^/api/v1/accounts/{param.format('account_id')}/reports/{param.format('report')}"
        self._routes = [
            _Route(
                "POST",
                re.compile(imports + "$"),
                "url:POST|/api/v1/accounts/:account_id/sis_imports",
                1.0,
                sis.create_import,
            ),
            _Route(
                "GET",
                re.compile(imports + "$"),
                "url:GET|/api/v1/accounts/:account_id/sis_imports",
                1.0,
                sis.list_imports,
            ),
            _Route(
                "GET",
                re.compile(imports + rf"/{param.format('id')}$"),
                "url:GET|/api/v1/accounts/:account_id/sis_imports/:id",
                1.0,
                sis.get_import,
            ),
            _Route(
                "PUT",
                re.compile(imports + rf"/{param.format('id')}/abort$"),
                "url:PUT|/api/v1/accounts/:account_id/sis_imports/:id/abort",
                1.0,
                sis.abort_import,
            ),
            _Route(
                "POST",
                re.compile(reports + "$"),
                "url:POST|/api/v1/accounts/:account_id/reports/:report",
                1.0,
                sis.start_report,
            ),
            _Route(
                "GET",
                re.compile(reports + rf"/{param.format('id')}$"),
                "url:GET|/api/v1/accounts/:account_id/reports/:report/:id",
                1.0,
                sis.get_report,
            ),
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

    def reset_records(self) -> None:
        with self._lock:
            self._sso_writes.clear()
            self.sis_imports.uploads.clear()
            self.files.storage.reset_records()

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
        for name, value in (seed.get("sis_imports") or {}).items():
            setattr(self.sis_imports, name, value)  # step_seconds, stuck_importing, fail_next_with_error
        for name, value in (seed.get("reports") or {}).items():
            setattr(self.reports, name, value)  # step_seconds, fail_next_with
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
        elif request.path.startswith("/files/") and request.method in ("GET", "HEAD"):
            return self._sis_routes.download(request)
        return json_response(404, NOT_FOUND)

    def throttled_response(self, status: int | None, retry_after: int) -> Response:
        return self._throttled(status or self.throttle_status, retry_after, 0.0)

    def _throttled(self, status: int, retry_after: int, remaining: float) -> Response:
        headers = {"X-Request-Cost": "0", "X-Rate-Limit-Remaining": _fmt(remaining)}
        if status == 429:
            headers["Retry-After"] = str(retry_after)
        return text_response(status, "Rate Limit Exceeded", headers)

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


def _fmt(value: float) -> str:
    return f"{value:.3f}"
