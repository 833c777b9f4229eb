"""``canvas-oauth authorize``: one person's OAuth consent, turned into a connection holding tokens.

Builds the authorization URL, receives the redirect (a one-shot listener on 127.0.0.1, or the
pasted URL), exchanges the code and creates or updates the Airflow connection. Never prints tokens.
"""

from __future__ import annotations

import contextlib
import functools
import getpass
import http.server
import json
import os
import secrets
import socketserver
import sys
import time
import webbrowser
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

from airflow_provider_canvas.cli import HOOK_CLASSES
from airflow_provider_canvas.cli.scopes import brightspace_covers, report_for
from airflow_provider_canvas.exceptions import AuthorizeError, LmsConfigurationError
from airflow_provider_canvas.hooks.base import LmsHook
from airflow_provider_canvas.hooks.brightspace import (
    DEFAULT_SCOPES,
    DEFAULT_TOKEN_URL,
    LEGACY_TOKEN_URL_KEY,
    TOKEN_URL_KEY,
    stored_token_url,
)
from airflow_provider_canvas.hooks.connection_checks import check_base_url, is_loopback, parse_scopes
from airflow_provider_canvas.tokens import metadata
from airflow_provider_canvas.tokens.model import TokenSet, extra_value, is_token_key

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


# Input -----------------------------------------------------------------------------------------


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


# The flow --------------------------------------------------------------------------------------


def authorize(
    settings: Settings,
    *,
    replace_tokens: bool = False,
    open_browser: bool = True,
    timeout: float = 300.0,
    read_pasted_url: Callable[[str], str] | None = None,
    say: Callable[[str], None] = print,
) -> TokenSet:
    """Run the consent, exchange the code, save the connection; return the tokens (never shown)."""
    if replace_tokens and settings.platform != "canvas":
        raise LmsConfigurationError("--replace-tokens is a Canvas option")
    hook = _hook(settings)
    listener = RedirectListener(settings.redirect_uri) if settings.local_redirect else None
    try:
        url, state = authorization_url(hook, settings)
        say(f"Open this URL and approve the access (as the user the connection should act as):\n\n  {url}\n")
        if open_browser:
            webbrowser.open(url)
        if listener is not None:
            say(f"Waiting up to {timeout:.0f}s for the redirect to {settings.redirect_uri} ...")
            redirected_to = listener.wait(timeout)
        else:
            redirected_to = (read_pasted_url or input)(
                "Paste the whole URL your browser was sent to (it starts with the redirect URI): "
            ).strip()
    finally:
        if listener is not None:
            listener.close()
    code = code_from_redirect(redirected_to, state, settings)
    try:
        tokens, details = hook.exchange_authorization_code(
            code, redirect_uri=settings.redirect_uri, replace_tokens=replace_tokens
        )
    finally:
        hook.close()
    granted = details.get("scope")
    if settings.platform == "brightspace" and granted is not None:
        # oauthlib hands the granted scope over as a list.
        _keep_granted_scopes(settings, granted if isinstance(granted, list) else str(granted).split(), say)
    location = save_connection(settings, tokens)
    who = details.get("user") if isinstance(details.get("user"), dict) else None
    say(
        f"Connection {settings.conn_id!r} ({settings.platform}, {settings.host}) now holds tokens "
        f"in {location}"
        + (f", authorized by {who.get('name')!r} (id {who.get('id')})" if who else "")
        + (f"; access token valid until {tokens.expires_at.to_iso8601_string()}" if tokens.expires_at else "")
        + "."
    )
    return tokens


def _hook(settings: Settings) -> LmsHook:
    from airflow.models import Connection

    # The exchange runs on the connection to be: the stored one changes only once tokens exist.
    return HOOK_CLASSES[settings.platform].for_connection(
        Connection(
            conn_id=settings.conn_id,
            conn_type=settings.platform,
            host=settings.host,
            login=settings.client_id,
            password=settings.client_secret,
            extra=json.dumps(settings.extra),
        )
    )


def authorization_url(hook: LmsHook, settings: Settings) -> tuple[str, str]:
    """The URL a person opens, with a random state; the scopes go as one space-separated parameter."""
    from requests_oauthlib import OAuth2Session

    # Only the URL is built here: the session never sends a request (it would log tokens).
    oauth = OAuth2Session(
        settings.client_id, redirect_uri=settings.redirect_uri, scope=settings.scopes or None
    )
    endpoint = hook.authorization_endpoint
    with _http_allowed_for_loopback(endpoint):
        return oauth.authorization_url(endpoint, **hook.authorization_params())


@contextlib.contextmanager
def _http_allowed_for_loopback(url: str) -> Iterator[None]:
    # oauthlib refuses http URLs; the emulator and local test servers on 127.0.0.1 use plain http.
    allow = urlsplit(url).scheme == "http" and is_loopback(urlsplit(url).hostname)
    before = os.environ.get("OAUTHLIB_INSECURE_TRANSPORT")
    if allow:
        os.environ["OAUTHLIB_INSECURE_TRANSPORT"] = "1"
    try:
        yield
    finally:
        if allow and before is None:
            os.environ.pop("OAUTHLIB_INSECURE_TRANSPORT", None)


def code_from_redirect(redirected_to: str, state: str, settings: Settings) -> str:
    """The authorization code from the redirect URL, after the state check; errors say what to fix."""
    query = {key: values[0] for key, values in parse_qs(urlsplit(redirected_to).query).items()}
    if "error" in query:
        if query.get("state") is not None and not secrets.compare_digest(query["state"], state):
            raise AuthorizeError("the redirect carries another state than this run's: start again")
        raise AuthorizeError(redirect_error_message(settings, query["error"], query.get("error_description")))
    if "code" not in query:
        raise AuthorizeError(
            f"no authorization code in {urlsplit(redirected_to)._replace(query='').geturl()!r}: paste the "
            "URL the browser was sent to after approving, with its ?code=...&state=..."
        )
    if not secrets.compare_digest(query.get("state", ""), state):
        raise AuthorizeError(
            "the state in the redirect is not this run's (an old tab, or a forged link): nothing was "
            "exchanged. Run authorize again and use the URL it prints."
        )
    return query["code"]


def redirect_error_message(settings: Settings, error: str, description: str | None) -> str:
    said = f"{error}" + (f": {description}" if description else "")
    if settings.platform == "canvas":
        where = f"In Canvas (root account) > Admin > Developer Keys, find the key {settings.client_id}"
        fixes = {
            "access_denied": "The person at the consent page did not authorize. Run authorize again "
            "and choose Authorize, logged in as the user the connection should act as.",
            "unauthorized_client": f"The developer key is not enabled for this Canvas account. {where} "
            "and set its State to On. A key made in another root account does not work here; an "
            "inherited (global) key must be turned On by this account's admin.",
            "invalid_scope": f"The developer key lacks a requested scope. {where}, edit it, and under "
            f"Enforce Scopes tick: {' '.join(settings.scopes)} (`canvas-oauth scopes` lists them by "
            "group as the form shows them). Save, then run authorize again.",
        }
    else:
        app = settings.client_id
        where = f"In Brightspace > Admin Tools > Manage Extensibility > OAuth 2.0, open the app {app}"
        fixes = {
            "access_denied": "The person at the consent page did not allow access. Run authorize "
            "again and choose Allow, logged in as the user the connection should act as.",
            "unauthorized_client": f"The OAuth 2.0 app is not enabled. {where} and enable it.",
            "invalid_scope": f"The app is not registered for a requested scope. {where} and add to its "
            f"Scope: {' '.join(settings.scopes)}. Save, then run authorize again.",
        }
    fix = fixes.get(error, "Check the client ID and redirect URI of the connection against the app's.")
    return f"authorization refused ({said}). {fix}"


def _keep_granted_scopes(settings: Settings, granted: list[str], say: Callable[[str], None]) -> None:
    # Each refresh asks for the connection's scopes; asking for more than the grant would fail.
    missing = [scope for scope in settings.scopes if not brightspace_covers(granted, scope)]
    if missing:
        say(
            f"WARNING: Brightspace granted {' '.join(granted) or 'no scopes'}, not {' '.join(missing)}; "
            "the connection keeps the granted scopes. Add the others to the app's Scope and authorize again."
        )
        settings.scopes = granted
        settings.extra["scopes"] = " ".join(granted)


# Saving ----------------------------------------------------------------------------------------


def save_connection(settings: Settings, tokens: TokenSet) -> str:
    """Create or update the connection, then store the tokens as every refresh does.

    The hook's token lifecycle takes the refresh lock, keeps the tokens in the rescue file,
    writes the connection (unless a secrets backend or ``AIRFLOW_CONN_*`` defines it), then the
    central copy and the connection's tokens, read back. Returns where the tokens are; when
    neither can be written, :class:`~airflow_provider_canvas.exceptions.TokenSaveError` names
    the rescue file.
    """
    hook = _hook(settings)
    write_connection = None
    if settings.shadowed_by is None:
        write_connection = functools.partial(
            metadata.upsert_connection,
            settings.conn_id,
            settings.platform,
            host=settings.host,
            login=settings.client_id,
            password=settings.client_secret,
            extra=settings.extra,
        )
    store = hook.tokens.store
    if hook.tokens.adopt(tokens, before_save=write_connection):
        return store.location
    return (
        f"the Airflow Variable {store.variable_key!r} (the connection could not be written; see the warning)"
    )


# The listener ----------------------------------------------------------------------------------


class RedirectListener:
    """Receives the one redirect on 127.0.0.1 at the redirect URI's port and path, then closes."""

    def __init__(self, redirect_uri: str) -> None:
        parts = urlsplit(redirect_uri)
        self.path = parts.path or "/"
        port = parts.port or 80
        self.received: str | None = None
        try:
            self._server = _OneShotServer(("127.0.0.1", port), _RedirectHandler)
        except OSError as err:
            raise LmsConfigurationError(
                f"cannot listen on 127.0.0.1:{port} for the redirect ({err.strerror}): free the port, or "
                "register a redirect URI with a free port above 1024, e.g. http://127.0.0.1:8765/canvas-oauth"
            ) from None
        self._server.listener = self  # type: ignore[attr-defined]

    def wait(self, timeout: float) -> str:
        """The redirect URL (path and query); requests to other paths (favicon) are answered 404."""
        deadline = time.monotonic() + timeout
        while self.received is None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AuthorizeError(
                    f"no redirect arrived within {timeout:.0f}s. Was the URL opened and approved? Does "
                    "the developer key's redirect URI equal the connection's?"
                )
            self._server.timeout = left
            self._server.handle_request()
        return self.received

    def close(self) -> None:
        self._server.server_close()


class _OneShotServer(http.server.HTTPServer):
    def server_bind(self) -> None:
        # HTTPServer.server_bind looks its own name up (reverse DNS), which can hang offline.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = "127.0.0.1", int(self.server_address[1])


class _RedirectHandler(http.server.BaseHTTPRequestHandler):
    server: Any

    def do_GET(self) -> None:
        listener: RedirectListener = self.server.listener
        if urlsplit(self.path).path != listener.path:
            self._reply(404, "Not the redirect URI.")
            return
        listener.received = self.path
        self._reply(200, "canvas-oauth received the authorization. You can close this tab.")

    def _reply(self, status: int, text: str) -> None:
        body = text.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        # The request line holds the authorization code.
        return
