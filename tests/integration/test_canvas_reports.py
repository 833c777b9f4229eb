"""CanvasAccountReportOperator over real HTTP against the emulator, and canvasapi driving the emulator's
SIS import and report endpoints, so the emulator answers what the widely used client expects."""

from __future__ import annotations

import asyncio
import csv
import io
import time
import zipfile
from pathlib import Path
from types import SimpleNamespace

import pytest
from airflow.models import Connection
from airflow.sdk.exceptions import TaskDeferred
from canvasapi import Canvas

from airflow_provider_canvas.canvas.operators.reports import CanvasAccountReportOperator
from airflow_provider_canvas.canvas.triggers.progress import CanvasProgressTrigger
from airflow_provider_canvas.exceptions import AccountReportError


@pytest.fixture
def canvas(emulator, lms_connection):
    emulator.canvas.add_account(1, "University")
    emulator.canvas.bucket_drain_per_second = 1_000_000.0
    emulator.canvas.sis_imports.step_seconds = 0.05
    emulator.canvas.reports.step_seconds = 0.05
    conn_id = lms_connection("canvas", expired=False)
    token = Connection.get_connection_from_secrets(conn_id).extra_dejson["access_token"]
    return SimpleNamespace(emu=emulator, conn_id=conn_id, client=Canvas(emulator.url, token))


def sis_zip(path: Path, users: int) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        rows = "".join(f"u{i},login{i},First,Last{i},active\n" for i in range(users))
        archive.writestr("users.csv", "user_id,login_id,first_name,last_name,status\n" + rows)
        archive.writestr(
            "courses.csv", "course_id,short_name,long_name,term_id,status\nC1,C1,Course,T1,active\n"
        )
        enrolled = "".join(f"C1,u{i},student,active\n" for i in range(users))
        archive.writestr("enrollments.csv", "course_id,user_id,role,status\n" + enrolled)
    return path


def until(read, done, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while True:
        value = read()
        if done(value) or time.monotonic() > deadline:
            return value
        time.sleep(0.05)


def test_canvasapi_runs_a_sis_import_against_the_emulator(canvas, tmp_path):
    account = canvas.client.get_account(1)
    created = account.create_sis_import(
        str(sis_zip(tmp_path / "sis.zip", 12)), diffing_data_set_identifier="capi", change_threshold=10
    )
    assert created.workflow_state == "created" and created.diffing_data_set_identifier == "capi"

    done = until(lambda: account.get_sis_import(created.id), lambda s: s.workflow_state == "imported")

    assert done.workflow_state == "imported" and done.progress == 100
    assert done.data["counts"]["users"] == 12 and done.data["counts"]["enrollments"] == 12
    assert sorted(done.data["supplied_batches"]) == ["course", "enrollment", "user"]
    assert [s.id for s in account.get_sis_imports()] == [created.id]  # the {"sis_imports": [...]} wrapper
    (upload,) = canvas.emu.canvas.sis_imports.uploads
    assert upload["content_type"] == "multipart/form-data"  # canvasapi's form; the provider posts raw


def test_canvasapi_runs_a_provisioning_report_and_gets_the_file_from_storage(canvas, tmp_path):
    account = canvas.client.get_account(1)
    sis = account.create_sis_import(str(sis_zip(tmp_path / "sis.zip", 3)))
    until(lambda: account.get_sis_import(sis.id), lambda s: s.workflow_state == "imported")

    report = account.create_report("provisioning_csv", parameters={"users": True})
    assert report.status == "created"
    report = until(
        lambda: account.get_report("provisioning_csv", report.id), lambda r: r.status == "complete"
    )

    assert report.status == "complete" and report.attachment["display_name"].startswith("users_")
    rows = list(csv.DictReader(io.StringIO(_plain_get(report.attachment["url"]))))
    assert sorted(r["user_id"] for r in rows) == ["u0", "u1", "u2"]


def _plain_get(url: str) -> str:
    import requests

    response = requests.get(url, timeout=10)  # no token: the storage host takes none
    response.raise_for_status()
    return response.text


def run(op: CanvasAccountReportOperator) -> dict:
    with pytest.raises(TaskDeferred) as deferred:
        op.execute({})
    classpath, kwargs = deferred.value.trigger.serialize()
    assert classpath.endswith("CanvasProgressTrigger")

    async def first() -> dict:
        async for event in CanvasProgressTrigger(**kwargs).run():
            return event.payload
        raise AssertionError("no event")

    return op.execute_complete({}, asyncio.run(first()), **deferred.value.kwargs)


def report_op(canvas, destination, **kwargs) -> CanvasAccountReportOperator:
    return CanvasAccountReportOperator(
        task_id="report",
        canvas_conn_id=canvas.conn_id,
        account_id=1,
        destination=destination,
        poll_interval=0.05,
        **{"report": "provisioning_csv", "deferrable": True, **kwargs},
    )


def test_a_report_is_downloaded_whole_without_sending_the_token_to_storage(canvas, tmp_path):
    sis = canvas.client.get_account(1).create_sis_import(str(sis_zip(tmp_path / "sis.zip", 5)))
    until(
        lambda: canvas.client.get_account(1).get_sis_import(sis.id), lambda s: s.workflow_state == "imported"
    )

    result = run(report_op(canvas, tmp_path / "reports", parameters={"users": True, "enrollments": True}))

    assert result["status"] == "complete" and result["file_name"].endswith(".zip")
    path = Path(result["path"])
    assert path.parent == tmp_path / "reports" and path.stat().st_size == result["size"]
    with zipfile.ZipFile(path) as archive:
        names = sorted(archive.namelist())
        assert [n.split("_")[0] for n in names] == ["enrollments", "users"]
    downloads = canvas.emu.canvas.files.storage.downloads
    assert len(downloads) == 1 and not downloads[0].had_authorization and downloads[0].status == 200
    assert not list((tmp_path / "reports").glob(".*.part"))


def test_a_report_that_ends_in_error_fails_with_what_canvas_said(canvas, tmp_path):
    canvas.emu.canvas.reports.fail_next_with = "The enrollment term could not be found"
    with pytest.raises(AccountReportError, match="ended error: The enrollment term could not be found"):
        run(report_op(canvas, tmp_path, parameters={"enrollment_term_id": "sis_term_id:nope"}))
    assert list(tmp_path.iterdir()) == []


def test_an_unknown_report_ends_in_error(canvas, tmp_path):
    with pytest.raises(AccountReportError, match="not available"):
        run(report_op(canvas, tmp_path, report="no_such_report_csv"))


def test_a_report_waited_for_in_the_task_lands_in_object_storage(canvas, tmp_path):
    import uuid

    from airflow.sdk import ObjectStoragePath
    from airflow.sdk.io import attach
    from fsspec.implementations.memory import MemoryFileSystem

    attach("memory", fs=MemoryFileSystem())
    root = ObjectStoragePath(f"memory://reports-{uuid.uuid4().hex[:8]}/canvas")
    result = report_op(canvas, root, deferrable=False, parameters={"users": True}).execute({})
    target = ObjectStoragePath(result["path"])
    assert target.read_text().startswith("canvas_user_id,user_id,")


def test_a_report_is_loaded_into_postgresql_typed_in_one_transaction(
    canvas, tmp_path, make_connection, schema
):
    import psycopg
    from lms_fixtures import dsn, postgres_connection_fields

    sis = canvas.client.get_account(1).create_sis_import(str(sis_zip(tmp_path / "sis.zip", 5)))
    until(
        lambda: canvas.client.get_account(1).get_sis_import(sis.id), lambda s: s.workflow_state == "imported"
    )
    fields = postgres_connection_fields()
    make_connection("reports_pg", fields.pop("conn_type"), fields.pop("host"), {}, **fields)

    result = run(
        report_op(
            canvas,
            tmp_path / "reports",
            parameters={"users": True, "enrollments": True},
            postgres_conn_id="reports_pg",
            postgres_schema=schema,
        )
    )

    assert result["tables"] == {f"{schema}.provisioning_users": 5, f"{schema}.provisioning_enrollments": 5}
    with psycopg.connect(dsn()) as db:
        types = dict(
            db.execute(
                "SELECT column_name, data_type FROM information_schema.columns "
                "WHERE table_schema = %s AND table_name = 'provisioning_users'",
                (schema,),
            ).fetchall()
        )
        assert types["canvas_user_id"] == "bigint" and types["created_by_sis"] == "boolean"
        assert types["login_id"] == "text"
        logins = [r[0] for r in db.execute(f'SELECT login_id FROM "{schema}".provisioning_users ORDER BY 1')]
        assert logins == [f"login{i}" for i in range(5)]


def test_a_report_value_that_does_not_fit_leaves_the_loaded_tables_as_they_were(tmp_path, schema):
    import psycopg
    from lms_fixtures import dsn

    from airflow_provider_canvas.canvas.loading.report_load import load_report

    good, bad = tmp_path / "good.zip", tmp_path / "bad.zip"
    for path, second_id in ((good, "2"), (bad, "not-a-number")):
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr(
                "users_1.csv", f"canvas_user_id,user_id,status\n1,u1,active\n{second_id},u2,active\n"
            )
            archive.writestr("courses_1.csv", "canvas_course_id,course_id,status\n7,C1,active\n")
    with psycopg.connect(dsn()) as db:
        load_report(db, good, schema, "provisioning")
    with psycopg.connect(dsn()) as db, pytest.raises(psycopg.errors.InvalidTextRepresentation):
        load_report(db, bad, schema, "provisioning")
    with psycopg.connect(dsn()) as db:
        users = db.execute(f'SELECT canvas_user_id FROM "{schema}".provisioning_users ORDER BY 1').fetchall()
        courses = db.execute(f'SELECT count(*) FROM "{schema}".provisioning_courses').fetchone()[0]
    assert users == [(1,), (2,)] and courses == 1
