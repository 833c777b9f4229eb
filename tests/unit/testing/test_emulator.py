"""The Canvas/Brightspace emulator over real HTTP: the unpleasant semantics clients must survive."""

from __future__ import annotations

import io
import json
import os
import signal
import stat
import subprocess
import sys
import threading
import time
import zipfile
from datetime import timedelta
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from airflow_provider_canvas.testing import LmsEmulator
from airflow_provider_canvas.testing.primitives import utcnow

ACCOUNT_SCOPE = "url:GET|/api/v1/accounts/:id"
SUB_ACCOUNTS_SCOPE = "url:GET|/api/v1/accounts/:account_id/sub_accounts"
REDIRECT = "https://airflow.example/oauth/callback"
LP = "/d2l/api/lp/1.47"


@pytest.fixture
def emu():
    with LmsEmulator() as emulator:
        emulator.canvas.register_client("10001", "canvas-secret")
        emulator.canvas.generate_account_tree(31, fanout=5)
        emulator.brightspace.register_client(
            "bs-app", "bs-secret", ["datahub:dataexports:*", "reporting:*:*"]
        )
        yield emulator


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def canvas_refresh(emu, refresh_token: str, secret: str = "canvas-secret") -> requests.Response:
    data = {"grant_type": "refresh_token", "client_id": "10001", "client_secret": secret}
    return requests.post(f"{emu.url}/login/oauth2/token", data={**data, "refresh_token": refresh_token})


def bs_refresh(emu, refresh_token: str, scope: str | None = None) -> requests.Response:
    data = {"grant_type": "refresh_token", "refresh_token": refresh_token}
    if scope:
        data["scope"] = scope
    return requests.post(f"{emu.url}/core/connect/token", auth=("bs-app", "bs-secret"), data=data)


def error_message(response: requests.Response) -> str:
    return response.json()["errors"][0]["message"]


# ===================================================================== Canvas tokens
def test_canvas_refresh_kills_previous_access_token_and_returns_no_refresh_token(emu):
    tokens = emu.canvas.issue_tokens("10001")
    assert "access_token" not in repr(tokens)  # tokens never leak through a repr
    assert (
        requests.get(f"{emu.url}/api/v1/accounts/1", headers=bearer(tokens.access_token)).status_code == 200
    )

    refreshed = canvas_refresh(emu, tokens.refresh_token)

    assert refreshed.status_code == 200
    body = refreshed.json()
    assert "refresh_token" not in body
    assert body["token_type"] == "Bearer" and body["expires_in"] == 3600 and body["user"]["id"] == 1
    old = requests.get(f"{emu.url}/api/v1/accounts/1", headers=bearer(tokens.access_token))
    assert old.status_code == 401
    assert old.headers["WWW-Authenticate"] == 'Bearer realm="canvas-lms"'
    assert error_message(old) == "Invalid access token."
    new = requests.get(f"{emu.url}/api/v1/accounts/1", headers=bearer(body["access_token"]))
    assert new.status_code == 200
    # The refresh token does not rotate: it keeps working.
    assert canvas_refresh(emu, tokens.refresh_token).status_code == 200
    assert emu.refresh_count("canvas") == 2
    assert [(r.grant_type, r.status, r.refresh_token_state) for r in emu.token_requests] == [
        ("refresh_token", 200, "live"),
        ("refresh_token", 200, "live"),
    ]


def test_canvas_parallel_refreshers_invalidate_each_other(emu):
    tokens = emu.canvas.issue_tokens("10001")
    emu.canvas.bucket_capacity = 10_000  # eight refreshes at 200 units each would overflow 700
    results: list[str] = []

    def refresh() -> None:
        results.append(canvas_refresh(emu, tokens.refresh_token).json()["access_token"])

    threads = [threading.Thread(target=refresh) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    working = [t for t in results if requests.get(f"{emu.url}/api/v1/accounts/1", headers=bearer(t)).ok]
    assert len(results) == 8 and len(working) == 1
    assert emu.refresh_count("canvas") == 8


def test_canvas_token_endpoint_errors(emu):
    tokens = emu.canvas.issue_tokens("10001")
    bad_secret = canvas_refresh(emu, tokens.refresh_token, secret="wrong")
    assert bad_secret.status_code == 401 and bad_secret.json()["error"] == "invalid_client"
    unknown = canvas_refresh(emu, "1~nope")
    assert unknown.status_code == 400
    assert unknown.json() == {"error": "invalid_grant", "error_description": "refresh_token not found"}
    basic = requests.post(
        f"{emu.url}/login/oauth2/token",
        auth=("10001", "canvas-secret"),
        data={"grant_type": "refresh_token", "refresh_token": tokens.refresh_token},
    )
    assert basic.status_code == 200
    assert [(r.status, r.error, r.refresh_token_state) for r in emu.token_requests] == [
        (401, "invalid_client", None),
        (400, "invalid_grant", "unknown"),
        (200, None, "live"),
    ]


def test_canvas_401_shapes(emu):
    emu.canvas.register_client("20002", "s", scopes=[ACCOUNT_SCOPE, SUB_ACCOUNTS_SCOPE])
    scoped = emu.canvas.issue_tokens("20002", scopes=[ACCOUNT_SCOPE])
    no_scope = requests.get(f"{emu.url}/api/v1/accounts/1/sub_accounts", headers=bearer(scoped.access_token))
    assert no_scope.status_code == 401 and "WWW-Authenticate" not in no_scope.headers
    assert error_message(no_scope) == "Insufficient scopes on access token."
    assert requests.get(f"{emu.url}/api/v1/accounts/1.json", headers=bearer(scoped.access_token)).ok
    missing = requests.get(f"{emu.url}/api/v1/accounts/999999", headers=bearer(scoped.access_token))
    assert missing.status_code == 404
    assert error_message(missing) == "The specified resource does not exist."

    tokens = emu.canvas.issue_tokens("10001")
    not_root = requests.get(f"{emu.url}/api/v1/accounts/2/sso_settings", headers=bearer(tokens.access_token))
    assert not_root.status_code == 401 and "WWW-Authenticate" not in not_root.headers
    assert not_root.json() == {
        "status": "unauthorized",
        "errors": [{"message": "user not authorized to perform that action"}],
    }

    emu.expire_access_tokens("canvas")
    expired = requests.get(f"{emu.url}/api/v1/accounts/1", headers=bearer(tokens.access_token))
    assert expired.status_code == 401 and expired.headers["WWW-Authenticate"] == 'Bearer realm="canvas-lms"'
    assert error_message(expired) == "Expired access token."

    fresh = canvas_refresh(emu, tokens.refresh_token).json()["access_token"]
    logout = requests.delete(f"{emu.url}/login/oauth2/token", headers=bearer(fresh))
    assert logout.status_code == 200
    revoked = requests.get(f"{emu.url}/api/v1/accounts/1", headers=bearer(fresh))
    assert revoked.status_code == 401 and "WWW-Authenticate" in revoked.headers
    assert error_message(revoked) == "Revoked access token."
    assert canvas_refresh(emu, tokens.refresh_token).json()["error"] == "invalid_grant"


def authorize(emu, path: str = "/login/oauth2/auth", **params: str) -> dict[str, list[str]]:
    query = {
        "client_id": "10001",
        "response_type": "code",
        "redirect_uri": REDIRECT,
        "state": "st4te",
        **params,
    }
    response = requests.get(f"{emu.url}{path}", params=query, allow_redirects=False)
    assert response.status_code == 302
    location = urlsplit(response.headers["Location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == REDIRECT
    return parse_qs(location.query)


def test_canvas_authorization_code_flow_and_redirect_errors(emu):
    emu.canvas.register_client("30003", "s", scopes=[ACCOUNT_SCOPE])
    emu.canvas.register_client("40004", "s", enabled=False)
    first = emu.canvas.issue_tokens("30003")

    granted = authorize(emu, client_id="30003", scope=ACCOUNT_SCOPE)
    assert granted["state"] == ["st4te"]
    exchange = {"grant_type": "authorization_code", "client_id": "30003", "client_secret": "s"}
    exchange |= {"redirect_uri": REDIRECT, "code": granted["code"][0], "replace_tokens": "1"}
    issued = requests.post(f"{emu.url}/login/oauth2/token", data=exchange)
    assert issued.status_code == 200 and issued.json()["refresh_token"]
    again = requests.post(f"{emu.url}/login/oauth2/token", data=exchange)
    assert again.status_code == 400 and again.json()["error"] == "invalid_grant"  # codes are single-use
    # replace_tokens=1 destroyed the user's earlier token for that key.
    assert error_message(
        requests.get(f"{emu.url}/api/v1/accounts/1", headers=bearer(first.access_token))
    ) == ("Revoked access token.")

    assert authorize(emu, response_type="token")["error"] == ["unsupported_response_type"]
    denied_scope = authorize(emu, client_id="30003", scope=f"{ACCOUNT_SCOPE} {SUB_ACCOUNTS_SCOPE}")
    assert denied_scope["error"] == ["invalid_scope"] and denied_scope["state"] == ["st4te"]
    disabled = authorize(emu, client_id="40004")
    assert disabled["error"] == ["unauthorized_client"]
    assert disabled["error_description"] == ["Client does not have access to the specified Canvas account"]
    emu.canvas.auth_decision = "deny"
    assert authorize(emu)["error"] == ["access_denied"]


# ===================================================================== Canvas pagination, SSO
def test_canvas_pagination_clamps_silently_omits_last_and_yields_10k_accounts_once(emu):
    emu.canvas.generate_account_tree(10_000, root_id=100_000, fanout=10)
    tokens = emu.canvas.issue_tokens("10001")
    session = requests.Session()
    session.headers.update(bearer(tokens.access_token))
    url = f"{emu.url}/api/v1/accounts/100000/sub_accounts?recursive=true&per_page=100"
    seen: list[int] = []
    pages = 0
    started = time.monotonic()
    while url:
        page = session.get(url)
        assert page.status_code == 200
        assert "last" not in page.links
        seen += [account["id"] for account in page.json()]
        url = page.links.get("next", {}).get("url")
        if url:
            assert url.startswith(emu.url) and "page=bookmark%3A" in url and "per_page=50" in url
        pages += 1
    assert time.monotonic() - started < 10
    assert pages == 200  # 9,999 descendants at the silently clamped 50 per page
    assert len(seen) == len(set(seen)) == 9_999
    assert set(seen) == set(range(100_001, 110_000))

    children = session.get(f"{emu.url}/api/v1/accounts/100000/sub_accounts")
    assert [a["id"] for a in children.json()] == list(range(100_001, 100_011))
    account = session.get(f"{emu.url}/api/v1/accounts/sis_account_id:A100005").json()
    assert account["parent_account_id"] == 100_000 and account["root_account_id"] == 100_000
    expected = {"id", "name", "uuid", "parent_account_id", "root_account_id", "workflow_state"}
    expected |= {"default_time_zone", "sis_account_id", "integration_id", "default_storage_quota_mb"}
    assert set(account) == expected

    emu.canvas.include_last_link = True
    roots = session.get(f"{emu.url}/api/v1/accounts?per_page=1")
    assert {"current", "next", "first", "last"} <= set(roots.links)


def test_canvas_huge_tree_generates_and_pages_quickly(emu):
    started = time.monotonic()
    emu.canvas.generate_account_tree(100_000, root_id=1_000_000)
    tokens = emu.canvas.issue_tokens("10001")
    session = requests.Session()
    session.headers.update(bearer(tokens.access_token))
    url = f"{emu.url}/api/v1/accounts/1000000/sub_accounts?recursive=true&per_page=50"
    for _ in range(20):
        url = session.get(url).links["next"]["url"]
    assert time.monotonic() - started < 5


def test_canvas_sso_settings_keep_omitted_unset_empty_and_record_writes(emu):
    tokens = emu.canvas.issue_tokens("10001")
    url = f"{emu.url}/api/v1/accounts/1/sso_settings"
    initial = requests.get(url, headers=bearer(tokens.access_token)).json()
    assert initial == {
        "sso_settings": {
            "login_handle_name": None,
            "change_password_url": None,
            "auth_discovery_url": None,
            "unknown_user_url": None,
        }
    }
    assert emu.canvas.sso_writes == []
    first = requests.put(
        url,
        headers=bearer(tokens.access_token),
        data={
            "sso_settings[auth_discovery_url]": "https://idp.test/d",
            "sso_settings[login_handle_name]": "NetID",
        },
    )
    assert first.json()["sso_settings"]["auth_discovery_url"] == "https://idp.test/d"
    second = requests.put(
        url, headers=bearer(tokens.access_token), data={"sso_settings[login_handle_name]": ""}
    )
    assert second.json()["sso_settings"] == {
        "login_handle_name": None,
        "change_password_url": None,
        "auth_discovery_url": "https://idp.test/d",
        "unknown_user_url": None,
    }
    assert [w.changes for w in emu.canvas.sso_writes] == [
        {"auth_discovery_url": "https://idp.test/d", "login_handle_name": "NetID"},
        {"login_handle_name": None},
    ]
    sub = requests.put(
        f"{emu.url}/api/v1/accounts/2/sso_settings",
        headers=bearer(tokens.access_token),
        data={"sso_settings[login_handle_name]": "x"},
    )
    assert sub.status_code == 401 and len(emu.canvas.sso_writes) == 2


# ===================================================================== throttling and faults
def test_canvas_leaky_bucket_throttles_with_403_then_429(emu):
    tokens = emu.canvas.issue_tokens("10001")
    emu.canvas.bucket_capacity = 3
    emu.canvas.bucket_drain_per_second = 0
    url = f"{emu.url}/api/v1/accounts/1"
    responses = [requests.get(url, headers=bearer(tokens.access_token)) for _ in range(4)]
    assert [r.status_code for r in responses] == [200, 200, 200, 403]
    assert [r.headers["X-Rate-Limit-Remaining"] for r in responses[:3]] == ["2.000", "1.000", "0.000"]
    assert all("X-Request-Cost" in r.headers for r in responses)
    assert responses[3].text == "Rate Limit Exceeded"
    emu.canvas.throttle_status = 429
    hosted = requests.get(url, headers=bearer(tokens.access_token))
    assert (
        hosted.status_code == 429 and hosted.text == "Rate Limit Exceeded" and "Retry-After" in hosted.headers
    )


def test_canvas_token_call_costs_200_units(emu):
    tokens = emu.canvas.issue_tokens("10001")
    emu.canvas.bucket_drain_per_second = 0
    access = canvas_refresh(emu, tokens.refresh_token).json()["access_token"]
    after = requests.get(f"{emu.url}/api/v1/accounts/1", headers=bearer(access))
    assert float(after.headers["X-Rate-Limit-Remaining"]) == 700 - 200 - 1


def test_forced_throttling_and_failures(emu):
    canvas = emu.canvas.issue_tokens("10001")
    bs = emu.brightspace.issue_tokens("bs-app")
    emu.throttle_next("canvas", 1)
    emu.throttle_next("brightspace", 2, retry_after=7)
    assert (
        requests.get(f"{emu.url}/api/v1/accounts/1", headers=bearer(canvas.access_token)).status_code == 403
    )
    whoami = f"{emu.url}{LP}/users/whoami"
    limited = requests.get(whoami, headers=bearer(bs.access_token))
    assert limited.status_code == 429 and limited.headers["Retry-After"] == "7"
    assert {"X-Rate-Limit-Remaining", "X-Rate-Limit-Reset", "X-Request-Cost"} <= set(limited.headers)
    assert requests.get(whoami, headers=bearer(bs.access_token)).status_code == 429
    assert requests.get(whoami, headers=bearer(bs.access_token)).status_code == 200

    emu.fail_next("canvas", 1, status=502)
    assert canvas_refresh(emu, canvas.refresh_token).status_code == 502
    assert canvas_refresh(emu, canvas.refresh_token).status_code == 200
    assert [(r.status, r.grant_type) for r in emu.token_requests] == [
        (502, "refresh_token"),
        (200, "refresh_token"),
    ]

    emu.fail_for(0.3, status=503)
    assert requests.get(whoami, headers=bearer(bs.access_token)).status_code == 503
    assert bs_refresh(emu, bs.refresh_token).status_code == 503
    time.sleep(0.35)
    assert requests.get(whoami, headers=bearer(bs.access_token)).status_code == 200
    statuses = [(r.platform, r.status, r.had_authorization) for r in emu.api_requests]
    assert statuses[0] == ("canvas", 403, True) and ("brightspace", 503, True) in statuses


def test_brightspace_rate_limit_429_with_headers(emu):
    tokens = emu.brightspace.issue_tokens("bs-app")
    emu.brightspace.rate_limit_capacity = 2
    whoami = f"{emu.url}{LP}/users/whoami"
    responses = [requests.get(whoami, headers=bearer(tokens.access_token)) for _ in range(3)]
    assert [r.status_code for r in responses] == [200, 200, 429]
    assert responses[0].headers["X-Rate-Limit-Remaining"] == "1"
    assert int(responses[2].headers["Retry-After"]) >= 1
    assert responses[0].json()["Identifier"] == "169"
    assert set(responses[0].json()) == {
        "Identifier",
        "FirstName",
        "LastName",
        "UniqueName",
        "ProfileIdentifier",
    }


# ===================================================================== Brightspace tokens
def test_brightspace_refresh_token_is_single_use_and_reuse_revokes_family(emu):
    tokens = emu.brightspace.issue_tokens("bs-app")
    first = bs_refresh(emu, tokens.refresh_token)
    assert first.status_code == 200
    body = first.json()
    assert body["refresh_token"] != tokens.refresh_token and body["token_type"] == "Bearer"
    assert body["scope"] == "datahub:dataexports:* reporting:*:*" and body["expires_in"] == 3600

    reuse = bs_refresh(emu, tokens.refresh_token)

    assert reuse.status_code == 400 and reuse.json()["error"] == "invalid_grant"
    assert emu.token_requests[-1].refresh_token_state == "consumed"
    assert emu.consumed_presentations("brightspace") == 1
    assert emu.refresh_count("brightspace") == 1
    # Strict mode: the whole family died, including the tokens the good refresh just produced.
    dead = requests.get(f"{emu.url}{LP}/users/whoami", headers=bearer(body["access_token"]))
    assert dead.status_code == 401 and dead.headers["WWW-Authenticate"] == 'Bearer error="invalid_token"'
    assert bs_refresh(emu, body["refresh_token"]).status_code == 400
    assert emu.token_requests[-1].refresh_token_state == "revoked"
    assert bs_refresh(emu, "rt.unknown").status_code == 400
    assert emu.token_requests[-1].refresh_token_state == "unknown"


def test_brightspace_lenient_reuse_keeps_family_and_scope_narrowing(emu):
    emu.brightspace.revoke_family_on_reuse = False
    tokens = emu.brightspace.issue_tokens("bs-app")
    rotated = bs_refresh(emu, tokens.refresh_token, scope="datahub:dataexports:*").json()
    assert rotated["scope"] == "datahub:dataexports:*"
    assert bs_refresh(emu, tokens.refresh_token).status_code == 400
    assert requests.get(f"{emu.url}{LP}/users/whoami", headers=bearer(rotated["access_token"])).ok
    assert bs_refresh(emu, rotated["refresh_token"]).status_code == 200
    emu.expire_access_tokens("brightspace")
    expired = requests.get(f"{emu.url}{LP}/users/whoami", headers=bearer(rotated["access_token"]))
    assert expired.status_code == 401 and 'error="invalid_token"' in expired.headers["WWW-Authenticate"]


def test_brightspace_authorization_code_and_scopes(emu):
    granted = authorize(emu, "/oauth2/auth", client_id="bs-app", scope="datahub:dataexports:read")
    issued = requests.post(
        f"{emu.url}/core/connect/token",
        auth=("bs-app", "bs-secret"),
        data={"grant_type": "authorization_code", "code": granted["code"][0], "redirect_uri": REDIRECT},
    )
    assert issued.status_code == 200 and issued.json()["refresh_token"].startswith("rt.")
    assert authorize(emu, "/oauth2/auth", client_id="bs-app", scope="core:*:*")["error"] == ["invalid_scope"]

    emu.brightspace.add_data_set("Users", ["UserId"], rows=[{"UserId": 1}])
    read_only = bearer(issued.json()["access_token"])
    listing = requests.get(f"{emu.url}{LP}/datasets/bds", headers=read_only)
    assert listing.status_code == 200
    extract = requests.get(listing.json()["Objects"][0]["Full"]["ExtractsLink"], headers=read_only)
    download = requests.get(extract.json()["Objects"][0]["DownloadLink"], headers=read_only)
    assert download.status_code == 403
    assert download.json() == {"error": "insufficient_scope", "scope": "datahub:dataexports:download"}


# ===================================================================== BDS
@pytest.fixture
def bds(emu):
    tokens = emu.brightspace.issue_tokens("bs-app")
    session = requests.Session()
    session.headers.update(bearer(tokens.access_token))
    return session


def extracts_of(emu, session, name: str) -> list[dict]:
    data_set = next(
        o for o in session.get(f"{emu.url}{LP}/datasets/bds").json()["Objects"] if o["Full"]["Name"] == name
    )
    return session.get(data_set["ExtractsLink"]).json()["Objects"]


def test_bds_download_redirects_to_other_host_without_authorization(emu, bds):
    rows = [{"UserId": 1, "UserName": "ada"}, {"UserId": 2, "UserName": "grace, hopper"}]
    emu.brightspace.add_data_set("Users", ["UserId", "UserName"], rows=rows)
    (extract,) = extracts_of(emu, bds, "Users")
    assert extract["BdsType"] == "Full" and extract["Version"] == "1.0"

    hop = bds.get(extract["DownloadLink"], allow_redirects=False)
    assert hop.status_code == 302 and hop.headers["Location"].startswith(emu.signed_url)
    assert urlsplit(hop.headers["Location"]).hostname != urlsplit(emu.url).hostname
    download = bds.get(extract["DownloadLink"])  # requests drops Authorization on the cross-host redirect

    assert download.status_code == 200 and len(download.content) == extract["DownloadSize"]
    archive = zipfile.ZipFile(io.BytesIO(download.content))
    assert archive.namelist() == ["Users.csv"]
    assert archive.read("Users.csv").decode() == 'UserId,UserName\r\n1,ada\r\n2,"grace, hopper"\r\n'
    assert [(d.data_set, d.had_authorization, d.status) for d in emu.brightspace.signed_downloads] == [
        ("Users", False, 200)
    ]
    leaked = requests.get(hop.headers["Location"], headers=bds.headers)
    assert leaked.status_code == 400 and emu.brightspace.signed_downloads[-1].had_authorization is True


def test_bds_generated_extract_size_range_and_truncation(emu, bds):
    emu.brightspace.add_data_set("Grades", ["GradeId", "Score", "IsDeleted"], rows_count=150_000)
    (extract,) = extracts_of(emu, bds, "Grades")
    full = bds.get(extract["DownloadLink"]).content
    assert len(full) == extract["DownloadSize"]
    archive = zipfile.ZipFile(io.BytesIO(full))
    assert archive.testzip() is None  # CRC of the streamed member is right
    lines = archive.read("Grades.csv").decode().splitlines()
    assert len(lines) == 150_001 and lines[1] == "000000000001,Score-000000000001,False"

    emu.brightspace.truncate_next_download(100_000)
    partial = bytearray()
    response = bds.get(extract["DownloadLink"], stream=True)
    assert int(response.headers["Content-Length"]) == len(full)
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        for chunk in response.iter_content(8192):
            partial += chunk
    assert 0 < len(partial) <= 100_000  # the client may drop the last partial read buffer

    resumed = requests.get(response.url, headers={"Range": f"bytes={len(partial)}-"})
    assert resumed.status_code == 206
    assert resumed.headers["Content-Range"] == f"bytes {len(partial)}-{len(full) - 1}/{len(full)}"
    assert bytes(partial) + resumed.content == full
    middle = requests.get(response.url, headers={"Range": "bytes=12345-4567890"})
    assert middle.status_code == 206 and middle.content == full[12345:4567891]
    suffix = requests.get(response.url, headers={"Range": "bytes=-100"})
    assert suffix.content == full[-100:]
    unsatisfiable = requests.get(response.url, headers={"Range": f"bytes={len(full)}-"})
    assert unsatisfiable.status_code == 416

    # Ids crossing a generation block boundary, in a differential that overlaps the full's ids.
    emu.brightspace.add_extract("Grades", "Differential", rows_count=20, row_id_start=9_990)
    diff = next(e for e in extracts_of(emu, bds, "Grades") if e["BdsType"] == "Differential")
    rows = zipfile.ZipFile(io.BytesIO(bds.get(diff["DownloadLink"]).content)).read("Grades.csv").decode()
    assert [line.split(",")[0] for line in rows.splitlines()[1:]] == [
        f"{i:012d}" for i in range(9_990, 10_010)
    ]


def test_bds_columns_grow_retention_and_bad_archives(emu, bds):
    now = utcnow()
    emu.brightspace.add_data_set(
        "Users", ["UserId", "UserName"], rows=[{"UserId": 1}], created=now - timedelta(30)
    )
    emu.brightspace.add_extract("Users", "Differential", now - timedelta(days=15), rows=[{"UserId": 2}])
    grown = [{"UserId": 3, "UserName": "x", "Email": "x@example"}]
    emu.brightspace.add_extract(
        "Users",
        "Differential",
        now - timedelta(days=1),
        grown,
        columns=["UserId", "UserName", "Email"],
        version="1.1",
    )
    listed = extracts_of(emu, bds, "Users")
    assert [(e["BdsType"], e["Version"]) for e in listed] == [("Differential", "1.1"), ("Full", "1.0")]
    newest = zipfile.ZipFile(io.BytesIO(bds.get(listed[0]["DownloadLink"]).content))
    assert newest.read("Users.csv").decode().splitlines() == ["UserId,UserName,Email", "3,x,x@example"]

    emu.brightspace.add_data_set("Evil", ["A"])
    emu.brightspace.add_extract("Evil", zip_members=[("../escape.csv", "A\r\n1\r\n"), ("b.csv", b"A\r\n")])
    (evil,) = extracts_of(emu, bds, "Evil")
    assert zipfile.ZipFile(io.BytesIO(bds.get(evil["DownloadLink"]).content)).namelist() == [
        "../escape.csv",
        "b.csv",
    ]

    emu.brightspace.corrupt_extract("Users")
    corrupt = bds.get(extracts_of(emu, bds, "Users")[0]["DownloadLink"]).content
    assert len(corrupt) == listed[0]["DownloadSize"]
    with pytest.raises(zipfile.BadZipFile):
        zipfile.ZipFile(io.BytesIO(corrupt))


def test_bds_legacy_listing_and_latest_download(emu, bds):
    now = utcnow()
    emu.brightspace.add_data_set("Users", ["UserId"], rows=[{"UserId": 1}], created=now - timedelta(days=7))
    emu.brightspace.add_extract("Users", "Full", now, rows=[{"UserId": 1}, {"UserId": 2}])
    emu.brightspace.add_data_set("Grades", ["GradeId"])
    page = bds.get(f"{emu.url}{LP}/dataExport/bds", params={"page": 1, "pageSize": 2}).json()
    assert page["PrevPageUrl"] is None and page["NextPageUrl"]
    grades_full, grades_diff = page["BrightspaceDataSets"]
    assert grades_full["Name"] == "Grades" and grades_full["CurrentlyAvailable"] is False
    assert grades_diff["FullDataSet"] is False
    users_full = bds.get(page["NextPageUrl"]).json()["BrightspaceDataSets"][0]
    assert users_full["FullDataSet"] is True and len(users_full["PreviousDataSets"]) == 1
    latest = bds.get(users_full["DownloadLink"])
    assert len(latest.content) == users_full["DownloadSize"]
    assert zipfile.ZipFile(io.BytesIO(latest.content)).read("Users.csv") == b"UserId\r\n1\r\n2\r\n"


# ===================================================================== ADS
def test_ads_job_lifecycle(emu, bds):
    emu.brightspace.ads_job_seconds = 0.6
    data_set = emu.brightspace.add_ads_data_set(
        "Learner Usage",
        ["OrgUnitId", "Logins"],
        [{"OrgUnitId": 6606, "Logins": 3}],
        filters=[{"Name": "startDate"}],
    )
    listing = bds.get(f"{emu.url}{LP}/dataExport/list").json()
    assert listing[0]["DataSetId"] == data_set.data_set_id and listing[0]["Filters"][0]["Name"] == "startDate"
    body = {"DataSetId": data_set.data_set_id, "Filters": [{"Name": "startDate", "Value": "2025-01-01"}]}
    job = bds.post(f"{emu.url}{LP}/dataExport/create", json=body).json()
    assert job["Status"] == 0 and job["Name"] == "Learner Usage"
    job_url = f"{emu.url}{LP}/dataExport/jobs/{job['ExportJobId']}"
    download_url = f"{emu.url}{LP}/dataExport/download/{job['ExportJobId']}"
    assert bds.get(download_url).status_code == 404
    time.sleep(0.25)
    assert bds.get(job_url).json()["Status"] == 1
    time.sleep(0.4)
    assert bds.get(job_url).json()["Status"] == 2
    download = bds.get(download_url)
    assert download.status_code == 200
    assert (
        zipfile.ZipFile(io.BytesIO(download.content)).read("LearnerUsage.csv")
        == b"OrgUnitId,Logins\r\n6606,3\r\n"
    )
    assert bds.get(f"{emu.url}{LP}/dataExport/jobs").json()["Objects"][0]["ExportJobId"] == job["ExportJobId"]

    emu.brightspace.expire_ads_job(job["ExportJobId"])
    expired = bds.get(download_url)
    assert expired.status_code == 404 and "expired" in expired.text

    emu.brightspace.ads_job_seconds = 0
    emu.brightspace.fail_next_ads_jobs(1)
    failed = bds.post(f"{emu.url}{LP}/dataExport/create", json={"DataSetId": data_set.data_set_id}).json()
    assert failed["Status"] == 3
    assert bds.get(f"{emu.url}{LP}/dataExport/download/{failed['ExportJobId']}").status_code == 404
    assert bds.post(f"{emu.url}{LP}/dataExport/create", json={"DataSetId": "nope"}).status_code == 404


# ===================================================================== admin surface and CLI
def test_admin_http_surface(emu):
    canvas = emu.canvas.issue_tokens("10001")
    canvas_refresh(emu, canvas.refresh_token)
    assert requests.post(f"{emu.url}/_emulator/throttle_next", json={"platform": "canvas", "count": 1}).ok
    throttled = requests.get(f"{emu.url}/api/v1/accounts/1", headers=bearer(canvas.access_token))
    assert throttled.status_code == 403
    summary = requests.get(f"{emu.url}/_emulator/summary").json()
    assert summary["refresh_count"] == {"canvas": 1, "brightspace": 0}
    assert summary["api_requests_by_status"]["canvas"] == {"403": 1}
    log = requests.get(f"{emu.url}/_emulator/token_requests").json()
    assert [(r["platform"], r["status"]) for r in log] == [("canvas", 200)]
    assert requests.post(f"{emu.url}/_emulator/expire_access_tokens", json={}).ok
    assert requests.post(f"{emu.url}/_emulator/fail_for", json={"seconds": 0.2, "status": 500}).ok
    assert requests.get(f"{emu.url}/api/v1/accounts/1").status_code == 500
    assert requests.post(f"{emu.url}/_emulator/throttle_next", json={"platform": "moodle"}).status_code == 400
    emu.reset_records()
    assert emu.token_requests == [] and emu.api_requests == []


def test_cli_seed_start_and_clean_stop(tmp_path):
    seed = {
        "canvas": {
            "clients": [{"client_id": "10001", "client_secret": "cs"}],
            "tokens": [{"name": "demo", "client_id": "10001"}],
            "account_tree": {"count": 100, "fanout": 10},
        },
        "brightspace": {
            "clients": [{"client_id": "bs-app", "client_secret": "bs", "scopes": ["datahub:dataexports:*"]}],
            "tokens": [{"name": "demo", "client_id": "bs-app"}],
            "data_sets": [{"name": "Users", "columns": ["UserId"], "rows_count": 10}],
        },
    }
    seed_path = tmp_path / "seed.json"
    seed_path.write_text(json.dumps(seed))
    out = tmp_path / "issued.json"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    command = [
        sys.executable,
        "-m",
        "airflow_provider_canvas.testing",
        "--port",
        "0",
        "--seed",
        str(seed_path),
        "--signed-host",
        "localhost",  # another host name than 127.0.0.1, as a compose service alias would be
    ]
    process = subprocess.Popen(
        [*command, "--issued-tokens-out", str(out)], stderr=subprocess.PIPE, stdout=subprocess.PIPE, env=env
    )
    try:
        deadline = time.monotonic() + 20
        while not out.exists():
            assert process.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        assert stat.S_IMODE(out.stat().st_mode) == 0o600
        issued = json.loads(out.read_text())
        assert issued["canvas"]["demo"]["token_url"] == f"{issued['url']}/login/oauth2/token"
        assert issued["brightspace"]["demo"]["client_id"] == "bs-app"
        url = issued["url"]
        canvas, bs = issued["canvas"]["demo"], issued["brightspace"]["demo"]
        assert requests.get(
            f"{url}/api/v1/accounts/1/sub_accounts", headers=bearer(canvas["access_token"])
        ).ok
        rotated = requests.post(
            f"{url}/core/connect/token",
            auth=("bs-app", "bs"),
            data={"grant_type": "refresh_token", "refresh_token": bs["refresh_token"]},
        )
        assert rotated.status_code == 200
        session = requests.Session()
        session.headers.update(bearer(rotated.json()["access_token"]))
        data_set = session.get(f"{url}{LP}/datasets/bds").json()["Objects"][0]
        extract = session.get(data_set["Full"]["ExtractsLink"]).json()["Objects"][0]
        download = session.get(extract["DownloadLink"])
        assert len(download.content) == extract["DownloadSize"]
        assert issued["signed_url"].startswith("http://localhost:")
        assert download.url.startswith(f"{issued['signed_url']}/signed/")  # the 302 went to that host
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=10)
    assert process.returncode == 0
    log = stderr.decode()
    assert "GET /api/v1/accounts/1/sub_accounts 200" in log and "POST /core/connect/token 200" in log
    assert "GET /signed/<redacted> 200" in log and "LMS emulator stopped" in log
    assert "?" not in "".join(line.split(" INFO ", 1)[-1] for line in log.splitlines())  # no query strings
    for secret in (
        canvas["access_token"],
        canvas["refresh_token"],
        bs["refresh_token"],
        rotated.json()["access_token"],
    ):
        assert secret not in log


def test_stop_start_outage_drill_keeps_the_url(emu):
    tokens = emu.canvas.issue_tokens("10001")
    session = requests.Session()
    session.headers.update(bearer(tokens.access_token))
    url = emu.url
    assert session.get(f"{url}/api/v1/accounts/1").ok
    emu.stop()
    with pytest.raises(requests.exceptions.ConnectionError):
        session.get(f"{url}/api/v1/accounts/1", timeout=2)
    emu.start()
    assert emu.url == url and session.get(f"{url}/api/v1/accounts/1").ok


def test_request_log_lines_never_carry_tokens(emu, caplog):
    caplog.set_level("DEBUG", logger="airflow_provider_canvas.testing")
    canvas = emu.canvas.issue_tokens("10001")
    access = canvas_refresh(emu, canvas.refresh_token).json()["access_token"]
    requests.get(f"{emu.url}/api/v1/accounts/1", params={"access_token": access})
    emu.brightspace.add_data_set("Users", ["UserId"], rows=[{"UserId": 1}])
    bs = emu.brightspace.issue_tokens("bs-app")
    session = requests.Session()
    session.headers.update(bearer(bs.access_token))
    (extract,) = extracts_of(emu, session, "Users")
    signed = session.get(extract["DownloadLink"]).url
    lines = [record.getMessage() for record in caplog.records]
    assert "GET /api/v1/accounts/1 200" in lines and "GET /signed/<redacted> 200" in lines
    text = "\n".join(lines)
    for secret in (canvas.refresh_token, access, bs.access_token, urlsplit(signed).path.rsplit("/", 1)[-1]):
        assert secret not in text
