"""The token write-back under the FAB auth manager, as a user whose role may only edit connections.

One Airflow with FAB on PostgreSQL for both tests: ``airflow_api`` holds the user's login/password, then
a static bearer token (a JWT minted for that user, standing in for a managed Airflow's API token).
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pendulum
import pytest

from airflow_provider_canvas.testing import LmsEmulator
from airflow_provider_canvas.testing.local_airflow import LocalAirflow
from airflow_provider_canvas.testing.postgres import fresh_postgres_database

pytestmark = pytest.mark.e2e

DAG_ID = "token_refresh_parallel"
DAG_FILE = Path(__file__).parent / "dags" / f"{DAG_ID}.py"
CLIENT_ID, CLIENT_SECRET = "fab-client", "fab-client-secret-value"
WRITER = "canvas_token_writer"  # the user and its role
WRITER_PERMISSIONS = [("can_edit", "Connections")]  # all PATCH /api/v2/connections/{id} needs


@pytest.fixture(scope="module")
def fab_airflow(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalAirflow, str]]:
    """Airflow with FAB on PostgreSQL, only the parallel-refresh DAG; yields it and the writer's password."""
    dags = tmp_path_factory.mktemp("fab_dags")
    (dags / DAG_FILE.name).symlink_to(DAG_FILE)
    with ExitStack() as stack:
        database_url = stack.enter_context(fresh_postgres_database())
        home = tmp_path_factory.mktemp("fab_airflow_home")
        airflow = LocalAirflow(home, dags, database_url=database_url, auth_manager="fab")
        stack.callback(airflow.stop)
        airflow.start()
        password = secrets.token_urlsafe(16)
        airflow.add_fab_user(WRITER, password, WRITER, WRITER_PERMISSIONS)
        airflow.wait_for_dag(DAG_ID)
        yield airflow, password


@pytest.fixture
def emulator() -> Iterator[LmsEmulator]:
    with LmsEmulator() as emu:
        emu.brightspace.revoke_family_on_reuse = True  # a refresh token presented twice kills the family
        emu.brightspace.register_client(CLIENT_ID, CLIENT_SECRET)
        yield emu


def _run_eight_tasks(airflow: LocalAirflow, emulator: LmsEmulator, conn_id: str) -> tuple[str, str]:
    """8 parallel tasks on one Brightspace connection with an expired token, all green.

    Returns the refresh token the connection started with, and the run id.
    """
    issued = emulator.brightspace.issue_tokens(CLIENT_ID)
    extra = emulator.connection_extra("brightspace", issued, expired=True)
    airflow.add_connection(
        conn_id, "brightspace", host=emulator.url, login=CLIENT_ID, password=CLIENT_SECRET, extra=extra
    )
    run_id = airflow.trigger(DAG_ID, {"conn_id": conn_id, "platform": "brightspace", "separate_hosts": False})
    state = airflow.wait_for_run(DAG_ID, run_id, timeout=240)
    instances = airflow.task_instances(DAG_ID, run_id)
    assert state == "success", [(ti["map_index"], ti["state"]) for ti in instances]
    return issued.refresh_token, run_id


def _refresh_in_eight_tasks(airflow: LocalAirflow, emulator: LmsEmulator, conn_id: str) -> None:
    """8 parallel tasks on one Brightspace connection with an expired token: one refresh, saved."""
    first_refresh_token, run_id = _run_eight_tasks(airflow, emulator, conn_id)
    results = [airflow.xcom(DAG_ID, run_id, "call_api", map_index=index) for index in range(8)]
    assert all(result["orm_blocked"] for result in results), "tasks must run with the ORM blocked"
    assert sum(result["refreshes"] for result in results) == 1
    assert emulator.refresh_count("brightspace") == 1
    assert emulator.consumed_presentations("brightspace") == 0

    saved = airflow.get_connection(conn_id)["extra_dejson"]
    assert saved["refresh_token"] != first_refresh_token  # the rotated token is the one stored
    assert pendulum.parse(saved["expires_at"]) > pendulum.now("UTC").add(minutes=50)

    # Airflow's audit log names who made each update: the writer, never the admin.
    params = {"event": "patch_connection", "limit": 100}
    events = airflow.api("GET", "/eventLogs", params=params).json()["event_logs"]
    updates = [e for e in events if json.loads(e["extra"] or "{}").get("connection_id") == conn_id]
    assert [e["owner"] for e in updates] == [WRITER], updates


def _as(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_write_back_as_a_fab_user_whose_role_only_edits_connections(
    fab_airflow: tuple[LocalAirflow, str], emulator: LmsEmulator
) -> None:
    airflow, password = fab_airflow
    airflow.add_connection("airflow_api", "generic", login=WRITER, password=password)
    logins_before = _login_requests(airflow)

    _refresh_in_eight_tasks(airflow, emulator, "brightspace_fab_login")

    assert _login_requests(airflow) > logins_before  # the tasks logged in as the writer

    response = airflow.http.get(f"{airflow.api_url}/auth/fab/v1/roles/{WRITER}", timeout=30)
    assert response.status_code == 200, response.status_code
    granted = sorted((p["action"]["name"], p["resource"]["name"]) for p in response.json()["actions"])
    assert granted == WRITER_PERMISSIONS
    # The role is minimal: everything else is refused, reading connections included.
    writer = _as(airflow.login(WRITER, password))
    airflow.api("GET", "/variables", headers=writer, ok=(403,))
    airflow.api("GET", "/connections/airflow_api", headers=writer, ok=(403,))
    airflow.api("DELETE", f"/dags/{DAG_ID}", headers=writer, ok=(403,))
    airflow.api("PATCH", f"/dags/{DAG_ID}", json={"is_paused": True}, headers=writer, ok=(403,))
    airflow.api("GET", f"/dags/{DAG_ID}")  # still there


def test_write_back_with_a_static_bearer_token(
    fab_airflow: tuple[LocalAirflow, str], emulator: LmsEmulator
) -> None:
    airflow, password = fab_airflow
    token = airflow.login(WRITER, password)  # stands in for a managed Airflow's API token
    airflow.add_connection("airflow_api", "generic", login=None, password=token)
    logins_before = _login_requests(airflow)
    assert logins_before >= 2  # the harness's admin and the token just minted: the log counts logins

    _refresh_in_eight_tasks(airflow, emulator, "brightspace_fab_token")

    assert _login_requests(airflow) == logins_before, "a bearer token needs no login exchange"


def _login_requests(airflow: LocalAirflow) -> int:
    """``POST /auth/token`` requests in the api-server's access log so far."""
    log = (airflow.home / "logs" / "api-server.log").read_text(errors="replace")
    return log.count("method=POST path=/auth/token ")


def test_with_no_api_credentials_at_all_tasks_succeed_and_the_tokens_survive(
    fab_airflow: tuple[LocalAirflow, str], emulator: LmsEmulator
) -> None:
    airflow, _ = fab_airflow
    airflow.api("DELETE", "/connections/airflow_api", ok=(204, 404))
    conn_id = "brightspace_fab_no_api"

    # FAB refuses the write-back (401: no credentials), yet no task fails and no token is lost.
    first_refresh_token, run_id = _run_eight_tasks(airflow, emulator, conn_id)
    assert emulator.refresh_count("brightspace") == 1
    assert emulator.consumed_presentations("brightspace") == 0
    central = json.loads(airflow.get_variable(f"canvas_provider_tokens__{conn_id}"))
    assert central["refresh_token"] != first_refresh_token  # the live chain is in the central copy
    assert airflow.get_connection(conn_id)["extra_dejson"]["refresh_token"] == first_refresh_token
    logs = "".join(airflow.task_log(DAG_ID, run_id, "call_api", map_index=i) for i in range(8))
    for index in range(8):  # each task says it once: one refreshed, the others tried to catch up
        log = airflow.task_log(DAG_ID, run_id, "call_api", map_index=index)
        assert log.count("nothing is lost and this task goes on") == 1
        assert "create the connection 'airflow_api'" in log and "failed (attempt 2/3)" not in log
    assert central["refresh_token"] not in logs
