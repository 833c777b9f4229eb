"""Workers killed at each step of a refresh, their disk deleted: what the other workers do next.

Each worker is a process with its own state directory (another host: no shared lock file, no shared
rescue file) and the PostgreSQL lock (with its durable copy). One worker is stalled at a step of its refresh
(``CANVAS_PROVIDER_DRILL_STALL``), SIGKILLed there and its state directory deleted, as an ephemeral
pod is. Then three workers on other hosts use the connection.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import uuid

import pytest
from lms_fixtures import postgres_connection_fields, stored_extra

from airflow_provider_canvas.common import airflow_access as metadata

pytestmark = pytest.mark.slow  # 4 worker processes per drill, each importing Airflow


def _host(tmp_path, name: str) -> dict[str, str]:
    """A worker on a host of its own: its own state directory."""
    return {"AIRFLOW__CANVAS_PROVIDER__STATE_DIR": str(tmp_path / f"host-{name}")}


@pytest.fixture
def drill_connection(lms_connection, make_connection) -> str:
    lock = make_connection("drill_lock_pg", extra={}, **postgres_connection_fields())
    # An id of its own: the machine's PostgreSQL may serve other test runs at the same time.
    return lms_connection("brightspace", f"bs_drill_{uuid.uuid4().hex[:8]}", expired=True, lock_conn_id=lock)


@pytest.mark.parametrize("step", ["announced", "token_response", "durable_copy", "saved"])
def test_a_worker_killed_during_a_refresh_with_its_disk_gone(
    emulator, drill_connection, refresh_workers, tmp_path, step
):
    conn_id = drill_connection
    before = stored_extra(conn_id)["refresh_token"]

    [killed] = refresh_workers(
        conn_id, tmp_path / "go-a", [_host(tmp_path, "a") | {"CANVAS_PROVIDER_DRILL_STALL": f"{step}:120"}]
    )
    (tmp_path / "go-a").touch()
    killed.wait_for(f"Drill: stalled after {step}")
    os.kill(killed.pid, signal.SIGKILL)
    killed.process.wait()
    host_a = tmp_path / "host-a"
    shutil.rmtree(host_a, ignore_errors=True)  # an ephemeral worker's disk goes with it
    # Killed after the announcement, the refresh token never left; at any later step it reached the server.
    assert emulator.refresh_count("brightspace") == (0 if step == "announced" else 1)

    go = tmp_path / "go"
    others = refresh_workers(conn_id, go, [_host(tmp_path, name) for name in "bcd"])
    go.touch()
    results = [worker.result() for worker in others]
    print(
        f"\n{step}: others {results}, consumed presentations {emulator.consumed_presentations('brightspace')}"
    )
    assert emulator.consumed_presentations("brightspace") == 0

    if step in ("announced", "token_response"):
        # Killed before any durable copy: the announced refresh token is not presented again. Every
        # worker fails at once naming the dead worker and where its new tokens may be.
        assert [worker.returncode for worker in others] == [3, 3, 3]
        for result in results:
            assert f"pid {killed.pid}" in result["error"] and "never completed" in result["error"]
            assert str(host_a / "rescue") in result["error"]
            assert f"canvas-oauth authorize {conn_id}" in result["error"]
        assert stored_extra(conn_id)["refresh_token"] == before
        return
    # After the durable copy, nothing is lost: the chain goes on with no second refresh.
    assert [worker.returncode for worker in others] == [0, 0, 0], results
    assert sum(result["refreshes"] for result in results) == 0
    assert emulator.refresh_count("brightspace") == 1
    central = json.loads(metadata.get_variable(f"canvas_provider_tokens__{conn_id}"))
    assert stored_extra(conn_id)["refresh_token"] == central["refresh_token"] != before
