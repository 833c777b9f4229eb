"""D2L Brightspace behaviour for the emulator: rotating refresh tokens, scopes, 429s, BDS and ADS."""

from __future__ import annotations

import hashlib
import math
import re
import secrets
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from airflow_provider_canvas.testing.ads import (
    ADS_STATUS_COMPLETE,
    ADS_STATUS_ERROR,
    ADS_STATUS_PROCESSING,
    ADS_STATUS_QUEUED,
    AdsDataSet,
    AdsJob,
    filter_definitions,
)
from airflow_provider_canvas.testing.bds_files import (
    BytesSource,
    CorruptSource,
    GeneratedZip,
    ZipSource,
    build_zip,
    byte_range,
    csv_bytes,
    file_response,
    make_source,
)
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
    json_response,
    redirect_response,
    text_response,
    utcnow,
)
from airflow_provider_canvas.testing.signed_storage import SignedDownload, SignedStorage

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
BDS_READ = ("datahub:dataexports:read", "datasets:bds:read")
BDS_DOWNLOAD = ("datahub:dataexports:download",)
_NAMESPACE = uuid.UUID("5f0f7c1e-3d43-4f55-9a49-6f1bd2f0c0de")  # stable ids across runs


# ===================================================================== data model
@dataclass
class _Family:
    """Every token descended from one consent; reuse of a consumed refresh token may revoke it all."""

    family_id: int
    client_id: str
    user_id: int
    scopes: frozenset[str] | None
    revoked: bool = False
    window_start: float = field(default_factory=time.monotonic)
    window_used: int = 0


@dataclass
class _RefreshToken:
    family: _Family
    consumed: bool = False


@dataclass
class _AccessToken:
    family: _Family
    scopes: frozenset[str] | None
    expires_at: float


@dataclass
class BdsDataSet:
    name: str
    columns: list[str]
    schema_id: str
    full_plugin_id: str
    differential_plugin_id: str
    description: str = ""
    version: str = "1.0"
    extracts: list[BdsExtract] = field(default_factory=list, repr=False)


@dataclass
class BdsExtract:
    extract_id: int
    data_set: BdsDataSet = field(repr=False)
    bds_type: str
    created: datetime
    columns: list[str]
    version: str
    source: ZipSource = field(repr=False)
    corrupt: bool = False

    @property
    def plugin_id(self) -> str:
        ds = self.data_set
        return ds.full_plugin_id if self.bds_type == "Full" else ds.differential_plugin_id

    @property
    def served(self) -> ZipSource:
        return CorruptSource(self.source.size) if self.corrupt else self.source

    @property
    def download_size(self) -> int:
        return self.source.size


_Handler = Callable[[Request, _AccessToken, dict[str, str]], Response]


@dataclass(frozen=True)
class _Route:
    method: str
    pattern: re.Pattern[str]
    scopes: tuple[str, ...] | None  # any one of them suffices; None = a valid token is enough
    handler: _Handler


BrightspaceClient = OAuthClient  # an OAuth2 app registration; the name stays importable from here


def _code_scopes(client: OAuthClient, requested: frozenset[str]) -> Scopes:
    # A client that enforces no scopes still has what it asked for written on its tokens.
    return requested if client.scopes is not None else (requested or None)


def _scope_allows(granted: Scopes, needed: tuple[str, ...]) -> bool:
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
    return all(_scope_allows(allowed, (scope,)) for scope in requested)


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


# ===================================================================== emulator
class BrightspaceEmulator(OAuthServer):
    """Brightspace state and request handling; reach it as `LmsEmulator().brightspace`."""

    def __init__(self, emulator: EmulatorHost) -> None:
        super().__init__(emulator, OAUTH_RULES, auth_user_id=169)
        self._families: list[_Family] = []
        self._refresh: dict[str, _RefreshToken] = {}
        self._access: dict[str, _AccessToken] = {}
        # Strict mode: presenting a consumed refresh token revokes every token of its family.
        self.revoke_family_on_reuse = True
        self.rate_limit_capacity = 10_000
        self.rate_limit_window_seconds = 60.0
        self.profile = {"FirstName": "Demo", "LastName": "Admin", "UniqueName": "demo.admin"}
        self.data_sets: dict[str, BdsDataSet] = {}
        self.page_size = 100
        self.retention_days = 14  # differentials older than this are no longer listed
        self.redirect_downloads = True
        self.signed_url_ttl = 300
        # S3-style storage refuses a presigned URL that also carries an Authorization header.
        self.reject_signed_with_authorization = True
        self._extract_seq = 0
        self._storage: SignedStorage[BdsExtract] = SignedStorage(self._lock)
        self._truncate_next: int | None = None
        self.ads_data_sets: dict[str, AdsDataSet] = {}
        self.ads_jobs: dict[str, AdsJob] = {}
        self.ads_job_seconds = 3.0  # Queued for the first third, Processing until done
        self.ads_job_ttl_seconds: float | None = None  # completed jobs expire after this
        self._ads_fail_next = 0
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

    # ================================================================= setup API: BDS
    def add_data_set(
        self,
        name: str,
        columns: list[str],
        rows: list[dict[str, Any]] | None = None,
        *,
        rows_count: int | None = None,
        schema_id: str | None = None,
        plugin_id: str | None = None,
        differential_plugin_id: str | None = None,
        description: str = "",
        version: str = "1.0",
        created: datetime | None = None,
    ) -> BdsDataSet:
        """Register a data set; with `rows` or `rows_count` it also gets a Full extract created now."""
        data_set = BdsDataSet(
            name=name,
            columns=list(columns),
            schema_id=schema_id or str(uuid.uuid5(_NAMESPACE, f"schema:{name}")),
            full_plugin_id=plugin_id or str(uuid.uuid5(_NAMESPACE, f"plugin:{name}:Full")),
            differential_plugin_id=differential_plugin_id
            or str(uuid.uuid5(_NAMESPACE, f"plugin:{name}:Diff")),
            description=description or f"The {name} data set",
            version=version,
        )
        with self._lock:
            self.data_sets[name] = data_set
        if rows is not None or rows_count is not None:
            self.add_extract(name, "Full", created, rows, rows_count=rows_count)
        return data_set

    def add_extract(
        self,
        name: str,
        bds_type: str = "Full",
        created: datetime | None = None,
        rows: list[dict[str, Any]] | None = None,
        *,
        columns: list[str] | None = None,
        rows_count: int | None = None,
        row_id_start: int = 1,
        version: str | None = None,
        zip_members: list[tuple[str, bytes | str]] | None = None,
    ) -> BdsExtract:
        """One extract of data set `name`.

        `columns` overrides the data set's (a minor version adds columns at the end; the data set's
        columns follow the newest extract). `rows_count` generates deterministic rows streamed from a
        formula instead of memory. `zip_members` replaces the archive content verbatim (two files,
        `../escape.csv`, ...).
        """
        if bds_type not in ("Full", "Differential"):
            raise ValueError("bds_type must be 'Full' or 'Differential'")
        created = created or utcnow()
        if created.tzinfo is None:
            created = created.replace(tzinfo=timezone.utc)
        with self._lock:
            data_set = self.data_sets.get(name)
            if data_set is None:
                raise ValueError(f"unknown data set {name!r}")
            cols = list(columns or data_set.columns)
            member = f"{name.replace(' ', '')}.csv"
            source = make_source(member, cols, rows, rows_count, row_id_start, created, zip_members)
            self._extract_seq += 1
            extract = BdsExtract(
                self._extract_seq, data_set, bds_type, created, cols, version or data_set.version, source
            )
            data_set.extracts.append(extract)
            if columns is not None and extract is max(data_set.extracts, key=lambda e: e.created):
                data_set.columns = cols
                data_set.version = extract.version
            return extract

    def corrupt_extract(self, name: str, extract_id: int | None = None) -> BdsExtract:
        """Serve non-ZIP bytes (same length) for the newest extract of `name`, or the given one."""
        with self._lock:
            extracts = self.data_sets[name].extracts
            candidates = [e for e in extracts if extract_id is None or e.extract_id == extract_id]
            if not candidates:
                raise ValueError(f"no extract {extract_id} in {name!r}")
            extract = max(candidates, key=lambda e: e.created)
            extract.corrupt = True
            return extract

    def truncate_next_download(self, n_bytes: int) -> None:
        """The next file body served (BDS or ADS) stops after `n_bytes`; Content-Length promises all."""
        with self._lock:
            self._truncate_next = n_bytes

    @property
    def signed_downloads(self) -> list[SignedDownload]:
        return self._storage.downloads

    # ================================================================= setup API: ADS
    def add_ads_data_set(
        self,
        name: str,
        columns: list[str],
        rows: list[dict[str, Any]] | None = None,
        *,
        rows_count: int | None = None,
        data_set_id: str | None = None,
        category: str = "Users",
        description: str = "",
        filters: list[dict[str, Any]] | None = None,
    ) -> AdsDataSet:
        data_set = AdsDataSet(
            data_set_id=data_set_id or str(uuid.uuid5(_NAMESPACE, f"ads:{name}")),
            name=name,
            columns=list(columns),
            rows=rows,
            rows_count=rows_count,
            category=category,
            description=description or f"The {name} advanced data set",
            filters=filter_definitions(filters),
        )
        with self._lock:
            self.ads_data_sets[data_set.data_set_id] = data_set
        return data_set

    def fail_next_ads_jobs(self, count: int = 1) -> None:
        """The next `count` created ADS jobs end in Status 3 (Error) instead of Complete."""
        with self._lock:
            self._ads_fail_next = count

    def expire_ads_job(self, job_id: str) -> None:
        with self._lock:
            self.ads_jobs[job_id].expired = True

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
                spec["columns"],
                spec.get("rows"),
                rows_count=spec.get("rows_count"),
                schema_id=spec.get("schema_id"),
                plugin_id=spec.get("plugin_id"),
                description=spec.get("description", ""),
                version=spec.get("version", "1.0"),
                created=now - timedelta(days=float(spec.get("days_ago", 0))),
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

    # ================================================================= internals: tokens
    def _new_family(self, client_id: str, user_id: int, scopes: frozenset[str] | None) -> _Family:
        family = _Family(len(self._families) + 1, client_id, user_id, scopes)
        self._families.append(family)
        return family

    def _mint(self, family: _Family, scopes: frozenset[str] | None, ttl: int | None) -> tuple[str, str, int]:
        ttl = int(ttl if ttl is not None else self._emu.access_token_ttl)
        access = secrets.token_urlsafe(64)
        refresh = f"rt.{secrets.token_urlsafe(32)}"
        self._access[access] = _AccessToken(family, scopes, time.time() + ttl)
        self._refresh[refresh] = _RefreshToken(family)
        return access, refresh, ttl

    def _revoke_family(self, family: _Family) -> None:
        family.revoked = True  # access and refresh tokens all check their family

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
        return text_response(status or 429, "Too Many Requests", headers)

    # ----------------------------------------------------------------- OAuth2 grants
    def _token_body(self, family: _Family, scopes: frozenset[str] | None) -> dict[str, Any]:
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
            if enforced and route.scopes is not None and not _scope_allows(token.scopes, route.scopes):
                return json_response(403, {"error": "insufficient_scope", "scope": route.scopes[0]}, rate)
        response = route.handler(request, token, match.groupdict())
        response.headers.update(rate)
        return response

    def _lp(self, version: str) -> str:
        return f"{self._emu.url}/d2l/api/lp/{version}"

    def _page(self, request: Request, items: list[Any]) -> dict[str, Any]:
        """An ObjectListPage: an opaque bookmark points at the next slice."""
        try:
            start = int(request.arg("bookmark") or 0)
        except ValueError:
            start = 0
        stop = start + self.page_size
        next_url = None
        if stop < len(items):
            next_url = f"{self._emu.url}{request.path}?bookmark={stop}"
        return {"Objects": items[start:stop], "Next": next_url}

    def _take_truncate(self) -> int | None:
        with self._lock:
            value, self._truncate_next = self._truncate_next, None
            return value

    def _file_response(
        self, source: ZipSource, filename: str, status: int = 200, start: int = 0, stop: int | None = None
    ) -> Response:
        return file_response(source, filename, self._take_truncate(), status, start, stop)

    # ----------------------------------------------------------------- whoami
    def _whoami(self, request: Request, token: _AccessToken, params: dict[str, str]) -> Response:
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

    # ----------------------------------------------------------------- BDS listings
    def _listed(self, data_set: BdsDataSet, bds_type: str | None = None) -> list[BdsExtract]:
        """Extracts still listed (differentials expire after `retention_days`), newest first."""
        horizon = utcnow() - timedelta(days=self.retention_days)
        kept = [
            e
            for e in data_set.extracts
            if (bds_type is None or e.bds_type == bds_type) and (e.bds_type == "Full" or e.created >= horizon)
        ]
        return sorted(kept, key=lambda e: e.created, reverse=True)

    def _extract_link(self, extract: BdsExtract, version: str) -> str:
        ds = extract.data_set
        return (
            f"{self._lp(version)}/datasets/bds/{ds.schema_id}/plugins/{extract.plugin_id}"
            f"/extracts/{extract.bds_type}/{_iso(extract.created)}"
        )

    def _extract_json(self, extract: BdsExtract, version: str) -> dict[str, Any]:
        return {
            "SchemaId": extract.data_set.schema_id,
            "PluginId": extract.plugin_id,
            "BdsType": extract.bds_type,
            "CreatedDate": _iso(extract.created),
            "DownloadLink": self._extract_link(extract, version),
            "DownloadSize": extract.download_size,
            "QueuedForProcessingDate": _iso(extract.created - timedelta(minutes=20)),
            "Version": extract.version,
        }

    def _list_data_sets(self, request: Request, token: _AccessToken, params: dict[str, str]) -> Response:
        base = f"{self._lp(params['v'])}/datasets/bds"

        def plugin(ds: BdsDataSet, plugin_id: str) -> dict[str, Any]:
            # Full and Differential carry the same Name: they feed the same table; BdsType tells them apart.
            return {
                "PluginId": plugin_id,
                "Name": ds.name,
                "Description": ds.description,
                "ExtractsLink": f"{base}/{ds.schema_id}/plugins/{plugin_id}/extracts",
            }

        with self._lock:
            items = [
                {
                    "SchemaId": ds.schema_id,
                    "Full": plugin(ds, ds.full_plugin_id),
                    "Differential": plugin(ds, ds.differential_plugin_id),
                    "ExtractsLink": f"{base}/{ds.schema_id}/extracts",
                }
                for ds in sorted(self.data_sets.values(), key=lambda d: d.name)
            ]
        return json_response(200, self._page(request, items))

    def _find(self, schema_id: str | None, plugin_id: str | None) -> tuple[BdsDataSet, str | None] | None:
        for ds in self.data_sets.values():
            if schema_id is not None and ds.schema_id != schema_id:
                continue
            if plugin_id is None and schema_id is not None:
                return ds, None
            if plugin_id == ds.full_plugin_id:
                return ds, "Full"
            if plugin_id == ds.differential_plugin_id:
                return ds, "Differential"
        return None

    def _extracts(self, request: Request, token: _AccessToken, params: dict[str, str]) -> Response:
        with self._lock:
            found = self._find(params["schema"], params.get("plugin"))
            if found is None:
                return text_response(404, "Not Found")
            data_set, bds_type = found
            items = [self._extract_json(e, params["v"]) for e in self._listed(data_set, bds_type)]
        return json_response(200, self._page(request, items))

    def _legacy_entry(self, ds: BdsDataSet, bds_type: str, version: str) -> dict[str, Any]:
        listed = self._listed(ds, bds_type)
        plugin = ds.full_plugin_id if bds_type == "Full" else ds.differential_plugin_id
        latest = listed[0] if listed else None

        def info(extract: BdsExtract, link: str) -> dict[str, Any]:
            return {
                "PluginId": plugin,
                "Name": ds.name,
                "Description": ds.description,
                "FullDataSet": bds_type == "Full",
                "CreatedDate": _iso(extract.created),
                "DownloadLink": link,
                "DownloadSize": extract.download_size,
                "Version": extract.version,
                "QueuedForProcessingDate": _iso(extract.created - timedelta(minutes=20)),
                "CurrentlyAvailable": True,
            }

        if latest is None:
            entry = {
                "PluginId": plugin,
                "Name": ds.name,
                "Description": ds.description,
                "FullDataSet": bds_type == "Full",
                "CreatedDate": None,
                "DownloadLink": None,
                "DownloadSize": None,
                "Version": ds.version,
                "QueuedForProcessingDate": None,
                "CurrentlyAvailable": False,
            }
        else:
            entry = info(latest, f"{self._lp(version)}/dataExport/bds/download/{plugin}")
        entry["PreviousDataSets"] = [info(e, self._extract_link(e, version)) for e in listed[1:]]
        return entry

    def _legacy_list(self, request: Request, token: _AccessToken, params: dict[str, str]) -> Response:
        try:
            page = max(1, int(request.arg("page") or 1))
            size = max(1, int(request.arg("pageSize") or self.page_size))
        except ValueError:
            return text_response(400, "page and pageSize must be integers")
        with self._lock:
            entries = [
                self._legacy_entry(ds, bds_type, params["v"])
                for ds in sorted(self.data_sets.values(), key=lambda d: d.name)
                for bds_type in ("Full", "Differential")
            ]
        chunk = entries[(page - 1) * size : page * size]
        base = f"{self._emu.url}{request.path}"
        return json_response(
            200,
            {
                "BrightspaceDataSets": chunk,
                "NextPageUrl": f"{base}?page={page + 1}&pageSize={size}"
                if page * size < len(entries)
                else None,
                "PrevPageUrl": f"{base}?page={page - 1}&pageSize={size}" if page > 1 else None,
            },
        )

    # ----------------------------------------------------------------- BDS downloads
    def _download_extract(self, request: Request, token: _AccessToken, params: dict[str, str]) -> Response:
        with self._lock:
            found = self._find(params["schema"], params["plugin"])
            if found is None or found[1] != params["bds_type"]:
                return text_response(404, "Not Found")
            wanted = params["created"]
            extract = next((e for e in self._listed(found[0], found[1]) if _iso(e.created) == wanted), None)
            if extract is None:
                return text_response(404, "Not Found")  # includes differentials past retention
        return self._serve(extract)

    def _latest(self, request: Request, token: _AccessToken, params: dict[str, str]) -> Response:
        with self._lock:
            found = self._find(None, params["plugin"])
            listed = self._listed(found[0], found[1]) if found else []
        if not listed:
            return text_response(404, "Not Found")
        return self._serve(listed[0])

    def _serve(self, extract: BdsExtract) -> Response:
        if not self.redirect_downloads:
            return self._file_response(extract.served, _filename(extract))
        return redirect_response(self._storage.url_for(extract, self._emu.signed_url, self.signed_url_ttl))

    def handle_signed(self, request: Request) -> Response:
        """The storage host a DownloadLink redirects to: no bearer token expected, Range supported."""
        return self._storage.handle(request, self.reject_signed_with_authorization, self._serve_signed)

    def _serve_signed(self, request: Request, extract: BdsExtract) -> Response:
        source, filename = extract.served, _filename(extract)
        header = request.header("range")
        if not header:
            return self._file_response(source, filename)
        span = byte_range(header, source.size)
        if span is None:
            return Response(416, b"", {"Content-Range": f"bytes */{source.size}"})
        start, stop = span
        response = self._file_response(source, filename, 206, start, stop)
        response.headers["Content-Range"] = f"bytes {start}-{stop - 1}/{source.size}"
        return response

    # ----------------------------------------------------------------- ADS
    def _ads_list(self, request: Request, token: _AccessToken, params: dict[str, str]) -> Response:
        with self._lock:
            return json_response(200, [d.to_json() for d in self.ads_data_sets.values()])

    def _ads_get(self, request: Request, token: _AccessToken, params: dict[str, str]) -> Response:
        data_set = self.ads_data_sets.get(params["id"])
        return text_response(404, "Not Found") if data_set is None else json_response(200, data_set.to_json())

    def _job_json(self, job: AdsJob) -> dict[str, Any]:
        return {
            "ExportJobId": job.job_id,
            "DataSetId": job.data_set.data_set_id,
            "Name": job.data_set.name,
            "SubmitDate": _iso(job.submitted),
            "Status": job.status,
            "Category": job.data_set.category,
        }

    def _ads_create(self, request: Request, token: _AccessToken, params: dict[str, str]) -> Response:
        body = request.json()
        if not isinstance(body, dict) or not body.get("DataSetId"):
            return text_response(400, "Body must be JSON with DataSetId and Filters")
        with self._lock:
            data_set = self.ads_data_sets.get(str(body["DataSetId"]))
            if data_set is None:
                return text_response(404, "Data set not found")
            known = {f["Name"] for f in data_set.filters}
            filters = body.get("Filters") or []
            if not isinstance(filters, list) or any(
                not isinstance(f, dict) or f.get("Name") not in known for f in filters
            ):
                return text_response(
                    400, f"Filters must be a list of {{Name, Value}} with Name in {sorted(known)}"
                )
            will_fail = self._ads_fail_next > 0
            self._ads_fail_next = max(0, self._ads_fail_next - 1)
            job = AdsJob(
                job_id=str(uuid.uuid4()),
                data_set=data_set,
                filters=filters,
                submitted=utcnow(),
                started=time.monotonic(),
                duration=float(self.ads_job_seconds),
                will_fail=will_fail,
            )
            self.ads_jobs[job.job_id] = job
            return json_response(200, self._job_json(job))

    def _ads_jobs(self, request: Request, token: _AccessToken, params: dict[str, str]) -> Response:
        with self._lock:
            jobs = sorted(self.ads_jobs.values(), key=lambda j: j.started, reverse=True)
            items = [self._job_json(j) for j in jobs]
        return json_response(200, self._page(request, items))

    def _ads_job(self, request: Request, token: _AccessToken, params: dict[str, str]) -> Response:
        job = self.ads_jobs.get(params["id"])
        return text_response(404, "Not Found") if job is None else json_response(200, self._job_json(job))

    def _ads_download(self, request: Request, token: _AccessToken, params: dict[str, str]) -> Response:
        with self._lock:
            job = self.ads_jobs.get(params["id"])
            if job is None:
                return text_response(404, "Not Found")
            if job.status != ADS_STATUS_COMPLETE:
                return text_response(404, "Export job is not complete")
            ttl = self.ads_job_ttl_seconds
            if job.expired or (ttl is not None and time.monotonic() - job.started > job.duration + ttl):
                return text_response(404, "Export job has expired; submit a new export job")
            if job.source is None:
                ds = job.data_set
                member = f"{ds.name.replace(' ', '')}.csv"
                job.source = make_source(member, ds.columns, ds.rows, ds.rows_count, 1, job.submitted, None)
            source = job.source
        return self._file_response(source, f"{job.data_set.name.replace(' ', '')}.zip")


def _iso(moment: datetime) -> str:
    return (
        moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
    )


def _filename(extract: BdsExtract) -> str:
    stamp = extract.created.strftime("%Y%m%d%H%M%S")
    return f"{extract.data_set.name.replace(' ', '')}_{extract.bds_type}_{stamp}.zip"
