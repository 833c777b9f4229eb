"""How long new tokens exist nowhere durable: from the token response to the central copy, inside tasks.

A worker killed in that window loses a single-use Brightspace refresh token for good; once the
central copy (an Airflow Variable, written through the Execution API) exists, any worker carries
the chain on. Measured in real supervised tasks of a local Airflow (scheduler, api-server,
LocalExecutor) against the emulator: each refresh reports ``TokenLifecycle.custody_seconds``, and the
time to the confirmed connection save (``saved``) beside it.
"""

from __future__ import annotations

import statistics
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from airflow_provider_canvas.testing import LmsEmulator
from airflow_provider_canvas.testing.local_airflow import LocalAirflow
from airflow_provider_canvas.testing.postgres import (
    TEST_DATABASE,
    PostgresServer,
    configured_server,
    fresh_postgres_database,
)
from benchmarks._harness import CaseReport, Table, Workspace, fmt, progress

DAG_ID = "bench_token_custody"
DAG = """
from airflow.sdk import dag, task


@dag(dag_id="{dag_id}", schedule=None, catchup=False)
def bench_token_custody():
    @task
    def refresh_repeatedly(conn_id: str, count: int) -> list:
        import time

        from airflow_provider_canvas.brightspace.hooks.brightspace import BrightspaceHook

        samples = []
        for _ in range(count):
            hook = BrightspaceHook(conn_id)  # the buffer exceeds the token's life: every hook refreshes
            started = time.monotonic()
            hook.keep_alive()
            samples.append({{"custody": hook.tokens.custody_seconds, "saved": time.monotonic() - started}})
        return samples

    refresh_repeatedly("{conn_id}", {count})


bench_token_custody()
"""


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def measure(workspace: Workspace, count: int) -> list[dict[str, float]]:
    with ExitStack() as stack:
        emulator = stack.enter_context(LmsEmulator())
        emulator.brightspace.revoke_family_on_reuse = True
        emulator.brightspace.register_client("bench", "bench-secret")
        issued = emulator.brightspace.issue_tokens("bench")
        database = stack.enter_context(
            fresh_postgres_database(PostgresServer.from_url(workspace.postgres_url))
        )
        dags = workspace.root / "custody-dags"
        dags.mkdir(exist_ok=True)
        (dags / f"{DAG_ID}.py").write_text(DAG.format(dag_id=DAG_ID, conn_id="bench_custody", count=count))
        airflow = LocalAirflow(workspace.root / "custody-home", dags, database_url=database)
        stack.callback(airflow.stop)
        progress("custody: starting a local Airflow")
        airflow.start()
        extra = {
            **emulator.connection_extra("brightspace", issued, expired=True),
            "expiry_buffer_seconds": 10**7,
        }
        airflow.add_connection(
            "bench_custody",
            "brightspace",
            host=emulator.url,
            login="bench",
            password="bench-secret",
            extra=extra,
        )
        airflow.wait_for_dag(DAG_ID)
        run_id = airflow.trigger(DAG_ID)
        state = airflow.wait_for_run(DAG_ID, run_id, timeout=600)
        if state != "success":
            raise RuntimeError(f"custody run {state}: {airflow.log_tail('scheduler')}")
        samples: list[dict[str, Any]] = airflow.xcom(DAG_ID, run_id, "refresh_repeatedly")
        if emulator.consumed_presentations("brightspace") or emulator.refresh_count("brightspace") != count:
            raise RuntimeError("the custody run presented a consumed refresh token or missed a refresh")
        return samples


def run(workspace: Workspace, *, quick: bool, reps: int) -> CaseReport:
    count = 20 if quick else 100 * reps
    samples = measure(workspace, count)
    custody = [s["custody"] * 1000 for s in samples]
    saved = [s["saved"] * 1000 for s in samples]
    table = Table(
        f"Token custody inside tasks: {count} refreshes (ms)",
        ["from the token response to", "p50", "p99", "max"],
    )
    table.add("the central copy (durable; the window)", *(fmt(f(custody)) for f in _quantiles()))
    table.add("the confirmed connection save (whole refresh)", *(fmt(f(saved)) for f in _quantiles()))
    table.notes.append(
        "custody: TokenLifecycle.custody_seconds (local rescue file, then Variable.set through the "
        "Execution API); saved: hook.keep_alive() from start to the read-back of the PATCHed connection"
    )
    # No target: the window is what it is (one Execution API round trip); it is reported, not judged.
    return CaseReport([table], [], raw={"custody_ms": custody, "saved_ms": saved})


def _quantiles() -> list[Any]:
    return [statistics.median, lambda v: _percentile(v, 0.99), max]


if __name__ == "__main__":
    import sys

    with Workspace(postgres_url=configured_server().url(TEST_DATABASE)) as bench_workspace:
        report = run(bench_workspace, quick="--quick" in sys.argv, reps=1)
    for result in report.tables:
        print(result.render())
    print(Path(__file__).name, "done")
