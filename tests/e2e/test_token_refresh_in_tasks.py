"""Token refresh inside real supervised tasks (ORM blocked), 8 at once, under a real scheduler."""

from __future__ import annotations

from collections.abc import Iterator

import pendulum
import pytest

from airflow_provider_canvas.testing import LmsEmulator
from airflow_provider_canvas.testing.local_airflow import LocalAirflow
from airflow_provider_canvas.testing.postgres import configured_server

pytestmark = pytest.mark.e2e

DAG_ID = "token_refresh_parallel"
CLIENT_ID, CLIENT_SECRET = "e2e-client", "e2e-client-secret-value"


@pytest.fixture
def emulator() -> Iterator[LmsEmulator]:
    with LmsEmulator() as emu:
        # Strict single-use mode: reusing a consumed refresh token revokes the whole family.
        emu.brightspace.revoke_family_on_reuse = True
        emu.canvas.add_account(1, "Root")
        yield emu


def _connect(
    airflow: LocalAirflow, emulator: LmsEmulator, platform: str, conn_id: str, **more_extra: str
) -> str:
    side = getattr(emulator, platform)
    side.register_client(CLIENT_ID, CLIENT_SECRET)
    issued = side.issue_tokens(CLIENT_ID)
    extra = {**emulator.connection_extra(platform, issued, expired=True), **more_extra}
    airflow.add_connection(
        conn_id, platform, host=emulator.url, login=CLIENT_ID, password=CLIENT_SECRET, extra=extra
    )
    return issued.refresh_token


def _run(
    airflow: LocalAirflow, conn_id: str, platform: str, *, separate_hosts: bool = False
) -> tuple[str, list[dict]]:
    airflow.wait_for_dag(DAG_ID)
    run_id = airflow.trigger(
        DAG_ID, {"conn_id": conn_id, "platform": platform, "separate_hosts": separate_hosts}
    )
    state = airflow.wait_for_run(DAG_ID, run_id, timeout=240)
    instances = airflow.task_instances(DAG_ID, run_id)
    assert state == "success", [(ti["map_index"], ti["state"]) for ti in instances]
    assert [ti["try_number"] for ti in instances] == [1] * 8  # no task needed a retry
    return run_id, [airflow.xcom(DAG_ID, run_id, "call_api", map_index=index) for index in range(8)]


@pytest.mark.parametrize("platform", ["brightspace", "canvas"])
def test_parallel_tasks_refresh_once_and_save_the_tokens(
    local_airflow: LocalAirflow, emulator: LmsEmulator, platform: str
) -> None:
    conn_id = f"{platform}_e2e"
    original_refresh_token = _connect(local_airflow, emulator, platform, conn_id)

    run_id, results = _run(local_airflow, conn_id, platform)

    assert all(result["orm_blocked"] for result in results), "tasks must run with the ORM blocked"
    assert sum(result["refreshes"] for result in results) == 1
    assert emulator.refresh_count(platform) == 1
    assert emulator.consumed_presentations(platform) == 0
    rejected = [r for r in emulator.api_requests if r.platform == platform and r.status == 401]
    assert rejected == [], "no task may fail on an access token another task invalidated"

    saved = local_airflow.get_connection(conn_id)["extra_dejson"]
    assert pendulum.parse(saved["expires_at"]) > pendulum.now("UTC").add(minutes=50)
    if platform == "brightspace":
        assert saved["refresh_token"] != original_refresh_token
    else:
        assert saved["refresh_token"] == original_refresh_token  # Canvas refresh tokens do not rotate

    # No secret in any task log of the run (Airflow's masker and our own care).
    logs = "".join(local_airflow.task_log(DAG_ID, run_id, "call_api", map_index=i) for i in range(8))
    assert "refreshed the access token" in logs
    for secret in (CLIENT_SECRET, original_refresh_token, saved["refresh_token"], saved["access_token"]):
        assert secret not in logs

    # A second run uses the saved access token: no refresh at all.
    _, results = _run(local_airflow, conn_id, platform)
    assert sum(result["refreshes"] for result in results) == 0
    assert emulator.refresh_count(platform) == 1
    assert local_airflow.get_connection(conn_id)["extra_dejson"]["refresh_token"] == saved["refresh_token"]

    # The saved refresh token is the live one: the next refresh (tokens expired) goes through.
    emulator.expire_access_tokens(platform)
    _, results = _run(local_airflow, conn_id, platform)
    assert sum(result["refreshes"] for result in results) == 1
    assert emulator.refresh_count(platform) == 2
    assert emulator.consumed_presentations(platform) == 0


def test_postgres_lock_serialises_tasks_that_share_no_lock_file(
    local_airflow: LocalAirflow, emulator: LmsEmulator
) -> None:
    """Workers on several hosts: only the PostgreSQL advisory lock is shared."""
    local_airflow.api(
        "POST",
        "/connections",
        ok=(201, 409),
        json={"connection_id": "token_lock_pg", **configured_server().connection_fields()},
    )
    conn_id = "brightspace_e2e_hosts"
    _connect(local_airflow, emulator, "brightspace", conn_id, lock_conn_id="token_lock_pg")

    _, results = _run(local_airflow, conn_id, "brightspace", separate_hosts=True)

    assert all(result["orm_blocked"] for result in results)
    assert sum(result["refreshes"] for result in results) == 1
    assert emulator.refresh_count("brightspace") == 1
    assert emulator.consumed_presentations("brightspace") == 0
