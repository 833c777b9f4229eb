"""D2L Brightspace for the emulator: the routes, per-family rate limits, scope checks and seeds.

The parts live one job per module, each class adding one layer: `brightspace_oauth` (tokens),
`bds_api` (Brightspace Data Sets), `ads` (Advanced Data Sets), and this module on top.
"""

from __future__ import annotations

import hashlib
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from airflow_provider_canvas.testing.ads import (
    ADS_STATUS_COMPLETE,
    ADS_STATUS_ERROR,
    ADS_STATUS_PROCESSING,
    ADS_STATUS_QUEUED,
    AdsApi,
    AdsDataSet,
    AdsJob,
)
from airflow_provider_canvas.testing.bds_api import BDS_DOWNLOAD, BDS_READ, BdsDataSet, BdsExtract
from airflow_provider_canvas.testing.bds_files import (
    BytesSource,
    CorruptSource,
    GeneratedZip,
    ZipSource,
    build_zip,
    csv_bytes,
)
from airflow_provider_canvas.testing.brightspace_oauth import AccessToken, BrightspaceClient, scope_allows
from airflow_provider_canvas.testing.primitives import (
    EmulatorHost,
    IssuedTokens,
    Request,
    Response,
    json_response,
    text_response,
    utcnow,
)
from airflow_provider_canvas.testing.signed_storage import SignedDownload

# The ZIP, ADS and signed-download names stay importable from here, where they used to live.
__all__ = [
    "ADS_STATUS_COMPLETE",
    "ADS_STATUS_ERROR",
    "ADS_STATUS_PROCESSING",
    "ADS_STATUS_QUEUED",
    "BDS_DOWNLOAD",
    "BDS_READ",
    "INVALID_TOKEN",
    "AdsDataSet",
    "AdsJob",
    "BdsDataSet",
    "BdsExtract",
    "BrightspaceClient",
    "BrightspaceEmulator",
    "BytesSource",
    "CorruptSource",
    "GeneratedZip",
    "SignedDownload",
    "ZipSource",
    "build_zip",
    "csv_bytes",
]

INVALID_TOKEN = {"WWW-Authenticate": 'Bearer error="invalid_token"'}
_Handler = Callable[[Request, AccessToken, dict[str, str]], Response]


@dataclass(frozen=True)
class _Route:
    method: str
    pattern: re.Pattern[str]
    scopes: tuple[str, ...] | None  # any one of them suffices; None = a valid token is enough
    handler: _Handler


class BrightspaceEmulator(AdsApi):
    """Brightspace state and request handling; reach it as `LmsEmulator().brightspace`."""

    def __init__(self, emulator: EmulatorHost) -> None:
        super().__init__(emulator)
        self.rate_limit_capacity = 10_000
        self.rate_limit_window_seconds = 60.0
        self.profile = {"FirstName": "Demo", "LastName": "Admin", "UniqueName": "demo.admin"}
        lp = r"^/d2l/api/lp/(?P<v>\d+\.\d+)"
        seg = "[^/]+"
        ds_plugin = rf"{lp}/datasets/bds/(?P<schema>{seg})/plugins/(?P<plugin>{seg})/extracts"
        self._routes = [
            _Route("GET", re.compile(rf"{lp}/users/whoami$"), None, self._whoami),
            _Route("GET", re.compile(rf"{lp}/datasets/bds$"), BDS_READ, self._list_data_sets),
            _Route(
                "GET", re.compile(rf"{lp}/datasets/bds/(?P<schema>{seg})/extracts$"), BDS_READ, self._extracts
            ),
            _Route("GET", re.compile(rf"{ds_plugin}$"), BDS_READ, self._extracts),
            _Route(
                "GET",
                re.compile(rf"{ds_plugin}/(?P<bds_type>Full|Differential)/(?P<created>{seg})$"),
                BDS_DOWNLOAD,
                self._download_extract,
            ),
            _Route("GET", re.compile(rf"{lp}/dataExport/bds$"), BDS_READ, self._legacy_list),
            _Route(
                "GET",
                re.compile(rf"{lp}/dataExport/bds/download/(?P<plugin>{seg})$"),
                BDS_DOWNLOAD,
                self._latest,
            ),
            _Route("GET", re.compile(rf"{lp}/dataExport/list$"), ("reporting:dataset:list",), self._ads_list),
            _Route(
                "GET",
                re.compile(rf"{lp}/dataExport/list/(?P<id>{seg})$"),
                ("reporting:dataset:fetch",),
                self._ads_get,
            ),
            _Route(
                "POST", re.compile(rf"{lp}/dataExport/create$"), ("reporting:job:create",), self._ads_create
            ),
            _Route("GET", re.compile(rf"{lp}/dataExport/jobs$"), ("reporting:job:list",), self._ads_jobs),
            _Route(
                "GET",
                re.compile(rf"{lp}/dataExport/jobs/(?P<id>{seg})$"),
                ("reporting:job:fetch",),
                self._ads_job,
            ),
            _Route(
                "GET",
                re.compile(rf"{lp}/dataExport/download/(?P<id>{seg})$"),
                ("reporting:job:download",),
                self._ads_download,
            ),
        ]

    def reset_records(self) -> None:
        self._storage.reset_records()

    def apply_seed(self, seed: dict[str, Any]) -> dict[str, IssuedTokens]:
        self._seed_settings(
            seed,
            (
                "revoke_family_on_reuse",
                "rate_limit_capacity",
                "rate_limit_window_seconds",
                "page_size",
                "retention_days",
                "redirect_downloads",
                "ads_job_seconds",
                "ads_job_ttl_seconds",
            ),
        )
        self._seed_oauth(seed)
        now = utcnow()
        for spec in seed.get("data_sets", []):
            self.add_data_set(
                spec["name"],
                spec.get("columns"),  # none: the catalogue's
                spec.get("rows"),
                rows_count=spec.get("rows_count"),
                schema_id=spec.get("schema_id"),
                plugin_id=spec.get("plugin_id"),
                description=spec.get("description", ""),
                version=spec.get("version", "1.0"),
                created=now - timedelta(days=float(spec.get("days_ago", 0))),
                types=spec.get("types"),
            )
            for ext in spec.get("extracts", []):
                created = (
                    datetime.fromisoformat(ext["created"])
                    if "created" in ext
                    else now - timedelta(days=float(ext.get("days_ago", 0)))
                )
                self.add_extract(
                    spec["name"],
                    ext.get("bds_type", "Full"),
                    created,
                    ext.get("rows"),
                    columns=ext.get("columns"),
                    rows_count=ext.get("rows_count"),
                    row_id_start=int(ext.get("row_id_start", 1)),
                    version=ext.get("version"),
                )
        for spec in seed.get("ads_data_sets", []):
            self.add_ads_data_set(
                spec["name"],
                spec["columns"],
                spec.get("rows"),
                rows_count=spec.get("rows_count"),
                data_set_id=spec.get("data_set_id"),
                category=spec.get("category", "Users"),
                description=spec.get("description", ""),
                filters=spec.get("filters"),
            )
        issued: dict[str, IssuedTokens] = {}
        for token in seed.get("tokens", []):
            issued[token.get("name") or token["client_id"]] = self.issue_tokens(
                token["client_id"], scopes=token.get("scopes"), expires_in=token.get("expires_in")
            )
        return issued

    # ================================================================= request handling
    def handle(self, request: Request) -> Response:
        if request.path == "/core/connect/token" and request.method == "POST":
            return self._token(request)
        if request.path == "/oauth2/auth" and request.method in ("GET", "HEAD"):
            return self._authorize(request)
        if request.path.startswith("/d2l/api/"):
            return self._api(request)
        return text_response(404, "Not Found")

    def throttled_response(self, status: int | None, retry_after: int) -> Response:
        headers = {
            "Retry-After": str(retry_after),
            "X-Rate-Limit-Remaining": "0",
            "X-Rate-Limit-Reset": str(retry_after),
            "X-Request-Cost": "0",
        }
        if status == 403:  # as some deployments answer: the reset header only, no Retry-After
            del headers["Retry-After"]
            return text_response(403, "Rate Limit Exceeded", headers)
        return text_response(status or 429, "Too Many Requests", headers)

    # ----------------------------------------------------------------- API plumbing
    def _api(self, request: Request) -> Response:
        method = "GET" if request.method == "HEAD" else request.method
        for route in self._routes:
            match = route.pattern.match(request.path)
            if match and route.method == method:
                break
        else:
            return text_response(404, "Not Found")
        with self._lock:
            value = request.bearer()
            token = self._access.get(value or "")
            if value is None:
                return Response(401, b"", {"WWW-Authenticate": "Bearer"})
            if token is None or token.family.revoked or token.expires_at <= time.time():
                return Response(401, b"", dict(INVALID_TOKEN))
            family = token.family
            now = time.monotonic()
            if now - family.window_start >= self.rate_limit_window_seconds:
                family.window_start, family.window_used = now, 0
            reset = max(1, math.ceil(self.rate_limit_window_seconds - (now - family.window_start)))
            if family.window_used + 1 > self.rate_limit_capacity:
                return self.throttled_response(429, reset)
            family.window_used += 1
            rate = {
                "X-Rate-Limit-Remaining": str(self.rate_limit_capacity - family.window_used),
                "X-Rate-Limit-Reset": str(reset),
                "X-Request-Cost": "1",
            }
            client = self.clients.get(family.client_id)
            enforced = client is not None and client.scopes is not None
            if enforced and route.scopes is not None and not scope_allows(token.scopes, route.scopes):
                return json_response(403, {"error": "insufficient_scope", "scope": route.scopes[0]}, rate)
        response = route.handler(request, token, match.groupdict())
        response.headers.update(rate)
        return response

    # ----------------------------------------------------------------- whoami
    def _whoami(self, request: Request, token: AccessToken, params: dict[str, str]) -> Response:
        user_id = token.family.user_id
        return json_response(
            200,
            {
                "Identifier": str(user_id),
                "FirstName": self.profile["FirstName"],
                "LastName": self.profile["LastName"],
                "UniqueName": self.profile["UniqueName"],
                "ProfileIdentifier": hashlib.sha1(f"profile-{user_id}".encode()).hexdigest()[:10],
            },
        )
