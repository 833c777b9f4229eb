"""The Canvas Data 2 pull against the DAP emulator over real HTTP: snapshots, incrementals, failures."""

from __future__ import annotations

import asyncio
import gzip
import json
import logging
from pathlib import Path

import pytest
from airflow.sdk import Asset
from airflow.sdk.exceptions import TaskDeferred

from airflow_provider_canvas.canvas_data.hooks.canvas_data import CanvasDataHook
from airflow_provider_canvas.canvas_data.loading.state import DapTableFolder
from airflow_provider_canvas.canvas_data.operators.pull import CanvasDataPullOperator, canvas_data_asset
from airflow_provider_canvas.canvas_data.triggers.jobs import CanvasDataJobsTrigger
from airflow_provider_canvas.exceptions import DapJobError, LmsThrottledError
from airflow_provider_canvas.testing.dap import DapEmulator
from airflow_provider_canvas.testing.dap_jobs import CallLimit

CLIENT_ID, CLIENT_SECRET = "us-east-1#7f3c2a10-dap-client", "dap-secret-value-Kx93"
ROWS = {"accounts": 5, "users": 120, "courses": 10, "enrollments": 300}


@pytest.fixture
def dap():
    with DapEmulator(rows=ROWS) as emulator:
        emulator.register_client(CLIENT_ID, CLIENT_SECRET)
        emulator.rows_per_object = 100  # several files per snapshot
        emulator.job_creation = CallLimit(50, 60.0)
        yield emulator


@pytest.fixture
def conn_id(dap, make_connection) -> str:
    return make_connection(
        "canvas_data_test",
        "canvas_data",
        dap.url,
        {"namespace": "canvas"},
        login=CLIENT_ID,
        password=CLIENT_SECRET,
    )


def run_trigger(trigger: CanvasDataJobsTrigger) -> dict:
    """The trigger rebuilt from its serialised form, run as the triggerer would, up to its event."""
    classpath, kwargs = trigger.serialize()
    assert classpath == "airflow_provider_canvas.canvas_data.triggers.jobs.CanvasDataJobsTrigger"

    async def first() -> dict:
        async for event in CanvasDataJobsTrigger(**kwargs).run():
            return event.payload
        raise AssertionError("no event")

    return asyncio.run(first())


def pull(op: CanvasDataPullOperator, context: dict | None = None) -> dict:
    """Execute a deferrable pull: defer, wait in the trigger, resume."""
    context = {} if context is None else context
    with pytest.raises(TaskDeferred) as deferred:
        op.execute(context)
    event = run_trigger(deferred.value.trigger)
    return op.execute_complete(context, event, **deferred.value.kwargs)


def records(folder: DapTableFolder, files: list[str]) -> list[dict]:
    lines = []
    for name in files:
        with gzip.open(folder.path / name, "rt") as stream:
            lines += [json.loads(line) for line in stream]
    return lines


def make_op(conn_id: str, location: Path, tables: list[str], **options) -> CanvasDataPullOperator:
    return CanvasDataPullOperator(
        task_id="pull",
        tables=tables,
        location=location,
        namespace="canvas",
        canvas_data_conn_id=conn_id,
        deferrable=options.pop("deferrable", True),
        poll_interval=0.1,
        **options,
    )


def test_snapshot_then_incremental_from_the_watermark_with_deletes_as_keys(dap, conn_id, tmp_path):
    op = make_op(conn_id, tmp_path, ["users", "courses"])
    first = pull(op)
    users = DapTableFolder(tmp_path, "canvas", "users")
    state = users.read_state()

    assert first["users"]["kind"] == "snapshot" and first["users"]["records"] == 120
    assert len(first["users"]["files"]) == 2  # 120 records, 100 per object
    assert [b.kind for b in state.batches] == ["snapshot"] and state.watermark == first["users"]["until"]
    assert json.loads(users.schema_file(1).read_text())["version"] == 1
    assert len(records(users, first["users"]["files"])) == 120

    dap.publish("users", inserts=4, updates=6, deletes=3)
    second = pull(op)
    state = users.read_state()
    changed = records(users, second["users"]["files"])

    assert second["users"]["kind"] == "incremental" and second["users"]["since"] == first["users"]["until"]
    assert [b.kind for b in state.batches] == ["snapshot", "incremental"]
    assert state.watermark == second["users"]["until"] > first["users"]["until"]
    assert sorted(r["meta"]["action"] for r in changed) == ["D"] * 3 + ["U"] * 10
    assert all(set(r) == {"key", "meta"} for r in changed if r["meta"]["action"] == "D")
    assert second["courses"]["records"] == 0  # nothing changed there: one empty file
    # Presigned URLs live on another host: the bearer token never went there.
    downloads = dap.signed_downloads
    assert downloads and not any(d.had_authorization for d in downloads)
    assert dap.summary()["jobs"] == {"snapshot": 2, "incremental": 2}


def test_a_schema_version_bump_is_kept_beside_the_batch(dap, conn_id, tmp_path):
    op = make_op(conn_id, tmp_path, ["users"])
    pull(op)
    dap.bump_schema("users", "pronouns", {"type": "string"})
    dap.publish("users", updates=5)

    result = pull(op)
    folder = DapTableFolder(tmp_path, "canvas", "users")
    v2 = json.loads(folder.schema_file(2).read_text())

    assert result["users"]["schema_version"] == 2
    assert [b.schema_version for b in folder.read_state().batches] == [1, 2]
    assert "pronouns" in v2["schema"]["properties"]["value"]["properties"]
    assert all("pronouns" in r["value"] for r in records(folder, result["users"]["files"]))


def test_a_failed_job_fails_the_task_naming_it_and_keeps_the_other_tables(dap, conn_id, tmp_path):
    op = make_op(conn_id, tmp_path, ["accounts", "users"])
    dap.fail_next_jobs(1, "Query execution failed: out of memory")

    with pytest.raises(DapJobError) as failed:
        pull(op)

    message = str(failed.value)
    assert "canvas.accounts" in message and "out of memory" in message and "pulled: users" in message
    assert DapTableFolder(tmp_path, "canvas", "accounts").read_state().batches == ()
    assert len(DapTableFolder(tmp_path, "canvas", "users").read_state().batches) == 1
    # The next run starts the failed table over; the pulled one goes on incrementally.
    again = pull(op)
    assert again["accounts"]["kind"] == "snapshot" and again["users"]["kind"] == "incremental"


def test_an_expired_presigned_url_is_replaced_by_asking_dap_again(dap, conn_id, tmp_path):
    dap.expire_next_urls(1)
    result = make_op(conn_id, tmp_path, ["users"], deferrable=False).execute({})

    statuses = [d.status for d in dap.signed_downloads]
    assert statuses[0] == 403 and statuses.count(200) == 2
    assert result["users"]["records"] == 120
    assert not any(p.name.startswith(".") for p in (tmp_path / "canvas" / "users").rglob("*"))


def test_throttled_job_creation_waits_for_retry_after_then_goes_on(dap, conn_id, tmp_path):
    dap.job_creation = CallLimit(1, 2.0)  # one job creation every 2 s
    result = make_op(conn_id, tmp_path, ["accounts", "courses"], deferrable=False).execute({})

    assert set(result) == {"accounts", "courses"}
    assert dap.summary()["throttled_job_creations"] >= 1


def test_throttled_job_creation_fails_clearly_after_its_retries(dap, conn_id):
    dap.job_creation = CallLimit(1, 30.0)
    hook = CanvasDataHook(conn_id, max_retries=0)
    hook.start_job("accounts")

    with pytest.raises(LmsThrottledError) as throttled:
        hook.start_job("users")

    message = str(throttled.value)
    assert "about 5 per minute" in message and "Try again after" in message and "canvas.users" in message


def test_a_refused_access_token_buys_one_new_login(dap, conn_id):
    hook = CanvasDataHook(conn_id)
    hook.get_schema("users")
    dap.expire_access_tokens()

    assert hook.get_schema("users")["version"] == 1
    assert [status for _, status in dap.logins] == [200, 200]


def test_test_connection_logs_in_and_nothing_else(dap, conn_id, make_connection):
    ok, message = CanvasDataHook(conn_id).test_connection()
    wrong = make_connection(
        "canvas_data_wrong", "canvas_data", dap.url, {}, login=CLIENT_ID, password="not-the-secret"
    )
    refused, why = CanvasDataHook(wrong).test_connection()

    assert ok and "accepted the client ID and secret" in message
    assert not refused and "refused the client ID and secret (HTTP 401" in why
    assert "not-the-secret" not in why
    assert dap.job_requests == [] and dap.summary()["logins"] == 2


def test_no_secret_in_logs_and_assets_describe_each_table(dap, conn_id, tmp_path, caplog, capfd):
    caplog.set_level(logging.DEBUG)
    events = _OutletEvents()
    op = make_op(conn_id, tmp_path, ["users"])
    pull(op, {"outlet_events": events})
    dap.expire_access_tokens()  # a second login in the second run
    dap.publish("users", updates=2)
    pull(op, {"outlet_events": events})

    logged = caplog.text + "".join(capfd.readouterr())
    tokens = list(dap._tokens)
    assert len(tokens) >= 2
    assert CLIENT_SECRET not in logged and not any(t in logged for t in tokens)
    # Presigned URLs are logged without their signature (only urllib3's own DEBUG lines show it).
    ours = [r.getMessage() for r in caplog.records if not r.name.startswith("urllib3")]
    assert ours and not any("sig=" in line for line in ours)
    asset = canvas_data_asset(tmp_path, "canvas", "users")
    assert op.outlets == [asset] and isinstance(asset, Asset)
    assert events[asset].extra["kind"] == "incremental" and events[asset].extra["table"] == "users"


class _OutletEvents(dict):
    class _Event:
        extra: dict

    def __missing__(self, key):
        self[key] = self._Event()
        return self[key]
