"""The storage host a Brightspace DownloadLink redirects to: expiring HMAC-signed URLs, S3-style errors."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Generic, Protocol, TypeVar

from airflow_provider_canvas.testing.primitives import Request, Response, utcnow


class _Named(Protocol):
    @property
    def name(self) -> str: ...


class SignedFile(Protocol):
    """What the storage records of a file it serves (the emulator's BdsExtract)."""

    @property
    def data_set(self) -> _Named: ...

    @property
    def bds_type(self) -> str: ...


F = TypeVar("F", bound=SignedFile)


@dataclass(frozen=True)
class SignedDownload:
    """One request to the signed-download host. `had_authorization` must be False for a good client."""

    data_set: str | None
    bds_type: str | None
    had_authorization: bool
    status: int
    range: str | None
    at: datetime


class SignedStorage(Generic[F]):
    """Signs download URLs for extracts and answers them, recording every request it gets."""

    def __init__(self, lock: threading.RLock) -> None:
        self._lock = lock
        self._signing_key = secrets.token_bytes(32)
        self._signed: dict[str, F] = {}
        self._downloads: list[SignedDownload] = []

    @property
    def downloads(self) -> list[SignedDownload]:
        with self._lock:
            return list(self._downloads)

    def reset_records(self) -> None:
        with self._lock:
            self._downloads.clear()

    def url_for(self, extract: F, base_url: str, ttl: int) -> str:
        token = secrets.token_urlsafe(24)
        expires = str(int(time.time()) + ttl)
        with self._lock:
            self._signed[token] = extract
        signature = self._sign(token, expires).decode()
        return f"{base_url}/signed/{token}?expires={expires}&sig={signature}"

    def owns(self, request: Request) -> bool:
        """Whether the request's URL is one this storage signed (several stores share one host)."""
        match = re.fullmatch(r"/signed/([A-Za-z0-9_-]+)", request.path)
        with self._lock:
            return bool(match) and match.group(1) in self._signed

    def _sign(self, token: str, expires: str) -> bytes:
        return hmac.new(self._signing_key, f"{token}:{expires}".encode(), hashlib.sha256).hexdigest().encode()

    def handle(
        self,
        request: Request,
        reject_with_authorization: bool,
        serve: Callable[[Request, F], Response],
    ) -> Response:
        """No bearer token expected; `serve` answers a valid URL (Range supported)."""
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
        elif had_auth and reject_with_authorization:
            response = _s3_error(400, "InvalidArgument", "Only one auth mechanism allowed")
        else:
            response = serve(request, extract)
        with self._lock:
            self._downloads.append(
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


def _s3_error(status: int, code: str, message: str) -> Response:
    body = '<?xml version="1.0" encoding="UTF-8"?>\n'
    body += f"<Error><Code>{code}</Code><Message>{message}</Message></Error>"
    return Response(status, body.encode(), {"Content-Type": "application/xml"})
