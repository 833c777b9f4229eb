"""Token custody under a real scheduler: an ephemeral worker whose save fails loses nothing."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from airflow_provider_canvas.testing import LmsEmulator
from airflow_provider_canvas.testing.local_airflow import LocalAirflow
from airflow_provider_canvas.testing.primitives import free_port

pytestmark = pytest.mark.e2e

DAG_ID = "custody_drill"
CLIENT_ID, CLIENT_SECRET = "custody-client", "custody-client-secret-value"


@pytest.fixture
def emulator() -> Iterator[LmsEmulator]:
    with LmsEmulator() as emu:
        emu.brightspace.revoke_family_on_reuse = True  # strict: a reused refresh token ends the chain
        emu.brightspace.register_client(CLIENT_ID, CLIENT_SECRET)
        yield emu


def _wait_until(condition: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    raise TimeoutError(f"{what} did not happen in {timeout}s")


def test_an_ephemeral_worker_whose_save_fails_loses_nothing(local_airflow: LocalAirflow, emulator):
    conn_id = "brightspace_custody"
    issued = emulator.brightspace.issue_tokens(CLIENT_ID)
    extra = emulator.connection_extra("brightspace", issued, expired=True)
    local_airflow.add_connection(
        conn_id, "brightspace", host=emulator.url, login=CLIENT_ID, password=CLIENT_SECRET, extra=extra
    )
    variable = f"canvas_provider_tokens__{conn_id}"
    local_airflow.wait_for_dag(DAG_ID)

    # Run 1 refreshes, writes the central copy, then stalls before the save while the api-server goes
    # down. Its task supervisor waits out the outage for the Execution API, so to make sure the save
    # fails, this task's REST write-back also points where nothing listens. Its state dir is deleted
    # at its end.
    conf = {"conn_id": conn_id, "stall": "durable_copy:8", "api_url": f"http://127.0.0.1:{free_port()}"}
    first = local_airflow.trigger(DAG_ID, conf)
    _wait_until(lambda: local_airflow.get_variable(variable), 240, "the central copy")
    local_airflow.kill("api-server")
    # Down for longer than the stall plus the three save attempts (about 4 s): the save fails. A fixed
    # wait, as nothing observable from here says the attempts are over: the task's log reaches the disk
    # through its supervisor, which waits for the dead Execution API (the local log stopped after the
    # second attempt when this test waited for the third).
    time.sleep(25)
    local_airflow.restart("api-server")
    assert local_airflow.wait_for_run(DAG_ID, first, timeout=240) == "success"  # the task went on
    assert "nothing is lost and this task goes on" in local_airflow.task_log(DAG_ID, first, "call_api")
    assert emulator.refresh_count("brightspace") == 1
    assert local_airflow.get_connection(conn_id)["extra_dejson"]["refresh_token"] == issued.refresh_token

    # Run 2, a fresh worker with an empty disk: the tokens come from the central copy, no refresh.
    second = local_airflow.trigger(DAG_ID, {"conn_id": conn_id, "stall": "", "api_url": ""})
    assert local_airflow.wait_for_run(DAG_ID, second, timeout=240) == "success"
    assert local_airflow.xcom(DAG_ID, second, "call_api")["refreshes"] == 0
    assert emulator.refresh_count("brightspace") == 1
    assert emulator.consumed_presentations("brightspace") == 0
    saved = local_airflow.get_connection(conn_id)["extra_dejson"]["refresh_token"]
    assert saved != issued.refresh_token  # written to the connection by run 2
    log = local_airflow.task_log(DAG_ID, second, "call_api")
    assert "could not save to the connection" in log and "writing them to the connection now" in log
    assert saved not in log
