"""A local Canvas Data 2 (Instructure DAP) API: login, tables, schemas, jobs, presigned object URLs.

Follows the documented behaviour, the unpleasant parts included: client-credentials JWTs that
expire, jobs that go waiting -> running -> complete (or failed) over a few polls, 5 job creations
a minute per client (then 429 with ``Retry-After``), presigned URLs on a second host that expire
and refuse an ``Authorization`` header, deletes in incrementals as keys only, and schema versions
that grow a column. Its own listener and signed-storage host, like the real gateway's.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import secrets
import threading
import time
import uuid
from types import TracebackType
from typing import Any

from airflow_provider_canvas.testing.bds_files import byte_range
from airflow_provider_canvas.testing.dap_control import CONTROL_PREFIX, control
from airflow_provider_canvas.testing.dap_jobs import CallLimit, DapJob, DapObject, dap_error, pack_objects
from airflow_provider_canvas.testing.dap_tables import (
    EmulatedTable,
    canvas_tables,
    column_from_json,
    iso,
    parse_iso,
)
from airflow_provider_canvas.testing.primitives import Request, Response, json_response
from airflow_provider_canvas.testing.server import EmulatorServer
from airflow_provider_canvas.testing.signed_storage import SignedDownload, SignedStorage

LOGIN_PATH = "/ids/auth/login"
_TABLE = re.compile(r"/dap/query/([^/]+)/table(?:/([^/]+)(/schema|/data)?)?")


class DapEmulator:
    """Canvas Data 2 on a local HTTP server, with a second host for the presigned object URLs.

    :param seed: the generator's seed: the same seed gives the same rows.
    :param rows: rows per table of the namespace ``canvas`` (default ``DEFAULT_ROWS``, and
        ``CATALOGUE_ROWS`` for each table of the generated catalogue).
    :param catalogue: the namespace also holds the 56 generated tables of ``CATALOGUE`` (60 in all).
    :param rate_window: the seconds of DAP's per-client limits (published: 60, "5 per minute");
        a test or benchmark scales them down, e.g. 6.0 for 5 job creations per 6 s.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        signed_host: str | None = None,
        seed: int = 7,
        rows: dict[str, int] | None = None,
        access_token_ttl: int = 3600,
        catalogue: bool = True,
        rate_window: float = 60.0,
    ) -> None:
        self.host, self.port = host, port
        self.signed_host = signed_host or ("127.0.0.2" if host == "127.0.0.1" else host)
        self.lock = threading.RLock()
        self.request_log_level = logging.DEBUG
        self.access_token_ttl = access_token_ttl
        self.clients: dict[str, str] = {}
        self.namespaces: dict[str, dict[str, EmulatedTable]] = {
            "canvas": canvas_tables(seed, rows, at=time.time() - 3600, catalogue=catalogue)
        }
        self.jobs: dict[str, DapJob] = {}
        self.objects: dict[str, DapObject] = {}
        #: Polls after which a job ends, and the least seconds it runs (whichever comes later).
        self.job_polls, self.job_min_seconds = 2, 0.0
        self.rows_per_object = 500
        self.url_ttl = 900  # presigned URLs: about 15 minutes
        self.rate_window = rate_window
        self.job_creation = CallLimit(5, rate_window)
        self.table_listing = CallLimit(5, rate_window)
        #: False: a 429 carries no ``Retry-After`` (DAP's document does not promise one).
        self.send_retry_after = True
        #: Each object URL answer's URLs after the first N are issued expired (URLs that live N files).
        self.url_lifetime_files: int | None = None
        self._snapshot_required: set[tuple[str, str]] = set()
        self._tokens: dict[str, float] = {}  # JWT -> expiry (epoch seconds)
        self._fail_next: list[str] = []
        self._expire_next = 0
        self._storage: SignedStorage[DapObject] = SignedStorage(self.lock)
        self.logins: list[tuple[str | None, int]] = []  # (client id, status)
        self.job_requests: list[tuple[str, str, int]] = []  # (table, "snapshot"/"incremental"/"-", status)
        self._servers: list[EmulatorServer] = []
        self._threads: list[threading.Thread] = []
        self.url = self.signed_url = ""

    # ----------------------------------------------------------------- lifecycle
    def start(self) -> DapEmulator:
        main = EmulatorServer((self.host, self.port), self, "api")
        self.port = int(main.server_address[1])
        try:
            signed = EmulatorServer((self.signed_host, 0), self, "signed")
        except OSError:  # no 127.0.0.2 (macOS): another port on "localhost" is another origin still
            self.signed_host = "localhost"
            signed = EmulatorServer(("127.0.0.1", 0), self, "signed")
        self._servers = [main, signed]
        self.url = f"http://{'127.0.0.1' if self.host in ('', '0.0.0.0') else self.host}:{self.port}"
        self.signed_url = f"http://{self.signed_host}:{signed.server_address[1]}"
        for server in self._servers:
            thread = threading.Thread(
                target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
            )
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        for server in self._servers:
            server.shutdown()
            server.server_close()
            server.close_open_connections()
        for thread in self._threads:
            thread.join(timeout=5)
        self._servers, self._threads = [], []

    def __enter__(self) -> DapEmulator:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # ----------------------------------------------------------------- knobs
    def register_client(self, client_id: str, client_secret: str) -> None:
        with self.lock:
            self.clients[client_id] = client_secret

    def table(self, name: str, namespace: str = "canvas") -> EmulatedTable:
        return self.namespaces[namespace][name]

    def publish(
        self, table: str, *, inserts: int = 0, updates: int = 0, deletes: int = 0, namespace: str = "canvas"
    ) -> str:
        """New changes to ``table`` (DAP's 4-hourly refresh); returns the commit time."""
        with self.lock:
            return iso(self.table(table, namespace).commit(time.time(), inserts, updates, deletes))

    def advance(self, inserts: int = 3, updates: int = 5, deletes: int = 2) -> None:
        """A data refresh of every table."""
        for namespace, tables in self.namespaces.items():
            for name in tables:
                self.publish(name, inserts=inserts, updates=updates, deletes=deletes, namespace=namespace)

    def bump_schema(
        self, table: str, column: str, schema: dict[str, Any] | None = None, namespace: str = "canvas"
    ) -> int:
        """A new schema version of ``table`` with one added nullable column; returns the version."""
        with self.lock:
            target = self.table(table, namespace)
            target.add_column(column_from_json(column, schema))
            return target.version

    def fail_next_jobs(self, count: int = 1, message: str = "Query execution failed: internal error") -> None:
        with self.lock:
            self._fail_next.extend([message] * count)

    def expire_next_urls(self, count: int = 1) -> None:
        """The next ``count`` presigned URLs are issued already expired (as after their 15 minutes)."""
        with self.lock:
            self._expire_next += count

    def require_snapshot(self, table: str, namespace: str = "canvas") -> None:
        """Instructure reloaded ``table``: incrementals get 400 SnapshotRequiredError until a snapshot."""
        with self.lock:
            self._snapshot_required.add((namespace, self.table(table, namespace).name))

    def expire_access_tokens(self) -> None:
        with self.lock:
            self._tokens = {token: 0.0 for token in self._tokens}

    @property
    def signed_downloads(self) -> list[SignedDownload]:
        """Every request the storage host received (``had_authorization`` must stay False)."""
        return self._storage.downloads

    # ----------------------------------------------------------------- routing
    def handle(self, request: Request) -> Response:
        if request.role == "signed":  # S3 refuses a presigned URL that also carries a bearer token
            return self._storage.handle(request, True, self._serve_object)
        if request.path.startswith(CONTROL_PREFIX):
            return control(self, request)
        if request.path == LOGIN_PATH and request.method == "POST":
            return self._login(request)
        if not request.path.startswith("/dap/"):
            return dap_error(404, "NotFound", "no such endpoint")
        client = self._client_of(request)
        if client is None:
            return dap_error(401, "AuthenticationError", "Invalid or expired access token")
        with self.lock:
            if request.path.startswith("/dap/job/") and request.method == "GET":
                return self._job(request.path.removeprefix("/dap/job/"))
            if request.path == "/dap/object/url" and request.method == "POST":
                return self._object_urls(request)
            match = _TABLE.fullmatch(request.path)
            if match is None:
                return dap_error(404, "NotFound", "no such endpoint")
            return self._table_request(request, client, *match.groups())

    def _login(self, request: Request) -> Response:
        basic = request.basic_auth()
        client_id = basic[0] if basic else None
        with self.lock:
            known = basic is not None and secrets.compare_digest(
                self.clients.get(basic[0], "").encode(), basic[1].encode()
            )
            if request.param("grant_type") != "client_credentials":
                response = dap_error(400, "ValidationError", "grant_type must be client_credentials")
            elif not known or not basic or not basic[1]:
                response = dap_error(401, "AuthenticationError", "Invalid client credentials")
            else:
                token = _jwt(client_id or "", self.access_token_ttl)
                self._tokens[token] = time.time() + self.access_token_ttl
                scope = "urn:canvas:dap principal:demo partner:none region:us-east-1"
                body = {
                    "access_token": token,
                    "expires_in": self.access_token_ttl,
                    "scope": scope,
                    "token_type": "bearer",
                }
                response = json_response(200, body)
            self.logins.append((client_id, response.status))
        return response

    def _client_of(self, request: Request) -> str | None:
        token = request.bearer()
        with self.lock:
            if token is None or self._tokens.get(token, 0.0) <= time.time():
                return None
        return _jwt_client(token)

    def _table_request(
        self, request: Request, client: str, namespace: str, table: str | None, part: str | None
    ) -> Response:
        tables = self.namespaces.get(namespace)
        if tables is None:
            return dap_error(404, "NotFound", f"namespace {namespace} does not exist")
        if table is None and request.method == "GET":
            wait = self.table_listing.take(client)
            if wait is not None:
                return self._throttled(wait)
            return json_response(200, {"tables": sorted(tables)})
        if table not in tables:
            return dap_error(404, "NotFound", f"table {namespace}.{table} does not exist")
        if part == "/schema" and request.method == "GET":
            return json_response(200, tables[table].schema_json())
        if part == "/data" and request.method == "POST":
            return self._create_job(request, client, namespace, tables[table])
        return dap_error(404, "NotFound", "no such endpoint")

    def _create_job(self, request: Request, client: str, namespace: str, table: EmulatedTable) -> Response:
        query = request.json()
        wait = self.job_creation.take(client)
        if wait is not None:
            self.job_requests.append((table.name, "-", 429))
            return self._throttled(wait)
        if not isinstance(query, dict) or query.get("format") != "jsonl":
            return dap_error(400, "ValidationError", "the emulator serves format jsonl only")
        job_id = str(uuid.uuid4())
        reloaded = (namespace, table.name) in self._snapshot_required
        if query.get("since") and reloaded:
            self.job_requests.append((table.name, "-", 400))
            return dap_error(
                400,
                "SnapshotRequiredError",
                f"Table {namespace}.{table.name} was reloaded: an incremental query cannot continue "
                "from an earlier state, request a snapshot",
            )
        if not query.get("since"):
            self._snapshot_required.discard((namespace, table.name))
        try:
            if query.get("since"):
                since = parse_iso(str(query["since"]))
                until = parse_iso(str(query["until"])) if query.get("until") else None
                records, end = table.incremental(since, until)
                kind, stamps = "incremental", {"since": since, "until": end}
            else:
                records, at = table.snapshot()
                kind, stamps = "snapshot", {"at": at}
        except ValueError as err:
            return dap_error(400, "ValidationError", f"bad timestamp: {err}")
        objects = pack_objects(job_id, table.name, kind, records, self.rows_per_object)
        job = DapJob(
            job_id, namespace, table.name, kind, table.version, time.monotonic(), self.job_polls,
            self.job_min_seconds, objects, fail_message=self._fail_next.pop(0) if self._fail_next else None,
            **stamps,
        )  # fmt: skip
        self.jobs[job_id] = job
        self.objects.update({o.object_id: o for o in objects})
        self.job_requests.append((table.name, kind, 200))
        return json_response(200, job.to_json())

    def _job(self, job_id: str) -> Response:
        job = self.jobs.get(job_id)
        if job is None:
            return dap_error(404, "NotFound", f"job {job_id} does not exist")
        job.polls += 1
        return json_response(200, job.to_json())

    def _object_urls(self, request: Request) -> Response:
        wanted = request.json()
        if not isinstance(wanted, list) or not all(isinstance(o, dict) and "id" in o for o in wanted):
            return dap_error(400, "ValidationError", 'expected [{"id": ...}, ...]')
        urls = {}
        for position, item in enumerate(wanted):
            found = self.objects.get(str(item["id"]))
            if found is None:
                return dap_error(404, "NotFound", f"object {item['id']} does not exist")
            ttl = self.url_ttl
            if self._expire_next > 0:
                self._expire_next, ttl = self._expire_next - 1, -60
            elif self.url_lifetime_files is not None and position >= self.url_lifetime_files:
                ttl = -60
            urls[found.object_id] = {"url": self._storage.url_for(found, self.signed_url, ttl)}
        return json_response(200, {"urls": urls})

    def _throttled(self, wait: int) -> Response:
        headers = {"Retry-After": str(wait)} if self.send_retry_after else None
        return dap_error(429, "TooManyRequests", "Too many requests", headers)

    def _serve_object(self, request: Request, found: DapObject) -> Response:
        source = found.source
        headers = {"Content-Type": "application/gzip", "Accept-Ranges": "bytes"}
        span = (0, source.size)
        if request.header("range"):
            span = byte_range(request.header("range") or "", source.size)  # type: ignore[assignment]
            if span is None:
                return Response(416, b"", {"Content-Range": f"bytes */{source.size}"})
            headers["Content-Range"] = f"bytes {span[0]}-{span[1] - 1}/{source.size}"
        status = 206 if "Content-Range" in headers else 200
        return Response(status, headers=headers, stream=source.iter_range(*span), length=span[1] - span[0])

    def summary(self) -> dict[str, Any]:
        """Counts of what the emulator saw: logins, jobs, throttled creations, object downloads."""
        with self.lock:
            downloads = self._storage.downloads
            return {
                "url": self.url,
                "logins": len(self.logins),
                "jobs": {
                    k: sum(1 for r in self.job_requests if r[1] == k) for k in ("snapshot", "incremental")
                },
                "throttled_job_creations": sum(1 for r in self.job_requests if r[2] == 429),
                "signed_downloads": len(downloads),
                "signed_downloads_with_authorization": sum(d.had_authorization for d in downloads),
                "schema_versions": {n: t.version for ns in self.namespaces.values() for n, t in ns.items()},
            }


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def _jwt(client_id: str, ttl: int) -> str:
    """A JWT-shaped token (DAP's client reads ``exp`` from it); the signature is random, not checked."""
    now = int(time.time())
    claims = {"sub": client_id, "iat": now, "exp": now + ttl, "jti": secrets.token_hex(8)}
    return f"{_b64({'alg': 'HS256', 'typ': 'JWT'})}.{_b64(claims)}.{secrets.token_urlsafe(32)}"


def _jwt_client(token: str) -> str:
    payload = token.split(".")[1]
    return str(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["sub"])
