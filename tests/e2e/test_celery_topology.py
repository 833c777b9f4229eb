"""The CeleryExecutor as a site with worker hosts runs it: two workers, one expired connection, a Redis lock.

Each worker has its own AIRFLOW_HOME and state_dir and no metadata database; the only thing the eight
tasks share is the Redis token lock (``lock_conn_id``) and the connection behind the api-server.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from urllib.parse import urlsplit

import pendulum
import psutil
import pytest
import requests
from redis_server import RedisServer

from airflow_provider_canvas.testing import LmsEmulator
from airflow_provider_canvas.testing.celery_hosts import REDIS_LOCK_CONN_ID
from airflow_provider_canvas.testing.local_airflow import LocalAirflow
from airflow_provider_canvas.testing.postgres import fresh_postgres_database

pytestmark = pytest.mark.e2e

E2E_DAGS = Path(__file__).parent / "dags"
DAG_ID = "token_refresh_parallel"
CLIENT_ID, CLIENT_SECRET = "e2e-celery-client", "e2e-celery-client-secret-value"


@pytest.fixture(scope="module")
def celery_airflow(
    tmp_path_factory: pytest.TempPathFactory, redis_server: RedisServer
) -> Iterator[LocalAirflow]:
    """Broker and lock: the Redis of the Redis tests (the machine's, or the embedded one)."""
    with ExitStack() as stack:
        database_url = stack.enter_context(fresh_postgres_database())
        airflow = LocalAirflow(
            tmp_path_factory.mktemp("airflow_celery"),
            E2E_DAGS,
            database_url=database_url,
            executor="CeleryExecutor",
            celery_workers=2,
            worker_concurrency=2,
            parallelism=8,
            redis_url=f"redis://{redis_server.host}:{redis_server.port}/0",
        )
        stack.callback(airflow.stop)  # the test stops it; this is for failures
        started = time.monotonic()
        airflow.start()
        print(
            f"\n[celery] scheduler, dag-processor, triggerer, api-server and 2 workers up in "
            f"{time.monotonic() - started:.1f}s"
        )
        yield airflow


@pytest.fixture
def emulator() -> Iterator[LmsEmulator]:
    with LmsEmulator() as emu:
        # Strict single-use mode: reusing a consumed refresh token revokes the whole family.
        emu.brightspace.revoke_family_on_reuse = True
        yield emu


def _state_files(state_dir: Path) -> list[str]:
    return sorted(str(p.relative_to(state_dir)) for p in state_dir.rglob("*"))


def test_two_celery_workers_refresh_once_under_a_redis_lock(
    celery_airflow: LocalAirflow, emulator: LmsEmulator, redis_server: RedisServer
) -> None:
    airflow = celery_airflow
    workers = {worker.hostname: worker for worker in airflow.workers.values()}
    assert len(workers) == 2
    assert len({w.home for w in workers.values()} | {w.state_dir for w in workers.values()}) == 4

    emulator.brightspace.register_client(CLIENT_ID, CLIENT_SECRET)
    issued = emulator.brightspace.issue_tokens(CLIENT_ID)
    extra = {
        **emulator.connection_extra("brightspace", issued, expired=True),
        "lock_conn_id": REDIS_LOCK_CONN_ID,
    }
    conn_id = f"brightspace_{airflow.celery_queue.replace('-', '_')}"  # its lock key is this run's alone
    airflow.add_connection(
        conn_id, "brightspace", host=emulator.url, login=CLIENT_ID, password=CLIENT_SECRET, extra=extra
    )
    lock_conn = airflow.api("GET", f"/connections/{REDIS_LOCK_CONN_ID}").json()
    broker = urlsplit(airflow.redis_url)
    assert (lock_conn["conn_type"], lock_conn["host"], lock_conn["port"]) == (
        "redis",
        broker.hostname,
        broker.port,
    )

    airflow.wait_for_dag(DAG_ID)
    started = time.monotonic()
    run_id = airflow.trigger(DAG_ID, {"conn_id": conn_id, "platform": "brightspace", "separate_hosts": False})
    state = airflow.wait_for_run(DAG_ID, run_id, timeout=120)
    run_seconds = time.monotonic() - started
    instances = sorted(airflow.task_instances(DAG_ID, run_id), key=lambda ti: ti["map_index"])
    assert state == "success", [(ti["map_index"], ti["state"], ti["hostname"]) for ti in instances]
    assert [ti["try_number"] for ti in instances] == [1] * 8  # no task needed a retry
    results = [airflow.xcom(DAG_ID, run_id, "call_api", map_index=index) for index in range(8)]
    assert [ti["map_index"] for ti in instances] == [result["index"] for result in results] == list(range(8))

    per_host = Counter(ti["hostname"] for ti in instances)
    refreshed_on = [ti["hostname"] for ti, r in zip(instances, results, strict=True) if r["refreshes"]]
    durations = sorted(ti["duration"] for ti in instances)
    print(
        f"[celery] run {run_seconds:.1f}s; refreshes at the emulator "
        f"{emulator.refresh_count('brightspace')}, consumed tokens presented "
        f"{emulator.consumed_presentations('brightspace')}; tasks per worker {dict(per_host)}; "
        f"refreshed on {refreshed_on}; task durations {[round(d, 1) for d in durations]} s"
    )

    # Both workers ran tasks, and nothing else did.
    assert set(per_host) == set(workers), per_host
    assert all(result["orm_blocked"] for result in results), "tasks must run with the ORM blocked"
    # One refresh for eight tasks on two hosts, and no consumed refresh token ever presented.
    assert sum(result["refreshes"] for result in results) == 1
    assert emulator.refresh_count("brightspace") == 1
    assert emulator.consumed_presentations("brightspace") == 0
    rejected = [r for r in emulator.api_requests if r.status == 401]
    assert rejected == [], "no task may fail on an access token another task invalidated"

    # The connection holds the live tokens: `airflow connections get` shows them, and the saved
    # refresh token is the one the emulator accepts next (presented once here: not a consumed one).
    saved = airflow.get_connection(conn_id)["extra_dejson"]
    assert saved["refresh_token"] != issued.refresh_token
    assert pendulum.parse(saved["expires_at"]) > pendulum.now("UTC").add(minutes=50)
    assert saved["lock_conn_id"] == REDIS_LOCK_CONN_ID
    answer = requests.post(
        saved["oauth_url"],
        data={"grant_type": "refresh_token", "refresh_token": saved["refresh_token"]},
        auth=(CLIENT_ID, CLIENT_SECRET),
        timeout=10,
    )
    assert answer.status_code == 200, answer.text
    assert emulator.consumed_presentations("brightspace") == 0

    # Each worker kept token state in its own state_dir only. The Redis lock leaves no lock file; the
    # refreshing worker made its rescue directory and emptied it after the confirmed save; the other
    # worker wrote nothing; nothing went to the scheduler's AIRFLOW_HOME.
    [refresher] = refreshed_on
    for hostname, worker in workers.items():
        expected = ["rescue"] if hostname == refresher else []
        assert _state_files(worker.state_dir) == expected, hostname
    assert not (airflow.home / "canvas_provider").exists()

    # The workers' task logs reach the api-server; they hold no secret.
    logs = "".join(airflow.task_log(DAG_ID, run_id, "call_api", map_index=i) for i in range(8))
    assert "refreshed the access token" in logs
    for secret in (CLIENT_SECRET, issued.refresh_token, saved["refresh_token"], saved["access_token"]):
        assert secret not in logs

    # stop() ends the workers with the rest and leaves nothing of this instance in the shared Redis.
    worker_pids = [airflow.processes[name].pid for name in airflow.workers]
    prefix = airflow.env["AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__GLOBAL_KEYPREFIX"]
    with redis_server.client() as client:
        assert list(client.scan_iter(match=f"{prefix}*"))  # kombu's queue and bindings, while running
        started = time.monotonic()
        airflow.stop()
        print(f"[celery] stopped (workers included) in {time.monotonic() - started:.1f}s")
        assert not [pid for pid in worker_pids if psutil.pid_exists(pid)]
        assert list(client.scan_iter(match=f"{prefix}*")) == []
