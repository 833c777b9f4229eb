"""canvas_sis_nightly on a real Airflow: the SIS extract in PostgreSQL becomes CSVs, the import and the
report wait in the real triggerer, the counts check passes; a second night diffs against the first."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import requests

from airflow_provider_canvas.cli.main import main as canvas_oauth
from airflow_provider_canvas.testing import LmsEmulator
from airflow_provider_canvas.testing.local_airflow import LocalAirflow
from airflow_provider_canvas.testing.postgres import configured_server, fresh_postgres_database

pytestmark = pytest.mark.e2e

DAG_ID = "canvas_sis_nightly"
DAG_FILE = Path(__file__).resolve().parents[2] / "dags" / f"{DAG_ID}.py"
CLIENT_ID, CLIENT_SECRET = "10000000000077", "e2e-canvas-secret-Lp40"
USERS, COURSES = 60, 3


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalAirflow, str, Path]]:
    """One Airflow whose DAG folder holds only canvas_sis_nightly, and the SIS extract database."""
    dags = tmp_path_factory.mktemp("dags")
    shutil.copy(DAG_FILE, dags)
    work = tmp_path_factory.mktemp("sis")
    # 5 s: the triggers' first wait must outlast the deferring worker's exit (Airflow 3.3 fails a task
    # whose trigger fires before the executor saw that), which takes seconds on a loaded machine.
    env = {"CANVAS_SIS_WORK_DIR": str(work), "CANVAS_SIS_POLL_SECONDS": "5"}
    server = configured_server()
    with fresh_postgres_database(server) as database_url, fresh_postgres_database(server) as source_url:
        airflow = LocalAirflow(
            tmp_path_factory.mktemp("home"), dags, database_url=database_url, extra_env=env
        )
        with airflow:
            source = server.connection_fields(source_url.rsplit("/", 1)[1])
            airflow.api("POST", "/connections", ok=(201,), json={"connection_id": "sis_source", **source})
            yield airflow, source_url.replace("postgresql+psycopg2", "postgresql"), dags


def fill_extract(url: str, enrolled: int) -> None:
    """The school's SIS extract: USERS users, COURSES courses, the first ``enrolled`` users enrolled."""
    with psycopg.connect(url, autocommit=True) as db:
        db.execute("DROP SCHEMA IF EXISTS sis_export CASCADE; CREATE SCHEMA sis_export")
        db.execute(
            "CREATE TABLE sis_export.users AS SELECT 'u' || i AS user_id, 'login' || i AS login_id, "
            "'First' AS first_name, 'Last' || i AS last_name, 'u' || i || '@example.edu' AS email, "
            f"'active' AS status FROM generate_series(1, {USERS}) i"
        )
        db.execute(
            "CREATE TABLE sis_export.courses AS SELECT 'C' || i AS course_id, 'C' || i AS short_name, "
            "'Course ' || i AS long_name, 'T1' AS term_id, 'active' AS status "
            f"FROM generate_series(1, {COURSES}) i"
        )
        db.execute(
            "CREATE TABLE sis_export.enrollments AS SELECT 'C' || (1 + i % 3) AS course_id, "
            "'u' || i AS user_id, 'student' AS role, 'active' AS status "
            f"FROM generate_series(1, {enrolled}) i"
        )


def listed_scopes(dags: Path, capsys: pytest.CaptureFixture[str]) -> list[str]:
    assert (
        canvas_oauth(["scopes", "--dags-folder", str(dags), "--platform", "canvas", "--format", "list"]) == 0
    )
    return capsys.readouterr().out.split()


def runs(airflow: LocalAirflow) -> list[dict]:
    return airflow.api("GET", f"/dags/{DAG_ID}/dagRuns").json()["dag_runs"]


def patiently(read, deadline: float):
    """``read()``, asked again while the api-server is too busy to answer within its 30 s (a loaded CI)."""
    while True:
        try:
            return read()
        except requests.RequestException:
            assert time.monotonic() < deadline, "the api-server did not answer"
            time.sleep(3)


def wait_until_deferred(airflow: LocalAirflow, task_id: str) -> None:
    """Until some run's ``task_id`` is deferred (unpausing also starts a scheduled run; one at a time)."""
    deadline = time.monotonic() + 300
    while True:
        states = patiently(
            lambda: [
                {ti["task_id"]: ti["state"] for ti in airflow.task_instances(DAG_ID, run["dag_run_id"])}
                for run in runs(airflow)
            ],
            deadline,
        )
        if any(s.get(task_id) == "deferred" for s in states):
            return
        assert not any(s.get(task_id) == "failed" for s in states), f"{task_id} failed: {states}"
        assert time.monotonic() < deadline, f"{task_id} never deferred: {states}"
        time.sleep(2)


def finished_runs(airflow: LocalAirflow) -> list[str]:
    """The run ids, once every run has ended successfully, oldest first."""
    deadline = time.monotonic() + 400
    while True:
        found = patiently(lambda: runs(airflow), deadline)
        if found and all(run["state"] in ("success", "failed") for run in found):
            break
        assert time.monotonic() < deadline, found
        time.sleep(2)
    assert {run["state"] for run in found} == {"success"}, found
    return [run["dag_run_id"] for run in sorted(found, key=lambda r: r["run_after"])]


def test_two_nights_of_sis_imports_wait_in_the_triggerer_and_match_the_report(setup, capsys):
    airflow, source_url, dags = setup
    scopes = listed_scopes(dags, capsys)
    assert len(scopes) == 5 and all(s.startswith("url:") for s in scopes)
    fill_extract(source_url, enrolled=USERS)
    with LmsEmulator() as emu:
        emu.canvas.add_account(1, "University")
        emu.canvas.register_client(CLIENT_ID, CLIENT_SECRET, scopes=scopes)  # Enforce Scopes: exactly these
        emu.canvas.sis_imports.step_seconds = 3.0  # several polls: the wait is seen in the triggerer
        emu.canvas.reports.step_seconds = 3.0
        issued = emu.canvas.issue_tokens(CLIENT_ID, scopes=scopes)
        airflow.add_connection(
            "canvas_default",
            "canvas",
            host=emu.url,
            login=CLIENT_ID,
            password=CLIENT_SECRET,
            extra=emu.connection_extra("canvas", issued),
        )
        airflow.set_variable("canvas_sis_account_id", "1")
        airflow.wait_for_dag(DAG_ID)

        airflow.trigger(DAG_ID)  # and, since it unpauses the DAG, the scheduled run of last night
        wait_until_deferred(airflow, "sis_import")
        first_night = finished_runs(airflow)
        imported = [airflow.xcom(DAG_ID, run, "sis_import") for run in first_night]
        checked = [airflow.xcom(DAG_ID, run, "check_counts") for run in first_night]

        fill_extract(source_url, enrolled=USERS - 3)  # three students dropped a course overnight
        second = airflow.trigger(DAG_ID)
        assert finished_runs(airflow)[-1] == second
        diffed = airflow.xcom(DAG_ID, second, "sis_import")
        logs = [
            airflow.task_log(DAG_ID, run, task)
            for run in [*first_night, second]
            for task in ("sis_import", "provisioning_report", "check_counts")
        ]
        enrollments = [o.status for o in emu.canvas.sis_imports.all_objects(1, "enrollment")]
        downloads = emu.canvas.files.storage.downloads
        uploads = emu.canvas.sis_imports.uploads

    first = next(i for i in imported if i["import_id"] == 1)  # the other first-night run diffed to nothing
    assert first["workflow_state"] == "imported" and first["counts"]["users"] == USERS
    assert first["rows"] == {"users": USERS, "courses": COURSES, "enrollments": USERS}
    assert all(c["users"] == USERS and c["enrollments"] == USERS for c in checked)
    assert diffed["counts"]["enrollments"] == 3  # only the difference was applied
    assert sorted(enrollments).count("inactive") == 3  # diffing_drop_status
    assert len(uploads) == len(first_night) + 1
    assert all(u["params"]["diffing_data_set_identifier"] == "nightly-sis" for u in uploads)
    assert len(downloads) == len(first_night) + 1 and not any(d.had_authorization for d in downloads)
    assert any(f"Waiting in the triggerer for SIS import {first['import_id']}" in log for log in logs)
    for log in logs:
        for secret in (CLIENT_SECRET, issued.access_token, issued.refresh_token):
            assert secret not in log
