from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pendulum
import pytest

from airflow_provider_canvas.exceptions import LmsConfigurationError, TokenLockTimeout
from airflow_provider_canvas.tokens.locks import advisory_lock_key, file_lock, refresh_lock
from airflow_provider_canvas.tokens.model import TokenSet
from airflow_provider_canvas.tokens.rescue import RescueFile


def test_rescue_file_is_private_atomic_and_round_trips(tmp_path):
    rescue = RescueFile.for_connection(tmp_path, "odd/conn id")
    tokens = TokenSet("a", "r", pendulum.datetime(2030, 1, 1, tz="UTC"))
    rescue.write(tokens)
    assert rescue.path.parent == tmp_path / "rescue"
    assert oct(rescue.path.stat().st_mode & 0o777) == "0o600"
    assert [p.name for p in rescue.path.parent.iterdir()] == [rescue.path.name]  # no temp file left
    assert rescue.read("canvas") == tokens
    rescue.clear()
    assert rescue.read("canvas") is None


def test_file_lock_excludes_threads_and_times_out(tmp_path):
    held = threading.Event()
    release = threading.Event()

    def holder() -> None:
        with file_lock(tmp_path, "c1", timeout=5):
            held.set()
            release.wait(5)

    thread = threading.Thread(target=holder)
    thread.start()
    held.wait(5)
    started = time.monotonic()
    with (
        pytest.raises(TokenLockTimeout, match="lock_timeout_seconds"),
        file_lock(tmp_path, "c1", timeout=0.3),
    ):
        pass
    assert time.monotonic() - started >= 0.3
    with file_lock(tmp_path, "other", timeout=0.3):  # other connections are not blocked
        pass
    release.set()
    thread.join()
    with file_lock(tmp_path, "c1", timeout=0.3):
        pass


def test_advisory_lock_key_is_stable_and_per_connection():
    assert advisory_lock_key("a") == advisory_lock_key("a")
    assert advisory_lock_key("a") != advisory_lock_key("b")
    assert -(2**63) <= advisory_lock_key("a") < 2**63


def test_state_dir_follows_airflow_home(monkeypatch, tmp_path):
    from airflow_provider_canvas.common import airflow_access as metadata
    from airflow_provider_canvas.tokens.rescue import RescueFile

    monkeypatch.delenv("AIRFLOW__CANVAS_PROVIDER__STATE_DIR", raising=False)
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path / "some" / "dir"))
    assert metadata.state_dir() == str(tmp_path / "some" / "dir" / "canvas_provider")
    rescue = RescueFile.for_connection(metadata.state_dir(), "brightspace_default")
    assert rescue.path.is_relative_to(tmp_path / "some" / "dir")

    monkeypatch.setenv("AIRFLOW__CANVAS_PROVIDER__STATE_DIR", "~/elsewhere")
    assert metadata.state_dir() == str(Path.home() / "elsewhere")


def test_lock_conn_id_of_another_type_is_refused(monkeypatch, tmp_path):
    monkeypatch.setenv("AIRFLOW_CONN_TOKEN_LOCK_HTTP", json.dumps({"conn_type": "http", "host": "x"}))

    with pytest.raises(LmsConfigurationError) as raised:
        refresh_lock("token_lock_http", "canvas_default", tmp_path, 1)

    message = str(raised.value)
    assert "'token_lock_http'" in message and "'http'" in message
    assert "`postgres`" in message and "`redis`" in message and "leave it empty" in message
    assert not (tmp_path / "locks").exists()  # refused before any lock was taken
