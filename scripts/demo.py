"""The demo: the example DAGs on a real local Airflow against the emulator, then a short report.

Starts the Canvas/Brightspace emulator and a local Airflow (scheduler, dag-processor, triggerer,
api-server; SQLite, LocalExecutor) in ``.demo/``, creates connections whose access tokens have
expired, triggers every example DAG, waits, prints what happened and stops what it started.
"""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path
from typing import Any

import pendulum

from airflow_provider_canvas.testing import LmsEmulator
from airflow_provider_canvas.testing.local_airflow import LocalAirflow

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / ".demo"
CLIENT_ID, CLIENT_SECRET = "10000000000001", "demo-client-secret"

#: DAG id -> conf for its demo run (DAG files that are not in dags/ yet are skipped).
DEMO_RUNS: dict[str, dict[str, Any]] = {
    "lms_token_keepalive": {
        "canvas_conn_ids": ["canvas_default"],
        "brightspace_conn_ids": ["brightspace_default"],
    },
}


def _connect(airflow: LocalAirflow, emulator: LmsEmulator, platform: str, conn_id: str) -> None:
    side = getattr(emulator, platform)
    issued = side.issue_tokens(CLIENT_ID)
    extra = {
        "access_token": issued.access_token,
        "refresh_token": issued.refresh_token,
        # Expired, so the first task must refresh and save the rotated tokens.
        "expires_at": pendulum.now("UTC").subtract(minutes=1).to_iso8601_string(),
    }
    if platform == "brightspace":
        extra["token_url"] = f"{emulator.url}/core/connect/token"
    airflow.add_connection(
        conn_id, platform, host=emulator.url, login=CLIENT_ID, password=CLIENT_SECRET, extra=extra
    )


def _seed(emulator: LmsEmulator) -> None:
    emulator.canvas.register_client(CLIENT_ID, CLIENT_SECRET)
    emulator.brightspace.register_client(CLIENT_ID, CLIENT_SECRET)
    emulator.canvas.generate_account_tree(500, root_id=1, fanout=8)


def main() -> int:
    started = time.monotonic()
    shutil.rmtree(WORK, ignore_errors=True)  # a second run starts clean
    WORK.mkdir()
    failures = 0
    with LmsEmulator() as emulator:
        _seed(emulator)
        print(f"emulator: {emulator.url}")
        airflow = LocalAirflow(WORK / "airflow", ROOT / "dags", extra_env={"CANVAS_DEMO_OUTPUT": str(WORK)})
        with airflow:
            print(f"airflow:  {airflow.api_url} (logs in {airflow.logs_dir})")
            for platform in ("canvas", "brightspace"):
                _connect(airflow, emulator, platform, f"{platform}_default")
            runs = {
                dag_id: conf
                for dag_id, conf in DEMO_RUNS.items()
                if (ROOT / "dags" / f"{dag_id}.py").exists()
            }
            triggered = {}
            for dag_id, conf in runs.items():
                airflow.wait_for_dag(dag_id)
                triggered[dag_id] = airflow.trigger(dag_id, conf)
            print("\nDAG run results")
            for dag_id, run_id in triggered.items():
                state = airflow.wait_for_run(dag_id, run_id, timeout=300)
                instances = airflow.task_instances(dag_id, run_id)
                ok = sum(ti["state"] == "success" for ti in instances)
                failures += state != "success"
                print(f"  {dag_id:<34} {state:<8} {ok}/{len(instances)} tasks succeeded")
            print("\nTokens")
            for platform in ("canvas", "brightspace"):
                saved = airflow.get_connection(f"{platform}_default")["extra_dejson"]
                refreshes = emulator.refresh_count(platform)
                consumed = emulator.consumed_presentations(platform)
                print(
                    f"  {platform:<12} refreshes: {refreshes}, consumed refresh tokens presented: "
                    f"{consumed}, connection now valid until {saved.get('expires_at')}"
                )
    outcome = f"{failures} DAG(s) failed" if failures else "OK"
    print(f"\nDemo finished in {time.monotonic() - started:.0f}s: {outcome}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
