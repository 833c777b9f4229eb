"""The Redis token lock against a real Redis (tests/redis_server.py picks which)."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Callable

import pytest
import redis
from airflow.models import Connection
from redis_server import RedisServer, embedded_redis

from airflow_provider_canvas.exceptions import TokenLockTimeout
from airflow_provider_canvas.tokens import locks
from airflow_provider_canvas.tokens.locks import redis_lock, redis_lock_key, refresh_lock


@pytest.fixture
def conn_id() -> str:
    # Unique: the machine's Redis may be shared with other test runs.
    return f"redis_lock_test_{uuid.uuid4().hex[:10]}"


def _lock_conn(server: RedisServer, **fields: object) -> Connection:
    return Connection(
        conn_id="token_lock_redis", conn_type="redis", host=server.host, port=server.port, **fields
    )


@pytest.fixture
def lock_conn(redis_server: RedisServer) -> Connection:
    return _lock_conn(redis_server)


@pytest.fixture
def client(redis_server: RedisServer) -> redis.Redis:
    return redis_server.client()


def _wait_until(condition: Callable[[], bool], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def test_lock_is_exclusive_and_a_waiter_times_out(lock_conn, conn_id, client):
    key = redis_lock_key(conn_id)
    assert key == f"canvas_provider:token_lock:{conn_id}"  # the same on every host

    with redis_lock(lock_conn, conn_id, timeout=1):
        token = client.get(key)
        assert token is not None and len(token) == 32
        started = time.monotonic()
        with (
            pytest.raises(TokenLockTimeout, match="lock_timeout_seconds") as raised,
            redis_lock(lock_conn, conn_id, timeout=0.3),
        ):
            pass
        assert time.monotonic() - started >= 0.3
        assert key in str(raised.value)
        assert client.get(key) == token  # the waiter left the holder's lock alone
        with redis_lock(lock_conn, f"{conn_id}_other", timeout=0.3):  # other connections are not blocked
            pass

    assert client.exists(key) == 0
    with redis_lock(lock_conn, conn_id, timeout=0.3):
        assert client.get(key) not in (None, token)  # a new random token per acquisition


def test_lease_is_extended_while_held(lock_conn, conn_id, client, caplog):
    key = redis_lock_key(conn_id)
    with redis_lock(lock_conn, conn_id, timeout=1, ttl=0.6):
        token = client.get(key)
        time.sleep(2.0)  # more than three TTLs
        assert client.get(key) == token
        assert 0 < client.pttl(key) <= 600
        with pytest.raises(TokenLockTimeout), redis_lock(lock_conn, conn_id, timeout=0.5):
            pass
    assert client.exists(key) == 0
    assert "LOST" not in caplog.text


def test_holder_never_deletes_another_holders_lock_and_reports_the_loss(lock_conn, conn_id, client, caplog):
    key = redis_lock_key(conn_id)
    caplog.set_level(logging.WARNING, logger=locks.__name__)
    with redis_lock(lock_conn, conn_id, timeout=1, ttl=0.6):
        # As if this holder's lease ran out and another worker took the lock.
        client.set(key, "another-worker", px=30_000)
        assert _wait_until(lambda: "LOST" in caplog.text, 3), "the lease keeper did not notice the loss"
    assert client.get(key) == b"another-worker"  # compare-and-delete left it alone
    assert client.pttl(key) > 20_000  # and compare-and-pexpire did not touch it either
    [record] = [r for r in caplog.records if "LOST" in r.getMessage()]  # reported once, not again at release
    assert record.levelno == logging.ERROR
    assert key in record.getMessage()
    client.delete(key)


_HOLDER = textwrap.dedent(
    """
    import sys, time
    from airflow.models import Connection
    from airflow_provider_canvas.tokens.locks import redis_lock

    host, port, conn_id = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    lock_conn = Connection(conn_id="token_lock_redis", conn_type="redis", host=host, port=port)
    with redis_lock(lock_conn, conn_id, timeout=10, ttl=2):
        print("held", flush=True)
        time.sleep(120)
    """
)


@pytest.mark.slow  # waits out a lock TTL, the holder a process importing Airflow
def test_a_killed_holder_frees_the_lock_after_the_ttl(redis_server, lock_conn, conn_id, client):
    key = redis_lock_key(conn_id)
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, redis_server.host, str(redis_server.port), conn_id],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        time.sleep(2.5)  # longer than the TTL: only the holder's extensions keep the key alive
        assert client.exists(key) == 1
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
    killed_at = time.monotonic()
    left_ms = client.pttl(key)
    assert 0 < left_ms <= 2000  # death does not free it: the TTL does

    with redis_lock(lock_conn, conn_id, timeout=10):
        waited = time.monotonic() - killed_at

    assert left_ms / 1000 - 0.1 <= waited <= 2 + 1


def test_refresh_lock_chooses_redis_or_the_file_lock(monkeypatch, redis_server, conn_id, client, tmp_path):
    conn = {"conn_type": "redis", "host": redis_server.host, "port": redis_server.port, "extra": {"db": 0}}
    monkeypatch.setenv("AIRFLOW_CONN_TOKEN_LOCK_REDIS", json.dumps(conn))

    with refresh_lock("token_lock_redis", conn_id, tmp_path, 1):
        assert client.exists(redis_lock_key(conn_id)) == 1
    assert not (tmp_path / "locks").exists()

    with refresh_lock(None, conn_id, tmp_path, 1):
        assert client.exists(redis_lock_key(conn_id)) == 0
    assert list((tmp_path / "locks").iterdir())


def test_redis_password_never_shows_in_errors_or_logs(redis_server, conn_id, caplog):
    caplog.set_level(logging.DEBUG)
    secret = f"pw-{uuid.uuid4().hex}"  # the test servers have no password: AUTH fails
    lock_conn = _lock_conn(redis_server, login="token_locker", password=secret)

    with pytest.raises(redis.RedisError) as raised, redis_lock(lock_conn, conn_id, timeout=1):
        pass

    visible = str(raised.value) + repr(raised.value) + caplog.text
    assert secret not in visible


def test_the_embedded_server_serves_the_lock(conn_id):
    with embedded_redis() as server:
        assert server.embedded
        with redis_lock(_lock_conn(server), conn_id, timeout=1):
            assert server.client().exists(redis_lock_key(conn_id)) == 1
