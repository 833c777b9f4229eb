"""Canvas Data 2 (Instructure DAP) as data: the access token, a job, error wording, object file names.

Shared by the sync hook (tasks) and the async one (the triggerer), so both read DAP's answers alike.
Shapes as ``instructure-dap-client`` reads them (``dap/dap_types.py``, ``dap/dap_error.py``).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Any, Literal

from airflow_provider_canvas.common.net import redact_url
from airflow_provider_canvas.exceptions import (
    DapSnapshotRequiredError,
    LmsApiError,
    LmsAuthError,
    LmsNotFoundError,
    LmsPermissionError,
    LmsUnavailableError,
)

DEFAULT_API_URL = "https://api-gateway.instructure.com"
DEFAULT_NAMESPACE = "canvas"
LOGIN_PATH = "/ids/auth/login"
#: A token this close to its expiry is not used: a long download must not outlive it.
EXPIRY_BUFFER_SECONDS = 300
#: DAP's published limit on job creation (``POST .../data``) per client.
JOB_CREATION_LIMIT = "about 5 per minute per client"
#: DAP's published job-creation limit as (calls, window seconds): the pull paces itself under it.
JOB_CREATION_RATE = (5, 60.0)
#: How long a 429 without ``Retry-After`` waits: DAP's limits count per minute (the official client
#: waits 30 s; a whole window is sure to free a slot).
THROTTLE_WINDOW_SECONDS = 60.0
#: The error ``type`` of DAP's 400 after Instructure reloaded a table.
SNAPSHOT_REQUIRED = "SnapshotRequiredError"
JobStatus = Literal["waiting", "running", "complete", "failed"]
TERMINAL: frozenset[str] = frozenset({"complete", "failed"})


@dataclass(frozen=True)
class DapAccessToken:
    """A DAP JWT and when it expires (epoch seconds). Client credentials: nothing to refresh or save."""

    access_token: str = field(repr=False)
    expires_at: float
    scope: str = ""

    @classmethod
    def from_login(cls, body: Any, *, now: float | None = None) -> DapAccessToken:
        """The token from a ``POST /ids/auth/login`` answer: ``access_token``, ``expires_in``, ``scope``."""
        if not isinstance(body, dict) or not isinstance(body.get("access_token"), str):
            raise LmsAuthError(
                "DAP's login answer holds no access_token; check the API URL of the connection"
            )
        try:
            expires_in = float(body.get("expires_in") or 3600)
        except (TypeError, ValueError):
            expires_in = 3600.0
        start = time.time() if now is None else now
        return cls(body["access_token"], start + expires_in, str(body.get("scope") or ""))

    def usable(self, buffer: float = EXPIRY_BUFFER_SECONDS, *, now: float | None = None) -> bool:
        return (time.time() if now is None else now) < self.expires_at - buffer


def login_refused(status: int, said: str, where: str) -> LmsAuthError:
    """The error for a refused login: the client ID/secret (or the API URL) must be fixed by a person."""
    return LmsAuthError(
        f"{where}: DAP refused the client ID and secret (HTTP {status}: {said}). Check the "
        "connection's login (client ID, e.g. us-east-1#abc...) and password (client secret) from "
        "identity.instructure.com, and that its API URL is your region's gateway",
        status=status,
    )


def _error_object(body: Any) -> dict[str, Any] | None:
    """DAP's error object: ``{"error": {"type", "uuid", "message"}}``, or those keys at the top."""
    if not isinstance(body, dict):
        return None
    error = body.get("error")
    if isinstance(error, dict):
        return error
    return body if isinstance(body.get("type"), str) else None


def dap_error_type(response: Any) -> str | None:
    """The ``type`` of DAP's error answer (e.g. ``SnapshotRequiredError``), None if there is none."""
    try:
        error = _error_object(response.json())
    except ValueError:
        return None
    return str(error["type"]) if error and error.get("type") else None


def dap_error_message(response: Any) -> str:
    """DAP's own words from an error answer (``{"error": {"type", "message", "uuid"}}``), no body echo."""
    try:
        body = response.json()
    except ValueError:
        reason = getattr(response, "reason", None) or getattr(response, "reason_phrase", "")
        return response.text.strip()[:300] or str(reason)
    error = _error_object(body)
    if isinstance(error, dict):
        message = str(error.get("message") or error.get("type") or "no message")[:300]
        ident = ", ".join(str(error[k]) for k in ("type", "uuid") if error.get(k))
        return f"{message} ({ident})" if ident else message
    if isinstance(body, dict):
        for key in ("error_description", "message", "error"):
            if body.get(key):
                return str(body[key])[:300]
    return str(body)[:300]


def dap_api_error(response: Any, method: str, url: str) -> LmsApiError:
    """The error for a DAP answer of 400 or more (``requests`` or ``httpx``), DAP's words included."""
    status, where, said = response.status_code, f"{method} {redact_url(url)}", dap_error_message(response)
    if status in (401, 403):
        return LmsPermissionError(
            f"{where} was refused (HTTP {status}): {said}. Check that the DAP client is allowed this "
            "namespace and table",
            status=status,
            url=redact_url(url),
            required_scope=None,
        )
    if status == 404:
        return LmsNotFoundError(f"{where}: not found ({said})", status=status, url=redact_url(url))
    if status >= 500:
        return LmsUnavailableError(f"{where}: HTTP {status} ({said})", status=status, url=redact_url(url))
    if status == 400 and dap_error_type(response) == SNAPSHOT_REQUIRED:
        return DapSnapshotRequiredError(f"{where}: {said}", status=status, url=redact_url(url))
    return LmsApiError(f"{where}: HTTP {status} ({said})", status=status, url=redact_url(url))


@dataclass(frozen=True)
class DapJob:
    """One DAP query job as ``GET /dap/job/{id}`` (or the ``POST .../data`` answer) describes it."""

    id: str
    status: str
    objects: tuple[str, ...] = ()
    schema_version: int | None = None
    at: str | None = None  # a complete snapshot's state
    since: str | None = None  # a complete incremental's window
    until: str | None = None
    expires_at: str | None = None
    error: str | None = None

    @classmethod
    def from_json(cls, body: Any) -> DapJob:
        if not isinstance(body, dict) or not body.get("id") or not body.get("status"):
            raise ValueError(f"not a DAP job: {str(body)[:200]}")
        error = body.get("error")
        if isinstance(error, dict):
            error = str(error.get("message") or error.get("type") or error)
        return cls(
            id=str(body["id"]),
            status=str(body["status"]).lower(),
            objects=tuple(str(o["id"]) for o in body.get("objects") or []),
            schema_version=int(body["schema_version"]) if body.get("schema_version") is not None else None,
            at=body.get("at"),
            since=body.get("since"),
            until=body.get("until"),
            expires_at=body.get("expires_at"),
            error=str(error) if error else None,
        )

    def to_json(self) -> dict[str, Any]:
        """The job as DAP wrote it (what the trigger event and ``from_json`` carry)."""
        body: dict[str, Any] = {"id": self.id, "status": self.status}
        if self.objects:
            body["objects"] = [{"id": o} for o in self.objects]
        for name in ("schema_version", "at", "since", "until", "expires_at"):
            if getattr(self, name) is not None:
                body[name] = getattr(self, name)
        if self.error:
            body["error"] = {"message": self.error}
        return body

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL

    @property
    def complete(self) -> bool:
        return self.status == "complete"

    @property
    def watermark(self) -> str | None:
        """Where the next incremental starts: ``until`` of an incremental, ``at`` of a snapshot."""
        return self.until or self.at


_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


def object_file_name(object_id: str, index: int) -> str:
    """A local file name for a DAP object: the last part of its id, made safe (no path, no dot start)."""
    name = _SAFE_NAME.sub("_", object_id.rsplit("/", 1)[-1]).lstrip(".")
    if not name:
        name = f"part-{index:05d}"
    return name if name.endswith(".gz") else f"{name}.gz"
