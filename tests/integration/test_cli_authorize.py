"""``canvas-oauth authorize`` against the emulator as the authorization server (it auto-approves)."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pendulum
import pytest
import requests
from airflow.configuration import conf
from airflow.models import Connection
from airflow.utils.session import create_session
from lms_fixtures import CLIENT_ID, CLIENT_SECRET, stored_extra

from airflow_provider_canvas.brightspace.hooks.brightspace import BrightspaceHook
from airflow_provider_canvas.canvas.hooks.canvas import SCOPE_GET_ACCOUNT, SCOPE_LIST_SUB_ACCOUNTS
from airflow_provider_canvas.canvas.operators.accounts import CanvasAccountsOperator
from airflow_provider_canvas.cli.main import main
from airflow_provider_canvas.testing.primitives import free_port

CANVAS_SCOPES = [SCOPE_GET_ACCOUNT, SCOPE_LIST_SUB_ACCOUNTS]
BRIGHTSPACE_SCOPES = ["datahub:dataexports:*"]
FAST = {"backoff_seconds": 0.01, "max_backoff_seconds": 0.05}


class Browser:
    """Plays the person's browser: opens the authorization URL and follows (or reports) the redirect."""

    def __init__(self) -> None:
        self.opened: list[str] = []
        self.landed: requests.Response | None = None
        self.location: str | None = None
        self.follow_redirects = True
        self._thread: threading.Thread | None = None

    def open(self, url: str, *args: Any, **kwargs: Any) -> bool:
        self.opened.append(url)
        # In its own thread, as a real browser: the CLI is blocked waiting for the redirect.
        self._thread = threading.Thread(target=self._visit, args=(url,))
        self._thread.start()
        return True

    def _visit(self, url: str) -> None:
        response = requests.get(url, allow_redirects=False, timeout=10)
        self.location = response.headers.get("Location")
        if self.follow_redirects and self.location:
            self.landed = requests.get(self.location, timeout=10)

    def pasted_url(self, prompt: str = "") -> str:
        """What the person pastes: the URL the browser was sent to (it cannot load it)."""
        assert self._thread is not None
        self._thread.join(10)
        assert self.location
        return self.location


@pytest.fixture
def browser(monkeypatch) -> Browser:
    fake = Browser()
    monkeypatch.setattr("webbrowser.open", fake.open)
    return fake


@pytest.fixture
def cli_connections() -> Iterator[list[str]]:
    """Connection ids the CLI creates; deleted after the test."""
    created: list[str] = []
    yield created
    with create_session() as session:
        session.query(Connection).filter(Connection.conn_id.in_(created)).delete()


@pytest.fixture(autouse=True)
def client_secret(monkeypatch) -> None:
    monkeypatch.setenv("CANVAS_OAUTH_CLIENT_SECRET", CLIENT_SECRET)


def authorize_args(
    emulator: Any, platform: str, conn_id: str, redirect_uri: str, scopes: list[str]
) -> list[str]:
    args = ["authorize", conn_id, "--platform", platform, "--host", emulator.url, "--client-id", CLIENT_ID]
    args += ["--redirect-uri", redirect_uri]
    for scope in scopes:
        args += ["--scope", scope]
    if platform == "brightspace":
        args += ["--token-url", f"{emulator.url}/core/connect/token"]
    return args


def run_authorize(
    emulator: Any,
    platform: str,
    conn_id: str,
    scopes: list[str],
    cli_connections: list[str],
    *extra_args: str,
    redirect_uri: str | None = None,
) -> int:
    cli_connections.append(conn_id)
    redirect_uri = redirect_uri or f"http://127.0.0.1:{free_port()}/canvas-oauth"
    return main(
        [*authorize_args(emulator, platform, conn_id, redirect_uri, scopes), "--timeout", "20", *extra_args]
    )


def assert_no_secret_shown(text: str, conn_id: str) -> None:
    extra = stored_extra(conn_id)
    for secret in (CLIENT_SECRET, extra["access_token"], extra["refresh_token"]):
        assert secret not in text


# The whole flow, both platforms ------------------------------------------------------------------


@pytest.mark.parametrize("platform", ["canvas", "brightspace"])
def test_authorize_ends_with_a_connection_a_task_uses(
    platform, emulator, browser, cli_connections, capsys, caplog, tmp_path
):
    caplog.set_level(logging.DEBUG)
    side = getattr(emulator, platform)
    scopes = CANVAS_SCOPES if platform == "canvas" else BRIGHTSPACE_SCOPES
    side.register_client(CLIENT_ID, CLIENT_SECRET, scopes=scopes)
    conn_id = f"{platform}_cli"

    assert run_authorize(emulator, platform, conn_id, scopes, cli_connections) == 0

    # The person's browser went: authorize endpoint -> 302 -> our one-shot listener.
    (url,) = browser.opened
    query = parse_qs(urlsplit(url).query)
    assert query["scope"] == [" ".join(scopes)]  # one parameter, space-separated
    assert query["response_type"] == ["code"] and query["client_id"] == [CLIENT_ID]
    assert len(query["state"][0]) >= 20
    assert browser.landed is not None and browser.landed.status_code == 200
    (grant,) = emulator.token_requests
    assert (grant.grant_type, grant.status) == ("authorization_code", 200)

    conn = Connection.get_connection_from_secrets(conn_id)
    extra = conn.extra_dejson
    assert (conn.conn_type, conn.host, conn.login, conn.password) == (
        platform,
        emulator.url,
        CLIENT_ID,
        CLIENT_SECRET,
    )
    assert extra["scopes"] == " ".join(scopes) and extra["redirect_uri"].startswith("http://127.0.0.1:")
    assert pendulum.parse(extra["expires_at"]) > pendulum.now("UTC").add(minutes=55)
    output = capsys.readouterr()
    assert f"Connection {conn_id!r} ({platform}" in output.out
    assert_no_secret_shown(output.out + output.err + caplog.text, conn_id)

    # A DAG task uses the new connection.
    if platform == "canvas":
        emulator.canvas.generate_account_tree(21, fanout=4)
        result = CanvasAccountsOperator(
            task_id="read_account_tree",
            canvas_conn_id=conn_id,
            mode="sub_accounts",
            account_id=1,
            include_root=True,
            hook_params=FAST,
        ).execute({})
        assert result["count"] == 21
    else:
        assert BrightspaceHook(conn_id).whoami()["UniqueName"]
        # The access token dies: the next task refreshes with the stored single-use refresh token.
        emulator.expire_access_tokens("brightspace")
        assert BrightspaceHook(conn_id).whoami()["UniqueName"]
        assert emulator.refresh_count("brightspace") == 1
        assert emulator.consumed_presentations("brightspace") == 0


# Error redirects: each says what to fix -----------------------------------------------------------

ERROR_CASES = {
    # error: (how the emulator is set up, what the message must tell)
    "access_denied": (
        {"auth_decision": "deny"},
        {"canvas": "choose Authorize", "brightspace": "choose Allow"},
    ),
    "unauthorized_client": (
        {"enabled": False},
        {"canvas": "set its State to On", "brightspace": "Manage Extensibility > OAuth 2.0"},
    ),
    "invalid_scope": (
        {"key_scopes": "narrow"},
        {"canvas": "Enforce Scopes tick", "brightspace": "add to its Scope"},
    ),
}


@pytest.mark.parametrize("platform", ["canvas", "brightspace"])
@pytest.mark.parametrize("error", list(ERROR_CASES))
def test_error_redirects_say_what_to_fix(platform, error, emulator, browser, cli_connections, capsys):
    side = getattr(emulator, platform)
    setup, fixes = ERROR_CASES[error]
    scopes = CANVAS_SCOPES if platform == "canvas" else ["datahub:dataexports:read", "reporting:job:create"]
    key_scopes = scopes[:1] if setup.get("key_scopes") == "narrow" else scopes
    side.register_client(CLIENT_ID, CLIENT_SECRET, scopes=key_scopes, enabled=setup.get("enabled", True))
    if "auth_decision" in setup:
        side.auth_decision = setup["auth_decision"]
    conn_id = f"{platform}_refused"

    assert run_authorize(emulator, platform, conn_id, scopes, cli_connections) == 2

    err = capsys.readouterr().err
    assert f"authorization refused ({error}" in err
    assert fixes[platform] in err
    if error == "invalid_scope":
        assert " ".join(scopes) in err  # the scopes to tick, paste-ready
    assert emulator.token_requests == []  # nothing to exchange
    with create_session() as session:
        assert session.query(Connection).filter(Connection.conn_id == conn_id).count() == 0


# Pasted redirect, state, replace_tokens, updates -------------------------------------------------


def test_non_local_redirect_uri_takes_the_pasted_url_and_replace_tokens(
    emulator, browser, cli_connections, monkeypatch, capsys
):
    emulator.canvas.register_client(CLIENT_ID, CLIENT_SECRET, scopes=CANVAS_SCOPES)
    emulator.canvas.add_account(1, "Root")
    old = emulator.canvas.issue_tokens(CLIENT_ID)  # the user's token from an earlier consent
    browser.follow_redirects = False  # example.com is not reached: the person copies the URL
    monkeypatch.setattr("builtins.input", browser.pasted_url)

    rc = run_authorize(
        emulator,
        "canvas",
        "canvas_pasted",
        CANVAS_SCOPES,
        cli_connections,
        "--replace-tokens",
        redirect_uri="https://example.com/oauth_complete",
    )

    assert rc == 0, capsys.readouterr().err
    assert browser.location.startswith("https://example.com/oauth_complete?code=")
    assert stored_extra("canvas_pasted")["redirect_uri"] == "https://example.com/oauth_complete"
    # replace_tokens=1 destroyed the earlier token of this user and key.
    refused = requests.get(
        f"{emulator.url}/api/v1/accounts/1",
        headers={"Authorization": f"Bearer {old.access_token}"},
        timeout=5,
    )
    assert refused.status_code == 401 and "Revoked" in refused.text
    hook_result = CanvasAccountsOperator(
        task_id="t", canvas_conn_id="canvas_pasted", account_id=1, hook_params=FAST
    ).execute({})
    assert hook_result["accounts"][0]["name"] == "Root"


def test_a_redirect_with_another_state_is_not_exchanged(
    emulator, browser, cli_connections, monkeypatch, capsys
):
    emulator.canvas.register_client(CLIENT_ID, CLIENT_SECRET, scopes=CANVAS_SCOPES)
    browser.follow_redirects = False

    def forged(prompt: str = "") -> str:
        parts = urlsplit(browser.pasted_url())
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        return parts._replace(query=urlencode({**query, "state": "forged-state"})).geturl()

    monkeypatch.setattr("builtins.input", forged)
    rc = run_authorize(
        emulator,
        "canvas",
        "canvas_forged",
        CANVAS_SCOPES,
        cli_connections,
        redirect_uri="https://example.com/cb",
    )

    assert rc == 2
    assert "state in the redirect is not this run's" in capsys.readouterr().err
    assert emulator.token_requests == []


def test_authorize_again_updates_the_existing_connection(
    emulator, browser, make_connection, monkeypatch, capsys
):
    """Everything from the connection: only the conn id is given; other extra fields survive."""
    emulator.brightspace.register_client(CLIENT_ID, CLIENT_SECRET, scopes=BRIGHTSPACE_SCOPES)
    old = emulator.brightspace.issue_tokens(CLIENT_ID)
    redirect_uri = f"http://127.0.0.1:{free_port()}/cb"
    make_connection(
        "bs_again",
        "brightspace",
        emulator.url,
        {
            "extra__brightspace__refresh_token": old.refresh_token,  # legacy key name
            "access_token": old.access_token,
            "oauth_url": f"{emulator.url}/core/connect/token",
            "redirect_uri": redirect_uri,
            "scopes": "datahub:dataexports:*",
            "expiry_buffer_seconds": 120,
        },
        login=CLIENT_ID,
        password=CLIENT_SECRET,
    )
    monkeypatch.delenv("CANVAS_OAUTH_CLIENT_SECRET")  # the stored secret is used

    assert main(["authorize", "bs_again", "--timeout", "20"]) == 0, capsys.readouterr().err

    extra = stored_extra("bs_again")
    assert extra["expiry_buffer_seconds"] == 120 and extra["redirect_uri"] == redirect_uri
    assert "extra__brightspace__refresh_token" not in extra
    assert extra["refresh_token"] not in (None, old.refresh_token)
    assert BrightspaceHook("bs_again").whoami()


# The installed console script ---------------------------------------------------------------------


def test_console_script_authorize_with_a_pasted_url(emulator, cli_connections):
    """``canvas-oauth`` as installed, in its own process: prompt, paste, connection saved."""
    emulator.canvas.register_client(CLIENT_ID, CLIENT_SECRET, scopes=CANVAS_SCOPES)
    script = Path(sys.executable).with_name("canvas-oauth")
    cli_connections.append("canvas_script")
    args = authorize_args(emulator, "canvas", "canvas_script", "https://example.com/cb", CANVAS_SCOPES)
    process = subprocess.Popen(
        [str(script), *args, "--no-browser"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={
            **os.environ,
            "CANVAS_OAUTH_CLIENT_SECRET": CLIENT_SECRET,
            # This process read its config before `airflow db migrate` wrote a key to airflow.cfg.
            "AIRFLOW__CORE__FERNET_KEY": conf.get("core", "fernet_key", fallback=""),
        },
    )
    assert process.stdout is not None and process.stdin is not None
    url = next(line.strip() for line in process.stdout if line.strip().startswith("http"))
    location = requests.get(url, allow_redirects=False, timeout=10).headers["Location"]
    out, err = process.communicate(location + "\n", timeout=60)

    assert process.returncode == 0, err
    assert "now holds tokens" in out
    assert_no_secret_shown(out + err, "canvas_script")
    assert json.loads(Connection.get_connection_from_secrets("canvas_script").extra)["access_token"]


def test_oauth_session_builds_the_url_but_never_sends_a_request(emulator, browser, cli_connections, mocker):
    from requests_oauthlib import OAuth2Session

    emulator.canvas.register_client(CLIENT_ID, CLIENT_SECRET, scopes=CANVAS_SCOPES)
    sent = mocker.spy(OAuth2Session, "request")

    assert run_authorize(emulator, "canvas", "canvas_spy", CANVAS_SCOPES, cli_connections) == 0
    assert sent.call_count == 0
