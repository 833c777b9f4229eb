"""Brightspace's 403 "Rate Limit Exceeded" is throttling, waited out like a 429 (emulator over HTTP)."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import timedelta

import pytest

from airflow_provider_canvas.brightspace.hooks.brightspace import BrightspaceHook
from airflow_provider_canvas.brightspace.hooks.brightspace_async import BrightspaceAsyncHook
from airflow_provider_canvas.brightspace.operators.data_sets import BrightspaceDataSetsPullOperator
from airflow_provider_canvas.exceptions import LmsPermissionError, LmsThrottledError
from airflow_provider_canvas.testing.primitives import utcnow

COLUMNS = ["UserId", "UserName"]


@pytest.fixture
def users(emulator):
    emulator.brightspace.add_data_set("Users", COLUMNS, rows_count=200, created=utcnow() - timedelta(days=1))


def statuses(emulator) -> list[int]:
    return [r.status for r in emulator.api_requests if r.platform == "brightspace"]


def test_403_rate_limit_is_retried_after_x_rate_limit_reset_and_logged(
    emulator, lms_connection, users, capsys
):
    conn_id = lms_connection("brightspace", expired=False)
    # The emulator's 403 carries X-Rate-Limit-Reset: 1 and no Retry-After.
    emulator.throttle_next("brightspace", 2, status=403, retry_after=1)
    hook = BrightspaceHook(conn_id, backoff_seconds=30)  # a 30 s backoff would show: the header is used

    started = time.monotonic()
    names = [data_set.name for data_set in hook.list_data_sets()]
    took = time.monotonic() - started

    assert names == ["Users"]
    assert statuses(emulator) == [403, 403, 200]
    assert 2 <= took < 20  # two waits of X-Rate-Limit-Reset (1 s), not of the 30 s backoff
    assert capsys.readouterr().out.count("throttled (HTTP 403); retrying in 1.0s") == 2


def test_the_pull_goes_through_a_403_rate_limit_on_listing_and_download(
    emulator, lms_connection, users, tmp_path
):
    conn_id = lms_connection("brightspace", expired=False)
    emulator.throttle_next("brightspace", 3, status=403, retry_after=1)

    pulled = BrightspaceDataSetsPullOperator(
        task_id=f"pull_{uuid.uuid4().hex[:6]}",
        data_sets=["Users"],
        location=tmp_path,
        brightspace_conn_id=conn_id,
    ).execute({})

    assert [p["bds_type"] for p in pulled["Users"]] == ["Full"]
    assert statuses(emulator).count(403) == 3


def test_a_403_that_is_no_rate_limit_still_says_which_scope_is_missing(emulator, make_connection, users):
    bs = emulator.brightspace
    bs.register_client("narrow", "narrow-secret", scopes=["core:*:*", "datasets:bds:read"])
    issued = bs.issue_tokens("narrow", scopes=["core:*:*"])  # consented without the data sets scope
    extra = emulator.connection_extra("brightspace", issued, expired=False)
    conn_id = make_connection(
        "bs_narrow", "brightspace", emulator.url, extra, login="narrow", password="narrow-secret"
    )

    with pytest.raises(LmsPermissionError, match="lacks scope datasets:bds:read"):
        BrightspaceHook(conn_id, backoff_seconds=0.01).list_data_sets()
    assert statuses(emulator) == [403]  # refused once, not retried as throttling


def test_the_async_hook_reports_a_403_rate_limit_as_throttling(emulator, lms_connection):
    conn_id = lms_connection("brightspace", expired=False)
    ads = emulator.brightspace.add_ads_data_set("Final Grades", ["OrgUnitId", "Grade"], rows_count=5)
    hook = BrightspaceHook(conn_id)
    job_id = hook.create_export_job(ads.data_set_id)["ExportJobId"]
    hook.close()
    emulator.throttle_next("brightspace", 1, status=403)

    async def poll() -> dict:
        async with BrightspaceAsyncHook(conn_id) as async_hook:
            return await async_hook.get_export_job(job_id)

    with pytest.raises(LmsThrottledError, match=r"throttled \(HTTP 403\)"):
        asyncio.run(poll())
    assert asyncio.run(poll())["ExportJobId"] == job_id
