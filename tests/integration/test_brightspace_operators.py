"""The Brightspace operators end to end: emulator -> files + manifest -> PostgreSQL, ADS via the trigger."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import timedelta

import psycopg
import pytest
from airflow.sdk import Asset, AssetAlias
from airflow.sdk.exceptions import TaskDeferred
from airflow.sdk.execution_time.context import OutletEventAccessors
from lms_fixtures import COLUMNS, dsn, postgres_connection_fields, user

from airflow_provider_canvas.brightspace.loading.pull_state import PulledExtract
from airflow_provider_canvas.brightspace.operators.data_sets import (
    BrightspaceAdvancedDataSetOperator,
    BrightspaceDataSetsPullOperator,
    BrightspaceDataSetsToPostgresOperator,
    data_set_asset,
)
from airflow_provider_canvas.brightspace.triggers.ads import BrightspaceExportJobTrigger
from airflow_provider_canvas.exceptions import (
    DifferentialGapError,
    DownloadError,
    ExportJobError,
    ExtractFormatError,
    LmsError,
)
from airflow_provider_canvas.testing.primitives import utcnow


@pytest.fixture
def conns(lms_connection, make_connection) -> tuple[str, str]:
    bs = lms_connection("brightspace", expired=False)
    pg = make_connection("bds_op_pg", extra={}, **postgres_connection_fields())
    return bs, pg


@pytest.fixture
def seeded(emulator):
    """Users: a full 6 days ago (2000 rows), differentials 5, 3 and 1 days ago; Org Units: a full."""
    now = utcnow()
    bs = emulator.brightspace
    bs.add_data_set("Users", COLUMNS, [user(i) for i in range(1, 2001)], created=now - timedelta(days=6))
    bs.add_extract(
        "Users", "Differential", now - timedelta(days=5), [user(i, f"renamed{i}") for i in range(1, 51)]
    )
    bs.add_extract(
        "Users", "Differential", now - timedelta(days=3), [user(i, deleted=True) for i in range(51, 61)]
    )
    bs.add_extract(
        "Users",
        "Differential",
        now - timedelta(days=1),
        [user(i, Email=f"u{i}@x.edu") for i in (1, 2001, 2002)],
        columns=[*COLUMNS, "Email"],  # a minor version adds a column at the end
        version="1.1",
    )
    bs.add_data_set(
        "Org Units",
        ["OrgUnitId", "Name"],
        [{"OrgUnitId": str(i), "Name": f"ou{i}"} for i in range(1, 41)],
        created=now - timedelta(days=2),
    )
    return bs


def pull_op(conns, output, **kwargs) -> BrightspaceDataSetsPullOperator:
    kwargs.setdefault("data_sets", ["Users", "Org Units"])
    return BrightspaceDataSetsPullOperator(
        task_id=f"pull_{uuid.uuid4().hex[:6]}", location=output, brightspace_conn_id=conns[0], **kwargs
    )


def load_op(conns, output, schema, **kwargs) -> BrightspaceDataSetsToPostgresOperator:
    kwargs.setdefault("data_sets", ["Users", "Org Units"])
    return BrightspaceDataSetsToPostgresOperator(
        task_id=f"load_{uuid.uuid4().hex[:6]}",
        location=output,
        postgres_conn_id=conns[1],
        schema=schema,
        **kwargs,
    )


def table(schema: str, name: str, key: str) -> dict[str, dict]:
    with psycopg.connect(dsn()) as db, db.cursor(row_factory=psycopg.rows.dict_row) as cur:
        cur.execute(f'SELECT * FROM "{schema}"."{name}"')
        return {str(row[key]): row for row in cur.fetchall()}  # keys are typed (integer) columns


def fingerprint(schema: str, name: str = "users") -> tuple:
    with psycopg.connect(dsn()) as db:
        return db.execute(
            f'SELECT count(*), md5(string_agg(t::text, \'|\' ORDER BY t::text)) FROM "{schema}"."{name}" t'
        ).fetchone()


def test_pull_then_load_full_and_differentials_then_only_what_is_new(
    emulator, seeded, conns, schema, tmp_path
):
    events = OutletEventAccessors()
    pulled = pull_op(conns, tmp_path).execute({"outlet_events": events})

    assert [(p["bds_type"], p["version"]) for p in pulled["Users"]] == [
        ("Full", "1.0"),
        ("Differential", "1.0"),
        ("Differential", "1.0"),
        ("Differential", "1.1"),
    ]
    assert [p["bds_type"] for p in pulled["Org Units"]] == ["Full"]
    manifest = json.loads((tmp_path / "users" / "manifest.json").read_text())
    assert [e["file"] for e in manifest["extracts"]] == [p["file"] for p in pulled["Users"]]
    assert all((tmp_path / "users" / p["file"]).stat().st_size == p["size"] for p in pulled["Users"])
    assert not list(tmp_path.rglob(".*.part"))
    users_event = events[data_set_asset(tmp_path, "Users")].extra
    assert users_event["new_extracts"] == 4 and users_event["newest"]["version"] == "1.1"
    assert data_set_asset(tmp_path, "Users").uri == (tmp_path / "users").as_uri()

    loaded = load_op(conns, tmp_path, schema).execute({})

    assert [(r["rows_read"], r["rows_upserted"], r["rows_deleted"]) for r in loaded["Users"]] == [
        (2000, 2000, 0),
        (50, 50, 0),
        (10, 0, 10),
        (3, 3, 0),
    ]
    users = table(schema, "users", "UserId")
    assert len(users) == 2000 - 10 + 2
    assert users["1"]["UserName"] == "user1" and users["1"]["Email"] == "u1@x.edu"  # day-1 diff wins
    assert users["2"]["UserName"] == "renamed2" and users["2"]["Email"] is None
    assert "55" not in users and users["2002"]["OrgDefinedId"] == "S02002"
    assert len(table(schema, "org_units", "OrgUnitId")) == 40

    # A new differential today: only it is pulled and loaded.
    emulator.brightspace.add_extract(
        "Users", "Differential", utcnow(), [user(7, "seven")], columns=[*COLUMNS, "Email"]
    )
    again = pull_op(conns, tmp_path).execute({"outlet_events": OutletEventAccessors()})
    assert [p["bds_type"] for p in again["Users"]] == ["Differential"] and again["Org Units"] == []
    reloaded = load_op(conns, tmp_path, schema).execute({})
    assert [r["rows_upserted"] for r in reloaded["Users"]] == [1] and reloaded["Org Units"] == []
    assert table(schema, "users", "UserId")["7"]["UserName"] == "seven"

    # Re-running both is a no-op: nothing downloaded, nothing loaded, table identical.
    before = fingerprint(schema)
    downloads = len(emulator.brightspace.signed_downloads)
    assert pull_op(conns, tmp_path).execute({}) == {"Users": [], "Org Units": []}
    assert load_op(conns, tmp_path, schema).execute({}) == {"Users": [], "Org Units": []}
    assert fingerprint(schema) == before
    assert len(emulator.brightspace.signed_downloads) == downloads


def test_object_storage_location_for_pull_and_load(seeded, conns, schema):
    from airflow.sdk import ObjectStoragePath
    from airflow.sdk.io import attach
    from fsspec.implementations.memory import MemoryFileSystem

    attach("memory", fs=MemoryFileSystem())  # stands in for s3:// / gs://
    location = ObjectStoragePath(f"memory://bds-{uuid.uuid4().hex[:8]}/extracts")

    pulled = pull_op(conns, location, data_sets=["Users"]).execute({})
    loaded = load_op(conns, location, schema, data_sets=["Users"]).execute({})

    assert len(pulled["Users"]) == 4 and (location / "users" / "manifest.json").exists()
    assert (location / "users" / pulled["Users"][0]["file"]).stat()["size"] == pulled["Users"][0]["size"]
    assert [r["rows_read"] for r in loaded["Users"]] == [2000, 50, 10, 3]
    assert len(table(schema, "users", "UserId")) == 1992


def test_a_newer_full_restarts_the_chain_when_asked(emulator, seeded, conns, schema, tmp_path):
    pull_op(conns, tmp_path, data_sets=["Users"]).execute({})
    load_op(conns, tmp_path, schema, data_sets=["Users"]).execute({})
    emulator.brightspace.add_extract("Users", "Full", utcnow(), [user(i) for i in range(1, 11)])

    assert pull_op(conns, tmp_path, data_sets=["Users"], full="first_run").execute({}) == {"Users": []}
    weekly = pull_op(conns, tmp_path, data_sets=["Users"], full="newer").execute({})
    loaded = load_op(conns, tmp_path, schema, data_sets=["Users"]).execute({})

    assert [p["bds_type"] for p in weekly["Users"]] == ["Full"]
    manifest = json.loads((tmp_path / "users" / "manifest.json").read_text())["extracts"]
    assert [e["bds_type"] for e in manifest] == ["Full"]  # older chain dropped from the manifest
    assert [r["rows_read"] for r in loaded["Users"]] == [10]
    # Upsert by key: rows 1..10 rewritten to the full's values, the rest stays (BDS soft-deletes).
    assert table(schema, "users", "UserId")["1"]["UserName"] == "user1"


def test_templated_data_sets_emit_events_through_an_asset_alias(seeded, conns, tmp_path):
    op = pull_op(conns, tmp_path, data_sets="{{ params.data_sets }}")
    assert op.outlets == [AssetAlias(name=f"brightspace-data-sets:{tmp_path.resolve().as_uri()}")]
    op.data_sets = ["Org Units"]  # as rendered with render_template_as_native_obj
    events = OutletEventAccessors()

    op.execute({"outlet_events": events})

    (alias_event,) = events[op.outlets[0]].asset_alias_events
    assert alias_event.dest_asset_key.uri == data_set_asset(tmp_path, "Org Units").uri
    assert alias_event.extra["new_extracts"] == 1 and alias_event.extra["data_set"] == "Org Units"


def test_gap_beyond_retention_fails_loudly(emulator, seeded, conns, tmp_path):
    folder = tmp_path / "users"
    folder.mkdir()
    stale = PulledExtract("Full/old.zip", "Full", (utcnow() - timedelta(days=20)).isoformat(), 1)
    (folder / "manifest.json").write_text(json.dumps({"data_set": "Users", "extracts": [stale.to_dict()]}))

    with pytest.raises(DifferentialGapError, match="20 days ago; Brightspace keeps differentials 14 days"):
        pull_op(conns, tmp_path, data_sets=["Users"]).execute({})

    # The full published 6 days ago closes the gap when a full is allowed.
    pulled = pull_op(conns, tmp_path, data_sets=["Users"], full="newer").execute({})
    assert [p["bds_type"] for p in pulled["Users"]] == [
        "Full",
        "Differential",
        "Differential",
        "Differential",
    ]


def test_one_failing_data_set_does_not_stop_the_others(seeded, conns, tmp_path):
    with pytest.raises(LmsError, match="no data set named 'userz'; did you mean 'Users'"):
        pull_op(conns, tmp_path, data_sets=["userz", "Org Units"]).execute({})
    assert (tmp_path / "org_units" / "manifest.json").exists()


def test_truncated_download_fails_with_nothing_half_written(emulator, seeded, conns, tmp_path):
    emulator.brightspace.truncate_next_download(100)

    with pytest.raises(DownloadError, match="failed after 1 attempts"):
        pull_op(conns, tmp_path, data_sets=["Org Units"], download_attempts=1).execute({})

    assert [p.name for p in tmp_path.rglob("*") if p.is_file()] == []


def test_a_zip_of_another_data_set_is_refused_at_the_pull(emulator, seeded, conns, tmp_path):
    pull_op(conns, tmp_path, data_sets=["Org Units"]).execute({})
    manifest = (tmp_path / "org_units" / "manifest.json").read_text()
    files = sorted(p.name for p in tmp_path.rglob("*") if p.is_file())
    # A listing entry whose file is another data set's: right size, sound ZIP, wrong CSV inside.
    emulator.brightspace.add_extract(
        "Org Units", "Differential", utcnow(), zip_members=[("Users.csv", "UserId\r\n1\r\n")]
    )

    with pytest.raises(ExtractFormatError) as raised:
        pull_op(conns, tmp_path, data_sets=["Org Units"], download_attempts=1).execute({})

    message = str(raised.value)
    assert "the ZIP holds 'Users.csv', but an extract of data set 'Org Units' holds" in message
    assert "OrganizationalUnits.csv" in message and "Nothing was kept" in message
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == files  # no file, no .part
    assert (tmp_path / "org_units" / "manifest.json").read_text() == manifest  # no manifest entry


def first_event(trigger: BrightspaceExportJobTrigger):
    """Run the trigger's coroutine as the triggerer would, up to its first event."""

    async def run():
        async for event in trigger.run():
            return event

    return asyncio.run(run())


def test_ads_deferred_polled_by_the_trigger_then_downloaded(emulator, conns, tmp_path):
    emulator.brightspace.ads_job_seconds = 0.6
    emulator.brightspace.add_ads_data_set(
        "Enrollments and Withdrawals",
        ["OrgUnitId", "UserId", "Action"],
        rows_count=800,
        filters=[{"Name": "startDate"}],
    )
    op = BrightspaceAdvancedDataSetOperator(
        task_id="ads",
        data_set="Enrollments and Withdrawals",
        filters={"startDate": "2026-01-01"},
        destination=tmp_path / "out" / "enrollments.zip",
        brightspace_conn_id=conns[0],
        poll_interval=0.2,
        deferrable=True,
    )

    with pytest.raises(TaskDeferred) as deferred:
        op.execute({})
    trigger = deferred.value.trigger
    assert deferred.value.method_name == "execute_complete"
    classpath, kwargs = trigger.serialize()
    assert classpath == "airflow_provider_canvas.brightspace.triggers.ads.BrightspaceExportJobTrigger"
    assert set(kwargs) == {"conn_id", "job_id", "poll_interval", "timeout_at", "max_transient_errors"}
    rebuilt = BrightspaceExportJobTrigger(**kwargs)  # as the triggerer would

    event = first_event(rebuilt)
    job_polls = [r for r in emulator.api_requests if "/dataExport/jobs/" in r.path]
    result = op.execute_complete({}, event.payload)

    assert event.payload["status"] == "complete" and len(job_polls) >= 2
    assert result["size"] == (tmp_path / "out" / "enrollments.zip").stat().st_size > 800 * 10
    assert result["job_id"] == kwargs["job_id"]


def test_ads_failed_job_and_timeout_raise_clear_errors(emulator, conns, tmp_path):
    emulator.brightspace.ads_job_seconds = 0.2
    ads = emulator.brightspace.add_ads_data_set(
        "Final Grades", ["OrgUnitId", "UserId", "Grade"], rows_count=5
    )
    emulator.brightspace.fail_next_ads_jobs(1)
    op = BrightspaceAdvancedDataSetOperator(
        task_id="ads",
        data_set=ads.data_set_id,
        destination=tmp_path / "g.zip",
        brightspace_conn_id=conns[0],
        poll_interval=0.1,
        deferrable=True,
    )

    with pytest.raises(TaskDeferred) as deferred:
        op.execute({})

    event = first_event(deferred.value.trigger)
    assert event.payload["status"] == "failed" and "ERROR" in event.payload["message"]
    with pytest.raises(ExportJobError, match="ended with status ERROR"):
        op.execute_complete({}, event.payload)

    emulator.brightspace.ads_job_seconds = 60
    with pytest.raises(TaskDeferred) as deferred:
        op.execute({})  # a second job, which will not finish in time
    trigger = deferred.value.trigger
    trigger.timeout_at = 0  # already past
    event = first_event(trigger)
    assert event.payload["status"] == "timeout"
    assert not (tmp_path / "g.zip").exists()


def test_ads_without_deferral_polls_in_the_task(emulator, conns, tmp_path):
    emulator.brightspace.ads_job_seconds = 0.3
    emulator.brightspace.add_ads_data_set("Final Grades", ["OrgUnitId", "UserId", "Grade"], rows_count=50)
    op = BrightspaceAdvancedDataSetOperator(
        task_id="ads",
        data_set="Final Grades",
        destination=tmp_path / "g.zip",
        brightspace_conn_id=conns[0],
        deferrable=False,
        poll_interval=0.1,
    )

    result = op.execute({})

    assert result["size"] == (tmp_path / "g.zip").stat().st_size


def test_expired_export_job_cannot_be_downloaded(emulator, conns, tmp_path):
    emulator.brightspace.ads_job_seconds = 0
    emulator.brightspace.ads_job_ttl_seconds = 0
    emulator.brightspace.add_ads_data_set("Final Grades", ["OrgUnitId", "UserId"], rows_count=5)
    op = BrightspaceAdvancedDataSetOperator(
        task_id="ads",
        data_set="Final Grades",
        destination=tmp_path / "g.zip",
        brightspace_conn_id=conns[0],
        deferrable=False,
        poll_interval=0.05,
    )

    with pytest.raises(ExportJobError, match="expired"):
        op.execute({})
    assert list(tmp_path.iterdir()) == []


def test_asset_helper_is_stable_for_downstream_schedules(tmp_path):
    assert data_set_asset(str(tmp_path), "User Enrollments") == Asset(
        uri=(tmp_path / "user_enrollments").as_uri()
    )
