"""Celery workers for LocalAirflow, each set up as a host of its own, and their broker chores."""

from __future__ import annotations

import os
import socket
import uuid
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path

from airflow_provider_canvas.testing.primitives import free_port

REDIS_URL = "redis://127.0.0.1:6379/0"
# Read by hostname_from_env, each Celery worker's [core] hostname_callable.
HOSTNAME_ENV = "LOCAL_AIRFLOW_HOSTNAME"
# The `redis` connection a Celery instance adds: the broker's Redis, for lock_conn_id (a Redis token lock).
REDIS_LOCK_CONN_ID = "token_lock_redis"
# A metadata database no one listens at: a worker that touched the ORM would fail at once.
NO_METADATA_DB = "postgresql+psycopg2://no-metadata-db@127.0.0.1:9/workers_have_none"
PREFIX_KEY = "AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__GLOBAL_KEYPREFIX"


def hostname_from_env() -> str:
    """``[core] hostname_callable`` of a Celery worker: the host name it was given, as task instances show."""
    return os.environ.get(HOSTNAME_ENV) or socket.getfqdn()


@dataclass(frozen=True)
class CeleryWorker:
    """One ``airflow celery worker``, set up as on a host of its own: its own AIRFLOW_HOME and state_dir."""

    hostname: str  # its --celery-hostname and the hostname of the task instances it runs
    home: Path
    state_dir: Path
    env: dict[str, str] = field(repr=False)

    @property
    def node(self) -> str:
        """Its Celery node name, as ``inspect ping -d`` takes it."""
        return f"celery@{self.hostname}"


@dataclass(frozen=True)
class CelerySite:
    """What the CeleryExecutor adds to an installation: its settings, its queue and its worker hosts."""

    queue: str
    env: dict[str, str]
    workers: dict[str, CeleryWorker]  # by component name, "celery-worker-<hostname>"


def celery_site(
    home: Path, env: dict[str, str], database_url: str | None, redis_url: str, workers: int, concurrency: int
) -> CelerySite:
    """Settings for the scheduler side (``env`` plus Celery's) and ``workers`` hosts under ``home/hosts/``."""
    from sqlalchemy.engine import make_url

    if not database_url or not make_url(database_url).drivername.startswith("postgresql"):
        raise ValueError("the CeleryExecutor needs database_url on PostgreSQL (its result backend too)")
    if not 1 <= workers <= 8:
        raise ValueError(f"celery_workers must be 1 to 8, not {workers}")
    tag = uuid.uuid4().hex[:8]
    queue = f"local-airflow-{tag}"
    # Celery's database result backend takes a plain SQLAlchemy URL behind "db+".
    result_backend = make_url(database_url).set(drivername="postgresql")
    env = env | {
        "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
        "AIRFLOW__CELERY__BROKER_URL": redis_url,
        "AIRFLOW__CELERY__RESULT_BACKEND": f"db+{result_backend.render_as_string(hide_password=False)}",
        # Every key and channel kombu uses in Redis (queues, bindings, unacked, pidbox) gets this prefix.
        PREFIX_KEY: f"{queue}:",
        # The queue tasks are sent to (the dag-processor stamps it on each task) and workers consume.
        "AIRFLOW__OPERATORS__DEFAULT_QUEUE": queue,
    }
    hosts: dict[str, CeleryWorker] = {}
    for letter in "abcdefgh"[:workers]:
        hostname = f"host-{letter}-{tag}"
        worker_home = home / "hosts" / hostname
        worker_env = env | {
            "AIRFLOW_HOME": str(worker_home),
            "AIRFLOW__CANVAS_PROVIDER__STATE_DIR": str(worker_home / "canvas_provider"),
            # Airflow 3 workers reach the api-server (Execution API) only: no database to use.
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": NO_METADATA_DB,
            "AIRFLOW__CORE__HOSTNAME_CALLABLE": f"{__name__}.hostname_from_env",
            HOSTNAME_ENV: hostname,
            "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(concurrency),
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
            # Task logs where the api-server reads them, as the compose file's shared logs volume: the
            # host names exist only here, so the api-server could not fetch logs from a worker.
            "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(home / "logs"),
        }
        hosts[f"celery-worker-{hostname}"] = CeleryWorker(
            hostname, worker_home, worker_home / "canvas_provider", worker_env
        )
    return CelerySite(queue, env, hosts)


def ping_workers(redis_url: str, key_prefix: str, nodes: list[str], timeout: float = 10) -> None:
    """Ping workers through the broker (what ``celery inspect ping``, the compose health check, does).

    From this process with Celery alone: the ``airflow``/``celery`` CLI would spend seconds importing
    Airflow. Only the broker settings matter for a ping: the URL and the key prefix.
    """
    from celery import Celery

    app = Celery(
        "local-airflow-ping",
        broker=redis_url,
        broker_transport_options={"global_keyprefix": key_prefix},
        broker_connection_timeout=timeout,
    )
    try:
        # limit: return once every node answered, instead of listening for the whole timeout.
        replies = app.control.ping(destination=nodes, timeout=timeout, limit=len(nodes))
    finally:
        app.close()
    answered = {node for reply in replies for node, answer in reply.items() if answer == {"ok": "pong"}}
    if silent := sorted(set(nodes) - answered):
        raise RuntimeError(f"no pong within {timeout}s from {silent}; replies: {replies}")


def delete_broker_keys(redis_url: str, key_prefix: str) -> None:
    """Remove what kombu left in Redis under an installation's key prefix (queues, bindings)."""
    import redis

    client = redis.Redis.from_url(redis_url, socket_timeout=5, socket_connect_timeout=5)
    with suppress(redis.RedisError), client:
        for key in client.scan_iter(match=f"{key_prefix}*", count=500):
            client.delete(key)
