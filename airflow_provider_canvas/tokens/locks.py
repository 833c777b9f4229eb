"""Locks that serialise the refresh of one connection: a file lock, or a PostgreSQL advisory lock."""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import re
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from airflow_provider_canvas.exceptions import LmsConfigurationError, TokenLockTimeout

if TYPE_CHECKING:
    from airflow.sdk import Connection

log = logging.getLogger(__name__)

_POLL_SECONDS = 0.05


def refresh_lock(
    lock_conn_id: str | None, conn_id: str, state_dir: str | Path, timeout: float
) -> AbstractContextManager[None]:
    """The lock that serialises refreshes of ``conn_id``, chosen by the connection's ``lock_conn_id``."""
    if not lock_conn_id:
        return file_lock(state_dir, conn_id, timeout)
    from airflow_provider_canvas.tokens.metadata import get_connection

    lock_conn = get_connection(lock_conn_id)
    if lock_conn.conn_type == "postgres":
        return postgres_lock(lock_conn, conn_id, timeout)
    raise LmsConfigurationError(
        f"lock_conn_id of connection {conn_id!r} names {lock_conn_id!r}, a connection of type "
        f"{lock_conn.conn_type!r}. Set lock_conn_id to a `postgres` connection (advisory lock), or leave "
        "it empty for the file lock (workers on one host)."
    )


def _wait_for(try_acquire: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    waited = False
    while not try_acquire():
        if time.monotonic() >= deadline:
            raise TokenLockTimeout(
                f"waited {timeout:.0f}s for {what}; another worker is refreshing and has not "
                "finished. Raise [canvas_provider] lock_timeout_seconds if refreshes are that slow."
            )
        if not waited:
            log.info("Waiting for %s: another worker is refreshing the tokens.", what)
            waited = True
        time.sleep(_POLL_SECONDS)


@contextmanager
def file_lock(state_dir: str | Path, conn_id: str, timeout: float) -> Iterator[None]:
    """Correct between processes and threads of ONE host (flock on a private file)."""
    slug = re.sub(r"[^A-Za-z0-9_.-]", "_", conn_id)
    path = Path(state_dir) / "locks" / f"{slug}.lock"
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)

    def try_acquire() -> bool:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    try:
        _wait_for(try_acquire, timeout, f"the token lock file {path}")
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the flock


def advisory_lock_key(conn_id: str) -> int:
    """A stable signed 64-bit key for pg_advisory_lock, the same on every host."""
    digest = hashlib.sha256(f"airflow_provider_canvas:{conn_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


@contextmanager
def postgres_lock(lock_conn: Connection, conn_id: str, timeout: float) -> Iterator[None]:
    """Correct across hosts: a session-level advisory lock, released if the holder dies."""
    from airflow.providers.postgres.hooks.postgres import PostgresHook

    lock_conn_id = lock_conn.conn_id
    # Passing the connection makes the hook work outside tasks too (the Task SDK reads none there).
    hook = PostgresHook(postgres_conn_id=lock_conn_id, connection=lock_conn)
    db = hook.get_conn()
    db.autocommit = True
    key = advisory_lock_key(conn_id)
    try:
        with db.cursor() as cursor:

            def try_acquire() -> bool:
                cursor.execute("SELECT pg_try_advisory_lock(%s)", (key,))
                return bool(cursor.fetchone()[0])

            _wait_for(try_acquire, timeout, f"the PostgreSQL advisory lock {key} on {lock_conn_id!r}")
            try:
                yield
            finally:
                cursor.execute("SELECT pg_advisory_unlock(%s)", (key,))
    finally:
        db.close()
