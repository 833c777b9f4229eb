"""Checks of what a person types into a connection: base URLs and scope strings.

Run when a hook first reads its connection and by ``canvas-oauth``, so a typo is refused before
any request leaves, with a message that says what to type instead.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from urllib.parse import urlsplit

from airflow_provider_canvas.exceptions import LmsConfigurationError

CANVAS_SCOPE = re.compile(r"url:(GET|POST|PUT|PATCH|DELETE)\|/[^\s|,]+")
BRIGHTSPACE_SCOPE = re.compile(r"[a-z0-9_-]+:[a-z0-9_*-]+:[a-z0-9_*-]+", re.IGNORECASE)
SCOPE_FORMS = {
    "canvas": "url:VERB|/path, e.g. url:GET|/api/v1/accounts/:id",
    "brightspace": "group:resource:action, e.g. datahub:dataexports:read",
}


def is_loopback(hostname: str | None) -> bool:
    """``localhost`` or an address in 127.0.0.0/8 or ``::1``: traffic that never leaves the machine."""
    if not hostname:
        return False
    if hostname.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(hostname).is_loopback
    except ValueError:
        return False


def check_base_url(what: str, url: object, example: str) -> str:
    """``url`` without a trailing slash, refused unless https (or http to this machine).

    A client secret and refresh tokens sent over plain http to another host travel in clear.
    """
    text = url.strip() if isinstance(url, str) else ""
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise LmsConfigurationError(f"{what} must be a URL with its scheme, e.g. {example} (got {url!r})")
    if parts.scheme == "http" and not is_loopback(parts.hostname):
        raise LmsConfigurationError(
            f"{what} must use https: type {'https' + text[len('http') :]!r} instead of {text!r}. Over "
            "http the client secret and tokens would travel in clear (http is accepted only for "
            "localhost and 127.0.0.1, e.g. the emulator)."
        )
    return text.rstrip("/")


def parse_scopes(platform: str, values: Iterable[object]) -> list[str]:
    """Scopes from arguments or a connection (space-separated allowed), checked, duplicates dropped."""
    scopes = list(dict.fromkeys(part for value in values for part in str(value).split()))
    pattern = CANVAS_SCOPE if platform == "canvas" else BRIGHTSPACE_SCOPE
    malformed = [scope for scope in scopes if not pattern.fullmatch(scope)]
    if malformed:
        raise LmsConfigurationError(
            f"not {platform} scope(s): {', '.join(repr(s) for s in malformed)}. A {platform} scope has "
            f"the form {SCOPE_FORMS[platform]}; separate several with spaces (no commas)."
        )
    return scopes
