"""The token endpoint client, used through the hooks: client auth per platform, codes sent once."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qs

import pytest
import requests
from airflow.models import Connection

from airflow_provider_canvas.brightspace.hooks.brightspace import BrightspaceHook
from airflow_provider_canvas.canvas.hooks.canvas import CanvasHook
from airflow_provider_canvas.exceptions import LmsAuthError, LmsUnavailableError

TOKENS = {"access_token": "at-1", "token_type": "Bearer", "refresh_token": "rt-1", "expires_in": 3600}


def hook_with(cls: type, **extra: Any) -> Any:
    hook = cls("c", max_retries=2, backoff_seconds=0.0, max_backoff_seconds=0.0)
    hook.connection = Connection(
        conn_id="c",
        conn_type=cls.conn_type,
        host="https://lms.example.edu",
        login="client-1",
        password="secret-1",
        extra=json.dumps(extra),
    )
    return hook


def answer(status: int, body: dict[str, Any]) -> requests.Response:
    response = requests.Response()
    response.status_code = status
    response._content = json.dumps(body).encode()
    response.headers["Content-Type"] = "application/json"
    return response


def test_canvas_sends_the_code_with_client_credentials_in_the_body(mocker):
    hook = hook_with(CanvasHook)
    post = mocker.patch.object(hook.session, "post", return_value=answer(200, {**TOKENS, "user": {"id": 7}}))

    tokens, details = hook.exchange_authorization_code(
        "code-1", redirect_uri="https://example.com/cb", replace_tokens=True
    )

    (url,), kwargs = post.call_args
    assert url == "https://lms.example.edu/login/oauth2/token" and kwargs["auth"] is None
    assert parse_qs(kwargs["data"]) == {
        "grant_type": ["authorization_code"],
        "code": ["code-1"],
        "redirect_uri": ["https://example.com/cb"],
        "client_id": ["client-1"],
        "client_secret": ["secret-1"],
        "replace_tokens": ["1"],
    }
    assert (tokens.access_token, tokens.refresh_token) == ("at-1", "rt-1")
    assert details["user"] == {"id": 7} and not any("token" in key for key in details)


def test_brightspace_authenticates_with_basic_auth(mocker):
    hook = hook_with(BrightspaceHook, token_url="https://auth.example.edu/core/connect/token")
    post = mocker.patch.object(hook.session, "post", return_value=answer(200, {**TOKENS, "scope": "a:b:c"}))

    _, details = hook.exchange_authorization_code("code-1", redirect_uri="https://example.com/cb")

    (url,), kwargs = post.call_args
    assert url == "https://auth.example.edu/core/connect/token"
    assert (kwargs["auth"].username, kwargs["auth"].password) == ("client-1", "secret-1")
    assert parse_qs(kwargs["data"]) == {
        "grant_type": ["authorization_code"],
        "code": ["code-1"],
        "redirect_uri": ["https://example.com/cb"],
    }
    assert details["scope"] == ["a:b:c"]


@pytest.mark.parametrize("cls", [CanvasHook, BrightspaceHook])
def test_a_code_is_never_sent_twice(cls, mocker):
    """Also for Canvas, whose refreshes are retried: a code dies when the server sees it."""
    hook = hook_with(cls, token_url="https://auth.example.edu/core/connect/token")
    post = mocker.patch.object(hook.session, "post", side_effect=requests.ReadTimeout())

    with pytest.raises(LmsUnavailableError, match="authorization code may have been used"):
        hook.exchange_authorization_code("code-1", redirect_uri="https://example.com/cb")
    assert post.call_count == 1

    post.side_effect = None
    post.return_value = answer(502, {"error": "bad gateway"})
    with pytest.raises(LmsUnavailableError):
        hook.exchange_authorization_code("code-2", redirect_uri="https://example.com/cb")
    assert post.call_count == 2


def test_a_refused_code_says_to_authorize_again(mocker):
    hook = hook_with(CanvasHook)
    mocker.patch.object(
        hook.session, "post", return_value=answer(400, {"error": "invalid_grant", "error_description": "x"})
    )
    with pytest.raises(LmsAuthError) as raised:
        hook.exchange_authorization_code("code-1", redirect_uri="https://example.com/cb")
    assert raised.value.error == "invalid_grant"
    assert "refused the authorization code for connection 'c'" in str(raised.value)
    assert "run the authorization again" in str(raised.value)


def test_the_hook_takes_its_conn_id_as_airflow_passes_it():
    # Connection.get_hook() builds hooks as Hook(<conn_name_attr>=conn_id), e.g. for the Test button.
    assert CanvasHook(canvas_conn_id="a").conn_id == "a"
    assert BrightspaceHook(brightspace_conn_id="b").conn_id == "b"
    assert CanvasHook().conn_id == "canvas_default"
    with pytest.raises(TypeError, match="unexpected arguments"):
        CanvasHook(brightspace_conn_id="b")


def test_the_client_keeps_its_secret_out_of_repr_and_takes_the_hooks_retry_rules():
    hook = hook_with(CanvasHook)
    client = hook.oauth_client

    assert "secret-1" not in repr(client)
    assert client.settings.token_url == "https://lms.example.edu/login/oauth2/token"
    assert (client.settings.client_auth, client.retry.max_retries, client.session) == (
        "body",
        2,
        hook.session,
    )
