"""Nightly SIS import into Canvas from the school's SIS extract in PostgreSQL, checked against Canvas.

1. ``extract``: three queries on the ``sis_source`` PostgreSQL connection (the SIS extract; by
   default the views ``sis_export.users``, ``sis_export.courses``, ``sis_export.enrollments``)
   are streamed with ``COPY ... TO STDOUT`` into ``users.csv``, ``courses.csv`` and
   ``enrollments.csv`` under ``CANVAS_SIS_WORK_DIR/<run>/``.
2. ``sis_import``: the CSVs are checked (headers, rows, no kind below half of the last good
   import), zipped on the fly, uploaded once and imported with diffing against the data set
   ``nightly-sis`` and a ``change_threshold`` of 10%: a file more than 10% smaller or larger than
   the last one is imported whole instead of diffed, so a truncated extract deletes nothing. The
   task waits in the triggerer; a retry waits for the import its earlier try started.
3. ``provisioning_report``: a provisioning report (users, enrollments) of the account, waited for
   in the triggerer and downloaded from Canvas's file storage.
4. ``check_counts``: every user and enrollment of the extract must be active in the report.

Needs the connections ``canvas_default`` (type canvas, authorized with ``canvas-oauth authorize``;
``canvas-oauth scopes --dags-folder dags`` lists the developer-key scopes) and ``sis_source`` (type
postgres), and the Airflow Variable ``canvas_sis_account_id`` (the root account). Without them the
run skips, saying what to create.
"""

from __future__ import annotations

import csv
import io
import os
import zipfile
from datetime import timedelta
from pathlib import Path
from typing import Any

import pendulum
from airflow.sdk import DAG, Variable, task
from airflow.sdk.exceptions import AirflowSkipException

from airflow_provider_canvas.canvas.operators.reports import CanvasAccountReportOperator
from airflow_provider_canvas.canvas.operators.sis_import import CanvasSisImportOperator
from airflow_provider_canvas.setup_check import skip_unless_configured

WORK_DIR = os.environ.get("CANVAS_SIS_WORK_DIR", "/opt/airflow/data/canvas_sis")
#: Seconds between two looks at the import and the report (minutes on Canvas; seconds in the demo).
POLL_SECONDS = float(os.environ.get("CANVAS_SIS_POLL_SECONDS", "60"))
CANVAS_CONN_ID = "canvas_default"
SIS_SOURCE_CONN_ID = "sis_source"
ACCOUNT_VARIABLE = "canvas_sis_account_id"
DATA_SET = "nightly-sis"
#: One query per SIS CSV; the columns are the CSV's headers (Instructure's "SIS CSV Format").
QUERIES = {
    "users.csv": "SELECT user_id, login_id, first_name, last_name, email, status FROM sis_export.users",
    "courses.csv": "SELECT course_id, short_name, long_name, term_id, status FROM sis_export.courses",
    "enrollments.csv": "SELECT course_id, user_id, role, status FROM sis_export.enrollments",
}

with DAG(
    dag_id="canvas_sis_nightly",
    schedule="30 2 * * *",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,  # two imports of one data set at once would diff against each other
    default_args={"retries": 2, "retry_delay": timedelta(minutes=5)},
    tags=["canvas", "sis"],
    doc_md=__doc__,
) as dag:

    @task
    def account_id() -> str:
        """With nothing configured yet, the run skips and says what to create."""
        skip_unless_configured(
            connections={
                CANVAS_CONN_ID: "type canvas: your Canvas instance, authorized with canvas-oauth authorize",
                SIS_SOURCE_CONN_ID: "type postgres: the database holding the SIS extract",
            }
        )
        value = Variable.get(ACCOUNT_VARIABLE, default=None)
        if not value:
            raise AirflowSkipException(
                f"Not configured yet: set the Airflow Variable {ACCOUNT_VARIABLE!r} to the root account id."
            )
        return str(value)

    @task
    def extract(run_id: str | None = None) -> list[str]:
        """Stream each query's rows into its CSV (COPY ... TO STDOUT: constant memory)."""
        from airflow.providers.postgres.hooks.postgres import PostgresHook

        folder = Path(WORK_DIR) / "".join(c if c.isalnum() else "_" for c in str(run_id))
        folder.mkdir(parents=True, exist_ok=True)
        paths = []
        db = PostgresHook(postgres_conn_id=SIS_SOURCE_CONN_ID).get_conn()
        try:
            with db.cursor() as cursor:
                for name, query in QUERIES.items():
                    part = folder / f".{name}.part"
                    copy = f"COPY ({query}) TO STDOUT WITH (FORMAT csv, HEADER true)"
                    with open(part, "wb") as out:
                        if hasattr(cursor, "copy_expert"):  # psycopg2
                            cursor.copy_expert(copy, out)
                        else:  # psycopg 3, which the postgres provider prefers when installed
                            with cursor.copy(copy) as rows:
                                for block in rows:
                                    out.write(bytes(block))
                    os.replace(part, folder / name)
                    paths.append(str(folder / name))
        finally:
            db.close()
        return paths

    account = account_id()
    csvs = extract()

    sis_import = CanvasSisImportOperator(
        task_id="sis_import",
        canvas_conn_id=CANVAS_CONN_ID,
        account_id="{{ ti.xcom_pull(task_ids='account_id') }}",
        sources=csvs,
        data_set=DATA_SET,
        diffing_data_set_identifier=DATA_SET,
        diffing_drop_status="inactive",
        change_threshold=10,
        deferrable=True,
        poll_interval=POLL_SECONDS,
        import_timeout=timedelta(hours=4),
    )
    report = CanvasAccountReportOperator(
        task_id="provisioning_report",
        canvas_conn_id=CANVAS_CONN_ID,
        account_id="{{ ti.xcom_pull(task_ids='account_id') }}",
        report="provisioning_csv",
        parameters={"users": True, "enrollments": True},
        destination=f"{WORK_DIR}/reports",
        deferrable=True,
        poll_interval=POLL_SECONDS,
    )

    @task
    def check_counts(sources: list[str], imported: dict[str, Any], report: dict[str, Any]) -> dict[str, int]:
        """Every user and enrollment of the extract is active in Canvas's provisioning report."""
        sent = {
            kind: _keys(Path(p)) for kind, p in zip(("users", "courses", "enrollments"), sources, strict=True)
        }
        active = _active_in_report(Path(report["path"]))
        missing = {
            k: sorted(sent[k] - active[k])[:10] for k in ("users", "enrollments") if sent[k] - active[k]
        }
        if missing:
            raise ValueError(
                f"SIS import {imported['import_id']} ended {imported['workflow_state']} but the provisioning "
                f"report lacks what the extract holds (first ten): {missing}"
            )
        return {
            "users": len(sent["users"]),
            "enrollments": len(sent["enrollments"]),
            "import_id": imported["import_id"],
        }

    account >> csvs
    check_counts(csvs, sis_import.output, report.output)
    sis_import >> report


def _keys(path: Path) -> set[tuple[str, ...]]:
    with open(path, newline="") as source:
        rows = csv.DictReader(source)
        if "role" in (rows.fieldnames or []):
            return {(r["course_id"], r["user_id"], r["role"]) for r in rows if r["status"] == "active"}
        key = (rows.fieldnames or ["id"])[0]
        return {(r[key],) for r in rows if r.get("status", "active") == "active"}


def _active_in_report(path: Path) -> dict[str, set[tuple[str, ...]]]:
    """Active SIS users and enrollments in a provisioning report (a ZIP of CSVs, or one CSV)."""
    found: dict[str, set[tuple[str, ...]]] = {"users": set(), "enrollments": set()}
    members = zipfile.ZipFile(path) if zipfile.is_zipfile(path) else None
    names = members.namelist() if members else [path.name]
    for name in names:
        text = members.read(name).decode() if members else path.read_text()
        rows = [r for r in csv.DictReader(io.StringIO(text)) if r.get("status") == "active"]
        if name.startswith("users"):
            found["users"] |= {(r["user_id"],) for r in rows}
        elif name.startswith("enrollments"):
            found["enrollments"] |= {(r["course_id"], r["user_id"], r["role"]) for r in rows}
    return found
