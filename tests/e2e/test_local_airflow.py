"""The LocalAirflow harness, and facts about Airflow 3.3 task code that only a real scheduler shows."""

from __future__ import annotations

import os
import signal
import time
from contextlib import nullcontext
from datetime import datetime, timezone
from pathlib import Path

import psutil
import pytest
import requests

from airflow_provider_canvas.testing.local_airflow import LocalAirflow
from airflow_provider_canvas.testing.postgres import fresh_postgres_database

pytestmark = pytest.mark.e2e
E2E_DAGS = Path(__file__).parent / "dags"


def run_dag(airflow: LocalAirflow, dag_id: str, conf: dict | None = None) -> tuple[str, float]:
    """Trigger ``dag_id``, wait for it; return its run_id and the seconds from trigger to finish."""
    airflow.wait_for_dag(dag_id)
    started = time.monotonic()
    run_id = airflow.trigger(dag_id, conf)
    state = airflow.wait_for_run(dag_id, run_id, timeout=120)
    elapsed = time.monotonic() - started
    assert state == "success", [(ti["task_id"], ti["state"]) for ti in airflow.task_instances(dag_id, run_id)]
    return run_id, elapsed


def test_rest_api_needs_no_token(local_airflow: LocalAirflow) -> None:
    response = requests.get(f"{local_airflow.api_url}/api/v2/dags", timeout=10)
    assert response.status_code == 200, response.text
    health = requests.get(f"{local_airflow.api_url}/api/v2/monitor/health", timeout=10).json()
    assert {health[c]["status"] for c in ("scheduler", "dag_processor", "triggerer")} == {"healthy"}


def test_trivial_dag_runs(local_airflow: LocalAirflow) -> None:
    run_id, elapsed = run_dag(local_airflow, "smoke_trivial")
    print(f"smoke_trivial trigger -> success: {elapsed:.1f}s")
    assert local_airflow.xcom("smoke_trivial", run_id, "hello") == "hello"
    [ti] = local_airflow.task_instances("smoke_trivial", run_id)
    assert (ti["task_id"], ti["state"], ti["map_index"], ti["try_number"]) == ("hello", "success", -1, 1)
    assert "Done. Returned value was: hello" in local_airflow.task_log("smoke_trivial", run_id, "hello")
    dated = local_airflow.trigger("smoke_trivial", logical_date=datetime(2024, 1, 2, tzinfo=timezone.utc))
    assert local_airflow.wait_for_run("smoke_trivial", dated, timeout=120) == "success"
    assert (
        local_airflow.api("GET", f"/dags/smoke_trivial/dagRuns/{dated}")
        .json()["logical_date"]
        .startswith("2024-01-02T00:00:00")
    )


def test_wait_for_dag_reports_import_errors(local_airflow: LocalAirflow) -> None:
    with pytest.raises(TimeoutError, match="Import errors: none"):
        local_airflow.wait_for_dag("no_such_dag", timeout=2)


def test_variables_and_connections_round_trip(local_airflow: LocalAirflow) -> None:
    local_airflow.set_variable("smoke_var", "one")
    local_airflow.set_variable("smoke_var", {"n": 2})
    assert local_airflow.get_variable("smoke_var") == '{"n": 2}'
    assert local_airflow.get_variable("smoke_missing") is None
    local_airflow.add_connection("smoke_conn", "http", host="example.invalid", login="me", extra={"a": 1})
    local_airflow.add_connection("smoke_conn", "http", host="example.invalid", extra={"a": 2, "b": [True]})
    conn = local_airflow.get_connection("smoke_conn")
    assert (conn["conn_type"], conn["host"], conn["login"]) == ("http", "example.invalid", None)
    assert conn["extra_dejson"] == {"a": 2, "b": [True]}  # not the CLI's stringified {"a": "2", ...}
    local_airflow.add_connection("smoke_flat", "http", password="pw-123456", extra={"k": "v", "e": ""})
    flat = local_airflow.get_connection("smoke_flat")
    assert (flat["password"], flat["extra_dejson"]) == ("pw-123456", {"k": "v", "e": ""})


def test_task_facts(local_airflow: LocalAirflow) -> None:
    """Facts 1 and 2: the ORM is blocked in tasks, yet a task can PATCH a connection over REST."""
    local_airflow.add_connection("smoke_patch", "http", host="example.invalid", extra={"v": "old"})
    conf = {"conn_id": "smoke_patch", "new_extra": {"v": "new"}}
    run_id, _ = run_dag(local_airflow, "smoke_facts", conf)

    orm = local_airflow.xcom("smoke_facts", run_id, "orm_is_blocked")
    assert orm["session_class"] == "airflow.sdk.execution_time.supervisor.BlockedDBSession"
    assert orm["session_error"] == "Direct database access via the ORM is not allowed in Airflow 3.0"
    assert orm["supervisor_comms"] is True

    patched = local_airflow.xcom("smoke_facts", run_id, "patch_connection_extra")
    assert patched["base"] == local_airflow.api_url
    assert patched["status_code"] == 200  # sent without any Authorization header
    assert (patched["extra_before"], patched["extra_after"]) == ({"v": "old"}, {"v": "new"})
    assert local_airflow.get_connection("smoke_patch")["extra_dejson"] == {"v": "new"}


def test_parallelism_four_runs_four_at_once(local_airflow: LocalAirflow) -> None:
    """Fact 3: with parallelism 4, eight 3-second mapped tasks run at least four at a time."""
    run_id, elapsed = run_dag(local_airflow, "smoke_parallel")
    spans = [local_airflow.xcom("smoke_parallel", run_id, "sleeper", map_index=i) for i in range(8)]
    peak = max(sum(s["start"] <= t < s["end"] for s in spans) for t in (s["start"] for s in spans))
    print(f"smoke_parallel: peak concurrency {peak}, run {elapsed:.1f}s")
    assert peak >= 4
    assert peak <= 4  # parallelism is a ceiling too


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_fresh_instance_starts_and_survives_a_scheduler_kill(tmp_path: Path, backend: str) -> None:
    """Fact 4 (start-up time), a second instance beside the session one, and the failure-drill API."""
    with fresh_postgres_database() if backend == "postgres" else nullcontext() as database_url:
        airflow = LocalAirflow(tmp_path / "home", E2E_DAGS, database_url=database_url)
        started = time.monotonic()
        with airflow:
            print(f"{backend}: start() {time.monotonic() - started:.1f}s")
            scheduler_pid = airflow.processes["scheduler"].pid
            airflow.kill("scheduler", signal.SIGKILL)
            airflow.restart("scheduler")
            assert airflow.processes["scheduler"].pid != scheduler_pid
            run_dag(airflow, "smoke_trivial")
            sessions = {scheduler_pid} | {proc.pid for proc in airflow.processes.values()}
        assert airflow.processes == {}
        assert not [pid for pid in psutil.pids() if _session_of(pid) in sessions], "stop() left processes"
        airflow.stop()  # idempotent


def _session_of(pid: int) -> int | None:
    try:
        return None if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE else os.getsid(pid)
    except (OSError, psutil.Error):
        return None
