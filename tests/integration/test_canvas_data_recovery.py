"""When a Canvas Data 2 pull or load fails: each recovery against the DAP emulator over real HTTP.

DAP's SnapshotRequiredError, a 429 without ``Retry-After``, URLs that live one file, refused
credentials and unknown names, and the two options a person uses to recover (``force_snapshot``,
``repull_batches``), each named by the error that calls for it (the table:
docs/operators/canvas-data-2-failures.md).
"""

from __future__ import annotations

import psycopg
import pytest
from airflow.sdk.exceptions import AirflowFailException, TaskDeferred
from lms_fixtures import dsn
from test_canvas_data_pull import CLIENT_ID, CLIENT_SECRET, make_op, pull, run_trigger
from test_canvas_data_pull_and_load import assert_same_table

from airflow_provider_canvas.canvas_data.hooks.canvas_data import CanvasDataHook
from airflow_provider_canvas.canvas_data.hooks.objects import URL_REFRESHES
from airflow_provider_canvas.canvas_data.loading.load import DapTableLoader
from airflow_provider_canvas.canvas_data.loading.records import DapDataError
from airflow_provider_canvas.canvas_data.loading.state import DapTableFolder
from airflow_provider_canvas.exceptions import (
    LmsAuthError,
    LmsConfigurationError,
    LmsThrottledError,
)
from airflow_provider_canvas.testing.dap import DapEmulator
from airflow_provider_canvas.testing.dap_jobs import CallLimit

ROWS = {"accounts": 5, "users": 120, "courses": 10, "enrollments": 30}


@pytest.fixture
def dap():
    with DapEmulator(rows=ROWS, catalogue=False) as emulator:
        emulator.register_client(CLIENT_ID, CLIENT_SECRET)
        emulator.rows_per_object = 50
        emulator.job_creation = CallLimit(50, 60.0)
        yield emulator


@pytest.fixture
def conn_id(dap, make_connection) -> str:
    return make_connection(
        "canvas_data_recovery", "canvas_data", dap.url, {}, login=CLIENT_ID, password=CLIENT_SECRET
    )


def load(tmp_path, schema: str, table: str = "users") -> dict:
    with psycopg.connect(dsn()) as db:
        return DapTableLoader(db, schema).load(DapTableFolder(tmp_path, "canvas", table)).to_dict()


def test_snapshot_required_starts_a_snapshot_by_itself_and_the_load_replaces_the_rows(
    dap, conn_id, tmp_path, schema, capfd
):
    pull(make_op(conn_id, tmp_path, ["users"]))
    load(tmp_path, schema)
    dap.publish("users", inserts=3, updates=4, deletes=5)
    dap.require_snapshot("users")  # Instructure reloaded the table

    capfd.readouterr()
    result = pull(make_op(conn_id, tmp_path, ["users"]))
    logged = "".join(capfd.readouterr())
    loaded = load(tmp_path, schema)

    assert result["users"]["kind"] == "snapshot"
    assert [(t, kind, status) for t, kind, status in dap.job_requests[1:]] == [
        ("users", "-", 400),
        ("users", "snapshot", 200),
    ]
    assert "DAP requires a new snapshot" in logged and "SnapshotRequiredError" in logged
    assert loaded["snapshot"] is True and loaded["rows_deleted"] == 5
    assert_same_table(dap, schema, "users")
    # The next run is an incremental again.
    dap.publish("users", updates=2)
    assert pull(make_op(conn_id, tmp_path, ["users"]))["users"]["kind"] == "incremental"


def test_a_429_without_retry_after_waits_the_window_and_goes_on(dap, conn_id, tmp_path, capfd, caplog):
    dap.send_retry_after = False
    dap.job_creation = CallLimit(1, 1.5)
    op = make_op(
        conn_id,
        tmp_path,
        ["accounts", "courses"],
        deferrable=False,
        throttle_window_seconds=1.5,
        job_creation_rate=(50, 60.0),  # no pacing: meet DAP's 429 on purpose
    )
    result = op.execute({})
    logged = caplog.text + "".join(capfd.readouterr())

    assert set(result) == {"accounts", "courses"}
    assert dap.summary()["throttled_job_creations"] >= 1
    assert "throttled (HTTP 429); retrying in 1.5s" in logged


def test_a_429_without_retry_after_says_so_when_it_gives_up(dap, conn_id):
    assert CanvasDataHook(conn_id).throttle_window_seconds >= 30  # the official client waits 30 s
    dap.send_retry_after = False
    dap.job_creation = CallLimit(1, 60.0)
    hook = CanvasDataHook(conn_id, max_retries=1, throttle_window_seconds=0.2)
    hook.start_job("accounts")

    with pytest.raises(LmsThrottledError) as throttled:
        hook.start_job("users")

    message = str(throttled.value)
    assert "DAP sent no Retry-After; each retry waited throttle_window_seconds=0s" in message
    assert "DAP's Retry-After" not in message and "canvas.users" in message


def test_the_url_budget_counts_failures_in_a_row_not_in_a_job(dap, conn_id, tmp_path):
    dap.rows_per_object = 10  # 12 objects
    dap.url_lifetime_files = 1  # every URL set lives for one file only
    result = make_op(conn_id, tmp_path, ["users"], deferrable=False).execute({})

    expired = [d for d in dap.signed_downloads if d.status == 403]
    assert result["users"]["records"] == 120 and len(result["users"]["files"]) == 12
    assert len(expired) == 11 > URL_REFRESHES  # 11 new URL sets, never two in a row


def test_urls_failing_in_a_row_end_the_table_with_what_happens_next(dap, conn_id, tmp_path):
    dap.expire_next_urls(100)
    with pytest.raises(Exception) as failed:
        make_op(conn_id, tmp_path, ["users"], deferrable=False).execute({})
    message = str(failed.value)
    assert f"with {URL_REFRESHES} new URLs in a row" in message
    assert "the next run of the pull starts a new job from the same watermark" in message
    assert not isinstance(failed.value, AirflowFailException)  # a retry may well succeed
    assert DapTableFolder(tmp_path, "canvas", "users").read_state().batches == ()


def test_a_wrong_secret_fails_at_once_without_retries_after_one_login(dap, make_connection, tmp_path):
    wrong = make_connection(
        "canvas_data_wrong", "canvas_data", dap.url, {}, login=CLIENT_ID, password="not-the-secret"
    )
    with pytest.raises(LmsAuthError) as refused:
        make_op(wrong, tmp_path, ["accounts", "users", "courses"], deferrable=False).execute({})

    assert isinstance(refused.value, AirflowFailException)
    assert "refused the client ID and secret (HTTP 401" in str(refused.value)
    assert [status for _, status in dap.logins] == [401] and dap.job_requests == []


def test_plain_http_to_another_host_fails_at_once(make_connection, tmp_path):
    http = make_connection(
        "canvas_data_http",
        "canvas_data",
        "http://dap.example.edu",
        {},
        login=CLIENT_ID,
        password=CLIENT_SECRET,
    )
    with pytest.raises(LmsConfigurationError, match="must use https") as refused:
        make_op(http, tmp_path, ["users"], deferrable=False).execute({})
    assert isinstance(refused.value, AirflowFailException)


@pytest.mark.parametrize(
    ("namespace", "tables", "named"),
    [("canvas", ["users", "no_such_table"], "canvas.no_such_table"), ("nope", ["users"], "nope.users")],
)
def test_an_unknown_table_or_namespace_fails_without_retries_naming_the_option(
    dap, conn_id, tmp_path, namespace, tables, named
):
    op = make_op(conn_id, tmp_path, tables, deferrable=False)
    op.namespace = namespace
    with pytest.raises(LmsConfigurationError) as unknown:
        op.execute({})

    message = str(unknown.value)
    assert isinstance(unknown.value, AirflowFailException)
    assert f"DAP has no {named}" in message and "tables=" in message and "Not retried" in message


def test_force_snapshot_starts_a_named_table_over(dap, conn_id, tmp_path, schema):
    pull(make_op(conn_id, tmp_path, ["users", "courses"]))
    dap.publish("users", updates=3)
    dap.publish("courses", updates=3)
    result = pull(make_op(conn_id, tmp_path, ["users", "courses"], force_snapshot=["users"]))

    assert result["users"]["kind"] == "snapshot" and result["courses"]["kind"] == "incremental"
    assert [b.kind for b in DapTableFolder(tmp_path, "canvas", "users").read_state().batches] == ["snapshot"]
    load(tmp_path, schema)
    assert_same_table(dap, schema, "users")


def test_a_damaged_batch_names_repull_batches_which_pulls_the_same_window_again(
    dap, conn_id, tmp_path, schema
):
    pull(make_op(conn_id, tmp_path, ["users"]))
    load(tmp_path, schema)
    dap.publish("users", inserts=5, updates=10, deletes=3)
    second = pull(make_op(conn_id, tmp_path, ["users"]))["users"]
    folder = DapTableFolder(tmp_path, "canvas", "users")
    damaged = folder.path / second["files"][0]
    damaged.write_bytes(damaged.read_bytes()[:-20])  # cut short after the pull verified it

    with pytest.raises(DapDataError) as broken:
        load(tmp_path, schema)
    assert f"repull_batches=[{second['job_id']!r}]" in str(broken.value)

    again = pull(make_op(conn_id, tmp_path, ["users"], repull_batches=[second["job_id"]]))["users"]
    batches = folder.read_state().batches
    assert [b.job_id for b in batches][1:] == [again["job_id"]] != [second["job_id"]]
    assert (again["since"], again["until"], again["records"]) == (
        second["since"],
        second["until"],
        second["records"],
    )
    assert load(tmp_path, schema)["batches"] == [again["job_id"]]
    assert_same_table(dap, schema, "users")


def test_missing_files_name_repull_batches_and_an_unknown_job_id_is_refused(dap, conn_id, tmp_path, schema):
    first = pull(make_op(conn_id, tmp_path, ["users"]))["users"]
    (DapTableFolder(tmp_path, "canvas", "users").path / first["files"][-1]).unlink()
    with pytest.raises(DapDataError, match=rf"repull_batches=\['{first['job_id']}'\]"):
        load(tmp_path, schema)

    with pytest.raises(LmsConfigurationError, match=r"no state\.json of the tables pulled lists"):
        make_op(conn_id, tmp_path, ["users"], deferrable=False, repull_batches=["not-a-job"]).execute({})
    # A snapshot is pulled again as a new snapshot, which the load applies.
    again = pull(make_op(conn_id, tmp_path, ["users"], repull_batches=[first["job_id"]]))["users"]
    assert again["kind"] == "snapshot" and again["job_id"] != first["job_id"]
    assert load(tmp_path, schema)["rows_upserted"] == 120


def test_all_tables_are_listed_by_dap_and_paced_under_the_limit_without_a_429(make_connection, tmp_path):
    with DapEmulator(rows={"users": 5}, rate_window=1.0) as wide:  # 5 job creations a second
        wide.register_client(CLIENT_ID, CLIENT_SECRET)
        conn_id = make_connection(
            "canvas_data_all", "canvas_data", wide.url, {}, login=CLIENT_ID, password=CLIENT_SECRET
        )
        op = make_op(conn_id, tmp_path, "all", deferrable=False, job_creation_rate=(5, 1.0))
        result = op.execute({})

        assert len(wide.namespaces["canvas"]) >= 60 and set(result) == set(wide.namespaces["canvas"])
        assert wide.summary()["throttled_job_creations"] == 0
        assert wide.summary()["jobs"]["snapshot"] == len(result)


def test_deferred_the_jobs_complete_while_pacing_are_downloaded_before_the_rest_wait_in_the_trigger(
    make_connection, tmp_path
):
    with DapEmulator(rows={"users": 5}, rate_window=1.0) as wide:
        wide.register_client(CLIENT_ID, CLIENT_SECRET)
        conn_id = make_connection(
            "canvas_data_all_deferred", "canvas_data", wide.url, {}, login=CLIENT_ID, password=CLIENT_SECRET
        )
        op = make_op(conn_id, tmp_path, "all", job_creation_rate=(5, 1.0))
        with pytest.raises(TaskDeferred) as deferred:
            op.execute({})
        waiting = deferred.value.trigger.job_ids
        result = op.execute_complete({}, run_trigger(deferred.value.trigger), **deferred.value.kwargs)

    assert 0 < len(waiting) < len(result) == len(wide.namespaces["canvas"])
    assert all(result[t]["kind"] == "snapshot" for t in result)
