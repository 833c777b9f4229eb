"""``canvas-oauth authorize`` against a real Airflow's database, then DAG tasks use the connection."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import requests

from airflow_provider_canvas.testing import LmsEmulator
from airflow_provider_canvas.testing.local_airflow import LocalAirflow
from airflow_provider_canvas.testing.primitives import free_port

pytestmark = pytest.mark.e2e

CLIENT_ID, CLIENT_SECRET = "consent-client", "consent-client-secret-value"
SCRIPT = Path(sys.executable).with_name("canvas-oauth")


def test_first_tokens_from_the_cli_serve_parallel_tasks(local_airflow: LocalAirflow) -> None:
    with LmsEmulator() as emulator:
        emulator.brightspace.register_client(CLIENT_ID, CLIENT_SECRET)
        conn_id = "brightspace_consented"
        process = subprocess.Popen(
            [
                str(SCRIPT),
                "authorize",
                conn_id,
                "--platform",
                "brightspace",
                "--host",
                emulator.url,
                "--client-id",
                CLIENT_ID,
                "--token-url",
                f"{emulator.url}/core/connect/token",
                "--redirect-uri",
                f"http://127.0.0.1:{free_port()}/cb",
                "--no-browser",
                "--timeout",
                "60",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            # The Airflow the scheduler uses (its database and Fernet key), as an admin's shell would.
            env={**local_airflow.env, "CANVAS_OAUTH_CLIENT_SECRET": CLIENT_SECRET},
        )
        try:
            assert process.stdout is not None
            url = next(line.strip() for line in process.stdout if line.strip().startswith("http"))
            # The person approves: the emulator redirects the browser to the CLI's one-shot listener.
            assert requests.get(url, timeout=30).ok
            out, err = process.communicate(timeout=120)
        finally:  # a failed step must not leave the CLI listening
            if process.poll() is None:
                process.kill()
                process.communicate()
        assert process.returncode == 0, err[-2000:]
        assert CLIENT_SECRET not in out + err

        saved = local_airflow.get_connection(conn_id)
        assert saved["conn_type"] == "brightspace" and saved["extra_dejson"]["refresh_token"]
        assert saved["extra_dejson"]["refresh_token"] not in out + err

        local_airflow.wait_for_dag("token_refresh_parallel")
        run_id = local_airflow.trigger(
            "token_refresh_parallel", {"conn_id": conn_id, "platform": "brightspace"}
        )
        assert local_airflow.wait_for_run("token_refresh_parallel", run_id, timeout=240) == "success"
        assert [r.grant_type for r in emulator.token_requests] == ["authorization_code"]
        whoami = [r for r in emulator.api_requests if r.path.endswith("/users/whoami")]
        assert len(whoami) == 8 and {r.status for r in whoami} == {200}
