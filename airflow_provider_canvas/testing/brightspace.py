"""D2L Brightspace behaviour for the emulator: rotating refresh tokens, scopes, 429s, BDS and ADS."""

from __future__ import annotations

import csv
import hashlib
import hmac
import io
import math
import re
import secrets
import struct
import threading
import time
import uuid
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from airflow_provider_canvas.testing.emulator import (
    BRIGHTSPACE,
    IssuedTokens,
    Request,
    Response,
    append_query,
    json_response,
    redirect_response,
    text_response,
    utcnow,
)

if TYPE_CHECKING:
    from airflow_provider_canvas.testing.emulator import LmsEmulator

INVALID_TOKEN = {"WWW-Authenticate": 'Bearer error="invalid_token"'}
BDS_READ = ("datahub:dataexports:read", "datasets:bds:read")
BDS_DOWNLOAD = ("datahub:dataexports:download",)
ADS_STATUS_QUEUED, ADS_STATUS_PROCESSING, ADS_STATUS_COMPLETE, ADS_STATUS_ERROR = 0, 1, 2, 3
_NAMESPACE = uuid.UUID("5f0f7c1e-3d43-4f55-9a49-6f1bd2f0c0de")  # stable ids across runs


# ===================================================================== ZIP bodies
class ZipSource:
    """Bytes of a served file, readable by range so nothing large is ever held in memory."""

    size: int = 0

    def iter_range(self, start: int, stop: int) -> Iterator[bytes]:
        raise NotImplementedError


class BytesSource(ZipSource):
    def __init__(self, data: bytes) -> None:
        self._data = data
        self.size = len(data)

    def iter_range(self, start: int, stop: int) -> Iterator[bytes]:
        view = memoryview(self._data)
        for offset in range(start, stop, 256 * 1024):
            yield bytes(view[offset : min(stop, offset + 256 * 1024)])


class CorruptSource(ZipSource):
    """Same length as the real file, but not a ZIP: DownloadSize stays consistent."""

    _PATTERN = b"this is not a zip archive, just bytes of the right length\n"

    def __init__(self, size: int) -> None:
        self.size = size

    def iter_range(self, start: int, stop: int) -> Iterator[bytes]:
        period = len(self._PATTERN)
        block = self._PATTERN * (256 * 1024 // period + 2)
        offset = start
        while offset < stop:
            phase = offset % period
            piece = block[phase : phase + min(stop - offset, 256 * 1024)]
            yield piece
            offset += len(piece)


class GeneratedZip(ZipSource):
    """A stored (uncompressed) ZIP of `rows_count` deterministic fixed-width CSV rows.

    Fixed-width rows make the exact size known up front and any byte offset computable, so a
    1 GB extract is listed with its exact DownloadSize and streamed (or resumed) in constant memory.
    """

    # Rows are rendered a block of 10,000 ids at a time: the block template holds a placeholder for the
    # high 8 id digits, and one C-speed bytes.replace() per block renders it (a 1 GB extract in seconds).
    _BLOCK = 10_000
    _HIGH = "\x00" * 8

    def __init__(
        self, member: str, columns: list[str], rows_count: int, id_start: int, created: datetime
    ) -> None:
        for column in columns:
            if any(ch in column for ch in ',"\r\n\x00'):
                raise ValueError(f"generated rows need plain column names, got {column!r}")
        if id_start < 0 or id_start + rows_count >= 10**12:
            raise ValueError("generated row ids must fit in 12 digits")
        self._header = (",".join(columns) + "\r\n").encode("utf-8")
        cells = []
        for index, column in enumerate(columns):
            if index == 0:
                cells.append("{0}")
            elif column == "IsDeleted":
                cells.append("False")
            else:
                cells.append(column.replace("{", "{{").replace("}", "}}") + "-{0}")
        self._template = ",".join(cells) + "\r\n"  # every id is 12 digits: fixed-width rows
        self._block_template: bytes | None = None
        self._id_start = id_start
        self._rows_count = rows_count
        self._row_len = len(self._template.format("0" * 12).encode("utf-8"))
        self._csv_len = len(self._header) + rows_count * self._row_len
        if self._csv_len >= 0xFFFFFFFF:
            raise ValueError("generated extracts are limited to 4 GiB (no ZIP64)")
        self._name = member.encode("utf-8")
        self._dos_time, self._dos_date = _dos_datetime(created)
        self._crc: int | None = None
        self._crc_lock = threading.Lock()
        self._local_len = 30 + len(self._name)
        self._central_len = 46 + len(self._name) + 22
        self.size = self._local_len + self._csv_len + self._central_len

    def _row_chunks(self, first_row: int, end_row: int) -> Iterator[bytes]:
        """CSV bytes of rows [first_row, end_row), one chunk per block of ids."""
        if self._block_template is None:
            rows = (self._template.format(f"{self._HIGH}{low:04d}") for low in range(self._BLOCK))
            self._block_template = "".join(rows).encode("utf-8")
        first_id, end_id = self._id_start + first_row, self._id_start + end_row
        for block in range(first_id // self._BLOCK, (end_id - 1) // self._BLOCK + 1):
            base = block * self._BLOCK
            data = self._block_template.replace(self._HIGH.encode(), b"%08d" % block)
            lo, hi = max(first_id, base) - base, min(end_id, base + self._BLOCK) - base
            yield data if (lo, hi) == (0, self._BLOCK) else data[lo * self._row_len : hi * self._row_len]

    def _iter_csv(self, start: int, stop: int) -> Iterator[bytes]:
        header_len = len(self._header)
        if start < header_len:
            yield self._header[start : min(stop, header_len)]
            start = header_len
        if start >= stop:
            return
        first_row = (start - header_len) // self._row_len
        end_row = min(self._rows_count, math.ceil((stop - header_len) / self._row_len))
        position = header_len + first_row * self._row_len
        for chunk in self._row_chunks(first_row, end_row):
            lo, hi = max(start, position) - position, min(stop, position + len(chunk)) - position
            yield chunk if (lo, hi) == (0, len(chunk)) else chunk[lo:hi]
            position += len(chunk)

    def _crc32(self) -> int:
        with self._crc_lock:
            if self._crc is None:
                # One pass on first download; headers need it, and it is cached afterwards.
                crc = 0
                for chunk in self._iter_csv(0, self._csv_len):
                    crc = zlib.crc32(chunk, crc)
                self._crc = crc
            return self._crc

    def _local_header(self) -> bytes:
        size = self._csv_len
        # signature, version needed, flags (UTF-8 names), method 0 = stored, time, date, crc, sizes, lengths
        fields = (20, 0x800, 0, self._dos_time, self._dos_date, self._crc32(), size, size, len(self._name), 0)
        return struct.pack("<4sHHHHHIIIHH", b"PK\x03\x04", *fields) + self._name

    def _trailer(self) -> bytes:
        size = self._csv_len
        # made by, needed, flags, method, time, date, crc, sizes, name/extra/comment lengths, disk,
        # internal attrs, external attrs (a regular 0644 file), offset of the local header (0).
        fields = (20, 20, 0x800, 0, self._dos_time, self._dos_date, self._crc32(), size, size)
        fields += (len(self._name), 0, 0, 0, 0, 0o100644 << 16, 0)
        central = struct.pack("<4sHHHHHHIIIHHHHHII", b"PK\x01\x02", *fields) + self._name
        end = struct.pack(
            "<4sHHHHIIH", b"PK\x05\x06", 0, 0, 1, 1, len(central), self._local_len + self._csv_len, 0
        )
        return central + end

    def iter_range(self, start: int, stop: int) -> Iterator[bytes]:
        segments: list[tuple[int, Callable[[int, int], Iterator[bytes]]]] = [
            (self._local_len, lambda a, b: iter((self._local_header()[a:b],))),
            (self._csv_len, self._iter_csv),
            (self._central_len, lambda a, b: iter((self._trailer()[a:b],))),
        ]
        offset = 0
        for length, produce in segments:
            lo, hi = max(start, offset), min(stop, offset + length)
            if lo < hi:
                yield from produce(lo - offset, hi - offset)
            offset += length


def _dos_datetime(moment: datetime) -> tuple[int, int]:
    moment = max(moment, datetime(1980, 1, 1, tzinfo=timezone.utc))
    dos_time = moment.hour << 11 | moment.minute << 5 | moment.second // 2
    dos_date = (moment.year - 1980) << 9 | moment.month << 5 | moment.day
    return dos_time, dos_date


def build_zip(members: list[tuple[str, bytes | str]], created: datetime) -> bytes:
    """An in-memory deflated ZIP; member names are written verbatim (bad-input tests need `../x`)."""
    buffer = io.BytesIO()
    stamp = max(created, datetime(1980, 1, 1, tzinfo=timezone.utc)).timetuple()[:6]
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members:
            info = zipfile.ZipInfo(name, date_time=stamp)
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, data)
    return buffer.getvalue()


def csv_bytes(columns: list[str], rows: list[dict[str, Any]]) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(columns)
    for row in rows:
        writer.writerow(["" if row.get(c) is None else str(row.get(c)) for c in columns])
    return out.getvalue().encode("utf-8")


def _make_source(
    member: str,
    columns: list[str],
    rows: list[dict[str, Any]] | None,
    rows_count: int | None,
    row_id_start: int,
    created: datetime,
    zip_members: list[tuple[str, bytes | str]] | None,
) -> ZipSource:
    if zip_members is not None:
        return BytesSource(build_zip(zip_members, created))
    if rows_count is not None:
        return GeneratedZip(member, columns, rows_count, row_id_start, created)
    return BytesSource(build_zip([(member, csv_bytes(columns, rows or []))], created))


# ===================================================================== data model
@dataclass
class BrightspaceClient:
    """An OAuth2 app registration. `scopes=None` means it does not enforce scopes."""

    client_id: str
    client_secret: str = field(repr=False)
    scopes: frozenset[str] | None = None
    enabled: bool = True


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


@dataclass(frozen=True)
class _Code:
    client_id: str
    redirect_uri: str
    scopes: frozenset[str] | None
    user_id: int
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


@dataclass(frozen=True)
class SignedDownload:
    """One request to the signed-download host. `had_authorization` must be False for a good client."""

    data_set: str | None
    bds_type: str | None
    had_authorization: bool
    status: int
    range: str | None
    at: datetime


@dataclass
class AdsDataSet:
    data_set_id: str
    name: str
    columns: list[str]
    rows: list[dict[str, Any]] | None = None
    rows_count: int | None = None
    category: str = "Users"
    description: str = ""
    filters: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "DataSetId": self.data_set_id,
            "Name": self.name,
            "Description": self.description,
            "Category": self.category,
            "Filters": self.filters,
        }


@dataclass
class AdsJob:
    job_id: str
    data_set: AdsDataSet
    filters: list[dict[str, Any]]
    submitted: datetime
    started: float  # time.monotonic()
    duration: float
    will_fail: bool = False
    expired: bool = False
    source: ZipSource | None = field(default=None, repr=False)


_Handler = Callable[[Request, _AccessToken, dict[str, str]], Response]


@dataclass(frozen=True)
class _Route:
    method: str
    pattern: re.Pattern[str]
    scopes: tuple[str, ...] | None  # any one of them suffices; None = a valid token is enough
    handler: _Handler


# ===================================================================== emulator
class BrightspaceEmulator:
    """Brightspace state and request handling; reach it as `LmsEmulator().brightspace`."""

    def __init__(self, emulator: LmsEmulator) -> None:
        self._emu = emulator
        self._lock = emulator.lock
        self.clients: dict[str, BrightspaceClient] = {}
        self._families: list[_Family] = []
        self._refresh: dict[str, _RefreshToken] = {}
        self._access: dict[str, _AccessToken] = {}
        self._codes: dict[str, _Code] = {}
        self.auth_decision = "approve"  # or "deny"
        self.auth_user_id = 169
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
        self._signing_key = secrets.token_bytes(32)
        self._signed: dict[str, BdsExtract] = {}
        self._signed_downloads: list[SignedDownload] = []
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
    def register_client(
        self,
        client_id: str,
        client_secret: str,
        scopes: list[str] | None = None,
        enabled: bool = True,
    ) -> BrightspaceClient:
        client = BrightspaceClient(
            client_id, client_secret, None if scopes is None else frozenset(scopes), enabled
        )
        with self._lock:
            self.clients[client_id] = client
        return client

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
            client = self.clients.get(client_id)
            if client is None:
                raise ValueError(f"unknown Brightspace client {client_id!r}")
            granted = client.scopes if scopes is None else frozenset(scopes)
            family = self._new_family(client_id, self.auth_user_id if user_id is None else user_id, granted)
            access, refresh, ttl = self._mint(family, granted, expires_in)
            return IssuedTokens(
                access_token=access,
                refresh_token=refresh,
                expires_at=datetime.fromtimestamp(self._access[access].expires_at, timezone.utc),
                expires_in=ttl,
            )

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
            source = _make_source(member, cols, rows, rows_count, row_id_start, created, zip_members)
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
        with self._lock:
            return list(self._signed_downloads)

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
            filters=[
                {
                    "Name": f["Name"],
                    "Type": f.get("Type", 1),
                    "Description": f.get("Description", ""),
                    "DefaultValue": f.get("DefaultValue", ""),
                }
                for f in (filters or [])
            ],
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
        with self._lock:
            self._signed_downloads.clear()

    def apply_seed(self, seed: dict[str, Any]) -> dict[str, IssuedTokens]:
        for key in (
            "revoke_family_on_reuse",
            "rate_limit_capacity",
            "rate_limit_window_seconds",
            "page_size",
            "retention_days",
            "redirect_downloads",
            "ads_job_seconds",
            "ads_job_ttl_seconds",
            "auth_decision",
        ):
            if key in seed:
                setattr(self, key, seed[key])
        for client in seed.get("clients", []):
            self.register_client(
                client["client_id"],
                client["client_secret"],
                client.get("scopes"),
                enabled=client.get("enabled", True),
            )
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

    # ----------------------------------------------------------------- OAuth2
    def _token_error(
        self, request: Request, status: int, error: str, description: str, state: str | None = None
    ) -> Response:
        self._emu.record_token_request(BRIGHTSPACE, request, status, error, state)
        return json_response(status, {"error": error, "error_description": description})

    def _token_body(self, family: _Family, scopes: frozenset[str] | None) -> dict[str, Any]:
        access, refresh, ttl = self._mint(family, scopes, None)
        return {
            "access_token": access,
            "token_type": "Bearer",
            "expires_in": ttl,
            "refresh_token": refresh,
            "scope": " ".join(sorted(scopes or ())),
        }

    def _token(self, request: Request) -> Response:
        client_id, secret = request.client_credentials()
        grant_type = request.param("grant_type")
        with self._lock:
            client = self.clients.get(client_id or "")
            if client is None or not secrets.compare_digest(
                client.client_secret.encode(), (secret or "").encode()
            ):
                return self._token_error(request, 401, "invalid_client", "unknown client or bad secret")
            if not client.enabled:
                return self._token_error(request, 400, "unauthorized_client", "client disabled")
            if grant_type == "refresh_token":
                return self._refresh_grant(request, client)
            if grant_type == "authorization_code":
                return self._code_grant(request, client)
            return self._token_error(request, 400, "unsupported_grant_type", f"{grant_type} is not supported")

    def _refresh_grant(self, request: Request, client: BrightspaceClient) -> Response:
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
        body = self._token_body(family, requested or family.scopes)
        self._emu.record_token_request(BRIGHTSPACE, request, 200, None, "live")
        return json_response(200, body)

    def _code_grant(self, request: Request, client: BrightspaceClient) -> Response:
        code = self._codes.pop(request.param("code") or "", None)  # single use even when the exchange fails
        if code is None or code.client_id != client.client_id or code.expires_at < time.time():
            return self._token_error(request, 400, "invalid_grant", "invalid authorization code")
        if request.param("redirect_uri") != code.redirect_uri:
            return self._token_error(request, 400, "invalid_grant", "redirect_uri does not match")
        family = self._new_family(client.client_id, code.user_id, code.scopes)
        body = self._token_body(family, code.scopes)
        self._emu.record_token_request(BRIGHTSPACE, request, 200)
        return json_response(200, body)

    def _authorize(self, request: Request) -> Response:
        client_id = request.arg("client_id") or ""
        redirect_uri = request.arg("redirect_uri")
        state = request.arg("state")
        with self._lock:
            client = self.clients.get(client_id)
            if client is None or not redirect_uri:
                return json_response(400, {"error": "invalid_request", "error_description": "unknown client"})

            def fail(error: str) -> Response:
                return redirect_response(append_query(redirect_uri, {"error": error, "state": state}))

            if request.arg("response_type") != "code":
                return fail("unsupported_response_type")
            if not client.enabled:
                return fail("unauthorized_client")
            requested = frozenset((request.arg("scope") or "").split())
            if not _scopes_within(requested, client.scopes):
                return fail("invalid_scope")
            if self.auth_decision == "deny":
                return fail("access_denied")
            code = secrets.token_urlsafe(24)
            scopes = requested if client.scopes is not None else (requested or None)
            self._codes[code] = _Code(client_id, redirect_uri, scopes, self.auth_user_id, time.time() + 600)
        return redirect_response(append_query(redirect_uri, {"code": code, "state": state}))

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
        stop = source.size if stop is None else stop
        headers = {
            "Content-Type": "application/zip",
            "Content-Disposition": f'attachment; filename="{filename}"',
            "Accept-Ranges": "bytes",
        }
        return Response(
            status,
            headers=headers,
            stream=source.iter_range(start, stop),
            length=stop - start,
            truncate_after=self._take_truncate(),
        )

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
        token = secrets.token_urlsafe(24)
        expires = str(int(time.time()) + self.signed_url_ttl)
        with self._lock:
            self._signed[token] = extract
        signature = self._sign(token, expires).decode()
        return redirect_response(f"{self._emu.signed_url}/signed/{token}?expires={expires}&sig={signature}")

    def _sign(self, token: str, expires: str) -> bytes:
        return hmac.new(self._signing_key, f"{token}:{expires}".encode(), hashlib.sha256).hexdigest().encode()

    def handle_signed(self, request: Request) -> Response:
        """The storage host a DownloadLink redirects to: no bearer token expected, Range supported."""
        had_auth = request.header("authorization") is not None
        match = re.fullmatch(r"/signed/([A-Za-z0-9_-]+)", request.path)
        token = match.group(1) if match else ""
        expires = request.arg("expires") or "0"
        signature = (request.arg("sig") or "").encode()
        with self._lock:
            extract = self._signed.get(token)
        response: Response
        if request.method not in ("GET", "HEAD"):
            response = _s3_error(405, "MethodNotAllowed", "The specified method is not allowed")
        elif extract is None or not hmac.compare_digest(self._sign(token, expires), signature):
            response = _s3_error(
                403, "SignatureDoesNotMatch", "The request signature we calculated does not match"
            )
        elif not expires.isdigit() or int(expires) < time.time():
            response = _s3_error(403, "AccessDenied", "Request has expired")
        elif had_auth and self.reject_signed_with_authorization:
            response = _s3_error(400, "InvalidArgument", "Only one auth mechanism allowed")
        else:
            response = self._ranged(request, extract.served, _filename(extract))
        with self._lock:
            self._signed_downloads.append(
                SignedDownload(
                    extract.data_set.name if extract else None,
                    extract.bds_type if extract else None,
                    had_auth,
                    response.status,
                    request.header("range"),
                    utcnow(),
                )
            )
        return response

    def _ranged(self, request: Request, source: ZipSource, filename: str) -> Response:
        header = request.header("range")
        if not header:
            return self._file_response(source, filename)
        match = re.fullmatch(r"bytes=(\d*)-(\d*)", header.strip())
        size = source.size
        start: int | None = None
        stop = size
        if match and match.group(1):
            start = int(match.group(1))
            if match.group(2):
                stop = min(size, int(match.group(2)) + 1)
        elif match and match.group(2):
            start = max(0, size - int(match.group(2)))  # suffix range: the last N bytes
        if start is None or start >= size or stop <= start:
            return Response(416, b"", {"Content-Range": f"bytes */{size}"})
        response = self._file_response(source, filename, 206, start, stop)
        response.headers["Content-Range"] = f"bytes {start}-{stop - 1}/{size}"
        return response

    # ----------------------------------------------------------------- ADS
    def _ads_list(self, request: Request, token: _AccessToken, params: dict[str, str]) -> Response:
        with self._lock:
            return json_response(200, [d.to_json() for d in self.ads_data_sets.values()])

    def _ads_get(self, request: Request, token: _AccessToken, params: dict[str, str]) -> Response:
        data_set = self.ads_data_sets.get(params["id"])
        return text_response(404, "Not Found") if data_set is None else json_response(200, data_set.to_json())

    def _ads_status(self, job: AdsJob) -> int:
        elapsed = time.monotonic() - job.started
        if elapsed >= job.duration:
            return ADS_STATUS_ERROR if job.will_fail else ADS_STATUS_COMPLETE
        return ADS_STATUS_PROCESSING if elapsed >= job.duration / 3 else ADS_STATUS_QUEUED

    def _job_json(self, job: AdsJob) -> dict[str, Any]:
        return {
            "ExportJobId": job.job_id,
            "DataSetId": job.data_set.data_set_id,
            "Name": job.data_set.name,
            "SubmitDate": _iso(job.submitted),
            "Status": self._ads_status(job),
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
            if self._ads_status(job) != ADS_STATUS_COMPLETE:
                return text_response(404, "Export job is not complete")
            ttl = self.ads_job_ttl_seconds
            if job.expired or (ttl is not None and time.monotonic() - job.started > job.duration + ttl):
                return text_response(404, "Export job has expired; submit a new export job")
            if job.source is None:
                ds = job.data_set
                member = f"{ds.name.replace(' ', '')}.csv"
                job.source = _make_source(member, ds.columns, ds.rows, ds.rows_count, 1, job.submitted, None)
            source = job.source
        return self._file_response(source, f"{job.data_set.name.replace(' ', '')}.zip")


def _scope_allows(granted: frozenset[str] | None, needed: tuple[str, ...]) -> bool:
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


def _scopes_within(requested: frozenset[str], allowed: frozenset[str] | None) -> bool:
    """Each requested scope is covered by an allowed one (`datahub:dataexports:*` covers `...:read`)."""
    return all(_scope_allows(allowed, (scope,)) for scope in requested)


def _iso(moment: datetime) -> str:
    return (
        moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
    )


def _filename(extract: BdsExtract) -> str:
    stamp = extract.created.strftime("%Y%m%d%H%M%S")
    return f"{extract.data_set.name.replace(' ', '')}_{extract.bds_type}_{stamp}.zip"


def _s3_error(status: int, code: str, message: str) -> Response:
    body = '<?xml version="1.0" encoding="UTF-8"?>\n'
    body += f"<Error><Code>{code}</Code><Message>{message}</Message></Error>"
    return Response(status, body.encode(), {"Content-Type": "application/xml"})
