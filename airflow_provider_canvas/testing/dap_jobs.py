"""DAP query jobs for the emulator: status by the clock, gzip objects per format, limits, error bodies."""

from __future__ import annotations

import gzip
import math
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from airflow_provider_canvas.testing.bds_files import BytesSource
from airflow_provider_canvas.testing.dap_formats import Lines
from airflow_provider_canvas.testing.dap_tables import iso
from airflow_provider_canvas.testing.primitives import Response, json_response


def dap_error(
    status: int, error_type: str, message: str, headers: dict[str, str] | None = None, **fields: Any
) -> Response:
    """DAP's error body: ``{"error": {"type", "uuid", "message", ...}}`` with the fields of its type.

    The published document (and the official client, which picks the error class by them) wants
    ``id``/``kind`` on a NotFoundError, ``location`` on a ValidationError and ``since``/``until`` on
    an OutOfRangeError or SnapshotRequiredError: use :func:`not_found` and :func:`invalid`.
    """
    error = {"type": error_type, "uuid": str(uuid.uuid4()), "message": message, **fields}
    return json_response(status, {"error": error}, headers)


def not_found(kind: str, ident: str, message: str | None = None) -> Response:
    """404 NotFoundError for a namespace, table, job, object or endpoint."""
    return dap_error(404, "NotFoundError", message or f"{kind} {ident} does not exist", id=ident, kind=kind)


def invalid(message: str, character: int = 1) -> Response:
    """400 ValidationError; ``location`` points into the request body (1-based), as DAP's does."""
    location = {"line": 1, "column": character, "character": character}
    return dap_error(400, "ValidationError", message, location=location)


#: How long a new job stays queued ("waiting") before it runs, at most.
WAITING_SECONDS = 0.1


@dataclass(frozen=True)
class _TableName:
    name: str


@dataclass(frozen=True)
class DapObject:
    """One gzip file of a job's output, as the signed storage serves it."""

    object_id: str
    data_set: _TableName  # the table (the storage's records call it data_set)
    bds_type: str  # "snapshot" | "incremental"
    source: BytesSource = field(repr=False)
    records: int


@dataclass
class DapJob:
    """A job: waiting (queued, briefly), running, then terminal ``seconds`` after its creation, by the clock.

    DAP runs jobs on its own time: how often a client looks changes nothing (``polls`` only counts).
    """

    job_id: str
    namespace: str
    table: str
    kind: str  # "snapshot" | "incremental"
    schema_version: int
    created: float  # time.monotonic()
    seconds: float
    objects: list[DapObject]
    query: tuple[Any, ...] = ()  # what makes a second identical query hand back this job
    at: float | None = None
    since: float | None = None
    until: float | None = None
    fail_message: str | None = None
    polls: int = 0
    expires_at: float = field(default_factory=lambda: time.time() + 86400)

    @property
    def status(self) -> str:
        elapsed = time.monotonic() - self.created
        if elapsed < min(WAITING_SECONDS, self.seconds / 4):
            return "waiting"
        if elapsed < self.seconds:
            return "running"
        return "failed" if self.fail_message else "complete"

    @property
    def http_status(self) -> int:
        """202 Accepted while the job is in progress, 200 once it has ended (the published codes)."""
        return 200 if self.status in ("complete", "failed") else 202

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"id": self.job_id, "status": self.status, "expires_at": iso(self.expires_at)}
        if body["status"] == "complete":
            body["objects"] = [{"id": o.object_id} for o in self.objects]
            body["schema_version"] = self.schema_version
            if self.kind == "snapshot":
                body["at"] = iso(self.at or 0.0)
            else:
                body["since"], body["until"] = iso(self.since or 0.0), iso(self.until or 0.0)
        elif body["status"] == "failed":
            body["error"] = {
                "type": "ProcessingError",
                "uuid": f"err-{self.job_id[:8]}",
                "message": self.fail_message,
            }
        return body


def pack_objects(
    job_id: str,
    table: str,
    kind: str,
    records: list[dict[str, Any]],
    per_object: int,
    lines: Lines,
    suffix: str,
) -> list[DapObject]:
    """Records as gzip files of at most ``per_object`` records (one file, maybe empty, at least)."""
    chunks = [records[i : i + per_object] for i in range(0, len(records), per_object)] or [[]]
    objects = []
    for index, chunk in enumerate(chunks):
        data = gzip.compress("".join(lines(chunk)).encode(), mtime=0, compresslevel=1)
        object_id = f"{job_id}/part-{index:05d}-{table}.{suffix}.gz"
        objects.append(DapObject(object_id, _TableName(table), kind, BytesSource(data), len(chunk)))
    return objects


class CallLimit:
    """At most ``limit`` calls in any ``window`` seconds (DAP: 5 job creations a minute per client)."""

    def __init__(self, limit: int, window: float) -> None:
        self.limit = limit
        self.window = window
        self._calls: dict[str, deque[float]] = {}

    def take(self, client: str) -> int | None:
        """None when the call may go ahead (and is counted); else the seconds until it may (Retry-After)."""
        now = time.monotonic()
        calls = self._calls.setdefault(client, deque())
        while calls and now - calls[0] >= self.window:
            calls.popleft()
        if len(calls) >= self.limit:
            return max(1, math.ceil(self.window - (now - calls[0])))
        calls.append(now)
        return None
