"""``authorize`` piece by piece: input checks before any network call, the URL, the redirect, the listener."""

from __future__ import annotations

import json
import socket
import threading
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from airflow.models import Connection

from airflow_provider_canvas.canvas.hooks.canvas import SCOPE_GET_ACCOUNT, SCOPE_PUT_SSO_SETTINGS
from airflow_provider_canvas.cli import authorize as cli
from airflow_provider_canvas.cli.authorize import authorization_url, code_from_redirect
from airflow_provider_canvas.cli.authorize_settings import Settings, resolve_settings
from airflow_provider_canvas.cli.redirect_listener import RedirectListener
from airflow_provider_canvas.exceptions import AuthorizeError, LmsConfigurationError
from airflow_provider_canvas.testing.primitives import free_port

SECRET = "the-client-secret-9f"


@pytest.fixture(autouse=True)
def no_network(monkeypatch) -> list[Any]:
    """Any connection attempt fails the test: input checks come before the network."""
    attempts: list[Any] = []

    def refuse(sock: socket.socket, address: Any) -> None:
        attempts.append(address)
        raise AssertionError(f"network call to {address} during an input check")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    return attempts


@pytest.fixture
def stored(monkeypatch) -> dict[str, Connection]:
    """Connections the CLI finds, without a database."""
    from airflow.exceptions import AirflowNotFoundException

    connections: dict[str, Connection] = {}

    def get_connection(conn_id: str) -> Connection:
        if conn_id not in connections:
            raise AirflowNotFoundException(conn_id)
        return connections[conn_id]

    monkeypatch.setattr(cli.metadata, "get_connection", get_connection)
    monkeypatch.setattr(cli.metadata, "shadowing_source", lambda conn_id: None)
    monkeypatch.setenv("CANVAS_OAUTH_CLIENT_SECRET", SECRET)
    return connections


def canvas(**overrides: Any) -> dict[str, Any]:
    args = {
        "platform": "canvas",
        "host": "https://canvas.example.edu",
        "client_id": "170000000000042",
        "redirect_uri": "http://127.0.0.1:8765/canvas-oauth",
        "scopes": [SCOPE_GET_ACCOUNT, SCOPE_PUT_SSO_SETTINGS],
    }
    return {**args, **overrides}


# Input checks --------------------------------------------------------------------------------------


def test_a_redirect_uri_other_than_the_connections_is_refused(stored):
    stored["c"] = Connection(
        conn_id="c",
        conn_type="canvas",
        host="https://canvas.example.edu",
        login="1",
        password=SECRET,
        extra=json.dumps({"redirect_uri": "https://example.com/oauth_complete"}),
    )
    with pytest.raises(LmsConfigurationError) as raised:
        resolve_settings("c", redirect_uri="http://127.0.0.1:9999/cb")
    assert "does not match the redirect_uri of connection 'c'" in str(raised.value)
    assert "https://example.com/oauth_complete" in str(raised.value)


@pytest.mark.parametrize(
    "host", ["canvas.example.edu", "canvas.example.edu/login", "ftp://canvas.example.edu"]
)
def test_a_host_without_scheme_is_refused(stored, host):
    with pytest.raises(LmsConfigurationError, match="must be a URL with its scheme"):
        resolve_settings("c", **canvas(host=host))


def test_plain_http_is_refused_except_on_loopback(stored):
    with pytest.raises(LmsConfigurationError, match="must use https"):
        resolve_settings("c", **canvas(host="http://canvas.example.edu"))
    assert resolve_settings("c", **canvas(host="http://127.0.0.1:8080")).host == "http://127.0.0.1:8080"


def test_a_malformed_scope_is_refused(stored):
    with pytest.raises(LmsConfigurationError, match=r"url:VERB\|/path"):
        resolve_settings("c", **canvas(scopes=["url:GET:/api/v1/accounts/:id"]))


@pytest.mark.parametrize("redirect_uri", ["127.0.0.1:8765/cb", "/cb", "https://example.com/cb#frag"])
def test_a_malformed_redirect_uri_is_refused(stored, redirect_uri):
    with pytest.raises(LmsConfigurationError, match="redirect URI"):
        resolve_settings("c", **canvas(redirect_uri=redirect_uri))


def test_a_new_connection_needs_its_platform(stored):
    with pytest.raises(LmsConfigurationError, match="--platform"):
        resolve_settings("c", **canvas(platform=None))


def test_the_secret_comes_from_the_environment_else_a_prompt_never_argv(stored, monkeypatch):
    assert resolve_settings("c", **canvas()).client_secret == SECRET
    monkeypatch.delenv("CANVAS_OAUTH_CLIENT_SECRET")
    monkeypatch.setattr("sys.stdin.isatty", lambda: True)
    prompts: list[str] = []
    settings = resolve_settings("c", **canvas(), prompt_secret=lambda p: prompts.append(p) or "typed")
    assert settings.client_secret == "typed" and prompts == [
        "Client secret of 170000000000042 (not echoed): "
    ]
    assert SECRET not in repr(settings) and "typed" not in repr(settings)
    monkeypatch.setattr("sys.stdin.isatty", lambda: False)
    with pytest.raises(LmsConfigurationError, match="CANVAS_OAUTH_CLIENT_SECRET"):
        resolve_settings("c", **canvas())


def test_defaults_come_from_the_existing_connection(stored):
    stored["b"] = Connection(
        conn_id="b",
        conn_type="brightspace",
        host="https://school.brightspace.com",
        login="client",
        password="stored-secret",
        extra=json.dumps(
            {
                "redirect_uri": "https://example.com/cb",
                "refresh_token": "old",
                "lp_version": "1.46",
            }
        ),
    )
    settings = resolve_settings("b")
    assert (settings.platform, settings.host, settings.client_id) == (
        "brightspace",
        "https://school.brightspace.com",
        "client",
    )
    assert settings.client_secret == SECRET  # the environment wins over the stored secret
    assert settings.scopes == ["datahub:dataexports:*", "datasets:bds:read"]  # the default
    assert settings.extra == {
        "redirect_uri": "https://example.com/cb",
        "lp_version": "1.46",
        "scopes": "datahub:dataexports:* datasets:bds:read",
        "oauth_url": "https://auth.brightspace.com/core/connect/token",
    }


# The authorization URL ----------------------------------------------------------------------------


def test_the_url_has_one_space_separated_scope_parameter_and_a_random_state(stored):
    settings = resolve_settings("c", **canvas())
    hook = cli._hook(settings)

    url, state = authorization_url(hook, settings)
    _, other_state = authorization_url(hook, settings)

    parts = urlsplit(url)
    assert f"{parts.scheme}://{parts.netloc}{parts.path}" == "https://canvas.example.edu/login/oauth2/auth"
    query = parse_qs(parts.query)
    assert query == {
        "response_type": ["code"],
        "client_id": ["170000000000042"],
        "redirect_uri": ["http://127.0.0.1:8765/canvas-oauth"],
        "scope": [f"{SCOPE_GET_ACCOUNT} {SCOPE_PUT_SSO_SETTINGS}"],
        "state": [state],
        "purpose": ["Airflow connection c"],
    }
    assert "scope=url%3AGET%7C%2Fapi%2Fv1%2Faccounts%2F%3Aid+url%3APUT%7C" in url
    assert len(state) >= 20 and state != other_state
    assert SECRET not in url


def test_brightspace_authorization_endpoint_sits_beside_the_token_endpoint(stored):
    settings = resolve_settings(
        "b",
        platform="brightspace",
        host="https://school.brightspace.com",
        client_id="client",
        redirect_uri="https://example.com/cb",
    )
    url, _ = authorization_url(cli._hook(settings), settings)
    assert url.startswith("https://auth.brightspace.com/oauth2/auth?")
    assert parse_qs(urlsplit(url).query)["scope"] == ["datahub:dataexports:* datasets:bds:read"]


# The redirect -------------------------------------------------------------------------------------


def settings_for(platform: str) -> Settings:
    return Settings("c", platform, "https://x.example", "42", SECRET, "https://example.com/cb", ["a:b:c"], {})


def test_the_code_needs_this_runs_state():
    settings = settings_for("canvas")
    assert code_from_redirect("https://example.com/cb?code=abc&state=s1", "s1", settings) == "abc"
    with pytest.raises(AuthorizeError, match="state in the redirect is not this run's"):
        code_from_redirect("https://example.com/cb?code=abc&state=s2", "s1", settings)
    with pytest.raises(AuthorizeError, match="state in the redirect is not this run's"):
        code_from_redirect("https://example.com/cb?code=abc", "s1", settings)
    with pytest.raises(AuthorizeError, match="no authorization code"):
        code_from_redirect("https://example.com/cb", "s1", settings)


@pytest.mark.parametrize(
    ("platform", "error", "fix"),
    [
        ("canvas", "access_denied", "choose Authorize"),
        ("canvas", "unauthorized_client", "set its State to On"),
        ("canvas", "invalid_scope", "under Enforce Scopes tick: a:b:c"),
        ("brightspace", "access_denied", "choose Allow"),
        ("brightspace", "unauthorized_client", "Manage Extensibility > OAuth 2.0, open the app 42"),
        ("brightspace", "invalid_scope", "add to its Scope: a:b:c"),
        ("canvas", "unsupported_response_type", "Check the client ID and redirect URI"),
    ],
)
def test_error_redirects_say_what_to_fix(platform, error, fix):
    with pytest.raises(AuthorizeError) as raised:
        code_from_redirect(
            f"https://example.com/cb?error={error}&error_description=why&state=s1",
            "s1",
            settings_for(platform),
        )
    assert str(raised.value).startswith(f"authorization refused ({error}: why).")
    assert fix in str(raised.value)


# The one-shot listener ----------------------------------------------------------------------------


@pytest.fixture
def network(monkeypatch, no_network) -> None:
    monkeypatch.undo()  # the listener tests talk to 127.0.0.1


def test_the_listener_takes_the_one_redirect_and_answers_other_paths_404(network):
    port = free_port()
    listener = RedirectListener(f"http://127.0.0.1:{port}/cb")
    statuses: list[int] = []

    def browser() -> None:
        statuses.append(requests.get(f"http://127.0.0.1:{port}/favicon.ico", timeout=5).status_code)
        statuses.append(requests.get(f"http://localhost:{port}/cb?code=c1&state=s1", timeout=5).status_code)

    thread = threading.Thread(target=browser)
    thread.start()
    try:
        assert listener.wait(10) == "/cb?code=c1&state=s1"
    finally:
        listener.close()
    thread.join(5)
    assert statuses == [404, 200]
    with pytest.raises(requests.ConnectionError):  # closed after the one redirect
        requests.get(f"http://127.0.0.1:{port}/cb", timeout=2)


def test_the_listener_gives_up_after_its_timeout(network):
    listener = RedirectListener(f"http://127.0.0.1:{free_port()}/cb")
    try:
        with pytest.raises(AuthorizeError, match=r"no redirect arrived within 0s"):
            listener.wait(0.2)
    finally:
        listener.close()


def test_a_busy_port_is_a_clear_error(network):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(LmsConfigurationError, match=f"cannot listen on 127.0.0.1:{port}"):
            RedirectListener(f"http://127.0.0.1:{port}/cb")
