"""CanvasSisImportOperator over real HTTP against the emulator: every outcome, the retry that does not
upload twice, the guards that keep a truncated extract from reaching Canvas."""

from __future__ import annotations

import asyncio
import csv
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest
from airflow.models import Variable
from airflow.sdk.exceptions import TaskDeferred
from airflow.sdk.execution_time.context import OutletEventAccessors
from airflow.utils.session import create_session

from airflow_provider_canvas.canvas.operators import _sis_ledger as ledger
from airflow_provider_canvas.canvas.operators.sis_import import CanvasSisImportOperator, canvas_sis_asset
from airflow_provider_canvas.canvas.triggers.progress import CanvasProgressTrigger
from airflow_provider_canvas.exceptions import LmsConfigurationError, SisImportError, SisPayloadRefused

USERS = ["user_id", "login_id", "first_name", "last_name", "email", "status"]
COURSES = ["course_id", "short_name", "long_name", "term_id", "status"]
ENROLLMENTS = ["course_id", "user_id", "role", "status"]


@pytest.fixture
def canvas(emulator, lms_connection):
    emulator.canvas.add_account(1, "University", sis_account_id="UNIV")
    emulator.canvas.add_account(2, "College", parent_account_id=1)
    emulator.canvas.bucket_drain_per_second = 1_000_000.0
    emulator.canvas.sis_imports.step_seconds = 0.05
    conn_id = lms_connection("canvas", expired=False)
    yield SimpleNamespace(emu=emulator, conn_id=conn_id, sis=emulator.canvas.sis_imports)
    with create_session() as session:
        session.query(Variable).filter(Variable.key.like("canvas_sis_%")).delete(synchronize_session=False)


def write_csv(path: Path, columns: list[str], rows: list[list[str]]) -> Path:
    with open(path, "w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(columns)
        writer.writerows(rows)
    return path


def extract(folder: Path, users: int = 10, enrolled: int | None = None, bad_user_rows: int = 0) -> list[Path]:
    """users.csv, courses.csv, enrollments.csv of a small SIS extract (term T1, course C1)."""
    folder.mkdir(parents=True, exist_ok=True)
    user_rows = [
        [f"u{i}", f"login{i}", "First", f"Last{i}", f"u{i}@example.edu", "active"] for i in range(users)
    ]
    user_rows += [[f"bad{i}", "", "No", "Login", "", "active"] for i in range(bad_user_rows)]
    enrolled = users if enrolled is None else enrolled
    return [
        write_csv(folder / "users.csv", USERS, user_rows),
        write_csv(folder / "courses.csv", COURSES, [["C1", "C1", "Course One", "T1", "active"]]),
        write_csv(
            folder / "enrollments.csv",
            ENROLLMENTS,
            [["C1", f"u{i}", "student", "active"] for i in range(enrolled)],
        ),
    ]


def context(run_id: str = "scheduled__2026-12-08", events: OutletEventAccessors | None = None) -> dict:
    ti = SimpleNamespace(dag_id="canvas_sis_nightly", task_id="sis_import", run_id=run_id, map_index=-1)
    return {"ti": ti, "outlet_events": events if events is not None else OutletEventAccessors()}


def make_op(canvas, sources, **kwargs) -> CanvasSisImportOperator:
    return CanvasSisImportOperator(
        task_id="sis_import",
        canvas_conn_id=canvas.conn_id,
        sources=sources,
        poll_interval=0.05,
        **{"account_id": 1, "deferrable": True, **kwargs},
    )


def run_trigger(trigger: CanvasProgressTrigger) -> dict:
    """The trigger rebuilt from its serialised form, run as the triggerer would, up to its event."""
    classpath, kwargs = trigger.serialize()
    assert classpath == "airflow_provider_canvas.canvas.triggers.progress.CanvasProgressTrigger"
    assert "token" not in repr(kwargs).lower()

    async def first() -> dict:
        async for event in CanvasProgressTrigger(**kwargs).run():
            return event.payload
        raise AssertionError("no event")

    return asyncio.run(first())


def run(op: CanvasSisImportOperator, ctx: dict | None = None) -> dict:
    """Execute a deferrable import: upload, defer, wait in the trigger, resume."""
    ctx = context() if ctx is None else ctx
    with pytest.raises(TaskDeferred) as deferred:
        op.execute(ctx)
    event = run_trigger(deferred.value.trigger)
    return op.execute_complete(ctx, event, **deferred.value.kwargs)


def test_a_clean_import_returns_counts_and_puts_them_on_the_asset_event(canvas, tmp_path, capsys):
    events = OutletEventAccessors()
    op = make_op(canvas, extract(tmp_path), diffing_data_set_identifier="nightly", change_threshold=10)

    result = run(op, context(events=events))

    assert result["workflow_state"] == "imported"
    assert result["counts"]["users"] == 10 and result["counts"]["enrollments"] == 10
    assert result["rows"] == {"users": 10, "courses": 1, "enrollments": 10}
    assert result["warning_count"] == 0 and result["errors_file"] is None
    asset = canvas_sis_asset(canvas.conn_id, 1, "nightly")
    assert op.outlets == [asset]
    assert events[asset].extra["counts"]["enrollments"] == 10
    (upload,) = canvas.sis.uploads
    assert upload["content_type"] == "application/zip"
    assert upload["params"]["extension"] == "zip" and upload["params"]["change_threshold"] == "10"
    assert len(canvas.sis.active(1, "enrollment")) == 10
    assert "SIS import 1 of account 1 is imported, 100%" in capsys.readouterr().out  # the trigger's log
    last = ledger.read(ledger.last_good_key(canvas.conn_id, 1, "nightly"))
    assert last["rows"]["enrollments"] == 10


def test_warnings_are_counted_and_the_errors_file_comes_from_storage_without_the_token(canvas, tmp_path):
    result = run(make_op(canvas, extract(tmp_path, bad_user_rows=3)))

    assert result["workflow_state"] == "imported_with_messages"
    assert result["warning_count"] == 3
    errors = Path(result["errors_file"])
    assert errors.parent == tmp_path  # next to the input
    assert errors.read_text().count("No login_id given for a user") == 3
    downloads = canvas.emu.canvas.files.storage.downloads
    assert downloads and not any(d.had_authorization for d in downloads)


def test_fail_on_warnings_fails_an_import_with_messages(canvas, tmp_path):
    with pytest.raises(SisImportError, match="3 warning"):
        run(make_op(canvas, extract(tmp_path, bad_user_rows=3), fail_on_warnings=True))


@pytest.mark.parametrize("state", ["failed", "failed_with_messages"])
def test_a_failed_import_fails_the_task_with_canvas_words(canvas, tmp_path, state):
    canvas.sis.fail_next_with_error = "Error while importing CSV. Please contact support."
    canvas.sis.fail_next_state = state
    with pytest.raises(SisImportError, match=f"ended {state}: : Error while importing CSV"):
        run(make_op(canvas, extract(tmp_path)))


def test_an_import_aborted_while_waiting_fails_the_task(canvas, tmp_path):
    from canvasapi import Canvas

    canvas.sis.stuck_importing = True
    op = make_op(canvas, extract(tmp_path))
    ctx = context()
    with pytest.raises(TaskDeferred) as deferred:
        op.execute(ctx)
    access = _access_token(canvas)
    sis_import = (
        Canvas(canvas.emu.url, access).get_account(1).get_sis_import(deferred.value.trigger.object_id)
    )
    assert sis_import.abort().workflow_state == "aborted"  # canvasapi's SisImport.abort

    event = run_trigger(deferred.value.trigger)
    with pytest.raises(SisImportError, match="ended aborted"):
        op.execute_complete(ctx, event, **deferred.value.kwargs)


def test_an_import_stuck_importing_ends_at_the_deadline_saying_how_to_abort(canvas, tmp_path):
    canvas.sis.stuck_importing = True
    op = make_op(canvas, extract(tmp_path), import_timeout=timedelta(seconds=0.5))
    ctx = context()
    with pytest.raises(TaskDeferred) as deferred:
        op.execute(ctx)
    event = run_trigger(deferred.value.trigger)
    assert event["status"] == "timeout" and event["object"]["workflow_state"] == "importing"
    with pytest.raises(SisImportError, match=r"importing, 40%.*sis_imports/:id/abort"):
        op.execute_complete(ctx, event, **deferred.value.kwargs)


def test_batch_mode_over_the_change_threshold_deletes_nothing_and_fails(canvas, tmp_path):
    batch = {"batch_mode": True, "batch_mode_term_id": "sis_term_id:T1", "change_threshold": 10}
    run(make_op(canvas, extract(tmp_path / "monday", users=20), **batch))
    with pytest.raises(
        SisImportError, match=r"would have deleted 5 enrollments, more than change_threshold 10%"
    ):
        tuesday = extract(tmp_path / "tuesday", users=20, enrolled=15)
        run(make_op(canvas, tuesday, min_rows_ratio=None, **batch), context(run_id="tuesday"))
    assert len(canvas.sis.active(1, "enrollment")) == 20


def test_batch_mode_within_the_threshold_deletes_what_the_term_lacks(canvas, tmp_path):
    batch = {"batch_mode": True, "batch_mode_term_id": "sis_term_id:T1", "change_threshold": 30}
    run(make_op(canvas, extract(tmp_path / "monday", users=20), **batch))
    result = run(
        make_op(canvas, extract(tmp_path / "tuesday", users=20, enrolled=15), **batch), context(run_id="t")
    )
    assert result["counts"]["batch_enrollments_deleted"] == 5
    assert len(canvas.sis.active(1, "enrollment")) == 15


def test_diffing_drops_what_the_data_set_lost_with_the_drop_status(canvas, tmp_path):
    diffing = {
        "diffing_data_set_identifier": "nightly",
        "diffing_drop_status": "inactive",
        "change_threshold": 50,
    }
    run(make_op(canvas, extract(tmp_path / "monday", users=10), **diffing))
    result = run(
        make_op(canvas, extract(tmp_path / "tuesday", users=10, enrolled=9), **diffing), context(run_id="t")
    )
    assert result["counts"]["enrollments"] == 1  # only the difference was applied
    statuses = sorted(o.status for o in canvas.sis.all_objects(1, "enrollment"))
    assert statuses.count("inactive") == 1 and statuses.count("active") == 9
    (_, second) = canvas.sis.imports.values()
    assert canvas.sis.to_json(second)["diffed_against_import_id"] == 1


def test_diffing_past_the_change_threshold_imports_whole_and_drops_nothing(canvas, tmp_path):
    diffing = {"diffing_data_set_identifier": "nightly", "change_threshold": 5, "min_rows_ratio": None}
    run(make_op(canvas, extract(tmp_path / "monday", users=40), **diffing))
    result = run(
        make_op(canvas, extract(tmp_path / "tuesday", users=40, enrolled=10), **diffing), context(run_id="t")
    )
    assert result["diffing_threshold_exceeded"] is True
    assert all(o.status == "active" for o in canvas.sis.all_objects(1, "enrollment"))


def test_a_retried_task_waits_for_its_import_instead_of_uploading_again(canvas, tmp_path):
    sources = extract(tmp_path)
    with pytest.raises(TaskDeferred) as first:
        make_op(canvas, sources).execute(context())
    # The worker died while deferred; the retry runs on another worker: a new operator, same task instance.
    retry = make_op(canvas, sources)
    ctx = context()
    with pytest.raises(TaskDeferred) as second:
        retry.execute(ctx)
    assert second.value.trigger.object_id == first.value.trigger.object_id
    assert len(canvas.sis.uploads) == 1
    result = retry.execute_complete(ctx, run_trigger(second.value.trigger), **second.value.kwargs)
    assert result["import_id"] == first.value.trigger.object_id
    # A cleared task re-run after success gets the finished import, still without an upload.
    assert make_op(canvas, sources).execute(context())["import_id"] == result["import_id"]
    assert len(canvas.sis.uploads) == 1


def test_a_changed_payload_in_the_same_run_is_uploaded(canvas, tmp_path):
    with pytest.raises(TaskDeferred):
        make_op(canvas, extract(tmp_path / "a", users=10)).execute(context())
    with pytest.raises(TaskDeferred):
        make_op(canvas, extract(tmp_path / "b", users=11)).execute(context())
    assert len(canvas.sis.uploads) == 2


def test_a_lost_answer_to_the_upload_is_found_in_the_listing_not_sent_again(canvas, tmp_path):
    canvas.sis.lose_next_answer = True
    result = run(make_op(canvas, extract(tmp_path), diffing_data_set_identifier="nightly"))
    assert result["workflow_state"] == "imported"
    assert len(canvas.sis.uploads) == 1


def test_a_retry_after_a_lost_answer_finds_the_import_in_the_listing(canvas, tmp_path, monkeypatch):
    from airflow_provider_canvas.canvas.hooks.canvas import CanvasHook

    sources = extract(tmp_path)
    canvas.sis.lose_next_answer = True
    # The listing is not ready yet (Canvas's replica lags), so this try ends with no import id recorded.
    with monkeypatch.context() as patch:
        patch.setattr(CanvasHook, "list_sis_imports", lambda *args, **kwargs: iter(()))
        with pytest.raises(SisImportError, match="the next try uploads again"):
            make_op(canvas, sources, diffing_data_set_identifier="nightly").execute(context())
    result = run(make_op(canvas, sources, diffing_data_set_identifier="nightly"))
    assert result["import_id"] == 1 and len(canvas.sis.uploads) == 1


def test_a_csv_without_a_required_column_is_refused_before_upload(canvas, tmp_path):
    sources = extract(tmp_path)
    write_csv(sources[2], ["course_id", "user_id", "status"], [["C1", "u1", "active"]])
    with pytest.raises(
        LmsConfigurationError,
        match=r"enrollments.csv \(enrollments\): required column\(s\) \['role\|role_id'\]",
    ):
        make_op(canvas, sources).execute(context())
    assert canvas.sis.uploads == []


def test_an_empty_csv_is_refused_before_upload(canvas, tmp_path):
    sources = extract(tmp_path)
    write_csv(sources[2], ENROLLMENTS, [])
    with pytest.raises(LmsConfigurationError, match="header and no rows"):
        make_op(canvas, sources).execute(context())
    assert canvas.sis.uploads == []


def test_a_truncated_extract_is_refused_before_upload(canvas, tmp_path):
    run(make_op(canvas, extract(tmp_path / "monday", users=100), diffing_data_set_identifier="nightly"))
    truncated = make_op(
        canvas, extract(tmp_path / "tuesday", users=100, enrolled=40), diffing_data_set_identifier="nightly"
    )
    with pytest.raises(SisPayloadRefused, match=r"enrollments: 40 rows, 100 last time"):
        truncated.execute(context(run_id="tuesday"))
    assert len(canvas.sis.uploads) == 1


def test_a_zip_from_object_storage_is_imported(canvas, tmp_path):
    import zipfile

    from airflow.sdk import ObjectStoragePath
    from airflow.sdk.io import attach
    from fsspec.implementations.memory import MemoryFileSystem

    local = tmp_path / "sis.zip"
    with zipfile.ZipFile(local, "w") as archive:
        for path in extract(tmp_path / "csv"):
            archive.write(path, path.name)
    attach("memory", fs=MemoryFileSystem())  # stands in for s3:// / gs://
    remote = ObjectStoragePath("memory://sis-bucket/nightly/sis.zip")
    remote.parent.mkdir(parents=True, exist_ok=True)
    remote.write_bytes(local.read_bytes())

    result = run(make_op(canvas, remote, errors_dir=tmp_path))
    assert result["workflow_state"] == "imported" and result["rows"]["users"] == 10


def test_a_sub_account_is_refused_by_canvas(canvas, tmp_path):
    with pytest.raises(Exception, match="root accounts"):
        make_op(canvas, extract(tmp_path), account_id=2).execute(context())


def _access_token(canvas) -> str:
    from airflow.models import Connection

    return Connection.get_connection_from_secrets(canvas.conn_id).extra_dejson["access_token"]


def test_an_upload_refused_for_a_dead_token_is_sent_again_whole_after_the_refresh(canvas, tmp_path):
    canvas.emu.expire_access_tokens("canvas")  # Canvas says 401; the connection still thinks it is live
    result = run(make_op(canvas, extract(tmp_path, users=500)))
    assert result["workflow_state"] == "imported" and result["counts"]["users"] == 500
    assert canvas.emu.refresh_count("canvas") == 1
    assert [u["size"] for u in canvas.sis.uploads] == [result["size"]]  # one upload reached Canvas, whole
