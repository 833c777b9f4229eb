"""What ``canvas-oauth authorize`` needs: the command line, the environment and the existing connection.

Everything is checked here, before any network call: a bad value fails with the fix in the message.
"""

from __future__ import annotations

import getpass
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from airflow_provider_canvas.brightspace.connection import (
    DEFAULT_SCOPES,
    DEFAULT_TOKEN_URL,
    LEGACY_TOKEN_URL_KEY,
    TOKEN_URL_KEY,
    stored_token_url,
)
from airflow_provider_canvas.cli import HOOK_CLASSES
from airflow_provider_canvas.cli.scopes import report_for
from airflow_provider_canvas.common import airflow_access as metadata
from airflow_provider_canvas.common.connection import check_base_url, is_loopback, parse_scopes
from airflow_provider_canvas.exceptions import LmsConfigurationError
from airflow_provider_canvas.tokens.model import extra_value, is_token_key

DEFAULT_SECRET_ENV = "CANVAS_OAUTH_CLIENT_SECRET"


@dataclass
class Settings:
    """Everything the authorization needs, checked before any network call."""

    conn_id: str
    platform: str
    host: str
    client_id: str
    client_secret: str = field(repr=False)
    redirect_uri: str
    scopes: list[str]
    extra: dict[str, Any]  # the connection's extra to be, without tokens
    shadowed_by: str | None = None

    @property
    def local_redirect(self) -> bool:
        parts = urlsplit(self.redirect_uri)
        return parts.scheme == "http" and is_loopback(parts.hostname)


def resolve_settings(
    conn_id: str,
    *,
    platform: str | None = None,
    host: str | None = None,
    client_id: str | None = None,
    redirect_uri: str | None = None,
    scopes: Sequence[str] = (),
    scopes_from_dags: str | None = None,
    all_operator_scopes: bool = False,
    token_url: str | None = None,
    secret_env: str = DEFAULT_SECRET_ENV,
    prompt_secret: Callable[[str], str] = getpass.getpass,
) -> Settings:
    """The arguments merged over the existing connection, checked; raises before any request."""
    existing = _existing_connection(conn_id)
    platform = _platform(conn_id, platform, existing)
    extra = {k: v for k, v in (existing.extra_dejson if existing else {}).items() if not is_token_key(k)}

    host = (host or (existing.host if existing else None) or "").rstrip("/")
    check_base_url("the host", host, "https://myschool.instructure.com")
    client_id = client_id or (existing.login if existing else None)
    if not client_id:
        raise LmsConfigurationError(
            "--client-id is needed: the developer key ID (Canvas) or OAuth 2.0 client ID (Brightspace)"
        )

    stored_redirect = extra_value(extra, platform, "redirect_uri")
    if redirect_uri and stored_redirect and redirect_uri != stored_redirect:
        raise LmsConfigurationError(
            f"--redirect-uri {redirect_uri!r} does not match the redirect_uri of connection {conn_id!r} "
            f"({stored_redirect!r}). The code is only sent to a redirect URI registered on the "
            "developer key / OAuth app, and the token request must repeat it. Use the connection's, "
            "or, if the registered one changed, edit the connection's redirect_uri first."
        )
    redirect_uri = redirect_uri or stored_redirect
    if not redirect_uri:
        raise LmsConfigurationError(
            "--redirect-uri is needed: a redirect URI registered on the developer key / OAuth app, "
            "e.g. http://127.0.0.1:8765/canvas-oauth (received here) or any https page (paste the URL)"
        )
    _check_redirect_uri(redirect_uri)

    scopes = _scopes(platform, extra, scopes, scopes_from_dags, all_operator_scopes)
    extra.update({"redirect_uri": redirect_uri, "scopes": " ".join(scopes)})
    if platform == "brightspace":
        stored_url = stored_token_url(extra)
        for key in (LEGACY_TOKEN_URL_KEY, TOKEN_URL_KEY):  # the current key only, from here on
            extra.pop(key, None)
            extra.pop(f"extra__brightspace__{key}", None)
        extra[TOKEN_URL_KEY] = check_base_url("the token URL", token_url or stored_url, DEFAULT_TOKEN_URL)
    elif token_url:
        raise LmsConfigurationError(
            "--token-url is a Brightspace setting; Canvas uses {host}/login/oauth2/token"
        )

    shadowed_by = metadata.shadowing_source(conn_id)
    if shadowed_by and existing and (host, client_id) != ((existing.host or "").rstrip("/"), existing.login):
        raise LmsConfigurationError(
            f"connection {conn_id!r} is defined by {shadowed_by}: change its host and client ID there"
        )

    secret = os.environ.get(secret_env) or (existing.password if existing else None)
    if not secret:
        if not sys.stdin.isatty():
            raise LmsConfigurationError(f"set the client secret in the environment variable {secret_env}")
        secret = prompt_secret(f"Client secret of {client_id} (not echoed): ")
    if not secret:
        raise LmsConfigurationError("the client secret is needed")
    return Settings(conn_id, platform, host, client_id, secret, redirect_uri, scopes, extra, shadowed_by)


def _existing_connection(conn_id: str) -> Any:
    from airflow.exceptions import AirflowNotFoundException

    try:
        return metadata.get_connection(conn_id)
    except AirflowNotFoundException:
        return None


def _platform(conn_id: str, platform: str | None, existing: Any) -> str:
    if existing is not None:
        if existing.conn_type not in HOOK_CLASSES:
            raise LmsConfigurationError(
                f"connection {conn_id!r} has type {existing.conn_type!r}, not canvas or brightspace"
            )
        if platform and platform != existing.conn_type:
            raise LmsConfigurationError(
                f"connection {conn_id!r} is a {existing.conn_type} connection, not {platform}"
            )
        return str(existing.conn_type)
    if not platform:
        raise LmsConfigurationError(
            f"connection {conn_id!r} does not exist yet: say --platform canvas|brightspace"
        )
    return platform


def _check_redirect_uri(redirect_uri: str) -> None:
    parts = urlsplit(redirect_uri)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise LmsConfigurationError(
            f"the redirect URI must be an absolute http(s) URL, as registered on the developer key "
            f"(got {redirect_uri!r})"
        )
    if parts.fragment:
        raise LmsConfigurationError(f"a redirect URI has no #fragment (got {redirect_uri!r})")


def _scopes(
    platform: str,
    extra: Mapping[str, Any],
    given: Sequence[str],
    dag_folder: str | None,
    all_operator_scopes: bool,
) -> list[str]:
    if given:
        return parse_scopes(platform, given)
    if dag_folder or all_operator_scopes:
        found = report_for(platform, dag_folder).scopes(platform)
        if found:
            return found
        if platform == "canvas":
            raise LmsConfigurationError("no operator needing Canvas scopes was found; give --scope")
    stored = extra_value(extra, platform, "scopes")
    if stored:
        return parse_scopes(platform, [stored])
    return parse_scopes(platform, [DEFAULT_SCOPES]) if platform == "brightspace" else []
