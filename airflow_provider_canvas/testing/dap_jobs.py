"""DAP query jobs for the emulator: status clock, gzip JSON Lines objects, call limits, error bodies."""

from __future__ import annotations

import gzip
import json
import math
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from airflow_provider_canvas.testing.bds_files import BytesSource
from airflow_provider_canvas.testing.dap_tables import iso
from airflow_provider_canvas.testing.primitives import Response, json_response


def dap_error(status: int, kind: str, message: str, headers: dict[str, str] | None = None) -> Response:
    """DAP's error body: ``{"error": {"type", "uuid", "message"}}``."""
    error = {"type": kind, "uuid": str(uuid.uuid4()), "message": message}
    return json_response(status, {"error": error}, headers)


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
    """A job: waiting when created, running after the first poll, terminal after ``polls_to_finish``."""

    job_id: str
    namespace: str
    table: str
    kind: str  # "snapshot" | "incremental"
    schema_version: int
    created: float  # time.monotonic()
    polls_to_finish: int
    min_seconds: float
    objects: list[DapObject]
    at: float | None = None
    since: float | None = None
    until: float | None = None
    fail_message: str | None = None
    polls: int = 0
    expires_at: float = field(default_factory=lambda: time.time() + 86400)

    @property
    def status(self) -> str:
        if self.polls == 0:
            return "waiting"
        done = self.polls >= self.polls_to_finish and time.monotonic() - self.created >= self.min_seconds
        if not done:
            return "running"
        return "failed" if self.fail_message else "complete"

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
    job_id: str, table: str, kind: str, records: list[dict[str, Any]], per_object: int
) -> list[DapObject]:
    """Records as gzip JSON Lines files of at most ``per_object`` lines (one file, maybe empty, at least)."""
    chunks = [records[i : i + per_object] for i in range(0, len(records), per_object)] or [[]]
    objects = []
    for index, chunk in enumerate(chunks):
        text = "".join(json.dumps(record, separators=(",", ":")) + "\n" for record in chunk)
        data = gzip.compress(text.encode(), mtime=0)
        object_id = f"{job_id}/part-{index:05d}-{table}.json.gz"
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
