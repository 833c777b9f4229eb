"""The token lifecycle over real HTTP against the emulator, with the real metadata DB."""

from __future__ import annotations

import json
import logging
import threading
import uuid
from pathlib import Path

import pendulum
import pytest
from lms_fixtures import CLIENT_ID, CLIENT_SECRET, postgres_connection_fields, stored_extra

from airflow_provider_canvas.brightspace.hooks.brightspace import BrightspaceHook
from airflow_provider_canvas.canvas.hooks.canvas import SCOPE_GET_ACCOUNT, CanvasHook
from airflow_provider_canvas.common import airflow_access as metadata
from airflow_provider_canvas.exceptions import (
    LmsAuthError,
    LmsPermissionError,
    MetadataWriteError,
    TokenSaveError,
)


def test_proactive_refresh_saves_rotated_tokens_before_use(emulator, lms_connection):
    conn_id = lms_connection("brightspace", expired=True)
    before = stored_extra(conn_id)

    assert BrightspaceHook(conn_id).whoami()["UniqueName"]

    after = stored_extra(conn_id)
    assert emulator.refresh_count("brightspace") == 1
    assert after["refresh_token"] != before["refresh_token"]
    assert after["access_token"] != before["access_token"]
    assert pendulum.parse(after["expires_at"]) > pendulum.now("UTC").add(minutes=50)
    # A new hook reads the saved tokens back and needs no refresh.
    assert BrightspaceHook(conn_id).whoami()
    assert emulator.refresh_count("brightspace") == 1
    assert emulator.consumed_presentations("brightspace") == 0


def test_refresh_inside_the_expiry_buffer(emulator, lms_connection):
    conn_id = lms_connection("canvas", expired=False, expiry_buffer_seconds=3600)
    emulator.canvas.add_account(1, "Root")

    CanvasHook(conn_id).get_account(1)

    assert emulator.refresh_count("canvas") == 1


def test_reactive_refresh_on_401_with_www_authenticate(emulator, lms_connection):
    conn_id = lms_connection("canvas", expired=False)
    emulator.canvas.add_account(1, "Root")
    emulator.expire_access_tokens("canvas")

    assert CanvasHook(conn_id).get_account(1)["name"] == "Root"

    assert emulator.refresh_count("canvas") == 1
    # Canvas sends no refresh token on refresh: the stored one is kept.
    assert stored_extra(conn_id)["refresh_token"]


def test_canvas_keeps_refresh_token_and_other_extra_fields(emulator, lms_connection):
    conn_id = lms_connection("canvas", expired=True, scopes=SCOPE_GET_ACCOUNT, redirect_uri="https://x/cb")
    refresh_token = stored_extra(conn_id)["refresh_token"]
    emulator.canvas.add_account(1, "Root")

    CanvasHook(conn_id).get_account(1)

    extra = stored_extra(conn_id)
    assert extra["refresh_token"] == refresh_token
    assert extra["scopes"] == SCOPE_GET_ACCOUNT
    assert extra["redirect_uri"] == "https://x/cb"


def test_legacy_extra_keys_are_read_and_replaced(emulator, make_connection):
    emulator.brightspace.register_client("cid", CLIENT_SECRET)
    issued = emulator.brightspace.issue_tokens("cid")
    conn_id = make_connection(
        "bs_legacy",
        "brightspace",
        emulator.url,
        {
            "extra__brightspace__refresh_token": issued.refresh_token,
            "extra__brightspace__access_token": issued.access_token,
            "extra__brightspace__expires_at": "2000-01-01T00:00:00Z",
            "extra__brightspace__token_url": f"{emulator.url}/core/connect/token",
        },
        login="cid",
        password=CLIENT_SECRET,
    )

    BrightspaceHook(conn_id).whoami()

    extra = stored_extra(conn_id)
    assert "extra__brightspace__refresh_token" not in extra
    assert extra["refresh_token"] != issued.refresh_token
    assert emulator.consumed_presentations("brightspace") == 0


def test_missing_scope_401_is_final_and_names_the_scope(emulator, make_connection):
    emulator.canvas.register_client("key", CLIENT_SECRET, scopes=["url:GET|/api/v1/accounts"])
    issued = emulator.canvas.issue_tokens("key")
    emulator.canvas.add_account(1, "Root")
    conn_id = make_connection(
        "canvas_scoped",
        "canvas",
        emulator.url,
        emulator.connection_extra("canvas", issued),
        login="key",
        password=CLIENT_SECRET,
    )

    with pytest.raises(LmsPermissionError) as raised:
        CanvasHook(conn_id).get_account(1)

    assert raised.value.required_scope == SCOPE_GET_ACCOUNT
    assert f"lacks scope {SCOPE_GET_ACCOUNT}" in str(raised.value)
    assert "Insufficient scopes" in str(raised.value)
    assert emulator.refresh_count("canvas") == 0


def _delete_variable(key: str) -> None:
    from airflow.models import Variable

    Variable.delete(key)


def test_revoked_refresh_token_says_authorize_again_and_is_never_presented_again(
    emulator, lms_connection, make_connection
):
    conn_id = lms_connection("brightspace", expired=True)
    extra = stored_extra(conn_id)
    BrightspaceHook(conn_id).whoami()  # consumes the stored refresh token
    # The connection goes back to the consumed token, and no central copy holds the live one.
    make_connection(conn_id, "brightspace", emulator.url, extra, login=CLIENT_ID, password=CLIENT_SECRET)
    _delete_variable(f"canvas_provider_tokens__{conn_id}")

    with pytest.raises(LmsAuthError) as raised:
        BrightspaceHook(conn_id).whoami()

    assert raised.value.error == "invalid_grant"
    assert "authorization again" in str(raised.value) and "refused as used" in str(raised.value)
    assert extra["refresh_token"] not in str(raised.value)
    assert emulator.consumed_presentations("brightspace") == 1

    # Every later worker fails at once: the refused token is not presented again (no storm).
    for _ in range(3):
        with pytest.raises(
            LmsAuthError,
            match=r"was already refused as used \(the server refused it when worker .+ presented it at ",
        ) as again:
            BrightspaceHook(conn_id).whoami()
        assert f"canvas-oauth authorize {conn_id}" in str(again.value)
    assert emulator.consumed_presentations("brightspace") == 1


def test_a_connection_behind_the_central_copy_is_caught_up_without_a_refresh(
    emulator, lms_connection, make_connection, caplog
):
    conn_id = lms_connection("brightspace", expired=True)
    extra = stored_extra(conn_id)
    BrightspaceHook(conn_id).whoami()  # refresh: the central copy and the connection hold the new tokens
    live = stored_extra(conn_id)["refresh_token"]
    # As if that save had never landed: the connection still holds the consumed refresh token.
    make_connection(conn_id, "brightspace", emulator.url, extra, login=CLIENT_ID, password=CLIENT_SECRET)
    caplog.set_level(logging.WARNING)

    BrightspaceHook(conn_id).whoami()

    assert stored_extra(conn_id)["refresh_token"] == live  # written back to the connection
    assert emulator.refresh_count("brightspace") == 1
    assert emulator.consumed_presentations("brightspace") == 0
    assert (
        "could not save to the connection" in caplog.text
        and "writing them to the connection now" in caplog.text
    )


def test_16_threads_make_exactly_one_refresh(emulator, lms_connection):
    conn_id = lms_connection("brightspace", expired=True)
    start = threading.Barrier(16)
    errors: list[BaseException] = []

    def call() -> None:
        hook = BrightspaceHook(conn_id)
        start.wait()
        try:
            hook.whoami()
        except BaseException as err:  # collected and asserted below
            errors.append(err)

    threads = [threading.Thread(target=call) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    assert emulator.refresh_count("brightspace") == 1
    assert emulator.consumed_presentations("brightspace") == 0


def _run_workers(refresh_workers, conn_id: str, tmp_path: Path, envs: list[dict[str, str]]) -> list[dict]:
    go = tmp_path / "go"
    workers = refresh_workers(conn_id, go, envs)
    go.touch()
    results = [worker.result() for worker in workers]
    assert [worker.returncode for worker in workers] == [0] * len(workers), results
    return results


@pytest.mark.slow  # 4 worker processes, each importing Airflow
def test_4_processes_make_exactly_one_refresh(emulator, lms_connection, refresh_workers, tmp_path):
    conn_id = lms_connection("brightspace", expired=True)

    results = _run_workers(refresh_workers, conn_id, tmp_path, [{}] * 4)

    assert sum(result["refreshes"] for result in results) == 1
    assert emulator.refresh_count("brightspace") == 1
    assert emulator.consumed_presentations("brightspace") == 0


@pytest.fixture(params=["postgres", "redis"])
def shared_lock_connection(request, make_connection) -> str:
    """A `lock_conn_id` target that workers on several hosts share: PostgreSQL or Redis."""
    if request.param == "postgres":
        return make_connection("token_lock_pg", extra={}, **postgres_connection_fields())
    server = request.getfixturevalue("redis_server")
    return make_connection("token_lock_redis", "redis", server.host, {"db": 0}, port=server.port)


@pytest.mark.slow  # 4 worker processes per lock kind, each importing Airflow
def test_shared_lock_serialises_processes_without_a_shared_file_lock(
    emulator, lms_connection, shared_lock_connection, refresh_workers, tmp_path
):
    # A connection id of its own: the machine's PostgreSQL and Redis may serve other test runs too.
    conn_id = lms_connection(
        "brightspace", f"bs_{uuid.uuid4().hex[:10]}", expired=True, lock_conn_id=shared_lock_connection
    )
    # Each worker gets its own state directory: only the shared lock can serialise them.
    envs = [{"AIRFLOW__CANVAS_PROVIDER__STATE_DIR": str(tmp_path / f"host{index}")} for index in range(4)]

    results = _run_workers(refresh_workers, conn_id, tmp_path, envs)

    assert sum(result["refreshes"] for result in results) == 1
    assert emulator.refresh_count("brightspace") == 1
    assert emulator.consumed_presentations("brightspace") == 0


def test_a_failed_save_does_not_fail_the_task_and_the_next_hook_writes_the_connection(
    emulator, lms_connection, mocker, caplog
):
    conn_id = lms_connection("brightspace", expired=True)
    mocker.patch("airflow_provider_canvas.tokens.lifecycle.time.sleep")
    broken = mocker.patch.object(
        metadata, "write_connection_extra", side_effect=MetadataWriteError("API down")
    )
    caplog.set_level(logging.WARNING)

    hook = BrightspaceHook(conn_id)
    assert hook.whoami()["UniqueName"]  # the task goes on with the new tokens

    assert broken.call_count == 3
    central = json.loads(metadata.get_variable(f"canvas_provider_tokens__{conn_id}"))
    live = central["refresh_token"]
    assert live != stored_extra(conn_id)["refresh_token"]  # the connection is behind
    assert not hook.tokens._rescue.path.exists()  # the central copy holds them for every worker
    assert "nothing is lost and this task goes on" in caplog.text and "airflow_api" in caplog.text
    assert live not in caplog.text

    mocker.stopall()
    BrightspaceHook(conn_id).whoami()  # another worker, later, that can write the connection

    assert stored_extra(conn_id)["refresh_token"] == live
    assert emulator.refresh_count("brightspace") == 1
    assert emulator.consumed_presentations("brightspace") == 0


def test_with_neither_connection_nor_variable_writable_the_rescue_file_keeps_the_token(
    emulator, lms_connection, mocker
):
    conn_id = lms_connection("brightspace", expired=True)
    mocker.patch("airflow_provider_canvas.tokens.lifecycle.time.sleep")
    mocker.patch.object(
        metadata, "write_connection_extra", side_effect=metadata.MetadataWriteError("API down")
    )
    set_variable = metadata.set_variable
    calls: list[str] = []

    def announce_then_fail(key: str, value: str) -> None:
        calls.append(key)
        if len(calls) > 1:  # the announcement before the refresh lands; the Execution API then goes down
            raise RuntimeError("Execution API down")
        set_variable(key, value)

    mocker.patch.object(metadata, "set_variable", side_effect=announce_then_fail)

    with pytest.raises(TokenSaveError) as raised:
        BrightspaceHook(conn_id).whoami()

    rescue = raised.value.rescue_path
    assert oct(rescue.stat().st_mode & 0o777) == "0o600"
    assert str(rescue) in str(raised.value)
    live = json.loads(rescue.read_text())["refresh_token"]
    assert live not in str(raised.value)

    mocker.stopall()
    BrightspaceHook(conn_id).whoami()  # the next refresh on this host restores it

    assert stored_extra(conn_id)["refresh_token"] == live
    assert not rescue.exists()
    assert emulator.refresh_count("brightspace") == 1
    assert emulator.consumed_presentations("brightspace") == 0


def test_a_refresh_that_cannot_be_announced_is_not_attempted(emulator, lms_connection, mocker):
    conn_id = lms_connection("brightspace", expired=True)
    before = stored_extra(conn_id)["refresh_token"]
    mocker.patch.object(metadata, "set_variable", side_effect=RuntimeError("Execution API down"))

    with pytest.raises(metadata.MetadataWriteError, match=r"could not be announced .+ tokens are intact"):
        BrightspaceHook(conn_id).whoami()
    assert emulator.refresh_count("brightspace") == 0  # nothing presented: the chain is intact

    mocker.stopall()
    BrightspaceHook(conn_id).whoami()
    assert stored_extra(conn_id)["refresh_token"] != before
    assert emulator.consumed_presentations("brightspace") == 0


def test_shadowed_connection_keeps_tokens_in_a_variable(emulator, monkeypatch, caplog):
    emulator.brightspace.register_client("cid", CLIENT_SECRET)
    issued = emulator.brightspace.issue_tokens("cid")
    conn = {
        "conn_type": "brightspace",
        "host": emulator.url,
        "login": "cid",
        "password": CLIENT_SECRET,
        "extra": {
            "refresh_token": issued.refresh_token,
            "expires_at": "2000-01-01T00:00:00Z",
            "token_url": f"{emulator.url}/core/connect/token",
        },
    }
    monkeypatch.setenv("AIRFLOW_CONN_BS_ENV", json.dumps(conn))
    caplog.set_level(logging.WARNING)

    BrightspaceHook("bs_env").whoami()
    BrightspaceHook("bs_env").whoami()

    assert "AIRFLOW_CONN_BS_ENV" in caplog.text
    assert "canvas_provider_tokens__bs_env" in caplog.text
    assert emulator.refresh_count("brightspace") == 1
    kept = json.loads(metadata.get_variable("canvas_provider_tokens__bs_env"))
    assert kept["refresh_token"] not in (None, issued.refresh_token)


def test_no_secret_in_logs_errors_or_reprs(emulator, lms_connection, caplog):
    caplog.set_level(logging.DEBUG)
    conn_id = lms_connection("canvas", expired=True)
    emulator.canvas.add_account(1, "Root")
    hook = CanvasHook(conn_id)
    hook.get_account(1)
    emulator.expire_access_tokens("canvas")
    hook.get_account(1)
    with pytest.raises(Exception) as raised:
        hook.get_account(999)

    extra = stored_extra(conn_id)
    secrets = [CLIENT_SECRET, extra["access_token"], extra["refresh_token"]]
    visible = caplog.text + str(raised.value) + repr(raised.value) + repr(hook) + repr(hook.tokens._tokens)
    assert emulator.refresh_count("canvas") == 2
    for secret in secrets:
        assert secret not in visible
