"""Failure drills on a real Airflow: crashes, restarts and outages must never lose a token."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pendulum
import pytest

from airflow_provider_canvas.testing import LmsEmulator
from airflow_provider_canvas.testing.local_airflow import LocalAirflow

pytestmark = pytest.mark.e2e

CLIENT_ID, CLIENT_SECRET = "drill-client", "drill-client-secret-value"


@pytest.fixture
def emulator() -> Iterator[LmsEmulator]:
    with LmsEmulator() as emu:
        emu.brightspace.revoke_family_on_reuse = True  # strict: a reused refresh token kills the chain
        emu.canvas.add_account(1, "Root")
        yield emu


def _connect(airflow: LocalAirflow, emulator: LmsEmulator, conn_id: str, *, lock_conn_id: str = "") -> None:
    emulator.brightspace.register_client(CLIENT_ID, CLIENT_SECRET)
    issued = emulator.brightspace.issue_tokens(CLIENT_ID)
    extra = emulator.connection_extra("brightspace", issued, expired=True)
    if lock_conn_id:
        extra["lock_conn_id"] = lock_conn_id
    airflow.add_connection(
        conn_id, "brightspace", host=emulator.url, login=CLIENT_ID, password=CLIENT_SECRET, extra=extra
    )


def _wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def _run(airflow: LocalAirflow, dag_id: str, conf: dict, timeout: float = 300) -> str:
    airflow.wait_for_dag(dag_id)
    run_id = airflow.trigger(dag_id, conf)
    state = airflow.wait_for_run(dag_id, run_id, timeout=timeout)
    assert state == "success", [(ti["task_id"], ti["state"]) for ti in airflow.task_instances(dag_id, run_id)]
    return run_id


def _assert_no_token_lost(airflow: LocalAirflow, emulator: LmsEmulator, conn_id: str, refreshes: int) -> None:
    assert emulator.refresh_count("brightspace") == refreshes
    assert emulator.consumed_presentations("brightspace") == 0
    # The saved refresh token is the live one: one more refresh with it goes through.
    emulator.expire_access_tokens("brightspace")
    _run(airflow, "lms_drill", {"conn_id": conn_id})
    assert emulator.refresh_count("brightspace") == refreshes + 1
    assert emulator.consumed_presentations("brightspace") == 0


def test_worker_and_scheduler_killed_between_refresh_and_save(
    local_airflow: LocalAirflow, emulator: LmsEmulator, tmp_path: Path
) -> None:
    conn_id = "brightspace_drill_kill"
    _connect(local_airflow, emulator, conn_id)
    marker = tmp_path / "stalled"
    local_airflow.wait_for_dag("lms_drill")
    local_airflow.trigger("lms_drill", {"conn_id": conn_id, "stall_save_seconds": 600, "marker": str(marker)})

    _wait_for(marker.exists, 120, "the task to stall after the refresh")
    assert emulator.refresh_count("brightspace") == 1  # the old refresh token is consumed now
    os.kill(int(marker.read_text()), signal.SIGKILL)  # the task process
    local_airflow.kill("scheduler")  # and the scheduler with its executor
    local_airflow.restart("scheduler")

    # A new run on this host finds the rescued tokens: no second refresh, nothing consumed twice.
    run_id = _run(local_airflow, "lms_drill", {"conn_id": conn_id})
    assert local_airflow.xcom("lms_drill", run_id, "call_api") == {"refreshes": 0}
    _assert_no_token_lost(local_airflow, emulator, conn_id, refreshes=1)


def test_api_server_restarted_while_a_task_saves_tokens(
    local_airflow: LocalAirflow, emulator: LmsEmulator, tmp_path: Path
) -> None:
    conn_id = "brightspace_drill_api"
    _connect(local_airflow, emulator, conn_id)
    marker = tmp_path / "stalled"
    local_airflow.wait_for_dag("lms_drill")
    run_id = local_airflow.trigger(
        "lms_drill", {"conn_id": conn_id, "stall_save_seconds": 3, "marker": str(marker)}
    )

    _wait_for(marker.exists, 120, "the task to stall after the refresh")
    local_airflow.kill("api-server", signal.SIGKILL)  # the save's PATCH meets a dead api-server
    saving = marker.with_name(f"{marker.name}.saving")
    _wait_for(saving.exists, 120, "the task to start its save while the api-server is down")
    local_airflow.restart("api-server")
    back_at = pendulum.now("UTC")

    state = local_airflow.wait_for_run("lms_drill", run_id, timeout=300)
    assert state == "success"
    # The save waited through the outage (the Task SDK retries the Execution API) and then landed.
    [ti] = local_airflow.task_instances("lms_drill", run_id)
    assert pendulum.parse(ti["end_date"]) > back_at
    _assert_no_token_lost(local_airflow, emulator, conn_id, refreshes=1)


def test_a_minute_of_500s_from_the_lms(local_airflow: LocalAirflow, emulator: LmsEmulator) -> None:
    conn_id = "brightspace_drill_500"
    _connect(local_airflow, emulator, conn_id)
    emulator.fail_for(60, status=500)
    started = time.monotonic()

    run_id = _run(local_airflow, "lms_drill", {"conn_id": conn_id}, timeout=400)

    assert time.monotonic() - started >= 55  # it really went through the outage
    tries = [ti["try_number"] for ti in local_airflow.task_instances("lms_drill", run_id)]
    print(f"500s for 60 s: recovered after {time.monotonic() - started:.0f}s, try {tries}")
    _assert_no_token_lost(local_airflow, emulator, conn_id, refreshes=1)
