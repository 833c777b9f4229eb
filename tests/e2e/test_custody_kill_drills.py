"""Kill drills under a real scheduler: a task SIGKILLed at each step of a refresh, its disk deleted.

With the PostgreSQL lock and with the Redis lock (each with its durable copy), a task is stalled at a
step of its refresh (``CANVAS_PROVIDER_DRILL_STALL``), SIGKILLed there and its state directory deleted,
as an ephemeral pod is; then two tasks on other empty disks use the connection. Beside them, a stale
write-back (the connection restored to a copy two rotations old) and a copied connection. All drills
run at once on the session's Airflow; the strict emulator counts every consumed-token presentation.
"""

from __future__ import annotations

import os
import shutil
import signal
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest
import requests

from airflow_provider_canvas.testing import LmsEmulator
from airflow_provider_canvas.testing.local_airflow import LocalAirflow
from airflow_provider_canvas.testing.postgres import configured_server
from airflow_provider_canvas.tokens.record import fingerprint

pytestmark = pytest.mark.e2e

DAG_ID = "custody_drill"
CLIENT_ID, CLIENT_SECRET = "kill-drill-client", "kill-drill-client-secret"
STEPS = ("announced", "token_response", "durable_copy", "saved")
LOCKS = {"postgres": "custody_lock_pg", "redis": "custody_lock_redis"}
#: Long enough to be killed first; the finalizer fails any run still stalled, freeing its slot.
STALL_SECONDS = 300
T = TypeVar("T")


@pytest.fixture
def emulator() -> Iterator[LmsEmulator]:
    with LmsEmulator() as emu:
        emu.brightspace.revoke_family_on_reuse = True  # strict: a reused refresh token ends the chain
        emu.brightspace.register_client(CLIENT_ID, CLIENT_SECRET)
        yield emu


@pytest.fixture
def lock_connections(local_airflow: LocalAirflow, redis_server) -> None:
    pg = {"connection_id": LOCKS["postgres"], **configured_server().connection_fields()}
    local_airflow.api("POST", "/connections", ok=(201, 409), json=pg)
    redis = {"connection_id": LOCKS["redis"], "conn_type": "redis"}
    redis |= {"host": redis_server.host, "port": redis_server.port}
    local_airflow.api("POST", "/connections", ok=(201, 409), json=redis)


@pytest.fixture
def runs(local_airflow: LocalAirflow) -> Iterator[dict[str, dict]]:
    """Every run the drill starts (id: conf); at the end, any still going is failed (its task reaped)."""
    started: dict[str, dict] = {}
    yield started
    for run_id in list(started):
        try:
            state = local_airflow.api("GET", f"/dags/{DAG_ID}/dagRuns/{run_id}").json()["state"]
            if state not in ("success", "failed"):
                local_airflow.api("PATCH", f"/dags/{DAG_ID}/dagRuns/{run_id}", json={"state": "failed"})
        except Exception as err:  # reap the others all the same; the test's own result stands
            print(f"could not reap run {run_id}: {err}")


def _connect(airflow: LocalAirflow, emulator: LmsEmulator, conn_id: str, lock: str, **extra: object) -> dict:
    issued = emulator.brightspace.issue_tokens(CLIENT_ID)
    fields = {**emulator.connection_extra("brightspace", issued, expired=True), "lock_conn_id": lock, **extra}
    airflow.add_connection(
        conn_id, "brightspace", host=emulator.url, login=CLIENT_ID, password=CLIENT_SECRET, extra=fields
    )
    return fields


def _retry(call: Callable[[], T], attempts: int = 4) -> T:
    """A loaded api-server may not answer in 30 s: ask again (reads and idempotent writes only)."""
    for attempt in range(1, attempts + 1):
        try:
            return call()
        except requests.RequestException:
            if attempt == attempts:
                raise
    raise AssertionError("unreachable")


def _trigger(airflow: LocalAirflow, runs: dict[str, dict], conn_id: str, **conf: object) -> str:
    """Start a run with an id of our own, so that asking again never starts a second one."""
    run_id = f"drill_{uuid.uuid4().hex[:12]}"
    body: dict = {"dag_run_id": run_id, "logical_date": None}
    body["conf"] = {"conn_id": conn_id, "stall": "", "api_url": "", "mark": "", **conf}
    _retry(lambda: airflow.api("POST", f"/dags/{DAG_ID}/dagRuns", ok=(200, 409), json=body))
    runs[run_id] = body["conf"]
    return run_id


def _never_started(airflow: LocalAirflow, run_id: str) -> bool:
    """A task whose supervisor gave up reaching a cold, loaded api-server: it never ran any code."""
    path = f"/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/call_api"
    return _retry(lambda: airflow.api("GET", path).json()["start_date"]) is None


def _outcome(airflow: LocalAirflow, runs: dict[str, dict], run_id: str) -> tuple[str, str]:
    """The final state of a run (started again, twice at most, if its task never started), and its id."""
    for _ in range(3):
        state = _wait(airflow, run_id)
        if state == "success" or not _never_started(airflow, run_id):
            return state, run_id
        conf = runs[run_id]
        run_id = _trigger(airflow, runs, conf["conn_id"], **{k: v for k, v in conf.items() if k != "conn_id"})
    raise AssertionError(f"the task of {run_id} never started, three times")


def _state(airflow: LocalAirflow, run_id: str) -> str:
    return _retry(lambda: airflow.api("GET", f"/dags/{DAG_ID}/dagRuns/{run_id}").json()["state"])


def _wait(airflow: LocalAirflow, run_id: str, timeout: float = 300) -> str:
    deadline = time.monotonic() + timeout
    while (state := _state(airflow, run_id)) not in ("success", "failed"):
        assert time.monotonic() < deadline, f"run {run_id} still {state} after {timeout}s"
        time.sleep(0.5)
    return state


def _xcom(airflow: LocalAirflow, run_id: str) -> dict:
    return _retry(lambda: airflow.xcom(DAG_ID, run_id, "call_api"))


def _log(airflow: LocalAirflow, run_id: str) -> str:
    return _retry(lambda: airflow.task_log(DAG_ID, run_id, "call_api"))


def _kill_each_when_stalled(
    airflow: LocalAirflow,
    runs: dict[str, dict],
    drills: dict,
    marks: dict[tuple[str, str], Path],
    timeout: float = 400,
) -> tuple[dict, dict]:
    """Start every victim; SIGKILL each as soon as it stalls and delete its disk; return pids and runs.

    A run that ends before it stalls (its task never started: a slow api-server at a cold start makes
    the supervisor give up) is started again, twice at most.
    """
    victims = {
        drill: _trigger(airflow, runs, drills[drill], stall=f"{drill[1]}:{STALL_SECONDS}", mark=str(mark))
        for drill, mark in marks.items()
    }
    restarts = dict.fromkeys(marks, 0)
    killed: dict[tuple[str, str], int] = {}
    deadline = time.monotonic() + timeout
    polled = 0.0
    while len(killed) < len(marks):
        assert time.monotonic() < deadline, f"not stalled in {timeout}s: {set(marks) - set(killed)}"
        for drill, mark in marks.items():
            pid = mark.read_text().strip() if drill not in killed and mark.exists() else ""
            if pid:
                os.kill(int(pid), signal.SIGKILL)
                shutil.rmtree(Path(f"{mark}.state_dir").read_text(), ignore_errors=True)
                killed[drill] = int(pid)
        if time.monotonic() - polled > 3:
            polled = time.monotonic()
            for drill in set(marks) - set(killed):
                state = _state(airflow, victims[drill])
                if state in ("success", "failed") and not marks[drill].exists():
                    assert restarts[drill] < 2, f"{drill}: the task ended twice before it stalled"
                    restarts[drill] += 1
                    victims[drill] = _trigger(
                        airflow,
                        runs,
                        drills[drill],
                        stall=f"{drill[1]}:{STALL_SECONDS}",
                        mark=str(marks[drill]),
                    )
        time.sleep(0.2)
    return killed, victims


def test_kills_at_every_step_a_stale_write_back_and_a_copied_connection_present_no_consumed_token(
    local_airflow: LocalAirflow,
    emulator: LmsEmulator,
    lock_connections: None,
    runs: dict[str, dict],
    tmp_path,
) -> None:
    local_airflow.wait_for_dag(DAG_ID)
    local_airflow.api("PATCH", f"/dags/{DAG_ID}", json={"is_paused": False})
    tag = uuid.uuid4().hex[:6]
    drills = {(lock, step): f"kill_{lock}_{step}_{tag}" for lock in LOCKS for step in STEPS}
    before = {
        drill: _connect(local_airflow, emulator, conn_id, LOCKS[drill[0]])["refresh_token"]
        for drill, conn_id in drills.items()
    }
    stale, copy_a, copy_b = f"stale_{tag}", f"copied_a_{tag}", f"copied_b_{tag}"
    # The stale drill refreshes on every hook (the buffer outlives the token): two rotations, then a backup.
    backup = _connect(local_airflow, emulator, stale, LOCKS["postgres"], expiry_buffer_seconds=10**7)
    shared = _connect(local_airflow, emulator, copy_a, LOCKS["postgres"])
    local_airflow.add_connection(
        copy_b, "brightspace", host=emulator.url, login=CLIENT_ID, password=CLIENT_SECRET, extra=shared
    )

    # Phase 1: every victim at once, each killed as it stalls; the stale chain rotates twice; copy A refreshes
    marks = {drill: tmp_path / f"{drill[0]}-{drill[1]}.pid" for drill in drills}
    rotations = _trigger(local_airflow, runs, stale, calls=2)
    first_copy = _trigger(local_airflow, runs, copy_a)
    killed, victims = _kill_each_when_stalled(local_airflow, runs, drills, marks)
    assert all(_wait(local_airflow, run) == "failed" for run in victims.values())
    assert _outcome(local_airflow, runs, rotations)[0] == "success"
    state, first_copy = _outcome(local_airflow, runs, first_copy)
    assert state == "success" and _xcom(local_airflow, first_copy)["refreshes"] == 1

    # Phase 2: two tasks on fresh disks per drill; the stale backup written back; copy B used.
    local_airflow.add_connection(
        stale, "brightspace", host=emulator.url, login=CLIENT_ID, password=CLIENT_SECRET, extra=backup
    )
    followers = {
        drill: [_trigger(local_airflow, runs, conn_id) for _ in range(2)] for drill, conn_id in drills.items()
    }
    after_backup = _trigger(local_airflow, runs, stale)
    second_copy = _trigger(local_airflow, runs, copy_b)

    figures = {}
    for (lock, step), run_ids in followers.items():
        conn_id = drills[lock, step]
        settled = [_outcome(local_airflow, runs, run) for run in run_ids]
        states, run_ids = [state for state, _ in settled], [run for _, run in settled]
        if step in ("announced", "token_response"):
            # Before any durable copy: the announced token is not presented again; both fail fast
            # naming the killed task's pid and the rescue file on its (deleted) disk.
            assert states == ["failed", "failed"], (lock, step)
            for run in run_ids:
                log = _log(local_airflow, run)
                assert "never completed" in log and f"pid {killed[lock, step]})" in log, log[-3000:]
                assert f"canvas-oauth authorize {conn_id}" in log
            outcome = "reported lost, naming the killed task's pid and rescue file"
        else:
            # After the durable copy: the chain goes on with no second refresh.
            assert states == ["success", "success"], (lock, step)
            results = [_xcom(local_airflow, run) for run in run_ids]
            assert sum(result["refreshes"] for result in results) == 0
            for result in results:  # the connection caught up with the central copy, a new token
                assert result["connection"] == result["central"] != fingerprint(before[lock, step])
            outcome = "chain goes on; live tokens in the connection, the Variable and the lock backend"
        figures[lock, step] = outcome

    state, after_backup = _outcome(local_airflow, runs, after_backup)
    assert state == "success"
    result = _xcom(local_airflow, after_backup)
    assert result["refreshes"] == 1 and result["connection"] == result["central"]
    state, second_copy = _outcome(local_airflow, runs, second_copy)
    assert state == "failed"
    refusal = _log(local_airflow, second_copy)
    assert f"belongs to connection {copy_a!r}" in refusal and f"canvas-oauth authorize {copy_b}" in refusal

    # 2 locks x 3 steps that reached the server, 3 rotations of the stale chain, copy A's one refresh.
    assert emulator.refresh_count("brightspace") == 2 * 3 + 3 + 1
    assert emulator.consumed_presentations("brightspace") == 0
    print("\n" + "\n".join(f"{lock} {step}: {outcome}" for (lock, step), outcome in figures.items()))
