"""An Advanced Data Sets job polled by the real triggerer, with a token refresh inside the trigger."""

from __future__ import annotations

import time
import zipfile
from pathlib import Path

import pendulum
import pytest

from airflow_provider_canvas.testing import LmsEmulator
from airflow_provider_canvas.testing.local_airflow import LocalAirflow

pytestmark = pytest.mark.e2e

CLIENT_ID, CLIENT_SECRET = "ads-client", "ads-client-secret-value"


def test_ads_job_waits_in_the_triggerer_and_downloads(local_airflow: LocalAirflow, tmp_path: Path) -> None:
    with LmsEmulator() as emulator:
        bs = emulator.brightspace
        bs.ads_job_seconds = 12  # long enough to see the task deferred
        bs.add_ads_data_set(
            "Enrollments and Withdrawals",
            ["OrgUnitId", "UserId", "Action"],
            rows_count=800,
            filters=[{"Name": "startDate"}],
        )
        bs.register_client(CLIENT_ID, CLIENT_SECRET)
        issued = bs.issue_tokens(CLIENT_ID)
        local_airflow.add_connection(
            "brightspace_ads",
            "brightspace",
            host=emulator.url,
            login=CLIENT_ID,
            password=CLIENT_SECRET,
            extra={
                "access_token": issued.access_token,
                "refresh_token": issued.refresh_token,
                "expires_at": pendulum.now("UTC").add(hours=1).to_iso8601_string(),
                "oauth_url": f"{emulator.url}/core/connect/token",
            },
        )
        destination = tmp_path / "export.zip"
        local_airflow.wait_for_dag("ads_export")
        run_id = local_airflow.trigger("ads_export", {"destination": str(destination)})

        deadline = time.monotonic() + 120
        while local_airflow.task_instances("ads_export", run_id)[0]["state"] != "deferred":
            assert time.monotonic() < deadline, "the task never deferred"
            time.sleep(0.5)
        # While the trigger polls, the access token dies: the trigger must refresh and save.
        emulator.expire_access_tokens("brightspace")

        state = local_airflow.wait_for_run("ads_export", run_id, timeout=240)

        assert state == "success"
        result = local_airflow.xcom("ads_export", run_id, "export")
        assert result["size"] == destination.stat().st_size
        with zipfile.ZipFile(destination) as archive:
            [member] = archive.namelist()
            assert archive.read(member).decode().count("\n") >= 800
        assert emulator.refresh_count("brightspace") == 1
        assert emulator.consumed_presentations("brightspace") == 0
        saved = local_airflow.get_connection("brightspace_ads")["extra_dejson"]
        assert saved["refresh_token"] != issued.refresh_token
