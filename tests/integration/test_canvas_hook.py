"""CanvasHook's account and SSO calls over real HTTP against the emulator: paging, throttling, bad input."""

from __future__ import annotations

import re
import time
import tracemalloc

import pytest
from lms_fixtures import CLIENT_SECRET

from airflow_provider_canvas.canvas.hooks.canvas import (
    SCOPE_GET_ACCOUNT,
    SCOPE_GET_SSO_SETTINGS,
    SCOPE_PUT_SSO_SETTINGS,
    CanvasApiRules,
    CanvasHook,
)
from airflow_provider_canvas.exceptions import (
    LmsConfigurationError,
    LmsNotFoundError,
    LmsPermissionError,
)

FAST = {"backoff_seconds": 0.01, "max_backoff_seconds": 0.05}
SUB_ACCOUNTS_PATH = "/api/v1/accounts/1/sub_accounts"


def _page_requests(emulator, path: str) -> list:
    return [r for r in emulator.api_requests if r.method == "GET" and r.path == path]


def _no_rate_limit(emulator) -> None:
    # The leaky bucket is not what these tests are about; pacing would only make them slow.
    emulator.canvas.bucket_drain_per_second = 1_000_000.0


def test_10000_account_tree_clamped_to_50_without_rel_last_each_account_once(emulator, lms_connection):
    conn_id = lms_connection("canvas", expired=False)
    emulator.canvas.generate_account_tree(10_000, root_id=1, fanout=10)
    emulator.canvas.per_page_clamp = 50
    emulator.canvas.include_last_link = False
    _no_rate_limit(emulator)
    hook = CanvasHook(conn_id)
    next(iter(hook.list_sub_accounts(1)))  # warms the emulator's tree cache outside the measurement
    emulator.reset_records()

    seen = bytearray(10_001)  # a byte per id: checks "exactly once" without a set that grows
    duplicates = count = 0
    started = time.perf_counter()
    tracemalloc.start()
    for account in hook.list_sub_accounts(1):
        duplicates += seen[account["id"]]
        seen[account["id"]] = 1
        count += 1
    _, streaming_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    elapsed = time.perf_counter() - started
    pages = _page_requests(emulator, SUB_ACCOUNTS_PATH)
    # The yardstick: the same accounts held in memory at once.
    tracemalloc.start()
    held = list(hook.list_sub_accounts(1))
    _, held_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()

    assert count == 9_999  # the root is not its own sub-account
    assert duplicates == 0
    assert sum(seen) == 9_999 and not seen[1]
    assert len(pages) == 200  # 9,999 / 50, rounded up: per_page=100 was clamped and that is fine
    assert all(r.status == 200 for r in pages)
    assert len(held) == 9_999
    # One page at a time (the peak also counts the in-process emulator's own work).
    assert streaming_peak < held_peak / 10, (streaming_peak, held_peak)
    print(
        f"\n10,000-account tree: {count} sub-accounts, {len(pages)} pages, {elapsed:.2f}s, "
        f"tracemalloc peak {streaming_peak / 1e6:.2f} MB streaming vs {held_peak / 1e6:.2f} MB held"
    )


def test_throttling_403_and_429_mid_listing_is_waited_out(emulator, lms_connection):
    conn_id = lms_connection("canvas", expired=False)
    emulator.canvas.generate_account_tree(500, root_id=1)
    emulator.canvas.per_page_clamp = 50
    _no_rate_limit(emulator)
    hook = CanvasHook(conn_id, **FAST)

    ids = []
    for account in hook.list_sub_accounts(1):
        ids.append(account["id"])
        if len(ids) == 100:
            emulator.throttle_next("canvas", 2, status=403)  # documented: 403 "Rate Limit Exceeded"
        if len(ids) == 300:
            emulator.throttle_next("canvas", 2, status=429, retry_after=0)  # hosted Canvas since 2025

    statuses = [r.status for r in _page_requests(emulator, SUB_ACCOUNTS_PATH)]
    assert sorted(ids) == list(range(2, 501))
    assert len(ids) == len(set(ids))
    assert statuses.count(403) == 2
    assert statuses.count(429) == 2
    assert statuses.count(200) == 10


def test_leaky_bucket_403_is_throttling_not_a_permission_error(emulator, lms_connection):
    conn_id = lms_connection("canvas", expired=False)
    emulator.canvas.generate_account_tree(200, root_id=1)
    emulator.canvas.per_page_clamp = 10
    # A tiny bucket that drains fast: some pages are refused with 403 "Rate Limit Exceeded".
    emulator.canvas.bucket_capacity = 6.0
    emulator.canvas.bucket_drain_per_second = 200.0
    hook = CanvasHook(conn_id, **FAST)
    hook.api_rules = CanvasApiRules(rate_limit_floor=0.0)  # no pacing, so the bucket really overflows

    ids = [account["id"] for account in hook.list_sub_accounts(1)]

    statuses = [r.status for r in _page_requests(emulator, SUB_ACCOUNTS_PATH)]
    assert sorted(ids) == list(range(2, 201))
    assert 403 in statuses


def test_get_account_by_id_and_sis_id_and_list_administered(emulator, lms_connection):
    conn_id = lms_connection("canvas", expired=False)
    emulator.canvas.add_account(1, "Root", sis_account_id="ROOT 1")
    emulator.canvas.add_account(2, "Engineering", parent_account_id=1)
    emulator.canvas.add_account(10, "Second root")
    hook = CanvasHook(conn_id)

    assert hook.get_account(1)["name"] == "Root"
    assert hook.get_account("sis_account_id:ROOT 1")["id"] == 1  # escaped in the path
    assert hook.get_account("2")["parent_account_id"] == 1
    assert [a["id"] for a in hook.list_accounts()] == [1, 10]
    assert [a["id"] for a in hook.list_sub_accounts(1, recursive=False)] == [2]


def test_unknown_account_is_not_found(emulator, lms_connection):
    conn_id = lms_connection("canvas", expired=False)
    emulator.canvas.add_account(1, "Root")

    with pytest.raises(LmsNotFoundError) as raised:
        CanvasHook(conn_id).get_account(999)

    assert raised.value.status == 404
    assert "/api/v1/accounts/999" in str(raised.value)


def test_sso_settings_put_sends_only_given_keys_and_empty_unsets(emulator, lms_connection):
    conn_id = lms_connection("canvas", expired=False)
    emulator.canvas.add_account(1, "Root")
    emulator.canvas.set_sso_settings(
        1, login_handle_name="Uniqname", auth_discovery_url="https://prod.example.edu/d"
    )
    hook = CanvasHook(conn_id)

    after = hook.update_sso_settings(
        1, {"auth_discovery_url": "https://test.example.edu/d", "login_handle_name": ""}
    )

    assert after["auth_discovery_url"] == "https://test.example.edu/d"
    assert not after["login_handle_name"]
    assert hook.get_sso_settings(1) == after
    (write,) = emulator.canvas.sso_writes
    assert write.changes == {"auth_discovery_url": "https://test.example.edu/d", "login_handle_name": None}


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"auth_discovery_uri": "https://x.edu"}, "unknown SSO setting(s) ['auth_discovery_uri']"),
        ({"auth_discovery_url": "login.example.edu"}, "absolute http(s) URL"),
        ({"change_password_url": "ftp://x.edu/pw"}, "absolute http(s) URL"),
        ({"unknown_user_url": "javascript:alert(1)"}, "absolute http(s) URL"),
    ],
)
def test_bad_sso_settings_are_refused_before_any_request(emulator, lms_connection, settings, message):
    conn_id = lms_connection("canvas", expired=False)

    with pytest.raises(LmsConfigurationError, match=re.escape(message)):
        CanvasHook(conn_id).update_sso_settings(1, settings)

    assert emulator.api_requests == []


@pytest.mark.parametrize("account_id", ["root", "1; DROP", "", 0, -3, True, "sis_account_id:", 1.5])
def test_bad_account_ids_are_refused_before_any_request(emulator, lms_connection, account_id):
    conn_id = lms_connection("canvas", expired=False)

    with pytest.raises(LmsConfigurationError, match="account id must be"):
        CanvasHook(conn_id).get_account(account_id)

    assert emulator.api_requests == []


def test_connection_of_the_wrong_type_is_refused(emulator, make_connection):
    conn_id = make_connection("not_canvas", "http", emulator.url, {}, login="a", password="b")

    with pytest.raises(LmsConfigurationError, match=r"has type .http.*needs a connection of type .canvas."):
        CanvasHook(conn_id).get_account(1)

    assert emulator.api_requests == []


def test_missing_put_scope_names_the_scope(emulator, make_connection):
    emulator.canvas.register_client("key", CLIENT_SECRET, scopes=[SCOPE_GET_ACCOUNT, SCOPE_GET_SSO_SETTINGS])
    issued = emulator.canvas.issue_tokens("key")
    emulator.canvas.add_account(1, "Root")
    conn_id = make_connection(
        "canvas_no_put",
        "canvas",
        emulator.url,
        emulator.connection_extra("canvas", issued),
        login="key",
        password=CLIENT_SECRET,
    )
    hook = CanvasHook(conn_id)
    assert hook.get_sso_settings(1)  # the granted scopes work

    with pytest.raises(LmsPermissionError) as raised:
        hook.update_sso_settings(1, {"auth_discovery_url": "https://test.example.edu/d"})

    assert raised.value.required_scope == SCOPE_PUT_SSO_SETTINGS
    assert f"the developer key lacks scope {SCOPE_PUT_SSO_SETTINGS}" in str(raised.value)
    assert emulator.canvas.sso_writes == []
