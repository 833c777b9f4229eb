"""The durable copy in the lock backend: one encrypted record per connection, written while holding its lock.

A PostgreSQL table or a Redis key, written on the lock's own connection in about a millisecond, so
new tokens are durable for every worker right after the token response. Encrypted with the
deployment's Fernet key (``[core] fernet_key``, the key Airflow encrypts connections with): every
worker needs that key. It also records which connection owns which refresh token (by fingerprint).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from airflow_provider_canvas.exceptions import LmsConfigurationError

if TYPE_CHECKING:
    from redis import Redis

log = logging.getLogger(__name__)

TABLE = "canvas_provider_token_custody"
OWNERS_TABLE = "canvas_provider_token_owner"


class LockLost(Exception):
    """The write was refused: this worker no longer holds the lock (its Redis lease ran out)."""


def _fernet() -> Any:
    """Airflow's own Fernet helper; refuses to store tokens in clear where no key is configured."""
    from airflow.models.crypto import get_fernet

    fernet = get_fernet()
    if not fernet.is_encrypted:
        raise LmsConfigurationError(
            "[core] fernet_key is empty on this worker, so tokens cannot be kept encrypted in the lock "
            "backend: set the deployment's Fernet key (the one the api-server encrypts connections "
            "with) on every worker"
        )
    return fernet


class DurableCopy:
    """What the lifecycle needs from a lock backend while holding the lock."""

    #: For messages: where the copy lives.
    name: str

    def __init__(self, conn_id: str) -> None:
        self.conn_id = conn_id
        self._cipher = _fernet()

    def read(self) -> str | None:
        raw = self._get()
        return self._cipher.decrypt(raw).decode() if raw else None

    def write(self, record: str) -> None:
        self._put(self._cipher.encrypt(record.encode()).decode())

    def owner(self, refresh_fingerprint: str) -> str:
        """The connection that owns this refresh token: this one if nobody else claimed it first."""
        raise NotImplementedError

    def _get(self) -> str | None:
        raise NotImplementedError

    def _put(self, value: str) -> None:
        raise NotImplementedError


class PostgresCopy(DurableCopy):
    """A row per connection in ``canvas_provider_token_custody``, on the advisory lock's own session.

    The session holds the lock: if it is gone, so is the lock, and the write fails with it.
    """

    _ready: set[str] = set()  # databases where the tables exist, per process

    def __init__(self, db: Any, conn_id: str, where: str) -> None:
        super().__init__(conn_id)
        self._db = db
        self.name = f"the PostgreSQL table {TABLE} on {where}"
        if where not in self._ready:
            self._create_tables()
            self._ready.add(where)

    def _create_tables(self) -> None:
        with self._db.cursor() as cursor:
            # Serialised by a lock of its own: CREATE ... IF NOT EXISTS can still race in PostgreSQL.
            cursor.execute("SELECT pg_advisory_lock(hashtext(%s))", (TABLE,))
            try:
                cursor.execute(
                    f"CREATE TABLE IF NOT EXISTS {TABLE} (conn_id text PRIMARY KEY, record text NOT NULL, "
                    "updated_at timestamptz NOT NULL DEFAULT now())"
                )
                cursor.execute(
                    f"CREATE TABLE IF NOT EXISTS {OWNERS_TABLE} (fingerprint text PRIMARY KEY, "
                    "conn_id text NOT NULL, claimed_at timestamptz NOT NULL DEFAULT now())"
                )
            finally:
                cursor.execute("SELECT pg_advisory_unlock(hashtext(%s))", (TABLE,))

    def _get(self) -> str | None:
        with self._db.cursor() as cursor:
            cursor.execute(f"SELECT record FROM {TABLE} WHERE conn_id = %s", (self.conn_id,))
            row = cursor.fetchone()
        return row[0] if row else None

    def _put(self, value: str) -> None:
        with self._db.cursor() as cursor:
            cursor.execute(
                f"INSERT INTO {TABLE} (conn_id, record) VALUES (%s, %s) ON CONFLICT (conn_id) "
                "DO UPDATE SET record = EXCLUDED.record, updated_at = now()",
                (self.conn_id, value),
            )

    def owner(self, refresh_fingerprint: str) -> str:
        with self._db.cursor() as cursor:
            cursor.execute(
                f"INSERT INTO {OWNERS_TABLE} (fingerprint, conn_id) VALUES (%s, %s) "
                "ON CONFLICT (fingerprint) DO NOTHING",
                (refresh_fingerprint, self.conn_id),
            )
            cursor.execute(
                f"SELECT conn_id FROM {OWNERS_TABLE} WHERE fingerprint = %s", (refresh_fingerprint,)
            )
            return cursor.fetchone()[0]


#: Writes the record only while KEYS[1] (the lock) still holds this holder's token: a fenced write.
_FENCED_SET = """
if redis.call('get', KEYS[1]) == ARGV[1] then
    redis.call('set', KEYS[2], ARGV[2])
    return 1
end
return 0
"""


def redis_copy_key(conn_id: str) -> str:
    return f"canvas_provider:token_custody:{conn_id}"


class RedisCopy(DurableCopy):
    """The key ``canvas_provider:token_custody:<conn_id>`` (no TTL), written only by the lock's holder."""

    def __init__(self, client: Redis, conn_id: str, lock_key: str, token: str, where: str) -> None:
        super().__init__(conn_id)
        self._client = client
        self._lock_key = lock_key
        self._token = token
        self._key = redis_copy_key(conn_id)
        self.name = f"the Redis key {self._key} on {where}"

    def _get(self) -> str | None:
        raw = self._client.get(self._key)
        return raw.decode() if isinstance(raw, bytes) else None if raw is None else str(raw)

    def _put(self, value: str) -> None:
        if not self._client.eval(_FENCED_SET, 2, self._lock_key, self._key, self._token, value):
            raise LockLost(f"{self.name} was not written: this worker no longer holds the lock")

    def owner(self, refresh_fingerprint: str) -> str:
        key = f"canvas_provider:token_owner:{refresh_fingerprint}"
        self._client.set(key, self.conn_id, nx=True)
        raw = self._client.get(key)
        return raw.decode() if isinstance(raw, bytes) else str(raw)
