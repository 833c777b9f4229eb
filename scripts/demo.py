"""The demo: every example DAG on a real local Airflow against the emulator, then a short report.

Starts two Canvas/Brightspace emulators (a "test" and a "beta" instance), a Canvas Data 2 (DAP)
emulator and a local Airflow
(scheduler, dag-processor, triggerer, api-server; SQLite, LocalExecutor) in ``.demo/``, creates
connections whose access tokens have expired, triggers every example DAG, waits, prints what
happened and stops everything it started. Brightspace Data Sets are loaded into a fresh
PostgreSQL database, dropped at the end: on the server at 127.0.0.1:5432 if one answers there, else on an
embedded one started in ``.demo/postgres`` (``CANVAS_PROVIDER_POSTGRES``; see
airflow_provider_canvas/testing/postgres.py).
"""

from __future__ import annotations

import shutil
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import psycopg

from airflow_provider_canvas.testing import LmsEmulator
from airflow_provider_canvas.testing.dap import DapEmulator
from airflow_provider_canvas.testing.dap_jobs import CallLimit
from airflow_provider_canvas.testing.local_airflow import LocalAirflow
from airflow_provider_canvas.testing.postgres import fresh_postgres_database, postgres_server

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / ".demo"
CLIENT_ID, CLIENT_SECRET = "10000000000001", "demo-client-secret"
DATA_SETS = ["Users", "Org Units", "User Enrollments"]

#: The SSO settings the demo restores on its two non-production instances.
SSO_INSTANCES = {
    conn_id: {
        "account_id": 1,
        "settings": {
            "auth_discovery_url": f"https://login-{name}.example.edu/discovery",
            "unknown_user_url": "",
        },
    }
    for conn_id, name in (("canvas_test", "test"), ("canvas_beta", "beta"))
}

#: DAG id -> conf of its demo run.
DEMO_RUNS: dict[str, dict[str, Any]] = {
    "lms_token_keepalive": {
        "canvas_conn_ids": ["canvas_default", "canvas_test", "canvas_beta"],
        "brightspace_conn_ids": ["brightspace_default"],
    },
    "canvas_account_inventory": {"canvas_conn_id": "canvas_default", "output_dir": str(WORK / "inventory")},
    "canvas_sso_settings_restore": {"instances": SSO_INSTANCES},
    "brightspace_data_sets_pull": {"data_sets": DATA_SETS, "schema": "brightspace"},
    "canvas_data_2_sync": {},
    # Not configured here (no SIS source database, no canvas_sis_account_id Variable): its run skips
    # every task and says what to create; tests/e2e/test_canvas_sis_nightly.py runs it for real.
    "canvas_sis_nightly": {},
}
DAP_CLIENT_ID, DAP_CLIENT_SECRET = "us-east-1#demo-dap-client", "demo-dap-client-secret"


def _seed(emulator: LmsEmulator, accounts: int) -> None:
    emulator.canvas.register_client(CLIENT_ID, CLIENT_SECRET)
    emulator.brightspace.register_client(CLIENT_ID, CLIENT_SECRET)
    emulator.canvas.generate_account_tree(accounts, root_id=1, fanout=8)
    # What Instructure's refresh copied over from production.
    emulator.canvas.set_sso_settings(1, auth_discovery_url="https://login.example.edu/discovery")
    now = datetime.now(timezone.utc)
    users = emulator.brightspace
    users.add_data_set(
        "Users", ["UserId", "UserName", "IsDeleted"], rows_count=20_000, created=now - timedelta(days=3)
    )
    users.add_extract(
        "Users",
        "Differential",
        now - timedelta(days=1),
        [{"UserId": "900001", "UserName": "new.student", "IsDeleted": "False"}],
    )
    users.add_data_set("Org Units", ["OrgUnitId", "Name"], rows_count=500, created=now - timedelta(days=3))
    # The DAG's default data sets: its scheduled run (made when the DAG is unpaused) uses them.
    users.add_data_set(
        "User Enrollments",
        ["OrgUnitId", "UserId", "RoleId"],
        rows_count=5_000,
        created=now - timedelta(days=3),
    )


def _connect(airflow: LocalAirflow, emulator: LmsEmulator, platform: str, conn_id: str) -> None:
    issued = getattr(emulator, platform).issue_tokens(CLIENT_ID)
    # Expired, so the first task must refresh and save the rotated tokens.
    extra = emulator.connection_extra(platform, issued, expired=True)
    airflow.add_connection(
        conn_id, platform, host=emulator.url, login=CLIENT_ID, password=CLIENT_SECRET, extra=extra
    )


def _report_outputs(airflow: LocalAirflow, triggered: dict[str, str], database_url: str) -> None:
    summary = airflow.xcom("canvas_account_inventory", triggered["canvas_account_inventory"], "summarize")
    count, depth, path = summary["count"], summary["max_depth"], summary["path"]
    print(f"  account inventory: {count} accounts, max depth {depth}, written to {path}")
    run_id = triggered["canvas_sso_settings_restore"]
    for ti in airflow.task_instances("canvas_sso_settings_restore", run_id):
        result = airflow.xcom("canvas_sso_settings_restore", run_id, ti["task_id"], map_index=ti["map_index"])
        if isinstance(result, dict) and "changes" in result:
            print(f"  SSO restore {result['conn_id']}: changed {sorted(result['changes'])}")
    files = sorted(p.relative_to(WORK) for p in (WORK / "bds").rglob("*.zip"))
    print(f"  Brightspace Data Sets: {len(files)} extract files under {WORK / 'bds'}")
    with psycopg.connect(database_url.replace("postgresql+psycopg2", "postgresql")) as db:
        for table in ("users", "org_units", "user_enrollments"):
            rows = db.execute(f"SELECT count(*) FROM brightspace.{table}").fetchone()[0]
            print(f"  PostgreSQL brightspace.{table}: {rows} rows")
    # Unpausing the DAG also made its scheduled run: both pulled, one the snapshot, one an incremental.
    runs = airflow.api("GET", "/dags/canvas_data_2_sync/dagRuns").json()["dag_runs"]
    pulls = [airflow.xcom("canvas_data_2_sync", run["dag_run_id"], "pull") for run in runs]
    with psycopg.connect(database_url.replace("postgresql+psycopg2", "postgresql")) as db:
        for table in sorted(pulls[0]):
            kinds = "+".join(sorted((p[table]["kind"] for p in pulls), reverse=True))  # snapshot first
            records = sum(p[table]["records"] for p in pulls)
            rows = db.execute(f"SELECT count(*) FROM canvas_data.{table}").fetchone()[0]
            print(f"  Canvas Data 2 canvas.{table}: {kinds} batches, {records} records -> {rows} rows")


def _wait(condition: Any, what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout:.0f}s")
        time.sleep(0.5)


def _run_on_new_extract(airflow: LocalAirflow, emulator: LmsEmulator) -> str:
    """Unpause the asset-scheduled DAG; once its watcher has looked, publish a Users extract; its run."""
    dag_id = "brightspace_on_new_extract"
    airflow.wait_for_dag(dag_id)

    def listings() -> int:
        return sum(1 for r in emulator.api_requests if r.path.endswith("/extracts") and r.status == 200)

    before = listings()
    airflow.api("PATCH", f"/dags/{dag_id}", json={"is_paused": False})
    # Two listings (Full and Differential) per poll: after two polls the watcher knows what exists.
    _wait(lambda: listings() >= before + 4, "the watcher's first looks at the Users extracts")
    emulator.brightspace.add_extract("Users", "Differential", rows_count=5)
    _wait(lambda: airflow.api("GET", f"/dags/{dag_id}/dagRuns").json()["dag_runs"], "the asset-triggered run")
    return str(airflow.api("GET", f"/dags/{dag_id}/dagRuns").json()["dag_runs"][0]["dag_run_id"])


def main() -> int:
    started = time.monotonic()
    shutil.rmtree(WORK, ignore_errors=True)  # a second run starts clean
    WORK.mkdir()
    failures = 0
    with (
        LmsEmulator() as emulator,
        LmsEmulator() as beta,
        DapEmulator() as dap,
        postgres_server(WORK / "postgres") as postgres,
        fresh_postgres_database(postgres) as warehouse_url,
    ):
        _seed(emulator, accounts=2000)
        _seed(beta, accounts=10)
        dap.register_client(DAP_CLIENT_ID, DAP_CLIENT_SECRET)
        # Jobs take 10 s, so the pull visibly waits in the triggerer. DAP allows 5 job creations a
        # minute; the emulator's window is 10 s here so the demo's second run is throttled only briefly.
        dap.job_seconds = 10
        dap.job_creation = CallLimit(5, 10.0)
        print(f"emulators: {emulator.url} (test instance), {beta.url} (beta instance)")
        print(f"postgres:  {postgres.address} ({postgres.description})")
        airflow = LocalAirflow(
            WORK / "airflow",
            ROOT / "dags",
            extra_env={
                "BRIGHTSPACE_BDS_LOCATION": str(WORK / "bds"),
                "CANVAS_DATA_LOCATION": str(WORK / "canvas_data"),
                "CANVAS_DATA_POLL_SECONDS": "1",
                "BRIGHTSPACE_WATCH_POLL_SECONDS": "1",
            },
        )
        with airflow:
            print(f"airflow:   {airflow.api_url} (logs in {airflow.home / 'logs'})")
            for platform in ("canvas", "brightspace"):
                _connect(airflow, emulator, platform, f"{platform}_default")
            _connect(airflow, emulator, "canvas", "canvas_test")
            _connect(airflow, beta, "canvas", "canvas_beta")
            airflow.add_connection(
                "canvas_data_default",
                "canvas_data",
                host=dap.url,
                login=DAP_CLIENT_ID,
                password=DAP_CLIENT_SECRET,
                extra={"namespace": "canvas"},
            )
            warehouse = postgres.connection_fields(warehouse_url.rsplit("/", 1)[1])
            for conn_id in ("brightspace_warehouse", "canvas_data_warehouse"):
                airflow.api("POST", "/connections", ok=(201,), json={"connection_id": conn_id, **warehouse})
            triggered = {}
            for dag_id, conf in DEMO_RUNS.items():
                airflow.wait_for_dag(dag_id)
                triggered[dag_id] = airflow.trigger(dag_id, conf)
            # The Data Sets pull must be done first: the watched DAG pulls into the same folder and table.
            airflow.wait_for_run("brightspace_data_sets_pull", triggered["brightspace_data_sets_pull"], 300)
            triggered["brightspace_on_new_extract"] = _run_on_new_extract(airflow, emulator)
            print("\nDAG runs")
            for dag_id, run_id in triggered.items():
                state = airflow.wait_for_run(dag_id, run_id, timeout=300)
                instances = airflow.task_instances(dag_id, run_id)
                ok = sum(ti["state"] == "success" for ti in instances)
                skipped = sum(ti["state"] == "skipped" for ti in instances)
                failures += state != "success"
                note = f", {skipped} skipped (not configured in the demo)" if skipped else ""
                print(f"  {dag_id:<30} {state:<8} {ok}/{len(instances)} tasks succeeded{note}")
            if not failures:
                print("\nOutputs")
                _report_outputs(airflow, triggered, warehouse_url)
            print("\nTokens (as the emulators recorded them; connections read back with the CLI)")
            for server, platform, conn_ids in (
                (emulator, "canvas", ["canvas_default", "canvas_test"]),
                (beta, "canvas", ["canvas_beta"]),
                (emulator, "brightspace", ["brightspace_default"]),
            ):
                valid_until = [airflow.get_connection(c)["extra_dejson"].get("expires_at") for c in conn_ids]
                refreshes, consumed = server.refresh_count(platform), server.consumed_presentations(platform)
                print(
                    f"  {', '.join(conn_ids):<28} refreshes: {refreshes}, consumed refresh tokens presented: "
                    f"{consumed}, saved tokens valid until {', '.join(str(v)[:19] for v in valid_until)}"
                )
    outcome = f"{failures} DAG(s) failed" if failures else "OK"
    print(f"\nDemo finished in {time.monotonic() - started:.0f}s: {outcome}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
