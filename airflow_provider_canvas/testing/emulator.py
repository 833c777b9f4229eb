"""Local HTTP emulator of Canvas and Brightspace: both platforms on one server, fault injection, records."""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from airflow_provider_canvas.testing.brightspace import BrightspaceEmulator
from airflow_provider_canvas.testing.canvas import CanvasEmulator
from airflow_provider_canvas.testing.emulator_admin import handle_admin
from airflow_provider_canvas.testing.primitives import (
    BRIGHTSPACE,
    BRIGHTSPACE_TOKEN_PATH,
    CANVAS,
    CANVAS_TOKEN_PATH,
    PLATFORMS,
    ApiRequest,
    IssuedTokens,
    Request,
    Response,
    TokenRequest,
    text_response,
    utcnow,
)
from airflow_provider_canvas.testing.server import EmulatorServer, reason_phrase

if TYPE_CHECKING:
    from types import TracebackType

log = logging.getLogger("airflow_provider_canvas.testing")


class LmsEmulator:
    """Canvas and Brightspace on one local HTTP server, with a second host for signed downloads."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        access_token_ttl: int = 3600,
        signed_host: str | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.access_token_ttl = access_token_ttl
        # One line per request (method, path, status; never tokens or query strings). DEBUG in-process so
        # test logs stay quiet; the CLI raises it to INFO.
        self.request_log_level = logging.DEBUG
        # Brightspace redirects downloads to storage on another host; 127.0.0.2 is another host on Linux.
        self.signed_host = signed_host or ("127.0.0.2" if host == "127.0.0.1" else host)
        # One re-entrant lock guards all token state and the records: contention is irrelevant locally.
        self.lock = threading.RLock()
        self._token_requests: list[TokenRequest] = []
        self._api_requests: list[ApiRequest] = []
        self._throttle_next: dict[str, tuple[int, int | None, int]] = {}
        self._fail_next: dict[str, tuple[int, int]] = {}
        self._fail_until = 0.0
        self._fail_status = 500
        self._servers: list[EmulatorServer] = []
        self._threads: list[threading.Thread] = []
        self._url: str | None = None
        self._signed_url: str | None = None
        self.canvas: CanvasEmulator = CanvasEmulator(self)
        self.brightspace: BrightspaceEmulator = BrightspaceEmulator(self)

    # ----------------------------------------------------------------- lifecycle
    def start(self) -> LmsEmulator:
        if self._servers:
            raise RuntimeError("emulator already started")
        main = EmulatorServer((self.host, self.port), self, "api")
        # Remember the port: a stop()/start() outage drill comes back at the same URL.
        self.port = port = int(main.server_address[1])
        signed = self._bind_signed(port)
        self._servers = [main, signed]
        url_host = "127.0.0.1" if self.host in ("", "0.0.0.0") else self.host
        self._url = f"http://{url_host}:{port}"
        signed_host = "localhost" if self.signed_host in ("", "0.0.0.0") else self.signed_host
        self._signed_url = f"http://{signed_host}:{signed.server_address[1]}"
        for server in self._servers:
            thread = threading.Thread(
                target=server.serve_forever,
                kwargs={"poll_interval": 0.05},
                name=f"lms-emulator-{server.role}",
                daemon=True,
            )
            thread.start()
            self._threads.append(thread)
        return self

    def _bind_signed(self, port: int) -> EmulatorServer:
        for address in ((self.signed_host, port), (self.signed_host, 0)):
            try:
                return EmulatorServer(address, self, "signed")
            except OSError:
                continue
        # macOS has no 127.0.0.2 by default: a separate port with the name "localhost" is still another
        # origin for HTTP clients, so they drop the Authorization header on the redirect all the same.
        self.signed_host = "localhost"
        return EmulatorServer(("127.0.0.1", 0), self, "signed")

    def stop(self) -> None:
        # shutdown() blocks until the serve loop notices; stop both listeners in parallel.
        stoppers = [threading.Thread(target=server.shutdown) for server in self._servers]
        for stopper in stoppers:
            stopper.start()
        for stopper in stoppers:
            stopper.join(timeout=5)
        for server in self._servers:
            server.server_close()
            server.close_open_connections()
        for thread in self._threads:
            thread.join(timeout=5)
        self._servers = []
        self._threads = []

    def __enter__(self) -> LmsEmulator:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def url(self) -> str:
        if self._url is None:
            raise RuntimeError("emulator not started")
        return self._url

    @property
    def signed_url(self) -> str:
        """Base URL of the signed-download host (another host than `url`)."""
        if self._signed_url is None:
            raise RuntimeError("emulator not started")
        return self._signed_url

    # ----------------------------------------------------------------- knobs
    def connection_extra(
        self, platform: str, tokens: IssuedTokens, *, expired: bool = False
    ) -> dict[str, str]:
        """The extra of a ``platform`` connection to this emulator that holds ``tokens``.

        ``expired`` puts the stored expiry in the past, so the first call must refresh.
        """
        expires_at = datetime.now(timezone.utc) - timedelta(minutes=5) if expired else tokens.expires_at
        extra = {
            "access_token": tokens.access_token,
            "refresh_token": tokens.refresh_token,
            "expires_at": expires_at.isoformat(),
        }
        if platform == "brightspace":
            extra["oauth_url"] = f"{self.url}/core/connect/token"
        return extra

    def expire_access_tokens(self, platform: str | None = None) -> None:
        """Every access token issued so far becomes expired (refresh tokens stay usable)."""
        _check_platform(platform, allow_none=True)
        with self.lock:
            if platform in (None, CANVAS):
                self.canvas.expire_access_tokens()
            if platform in (None, BRIGHTSPACE):
                self.brightspace.expire_access_tokens()

    def throttle_next(
        self, platform: str, count: int, status: int | None = None, retry_after: int = 1
    ) -> None:
        """The next `count` API requests of `platform` are throttled (status None = platform default)."""
        _check_platform(platform)
        with self.lock:
            self._throttle_next[platform] = (count, status, retry_after)

    def fail_next(self, platform: str, count: int, status: int = 500) -> None:
        """The next `count` API, token and authorize requests of `platform` answer `status`."""
        _check_platform(platform)
        with self.lock:
            self._fail_next[platform] = (count, status)

    def fail_for(self, seconds: float, status: int = 500) -> None:
        """Every request (both platforms and the download host) answers `status` for `seconds`."""
        with self.lock:
            self._fail_until = time.monotonic() + seconds
            self._fail_status = status

    # ----------------------------------------------------------------- records
    @property
    def token_requests(self) -> list[TokenRequest]:
        with self.lock:
            return list(self._token_requests)

    @property
    def api_requests(self) -> list[ApiRequest]:
        with self.lock:
            return list(self._api_requests)

    def refresh_count(self, platform: str) -> int:
        """Successful refresh_token grants."""
        _check_platform(platform)
        with self.lock:
            return sum(
                1
                for r in self._token_requests
                if r.platform == platform and r.grant_type == "refresh_token" and r.status == 200
            )

    def consumed_presentations(self, platform: str) -> int:
        """refresh_token grants that presented an already-consumed refresh token."""
        _check_platform(platform)
        with self.lock:
            return sum(
                1
                for r in self._token_requests
                if r.platform == platform and r.refresh_token_state == "consumed"
            )

    def reset_records(self) -> None:
        with self.lock:
            self._token_requests.clear()
            self._api_requests.clear()
            self.canvas.reset_records()
            self.brightspace.reset_records()

    def record_token_request(
        self,
        platform: str,
        request: Request,
        status: int,
        error: str | None = None,
        refresh_token_state: str | None = None,
    ) -> None:
        client_id, _ = request.client_credentials()
        entry = TokenRequest(
            platform=platform,
            grant_type=request.param("grant_type"),
            client_id=client_id,
            status=status,
            error=error,
            refresh_token_state=refresh_token_state,
            at=utcnow(),
        )
        with self.lock:
            self._token_requests.append(entry)

    def summary(self) -> dict[str, Any]:
        with self.lock:
            api_by_status: dict[str, Counter[str]] = {p: Counter() for p in PLATFORMS}
            for r in self._api_requests:
                api_by_status[r.platform][str(r.status)] += 1
            return {
                "url": self._url,
                "refresh_count": {p: self.refresh_count(p) for p in PLATFORMS},
                "consumed_presentations": {p: self.consumed_presentations(p) for p in PLATFORMS},
                "token_requests": {
                    p: sum(1 for r in self._token_requests if r.platform == p) for p in PLATFORMS
                },
                "api_requests": {p: sum(api_by_status[p].values()) for p in PLATFORMS},
                "api_requests_by_status": {p: dict(api_by_status[p]) for p in PLATFORMS},
                "signed_downloads": len(self.brightspace.signed_downloads),
                "sso_writes": len(self.canvas.sso_writes),
            }

    # ----------------------------------------------------------------- seeding
    def apply_seed(self, seed: dict[str, Any]) -> dict[str, dict[str, IssuedTokens]]:
        """Apply a seed document (see __main__) and return the pre-issued tokens by platform and name."""
        if "access_token_ttl" in seed:
            self.access_token_ttl = int(seed["access_token_ttl"])
        return {
            CANVAS: self.canvas.apply_seed(seed.get(CANVAS) or {}),
            BRIGHTSPACE: self.brightspace.apply_seed(seed.get(BRIGHTSPACE) or {}),
        }

    # ----------------------------------------------------------------- routing
    def handle(self, request: Request) -> Response:
        if request.role == "signed":
            if self.canvas.files.owns(request):
                return self._fault(None) or self.canvas.files.handle_signed(request)
            return self._fault(None) or self.brightspace.handle_signed(request)
        if request.path.startswith("/_emulator/"):
            return handle_admin(self, request)
        platform = _platform_of(request.path)
        if platform is None:
            return text_response(404, "Not Found")
        handler = self.canvas if platform == CANVAS else self.brightspace
        is_api = request.path.startswith(("/api/", "/d2l/api/"))
        response = self._fault(platform)
        if response is not None:
            if request.path in (CANVAS_TOKEN_PATH, BRIGHTSPACE_TOKEN_PATH):
                self.record_token_request(platform, request, response.status)
        elif is_api and (throttle := self._take_throttle(platform)) is not None:
            response = handler.throttled_response(*throttle)
        else:
            response = handler.handle(request)
        if is_api:
            entry = ApiRequest(
                platform,
                request.method,
                request.path,
                response.status,
                request.header("authorization") is not None,
            )
            with self.lock:
                self._api_requests.append(entry)
        return response

    def _fault(self, platform: str | None) -> Response | None:
        with self.lock:
            if time.monotonic() < self._fail_until:
                status = self._fail_status
            elif platform is not None and self._fail_next.get(platform, (0, 0))[0] > 0:
                count, status = self._fail_next[platform]
                self._fail_next[platform] = (count - 1, status)
            else:
                return None
        return text_response(status, reason_phrase(status))

    def _take_throttle(self, platform: str) -> tuple[int | None, int] | None:
        with self.lock:
            count, status, retry_after = self._throttle_next.get(platform, (0, None, 1))
            if count <= 0:
                return None
            self._throttle_next[platform] = (count - 1, status, retry_after)
            return status, retry_after


def _platform_of(path: str) -> str | None:
    if path.startswith(("/login/oauth2/", "/api/v1/", "/files/")):
        return CANVAS
    if path.startswith(("/core/connect/", "/oauth2/", "/d2l/")):
        return BRIGHTSPACE
    return None


def _check_platform(platform: str | None, allow_none: bool = False) -> None:
    if platform is None and allow_none:
        return
    if platform not in PLATFORMS:
        raise ValueError(f"platform must be one of {PLATFORMS}, got {platform!r}")
