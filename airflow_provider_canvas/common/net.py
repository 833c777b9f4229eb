"""What every HTTP caller here shares: absolute and loggable URLs, backoff, and what is safe to send again.

Pure functions on ``requests`` objects, used by the hooks' transport and by the OAuth token client.
"""

from __future__ import annotations

import random
from typing import Any
from urllib.parse import urljoin, urlsplit

import requests
from urllib3.exceptions import NewConnectionError

from airflow_provider_canvas.exceptions import LmsConfigurationError

# Only reads are sent again after they may have reached the server: a write that failed with a
# 5xx or a read timeout may have landed, and only the caller can check (e.g. GET after a PUT).
SAFE_TO_REPEAT = frozenset({"GET", "HEAD", "OPTIONS"})


#: Raised by requests before anything is sent, because the URL or a header cannot be used at all:
#: no retry can help, and no token was spent.
UNUSABLE_REQUEST = (
    requests.exceptions.MissingSchema,
    requests.exceptions.InvalidSchema,
    requests.exceptions.InvalidURL,
    requests.exceptions.InvalidHeader,
)


def unusable_request_error(
    err: requests.RequestException, where: str, conn_label: str
) -> LmsConfigurationError:
    """The error for a request that could not be sent at all: a setting of the connection is wrong."""
    return LmsConfigurationError(
        f"{where}: nothing was sent, the URL cannot be used ({type(err).__name__}). Check the host "
        f"and the other URLs of {conn_label}; no token was spent."
    )


def redact_url(url: str) -> str:
    """Scheme, host and path only: query strings may hold signatures or bookmarks."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}"


def absolute_url(base_url: str, path_or_url: str) -> str:
    """``path_or_url`` on ``base_url`` when it is a path; an absolute URL as it is."""
    if "://" in path_or_url:
        return path_or_url
    return urljoin(base_url.rstrip("/") + "/", path_or_url.lstrip("/"))


def same_host(url: str, base_url: str) -> bool:
    """True when ``url`` is on the host (and port) of ``base_url``: only there may a bearer token go."""
    return urlsplit(url).netloc == urlsplit(base_url).netloc


def never_sent(err: requests.RequestException) -> bool:
    """True when the request cannot have reached the server (safe to send again)."""
    if isinstance(err, requests.ConnectTimeout):
        return True
    reason = getattr(err.args[0], "reason", None) if err.args else None
    return isinstance(reason, NewConnectionError)


def error_message(response: Any) -> str:
    """The API's own words from an error answer (``requests`` or ``httpx``), else its text; no body echo."""
    try:
        body = response.json()
    except ValueError:
        reason = getattr(response, "reason", None) or getattr(response, "reason_phrase", "")
        return response.text.strip()[:300] or str(reason)
    if isinstance(body, dict):
        errors = body.get("errors") or body.get("Errors")
        if isinstance(errors, list) and errors:
            first = errors[0]
            if isinstance(first, dict):
                return str(first.get("message") or first.get("Message") or first)[:300]
        for key in ("error_description", "message", "Message", "error"):
            if body.get(key):
                return str(body[key])[:300]
    return str(body)[:300]


def is_throttled(response: Any) -> bool:
    """Throttling, as Canvas and Brightspace say it (``requests`` or ``httpx`` answers).

    429 always (hosted Canvas since Oct 2025, Brightspace); 403 when it says "Rate Limit Exceeded"
    (Canvas's documented answer, and some Brightspace deployments') or says the rate-limit bucket
    is empty. Any other 403 is a refusal.
    """
    if response.status_code == 429:
        return True
    if response.status_code != 403:
        return False
    if response.headers.get("X-Rate-Limit-Remaining", "").strip() in ("0", "0.0"):
        return True
    reason = getattr(response, "reason", None) or getattr(response, "reason_phrase", "") or ""
    return "rate limit exceeded" in f"{reason} {response.text[:1000]}".lower()


def throttle_wait_seconds(headers: Any, cap: float) -> float | None:
    """Seconds a throttled answer asks to wait: ``Retry-After``, else ``X-Rate-Limit-Reset``; at most ``cap``.

    None when neither says (the caller backs off). Brightspace's bucket resets every minute, so
    a larger value is a broken header and the cap keeps a task from sleeping on it.
    """
    for name in ("Retry-After", "X-Rate-Limit-Reset"):
        seconds = retry_after_seconds(headers.get(name))
        if seconds is not None:
            return min(seconds, cap)
    return None


def retry_after_seconds(value: str | None) -> float | None:
    """A ``Retry-After`` header in seconds (None when absent or a date)."""
    try:
        return max(0.0, float(value or ""))
    except ValueError:
        return None


def backoff_seconds(attempt: int, base: float, cap: float) -> float:
    """Exponential backoff with jitter for the ``attempt``-th retry (1-based), at most ``cap``."""
    ceiling = min(cap, base * 2 ** (attempt - 1))
    return random.uniform(ceiling / 2, ceiling)
