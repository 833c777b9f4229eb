"""``canvas-oauth check``: token, expiry and scopes from the stored access token, never a refresh."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from lms_fixtures import CLIENT_ID, CLIENT_SECRET, stored_extra

from airflow_provider_canvas.brightspace.hooks.brightspace import BrightspaceHook
from airflow_provider_canvas.canvas.hooks.canvas import (
    SCOPE_GET_ACCOUNT,
    SCOPE_GET_SSO_SETTINGS,
    SCOPE_LIST_SUB_ACCOUNTS,
    SCOPE_PUT_SSO_SETTINGS,
)
from airflow_provider_canvas.cli.main import main

DAGS = Path(__file__).parents[2] / "dags"
#: The DAGs whose scopes DAG_SCOPES are: the other example DAGs need scopes this key does not hold.
ACCOUNT_DAGS = ("canvas_account_inventory.py", "canvas_sso_settings_restore.py")
DAG_SCOPES = [SCOPE_GET_ACCOUNT, SCOPE_LIST_SUB_ACCOUNTS, SCOPE_GET_SSO_SETTINGS, SCOPE_PUT_SSO_SETTINGS]


def canvas_connection(emulator, make_connection, key_scopes: list[str], conn_id: str = "canvas_check") -> str:
    """A connection as ``authorize`` leaves it: tokens, and the scopes it asked for."""
    emulator.canvas.register_client(CLIENT_ID, CLIENT_SECRET, scopes=key_scopes)
    emulator.canvas.add_account(1, "Root")
    issued = emulator.canvas.issue_tokens(CLIENT_ID)
    extra = {**emulator.connection_extra("canvas", issued), "scopes": " ".join(key_scopes)}
    return make_connection(conn_id, "canvas", emulator.url, extra, login=CLIENT_ID, password=CLIENT_SECRET)


@pytest.fixture(scope="module")
def account_dags(tmp_path_factory):
    folder = tmp_path_factory.mktemp("account_dags")
    for name in ACCOUNT_DAGS:
        shutil.copy(DAGS / name, folder)
    return folder


def report(capsys, *args: str) -> tuple[int, dict[str, list[str]]]:
    rc = main(["check", *args])
    out = capsys.readouterr().out
    lines: dict[str, list[str]] = {}
    for line in out.splitlines():
        label, status, text = line.split(maxsplit=2)
        lines.setdefault(label, []).append(f"{status} {text}")
    return rc, lines


def test_check_reports_token_expiry_and_each_scope_with_no_token_request(
    account_dags, emulator, make_connection, capsys
):
    conn_id = canvas_connection(emulator, make_connection, DAG_SCOPES)

    rc, lines = report(capsys, conn_id, "--dags-folder", str(account_dags))

    assert rc == 0
    assert lines["token"] == [lines["token"][0]] and lines["token"][0].startswith("ok Canvas LMS accepts")
    assert lines["expires"][0].startswith("ok ") and "(in 59 minutes" in lines["expires"][0]
    assert sorted(lines["scope"]) == sorted(
        [
            f"ok {SCOPE_GET_SSO_SETTINGS}: granted (probed)",
            f"ok {SCOPE_LIST_SUB_ACCOUNTS}: granted (probed)",
            f"ok {SCOPE_GET_ACCOUNT}: granted (probed)",
            f"ok {SCOPE_PUT_SSO_SETTINGS}: granted at authorization (recorded; not probed)",
        ]
    )
    assert emulator.token_requests == []  # nothing refreshed
    assert {r.method for r in emulator.api_requests} == {"GET"}  # a check never writes
    extra = stored_extra(conn_id)
    for secret in (CLIENT_SECRET, extra["access_token"], extra["refresh_token"]):
        assert secret not in str(lines)


def test_check_names_a_missing_scope_and_where_to_add_it(account_dags, emulator, make_connection, capsys):
    without_sub_accounts = [s for s in DAG_SCOPES if s != SCOPE_LIST_SUB_ACCOUNTS]
    conn_id = canvas_connection(emulator, make_connection, without_sub_accounts)

    rc, lines = report(capsys, conn_id, "--dags-folder", str(account_dags))

    assert rc == 1
    (failed,) = [line for line in lines["scope"] if line.startswith("FAIL")]
    assert failed.startswith(f"FAIL {SCOPE_LIST_SUB_ACCOUNTS}: NOT granted")
    assert f"add it to developer key {CLIENT_ID}" in failed and f"canvas-oauth authorize {conn_id}" in failed


def test_check_all_counts_every_operators_scopes(emulator, make_connection, capsys):
    conn_id = canvas_connection(emulator, make_connection, DAG_SCOPES)

    rc, lines = report(capsys, conn_id, "--all")

    assert rc == 1
    # The account and SSO operators' 5 scopes, and the SIS import and account report operators' 5.
    assert len(lines["scope"]) == 10
    failed = [line for line in lines["scope"] if line.startswith("FAIL")]
    assert any(line.startswith("FAIL url:GET|/api/v1/accounts: NOT granted") for line in failed)
    # Exactly the scopes the key lacks fail; the 4 it holds are granted.
    assert len(failed) == 10 - len(DAG_SCOPES)
    assert all(not any(f" {scope}:" in f" {line[5:]}" for scope in DAG_SCOPES) for line in failed)


def test_check_of_a_token_canvas_no_longer_accepts(emulator, make_connection, capsys):
    conn_id = canvas_connection(emulator, make_connection, DAG_SCOPES)
    emulator.expire_access_tokens("canvas")  # e.g. replaced by another worker's refresh

    rc, lines = report(capsys, conn_id, "--scope", SCOPE_GET_ACCOUNT)

    assert rc == 1
    assert lines["token"][0].startswith(
        "FAIL Canvas LMS refused the stored access token (Expired access token.)"
    )
    assert "check never refreshes" in lines["token"][0]
    assert emulator.token_requests == []


def test_expired_brightspace_token_is_reported_and_the_refresh_token_stays_unspent(
    emulator, lms_connection, capsys
):
    conn_id = lms_connection("brightspace", expired=True, scopes="datahub:dataexports:*")

    rc, lines = report(capsys, conn_id, "--dags-folder", str(DAGS))

    assert rc == 1
    assert lines["token"][0].startswith("FAIL the stored access token expired at")
    assert lines["expires"][0].startswith("FAIL") and lines["expires"][0].endswith("expired")
    # The example pull lists through the current datasets API, which datahub:dataexports:* lacks.
    assert sorted(lines["scope"]) == [
        "FAIL datasets:bds:read: NOT granted; add it to the app's Scope, then authorize again with it",
        "ok datahub:dataexports:download: granted at authorization (recorded; not probed)",
        "ok datahub:dataexports:read: granted at authorization (recorded; not probed)",
    ]
    assert emulator.token_requests == [] and emulator.api_requests == []
    # The single-use refresh token was not spent: a task refreshes with it.
    assert BrightspaceHook(conn_id).whoami()
    assert emulator.refresh_count("brightspace") == 1 and emulator.consumed_presentations("brightspace") == 0


def test_brightspace_scopes_are_checked_against_the_granted_ones(emulator, lms_connection, capsys):
    conn_id = lms_connection("brightspace", expired=False, scopes="datahub:dataexports:*")

    rc, lines = report(
        capsys, conn_id, "--scope", "datahub:dataexports:read", "--scope", "reporting:job:create"
    )

    assert rc == 1
    assert lines["token"][0].startswith(
        "ok D2L Brightspace accepts the stored access token (user 'demo.admin'"
    )
    assert lines["scope"] == [
        "ok datahub:dataexports:read: granted at authorization (recorded; not probed)",
        "FAIL reporting:job:create: NOT granted; add it to the app's Scope, then authorize again with it",
    ]
    assert emulator.token_requests == []


def test_check_of_an_unknown_connection_says_how_to_create_it(capsys):
    assert main(["check", "no_such_connection"]) == 2
    assert "canvas-oauth authorize no_such_connection" in capsys.readouterr().err
