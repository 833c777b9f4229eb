"""A mistyped connection is refused when the hook first reads it, before any request, saying what to type."""

from __future__ import annotations

import pytest

from airflow_provider_canvas.brightspace.hooks.brightspace import BrightspaceHook
from airflow_provider_canvas.canvas.hooks.canvas import CanvasHook
from airflow_provider_canvas.common import airflow_access as metadata
from airflow_provider_canvas.exceptions import LmsConfigurationError

HOOKS = {"canvas": CanvasHook, "brightspace": BrightspaceHook}


@pytest.mark.parametrize(
    ("platform", "field", "value", "says"),
    [
        ("canvas", "host", "http://canvas.example.edu", "type 'https://canvas.example.edu'"),
        ("brightspace", "host", "http://d2l.example.edu", "type 'https://d2l.example.edu'"),
        ("canvas", "scopes", "url:GET|/api/v1/accounts/:id,url:GET|/api/v1/accounts", "no commas"),
        ("brightspace", "scopes", "datahub:dataexports:*, datasets:bds:read", "no commas"),
        ("brightspace", "scopes", "datahub", "group:resource:action"),
        ("brightspace", "oauth_url", "http://auth.example.edu/core/connect/token", "must use https"),
        ("brightspace", "oauth_url", "auth.example.edu/core/connect/token", "must be a URL with its scheme"),
    ],
)
def test_a_mistyped_connection_is_refused_before_any_request(
    emulator, lms_connection, make_connection, platform, field, value, says
):
    conn_id = lms_connection(platform)
    conn = metadata.get_connection(conn_id)
    extra = dict(conn.extra_dejson)
    host = emulator.url
    if field == "host":
        host = value
    else:
        extra[field] = value
    make_connection(conn_id, platform, host, extra, login=conn.login, password=conn.password)

    with pytest.raises(LmsConfigurationError, match=says) as refused:
        HOOKS[platform](conn_id).keep_alive()
    assert f"connection {conn_id!r}" in str(refused.value)
    assert emulator.api_requests == [] and emulator.token_requests == []


@pytest.mark.parametrize("platform", ["canvas", "brightspace"])
def test_a_url_requests_cannot_use_fails_at_once_and_spends_no_token(
    emulator, lms_connection, make_connection, platform
):
    conn_id = lms_connection(platform)
    conn = metadata.get_connection(conn_id)
    extra = {**conn.extra_dejson, "oauth_url": "https://bad host/core/connect/token"}
    make_connection(conn_id, platform, "https://bad host", extra, login=conn.login, password=conn.password)

    with pytest.raises(LmsConfigurationError) as refused:
        HOOKS[platform](conn_id, backoff_seconds=0).keep_alive()  # the expired token needs a refresh
    message = str(refused.value)
    assert "nothing was sent" in message and "no token was spent" in message
    assert "may have been used" not in message
    assert emulator.token_requests == []
