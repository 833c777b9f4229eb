"""How long new tokens exist nowhere durable: from the token response to the first durable copy, inside tasks.

A worker killed in that window takes the token response with it (since announcements, the others then
fail fast instead of presenting the consumed token; the chain still needs authorizing again). With a
lock backend the first durable copy is the encrypted record in that backend (PostgreSQL table or Redis
key, on the lock's own connection); without one it is the Airflow Variable, written through the
Execution API. Measured in real supervised tasks of a local Airflow (scheduler, api-server,
LocalExecutor) against the strict emulator: each refresh reports ``TokenLifecycle.custody_seconds``,
and the time to the confirmed connection save beside it. The three cases run at once, as tasks of one
Airflow would. Then the Redis lease: how long refreshes stall after a lock holder is SIGKILLed.
"""

from __future__ import annotations

import os
import signal
import statistics
import subprocess
import sys
import time
import uuid
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
from benchmarks._harness import (
    CaseReport,
    Table,
    Target,
    Workspace,
    fmt,
    postgres_connection_fields,
    progress,
)

#: Where the lock backends are (the machine's PostgreSQL and Redis): ``CANVAS_BENCH_REDIS``.
REDIS_HOST, REDIS_PORT = (os.environ.get("CANVAS_BENCH_REDIS") or "127.0.0.1:6379").split(":")
CASES = {"postgres": "bench_lock_pg", "redis": "bench_lock_redis", "none (Variable only)": ""}
TARGET_P99_MS = 20.0
TARGET_LEASE_S = 5.0

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


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()


def measure(workspace: Workspace, count: int, cases: dict[str, str]) -> dict[str, list[dict[str, float]]]:
    """``count`` refreshes in one task per lock backend, the tasks running at once."""
    with ExitStack() as stack:
        emulator = stack.enter_context(LmsEmulator())
        emulator.brightspace.revoke_family_on_reuse = True
        emulator.brightspace.register_client("bench", "bench-secret")
        database = stack.enter_context(
            fresh_postgres_database(PostgresServer.from_url(workspace.postgres_url))
        )
        dags = workspace.root / "custody-dags"
        dags.mkdir(exist_ok=True)
        tag = uuid.uuid4().hex[:6]
        conn_ids = {case: f"bench_custody_{index}_{tag}" for index, case in enumerate(cases)}
        for case, conn_id in conn_ids.items():
            dag_id = f"{DAG_ID}_{case.split()[0]}"
            (dags / f"{dag_id}.py").write_text(DAG.format(dag_id=dag_id, conn_id=conn_id, count=count))
        airflow = LocalAirflow(workspace.root / "custody-home", dags, database_url=database)
        stack.callback(airflow.stop)
        progress("custody: starting a local Airflow")
        airflow.start()
        airflow.add_connection(
            CASES["postgres"], "postgres", **postgres_connection_fields(workspace.postgres_url)
        )
        airflow.add_connection(CASES["redis"], "redis", host=REDIS_HOST, port=int(REDIS_PORT))
        runs = {}
        for case, conn_id in conn_ids.items():
            issued = emulator.brightspace.issue_tokens("bench")
            extra = {
                **emulator.connection_extra("brightspace", issued, expired=True),
                "expiry_buffer_seconds": 10**7,
                **({"lock_conn_id": cases[case]} if cases[case] else {}),
            }
            airflow.add_connection(
                conn_id, "brightspace", host=emulator.url, login="bench", password="bench-secret", extra=extra
            )
            dag_id = f"{DAG_ID}_{case.split()[0]}"
            airflow.wait_for_dag(dag_id)
            runs[case] = (dag_id, airflow.trigger(dag_id))
        progress(f"custody: {len(runs)} tasks of {count} refreshes each, at once")
        samples = {}
        for case, (dag_id, run_id) in runs.items():
            state = airflow.wait_for_run(dag_id, run_id, timeout=3600)
            if state != "success":
                raise RuntimeError(f"custody run {case} {state}: {airflow.log_tail('scheduler')}")
            samples[case] = airflow.xcom(dag_id, run_id, "refresh_repeatedly")
        expected = count * len(cases)
        if (
            emulator.consumed_presentations("brightspace")
            or emulator.refresh_count("brightspace") != expected
        ):
            raise RuntimeError("the custody run presented a consumed refresh token or missed a refresh")
        return samples


LEASE_HOLDER = """
import sys, time
from airflow.sdk import Connection
from airflow_provider_canvas.tokens.locks import redis_lock
lock_conn = Connection(conn_id="l", conn_type="redis", host=sys.argv[1], port=int(sys.argv[2]))
with redis_lock(lock_conn, sys.argv[3], 10):
    print("held", flush=True)
    time.sleep(600)
"""


def lease_stall(kills: int) -> list[float]:
    """Seconds from SIGKILLing a Redis lock holder to the next worker holding the lock."""
    from airflow.sdk import Connection

    from airflow_provider_canvas.tokens.locks import redis_lock

    lock_conn = Connection(conn_id="l", conn_type="redis", host=REDIS_HOST, port=int(REDIS_PORT))
    stalls = []
    for _ in range(kills):
        conn_id = f"bench_lease_{uuid.uuid4().hex[:8]}"
        holder = subprocess.Popen(
            [sys.executable, "-c", LEASE_HOLDER, REDIS_HOST, REDIS_PORT, conn_id],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            if holder.stdout is None or holder.stdout.readline().strip() != "held":
                raise RuntimeError("the lease holder did not take the lock")
            os.kill(holder.pid, signal.SIGKILL)
            killed = time.monotonic()
            with redis_lock(lock_conn, conn_id, 60):
                stalls.append(time.monotonic() - killed)
        finally:
            holder.kill()
            holder.wait()
    return stalls


def run(
    workspace: Workspace, *, quick: bool, reps: int, count: int | None = None, backends: str = ""
) -> CaseReport:
    """``count`` refreshes per case (default 100 per rep); ``backends``: which CASES, comma-separated."""
    count = count or (20 if quick else 100 * reps)
    chosen = backends.split(",") if backends else [case.split()[0] for case in CASES]
    cases = {case: lock for case, lock in CASES.items() if case.split()[0] in chosen}
    load_before = uptime()
    samples = measure(workspace, count, cases)
    load_after = uptime()
    table = Table(
        f"Token custody inside tasks: {count} refreshes per lock backend, {len(cases)} tasks at once (ms)",
        ["lock backend", "response -> first durable copy p50", "p99", "max", "whole refresh p50", "p99"],
    )
    raw: dict[str, Any] = {}
    targets = []
    for case, rows in samples.items():
        custody = [row["custody"] * 1000 for row in rows]
        saved = [row["saved"] * 1000 for row in rows]
        p99 = _percentile(custody, 0.99)
        table.add(
            case,
            *(fmt(f(custody)) for f in _quantiles()),
            fmt(statistics.median(saved)),
            fmt(_percentile(saved, 0.99)),
        )
        raw[case] = {"custody_ms": custody, "saved_ms": saved}
        if CASES[case]:
            targets.append(
                Target(
                    f"window p99 <= {TARGET_P99_MS:.0f} ms ({case})", f"{fmt(p99)} ms", p99 <= TARGET_P99_MS
                )
            )
    stalls = lease_stall(3 if quick else 5)
    targets.append(
        Target(
            f"Redis lock free <= {TARGET_LEASE_S:.0f} s after its holder dies",
            f"max {max(stalls):.2f} s",
            max(stalls) <= TARGET_LEASE_S,
        )
    )
    table.notes += [
        "first durable copy: the encrypted record in the lock backend (postgres, redis), else the "
        "Airflow Variable through the Execution API; whole refresh: hook.keep_alive() from start to the "
        "read-back of the PATCHed connection",
        f"Redis lease after a SIGKILLed holder: {', '.join(f'{s:.2f}' for s in stalls)} s",
        f"load before: {load_before}",
        f"load after: {load_after}",
    ]
    raw["lease_stall_s"] = stalls
    return CaseReport([table], targets, raw=raw)


def _quantiles() -> list[Any]:
    return [statistics.median, lambda v: _percentile(v, 0.99), max]


if __name__ == "__main__":
    import sys

    with Workspace(postgres_url=configured_server().url(TEST_DATABASE)) as bench_workspace:
        options = dict(zip(sys.argv[1::2], sys.argv[2::2], strict=False))
        report = run(
            bench_workspace,
            quick="--quick" in sys.argv,
            reps=1,
            count=int(options.get("--count") or 0) or None,
            backends=options.get("--backends", ""),
        )
    for result in report.tables:
        print(result.render())
    for target in report.targets:
        print(f"- {target.name}: {target.measured} ({target.verdict()})")
    print(Path(__file__).name, "done")
