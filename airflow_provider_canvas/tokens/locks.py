"""Locks that serialise the refresh of one connection: a file lock, a PostgreSQL advisory lock or Redis.

Each yields what the holder may write while holding it: the durable copy in the lock backend
(:mod:`.durable`), or None for the file lock.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from airflow_provider_canvas.exceptions import LmsConfigurationError, TokenLockTimeout
from airflow_provider_canvas.tokens.durable import DurableCopy, PostgresCopy, RedisCopy

if TYPE_CHECKING:
    from airflow.sdk import Connection
    from redis import Redis
    from redis.lock import Lock

log = logging.getLogger(__name__)

_POLL_SECONDS = 0.05

#: How long a Redis lock outlives its last extension. The holder extends it every third of this,
#: so it is lost only if the holder cannot reach Redis (or is frozen) for this long; a holder that
#: dies frees it after at most this long. Short, because a holder that lost it cannot do harm: its
#: writes to the durable copy are fenced, and the next holder never presents a refresh token that a
#: holder announced and did not complete.
REDIS_LOCK_TTL_SECONDS = 4.0
#: Bounds every Redis call: connecting, and each reply (one retry, so at most about twice this).
_REDIS_SOCKET_TIMEOUT_SECONDS = 5.0
#: The TLS options apache-airflow-providers-redis reads from a `redis` connection's extra.
_REDIS_SSL_OPTIONS = (
    "ssl",
    "ssl_cert_reqs",
    "ssl_ca_certs",
    "ssl_keyfile",
    "ssl_certfile",
    "ssl_check_hostname",
)


def refresh_lock(
    lock_conn_id: str | None, conn_id: str, state_dir: str | Path, timeout: float
) -> AbstractContextManager[DurableCopy | None]:
    """The lock that serialises refreshes of ``conn_id``, chosen by the connection's ``lock_conn_id``."""
    if not lock_conn_id:
        return file_lock(state_dir, conn_id, timeout)
    from airflow_provider_canvas.common.airflow_access import get_connection

    lock_conn = get_connection(lock_conn_id)
    if lock_conn.conn_type == "postgres":
        return postgres_lock(lock_conn, conn_id, timeout)
    if lock_conn.conn_type == "redis":
        return redis_lock(lock_conn, conn_id, timeout)
    raise LmsConfigurationError(
        f"lock_conn_id of connection {conn_id!r} names {lock_conn_id!r}, a connection of type "
        f"{lock_conn.conn_type!r}. Set lock_conn_id to a `postgres` connection (advisory lock) or a "
        "`redis` connection (Redis lock), or leave it empty for the file lock (workers on one host)."
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


def _durable(make: Callable[[], DurableCopy]) -> DurableCopy | None:
    """The lock backend's durable copy, or None (said in the log every time) where it cannot be kept."""
    try:
        return make()
    except LmsConfigurationError as err:
        log.warning("No durable copy in the lock backend: %s. The Airflow Variable is the first copy.", err)
    except Exception as err:  # e.g. no CREATE TABLE privilege: the lock still serialises refreshes
        log.warning(
            "No durable copy in the lock backend (%s: %s). The Airflow Variable is the first copy; "
            "grant the lock connection's user CREATE on its schema (PostgreSQL) to have one.",
            type(err).__name__,
            err,
        )
    return None


def advisory_lock_key(conn_id: str) -> int:
    """A stable signed 64-bit key for pg_advisory_lock, the same on every host."""
    digest = hashlib.sha256(f"airflow_provider_canvas:{conn_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


@contextmanager
def postgres_lock(lock_conn: Connection, conn_id: str, timeout: float) -> Iterator[DurableCopy | None]:
    """Correct across hosts: a session-level advisory lock, released if the holder dies."""
    from airflow.providers.postgres.hooks.postgres import PostgresHook

    lock_conn_id = lock_conn.conn_id
    # Passing the connection makes the hook work outside tasks too (the Task SDK reads none there).
    hook = PostgresHook(postgres_conn_id=lock_conn_id, connection=lock_conn)
    db = hook.get_conn()
    hook.set_autocommit(db, True)
    key = advisory_lock_key(conn_id)
    try:
        with db.cursor() as cursor:

            def try_acquire() -> bool:
                cursor.execute("SELECT pg_try_advisory_lock(%s)", (key,))
                return bool(cursor.fetchone()[0])

            _wait_for(try_acquire, timeout, f"the PostgreSQL advisory lock {key} on {lock_conn_id!r}")
            try:
                yield _durable(lambda: PostgresCopy(db, conn_id, repr(lock_conn_id)))
            finally:
                cursor.execute("SELECT pg_advisory_unlock(%s)", (key,))
    finally:
        db.close()


def redis_lock_key(conn_id: str) -> str:
    """The same key on every host for one connection, in this provider's namespace."""
    return f"canvas_provider:token_lock:{conn_id}"


def _redis_client(lock_conn: Connection) -> Redis:
    """A client for a `redis` connection, read as apache-airflow-providers-redis reads it, with timeouts."""
    try:
        from redis import Redis
        from redis.backoff import ConstantBackoff
        from redis.retry import Retry
    except ImportError:
        raise LmsConfigurationError(
            f"lock_conn_id {lock_conn.conn_id!r} is a `redis` connection but the redis client is not "
            "installed: pip install 'airflow-provider-canvas[redis]'"
        ) from None
    if not lock_conn.host:
        raise LmsConfigurationError(f"the `redis` connection {lock_conn.conn_id!r} has no host")
    extra = lock_conn.extra_dejson
    password = lock_conn.password
    if str(password).lower() in ("none", "false", ""):  # what RedisHook treats as no password
        password = None
    else:
        from airflow.sdk.log import mask_secret

        mask_secret(password)  # the client's repr shows it; never log or raise the client
    return Redis(
        host=lock_conn.host,
        port=lock_conn.port or 6379,
        username=lock_conn.login or None,
        password=password,
        db=int(extra.get("db") or 0),
        socket_timeout=_REDIS_SOCKET_TIMEOUT_SECONDS,
        socket_connect_timeout=_REDIS_SOCKET_TIMEOUT_SECONDS,
        # redis-py retries three times with up to 10 s back-off by default: too long for a lease.
        retry=Retry(ConstantBackoff(0.2), 1),
        **{name: extra[name] for name in _REDIS_SSL_OPTIONS if name in extra},
    )


class _LeaseKeeper:
    """Extends a held Redis lock every third of its TTL and says loudly when it was lost.

    The extension is redis-py's compare-and-pexpire (``Lock.reacquire``): it only touches the key
    while it still holds this holder's token.
    """

    def __init__(self, lock: Lock, what: str, acquired_at: float) -> None:
        if lock.timeout is None:
            raise ValueError(f"{what}: a lease needs a Redis lock with a TTL")
        self.lost = False
        self._lock = lock
        self._ttl = float(lock.timeout)
        self._what = what
        self._extended_at = acquired_at
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"lease {lock.name}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=4 * _REDIS_SOCKET_TIMEOUT_SECONDS)

    def report_loss(self, how: str) -> None:
        self.lost = True
        log.error(
            "LOST %s while refreshing (%s): its %.0f s TTL ran out before this worker finished, so "
            "another worker may have refreshed the same connection meanwhile and a single-use "
            "refresh token may have been presented twice. Check that this worker reaches Redis "
            "reliably and is never paused that long; if the next refresh reports invalid_grant, "
            "authorize the connection again.",
            self._what,
            how,
            self._ttl,
        )

    def _run(self) -> None:
        from redis.exceptions import LockNotOwnedError, RedisError

        ttl = self._ttl
        delay = ttl / 3
        while not self._stop.wait(delay):
            try:
                self._lock.reacquire()
            except LockNotOwnedError:
                self.report_loss("the key expired or holds another worker's token")
                return
            except RedisError as err:
                if time.monotonic() - self._extended_at >= ttl:
                    self.report_loss(f"no extension reached Redis for {ttl:.0f} s: {err}")
                    return
                log.warning("Could not extend %s (%s); trying again.", self._what, err)
                delay = min(1.0, ttl / 3)
            else:
                self._extended_at = time.monotonic()
                delay = ttl / 3


@contextmanager
def redis_lock(
    lock_conn: Connection, conn_id: str, timeout: float, *, ttl: float = REDIS_LOCK_TTL_SECONDS
) -> Iterator[DurableCopy | None]:
    """Correct across hosts while the holder reaches Redis: a lease kept alive while held.

    redis-py's ``Lock`` does the owner-safe parts: ``SET key token NX PX ttl`` with our random
    token, and Lua compare-and-delete / compare-and-pexpire, so no holder ever frees or extends
    another's lock. A holder that dies frees it after at most ``ttl``.
    """
    client = _redis_client(lock_conn)  # first: it says how to install redis if it is missing
    from redis.exceptions import LockNotOwnedError, RedisError
    from redis.lock import Lock

    key = redis_lock_key(conn_id)
    what = f"the Redis lock {key} on {lock_conn.conn_id!r}"
    try:
        # thread_local=False: the lease keeper extends from its own thread with the same token.
        lock = Lock(client, key, timeout=ttl, thread_local=False)
        token = secrets.token_hex(16)
        _wait_for(lambda: lock.acquire(blocking=False, token=token), timeout, what)
        keeper = _LeaseKeeper(lock, what, acquired_at=time.monotonic())
        try:
            yield _durable(lambda: RedisCopy(client, conn_id, key, token, repr(lock_conn.conn_id)))
        finally:
            keeper.stop()
            try:
                lock.release()
            except LockNotOwnedError:
                if not keeper.lost:
                    keeper.report_loss("found at release")
            except RedisError as err:
                log.warning("Could not release %s (%s); it expires within %.0f s.", what, err, ttl)
    finally:
        client.close()
