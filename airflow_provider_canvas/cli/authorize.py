"""``canvas-oauth authorize``: one person's OAuth consent, turned into a connection holding tokens.

Builds the authorization URL, receives the redirect (a one-shot listener on 127.0.0.1, or the
pasted URL), exchanges the code and creates or updates the Airflow connection. Never prints tokens.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import secrets
import webbrowser
from collections.abc import Callable, Iterator
from urllib.parse import parse_qs, urlsplit

from airflow_provider_canvas.cli import HOOK_CLASSES
from airflow_provider_canvas.cli.authorize_settings import Settings
from airflow_provider_canvas.cli.redirect_listener import RedirectListener
from airflow_provider_canvas.cli.scopes import brightspace_covers
from airflow_provider_canvas.common import airflow_access as metadata
from airflow_provider_canvas.common.connection import is_loopback
from airflow_provider_canvas.exceptions import AuthorizeError, LmsConfigurationError
from airflow_provider_canvas.tokens.hook import LmsHook
from airflow_provider_canvas.tokens.model import TokenSet, is_token_key

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
            keep=is_token_key,
        )
    store = hook.tokens.store
    if hook.tokens.adopt(tokens, before_save=write_connection):
        return store.location
    return (
        f"the Airflow Variable {store.variable_key!r} (the connection could not be written; see the warning)"
    )
