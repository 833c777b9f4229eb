"""BrightspaceHook against the emulator: BDS listings (both APIs), downloads, Advanced Data Sets."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
from datetime import timedelta

import pytest
from lms_fixtures import stored_extra

from airflow_provider_canvas.brightspace.hooks.brightspace import BrightspaceHook
from airflow_provider_canvas.brightspace.hooks.brightspace_async import BrightspaceAsyncHook
from airflow_provider_canvas.brightspace.hooks.models import ExportJobStatus
from airflow_provider_canvas.exceptions import DownloadError, ExportJobError, LmsApiError
from airflow_provider_canvas.testing.primitives import utcnow

COLUMNS = ["UserId", "UserName", "OrgDefinedId", "IsDeleted"]


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _served_bytes(extract) -> bytes:
    return b"".join(extract.source.iter_range(0, extract.download_size))


@pytest.fixture
def hook(emulator, lms_connection) -> BrightspaceHook:
    conn_id = lms_connection("brightspace", expired=False)
    hook = BrightspaceHook(conn_id, backoff_seconds=0.05)
    yield hook
    hook.close()


@pytest.fixture
def users(emulator):
    now = utcnow()
    bs = emulator.brightspace
    bs.add_data_set("Users", COLUMNS, rows_count=3000, created=now - timedelta(days=6))
    for day in (5, 3, 1):
        bs.add_extract(
            "Users", "Differential", now - timedelta(days=day), rows_count=10, row_id_start=day * 100
        )
    # Past the 14-day retention: Brightspace no longer lists it.
    bs.add_extract("Users", "Differential", now - timedelta(days=20), rows_count=5)
    bs.add_data_set("Org Units", ["OrgUnitId", "Name"], rows_count=50, created=now - timedelta(days=2))
    bs.add_data_set("Role Details", ["RoleId", "Name"], rows_count=5, created=now - timedelta(days=2))
    return bs.data_sets["Users"]


@pytest.mark.parametrize("bds_api", ["datasets", "dataExport"])
def test_both_listing_apis_page_through_every_data_set_and_extract(emulator, lms_connection, users, bds_api):
    emulator.brightspace.page_size = 2  # forces Next / NextPageUrl pages
    hook = BrightspaceHook(lms_connection("brightspace", expired=False, bds_api=bds_api))

    assert sorted(d.name for d in hook.list_data_sets()) == ["Org Units", "Role Details", "Users"]
    extracts = hook.list_extracts("Users")

    assert [(e.bds_type, round((utcnow() - e.created).total_seconds() / 86400)) for e in extracts] == [
        ("Differential", 1),
        ("Differential", 3),
        ("Differential", 5),
        ("Full", 6),
    ]
    assert extracts[-1].download_size == users.extracts[0].download_size
    assert [e.bds_type for e in hook.list_extracts("Users", "Full")] == ["Full"]
    listing_paths = {r.path.split("/lp/")[1].split("/")[0] for r in emulator.api_requests if "/lp/" in r.path}
    assert listing_paths == {"1.49"}


def test_api_choice_follows_lp_version_unless_set(emulator, lms_connection):
    assert BrightspaceHook(lms_connection("brightspace", "bs_old", lp_version="1.30")).bds_api == "dataExport"
    assert BrightspaceHook(lms_connection("brightspace", "bs_new", lp_version="1.49")).bds_api == "datasets"
    forced = lms_connection("brightspace", "bs_forced", lp_version="1.49", bds_api="dataExport")
    assert BrightspaceHook(forced).bds_api == "dataExport"


def test_download_follows_302_without_the_bearer_token(emulator, hook, users, tmp_path):
    full = hook.list_extracts("Users", "Full")[0]
    target = tmp_path / "users.zip"

    result = hook.download_extract(full, target, progress_every_bytes=64 * 1024)

    assert result.size == full.download_size == target.stat().st_size
    assert _sha(target.read_bytes()) == _sha(_served_bytes(users.extracts[0]))
    signed = emulator.brightspace.signed_downloads
    assert len(signed) == 1 and signed[0].status == 200
    assert signed[0].had_authorization is False
    api_download = [
        r
        for r in emulator.api_requests
        if r.path.endswith(full.created.format("YYYY-MM-DD[T]HH:mm:ss.SSS[Z]"))
    ]
    assert api_download and all(r.had_authorization and r.status == 302 for r in api_download)
    assert list(tmp_path.iterdir()) == [target]


@pytest.fixture
def big(emulator):
    """About 2.1 MiB: more than one 1 MiB chunk, so a broken transfer keeps whole chunks to resume from."""
    return emulator.brightspace.add_data_set("Big", COLUMNS, rows_count=40_000).extracts[0]


def test_broken_transfer_resumes_with_range_at_the_signed_host(emulator, hook, big, tmp_path, capsys):
    full = hook.list_extracts("Big", "Full")[0]
    emulator.brightspace.truncate_next_download(1_500_000)

    result = hook.download_extract(full, tmp_path / "big.zip", progress_every_bytes=2**20)

    # The partial second chunk is dropped: the transfer resumes at the last whole chunk.
    assert result.attempts == 2 and result.resumed_from == (2**20,)
    assert result.checked is not None and result.checked.reread is False  # checked across the resume
    assert _sha((tmp_path / "big.zip").read_bytes()) == _sha(_served_bytes(big))
    signed = emulator.brightspace.signed_downloads
    assert [(s.range, s.status, s.had_authorization) for s in signed] == [
        (None, 200, False),
        (f"bytes={2**20}-", 206, False),
    ]
    logged = "".join(capsys.readouterr())  # hook logs go through structlog to the console
    assert "resuming" in logged and "2 of 2 MiB" in logged  # progress is logged
    assert "sig=" not in logged and stored_extra(hook.conn_id)["access_token"] not in logged


def test_expired_signed_url_on_resume_asks_the_api_for_a_new_one(emulator, lms_connection, big, tmp_path):
    emulator.brightspace.signed_url_ttl = 1
    hook = BrightspaceHook(lms_connection("brightspace", expired=False), backoff_seconds=3.0)
    full = hook.list_extracts("Big", "Full")[0]
    emulator.brightspace.truncate_next_download(1_500_000)

    hook.download_extract(full, tmp_path / "big.zip")

    assert _sha((tmp_path / "big.zip").read_bytes()) == _sha(_served_bytes(big))
    assert [(s.range, s.status) for s in emulator.brightspace.signed_downloads] == [
        (None, 200),
        (f"bytes={2**20}-", 403),  # the old signature expired
        (f"bytes={2**20}-", 206),  # through a fresh DownloadLink -> 302, still without the token
    ]
    assert not any(s.had_authorization for s in emulator.brightspace.signed_downloads)


def test_server_ignoring_range_makes_the_download_start_over(emulator, hook, big, tmp_path):
    emulator.brightspace.redirect_downloads = False  # served by the API host, which ignores Range
    full = hook.list_extracts("Big", "Full")[0]
    emulator.brightspace.truncate_next_download(1_500_000)

    result = hook.download_extract(full, tmp_path / "big.zip")

    assert result.attempts == 2 and result.resumed_from == ()
    assert result.size == full.download_size
    assert result.checked is not None and result.checked.reread is False  # the check started over too
    assert _sha((tmp_path / "big.zip").read_bytes()) == _sha(_served_bytes(big))
    assert emulator.brightspace.signed_downloads == []


def test_truncated_download_out_of_attempts_leaves_nothing(emulator, hook, users, tmp_path):
    full = hook.list_extracts("Users", "Full")[0]
    emulator.brightspace.truncate_next_download(20_000)

    with pytest.raises(DownloadError, match="failed after 1 attempts"):
        hook.download_extract(full, tmp_path / "users.zip", attempts=1)

    assert list(tmp_path.iterdir()) == []


def test_size_mismatch_is_refused_and_nothing_is_kept(emulator, hook, users, tmp_path):
    full = hook.list_extracts("Users", "Full")[0]
    lying = dataclasses.replace(full, download_size=full.download_size + 1)

    with pytest.raises(DownloadError, match="DownloadSize") as raised:
        hook.download_extract(lying, tmp_path / "users.zip")

    assert "sig=" not in str(raised.value) and "expires=" not in str(raised.value)
    assert list(tmp_path.iterdir()) == []


def test_ads_create_poll_download(emulator, hook, tmp_path):
    emulator.brightspace.ads_job_seconds = 1.0  # longer than the first async poll takes to start
    ads = emulator.brightspace.add_ads_data_set(
        "Enrollments and Withdrawals",
        ["OrgUnitId", "UserId", "Action"],
        rows_count=500,
        filters=[{"Name": "startDate"}, {"Name": "endDate"}],
    )

    data_set = hook.resolve_ads_data_set("Enrollments and Withdrawals")
    job = hook.create_export_job(data_set["DataSetId"], {"startDate": "2026-01-01T00:00:00.000Z"})

    async def poll() -> dict:
        async with BrightspaceAsyncHook(hook.conn_id) as async_hook:
            return await async_hook.get_export_job(job["ExportJobId"])

    status = asyncio.run(poll())["Status"]
    assert status in (ExportJobStatus.QUEUED, ExportJobStatus.PROCESSING)
    while hook.get_export_job(job["ExportJobId"])["Status"] != ExportJobStatus.COMPLETE:
        pass
    result = hook.download_export(job["ExportJobId"], tmp_path / "ads.zip")

    assert data_set["DataSetId"] == ads.data_set_id
    assert emulator.brightspace.ads_jobs[job["ExportJobId"]].filters == [
        {"Name": "startDate", "Value": "2026-01-01T00:00:00.000Z"}
    ]
    assert result.size == (tmp_path / "ads.zip").stat().st_size > 500 * 20


def test_expired_export_job_download_says_so(emulator, hook, tmp_path):
    emulator.brightspace.ads_job_seconds = 0
    ads = emulator.brightspace.add_ads_data_set("Final Grades", ["OrgUnitId", "UserId"], rows_count=5)
    job = hook.create_export_job(ads.data_set_id)
    emulator.brightspace.expire_ads_job(job["ExportJobId"])

    with pytest.raises(ExportJobError, match="expired"):
        hook.download_export(job["ExportJobId"], tmp_path / "ads.zip")
    assert list(tmp_path.iterdir()) == []


def test_listing_link_to_another_host_is_not_followed(emulator, hook, monkeypatch):
    with pytest.raises(Exception, match="another host"):
        hook.listings.api_url("http://evil.example/d2l/api/lp/1.49/datasets/bds")
    with pytest.raises(LmsApiError):
        hook.list_extracts("No Such Set")


def test_get_conn_is_a_session_that_refreshes_and_sends_the_token_to_the_lms_host_only(
    emulator, lms_connection, users
):
    hook = BrightspaceHook(lms_connection("brightspace", expired=True))

    with hook.get_conn() as session:
        whoami = session.get(f"{emulator.url}{hook.whoami_path}", timeout=10)
        assert whoami.status_code == 200
        assert emulator.refresh_count("brightspace") == 1  # the expired token was refreshed first
        full = hook.list_extracts("Users", "Full")[0]
        download = session.get(full.download_link, timeout=10)  # 302 to the storage host

    assert download.status_code == 200 and download.content == _served_bytes(users.extracts[0])
    assert [s.had_authorization for s in emulator.brightspace.signed_downloads] == [False]
    assert emulator.refresh_count("brightspace") == 1


def test_the_async_hook_polls_with_the_stored_token_and_refreshes_only_through_the_lifecycle(
    emulator, lms_connection
):
    conn_id = lms_connection("brightspace", expired=True)
    ads = emulator.brightspace.add_ads_data_set("Final Grades", ["OrgUnitId", "Grade"], rows_count=5)
    sync_hook = BrightspaceHook(conn_id)
    job_id = sync_hook.create_export_job(ads.data_set_id)["ExportJobId"]  # refreshes the expired token
    sync_hook.close()
    assert emulator.refresh_count("brightspace") == 1

    async def polls(count: int) -> list[dict]:
        async with BrightspaceAsyncHook(conn_id) as hook:
            return [await hook.get_export_job(job_id) for _ in range(count)]

    assert len(asyncio.run(polls(3))) == 3
    assert emulator.refresh_count("brightspace") == 1  # the saved token serves every poll

    emulator.expire_access_tokens("brightspace")  # the server now answers 401 + WWW-Authenticate
    before = stored_extra(conn_id)["refresh_token"]
    assert [job["ExportJobId"] for job in asyncio.run(polls(2))] == [job_id, job_id]

    assert emulator.refresh_count("brightspace") == 2
    assert emulator.consumed_presentations("brightspace") == 0
    assert stored_extra(conn_id)["refresh_token"] != before  # saved back, as a task saves it
