"""The connection form's Test button on both hooks: it runs on a copy and never refreshes."""

from __future__ import annotations

import os
import uuid

import pytest
from airflow.models import Connection
from lms_fixtures import stored_extra


def test_button(conn_id: str, **changes: object) -> tuple[bool, str]:
    """What the API's test endpoint does: a copy under a random id, defined by an env variable."""
    stored = Connection.get_connection_from_secrets(conn_id)
    copy_id = f"test_{uuid.uuid4().hex[:8]}"
    fields = {
        "conn_type": stored.conn_type,
        "host": stored.host,
        "login": stored.login,
        "password": stored.password,
        "extra": stored.extra,
        **changes,
    }
    copy = Connection(conn_id=copy_id, **fields)
    env_name = f"AIRFLOW_CONN_{copy_id.upper()}"
    os.environ[env_name] = copy.get_uri()
    try:
        return copy.test_connection()
    finally:
        os.environ.pop(env_name)


test_button.__test__ = False  # a helper, not a test


@pytest.mark.parametrize("platform", ["canvas", "brightspace"])
def test_live_token_passes(platform, emulator, lms_connection):
    conn_id = lms_connection(platform, expired=False)

    ok, message = test_button(conn_id)

    assert ok, message
    assert "accepts the stored access token" in message and "valid until" in message
    assert emulator.token_requests == []


@pytest.mark.parametrize("platform", ["canvas", "brightspace"])
def test_expired_token_fails_without_spending_the_refresh_token(platform, emulator, lms_connection):
    conn_id = lms_connection(platform, expired=True)
    before = stored_extra(conn_id)

    ok, message = test_button(conn_id)

    assert not ok
    assert message.startswith("The stored access token expired at")
    assert "never refreshes" in message and "lms_token_keepalive" in message
    assert emulator.token_requests == []
    assert stored_extra(conn_id) == before
    # The real connection still refreshes with its (for Brightspace single-use) refresh token.
    from airflow_provider_canvas.cli import HOOK_CLASSES

    assert HOOK_CLASSES[platform](conn_id).keep_alive()["refreshed"] is True
    assert emulator.consumed_presentations(platform) == 0


@pytest.mark.parametrize("platform", ["canvas", "brightspace"])
def test_refused_token_fails_and_says_so(platform, emulator, lms_connection):
    conn_id = lms_connection(platform, expired=False)
    emulator.expire_access_tokens(platform)  # the stored expiry still lies in the future

    ok, message = test_button(conn_id)

    assert not ok
    assert "refused the stored access token" in message
    assert emulator.token_requests == []


def test_a_host_without_scheme_is_named(emulator, lms_connection):
    conn_id = lms_connection("canvas", expired=False)

    ok, message = test_button(conn_id, host="myschool.instructure.com")

    assert not ok
    assert message.startswith("The host of this connection must be a URL with its scheme, e.g. https:")
    assert emulator.api_requests == []
