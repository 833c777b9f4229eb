"""Run a real local Airflow 3 (scheduler, dag-processor, triggerer, api-server; LocalExecutor) for tests.

Tasks run supervised with the ORM blocked, unlike ``airflow dags test``; the test side talks REST and CLI.
With ``executor="CeleryExecutor"`` tasks run on Celery workers instead, each as if on its own host.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import uuid
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any, Literal
from urllib.parse import parse_qs, urlsplit

import psutil
import requests
from cryptography.fernet import Fernet

COMPONENTS = ("scheduler", "dag-processor", "triggerer", "api-server")  # also their `airflow` sub-commands
# Health-report section of each component that heartbeats into the database (the api-server does not).
HEALTH_KEYS = {"scheduler": "scheduler", "dag-processor": "dag_processor", "triggerer": "triggerer"}
# Fields every task log event repeats; task_log() shows only the rest beside the message.
LOG_CONTEXT_KEYS = {"timestamp", "level", "event", "logger", "filename", "lineno", "dag_id", "task_id"}
LOG_CONTEXT_KEYS |= {"run_id", "ti_id", "try_number", "map_index"}
AUTH_MANAGERS = {
    "simple": "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager",
    "fab": "airflow.providers.fab.auth_manager.fab_auth_manager.FabAuthManager",  # the `fab` extra
}
# The FAB user `admin`, made as `airflow users create` makes it but with the password taken from the
# environment, not from a command line that `ps` shows.
_FAB_ADMIN_SCRIPT = """
import os
from airflow.providers.fab.auth_manager.cli_commands.utils import get_application_builder

with get_application_builder() as appbuilder:
    sm = appbuilder.sm
    password = os.environ.pop("LOCAL_AIRFLOW_ADMIN_PASSWORD")
    admin_role = sm.find_role("Admin")
    if not sm.find_user(username="admin"):
        if not sm.add_user("admin", "admin", "user", "admin@example.invalid", admin_role, password):
            raise SystemExit("could not create the FAB user admin")
"""
REDIS_URL = "redis://127.0.0.1:6379/0"
# Read by hostname_from_env, each Celery worker's [core] hostname_callable.
HOSTNAME_ENV = "LOCAL_AIRFLOW_HOSTNAME"
# The `redis` connection a Celery instance adds: the broker's Redis, for lock_conn_id (a Redis token lock).
REDIS_LOCK_CONN_ID = "token_lock_redis"
# A metadata database no one listens at: a worker that touched the ORM would fail at once.
NO_METADATA_DB = "postgresql+psycopg2://no-metadata-db@127.0.0.1:9/workers_have_none"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


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


class LocalAirflow:
    """One Airflow installation in ``home``; each of its four components is its own process group.

    ``executor="CeleryExecutor"`` runs the CeleryExecutor as a site with worker hosts does: Redis at
    ``redis_url`` as broker, ``database_url`` (PostgreSQL) as metadata database and result backend, and
    ``celery_workers`` workers (``host-a``, ``host-b``, ...), each in a process group of its own with its own
    AIRFLOW_HOME and ``[canvas_provider] state_dir`` under ``home/hosts/``, and no metadata database.
    Queue, broker keys and worker names carry an id of this instance, so parallel runs share no queue.
    """

    def __init__(
        self,
        home: Path,
        dags_folder: Path,
        *,
        database_url: str | None = None,
        parallelism: int = 4,
        api_port: int = 0,
        extra_env: dict[str, str] | None = None,
        auth_manager: Literal["simple", "fab"] = "simple",
        executor: Literal["LocalExecutor", "CeleryExecutor"] = "LocalExecutor",
        celery_workers: int = 2,
        worker_concurrency: int = 2,
        redis_url: str = REDIS_URL,
    ) -> None:
        """:param auth_manager: ``simple`` (every request is admin, no login) or ``fab`` (roles and
        permissions; an ``admin`` user is created and :meth:`api` logs in as it)."""
        self.home, self.dags_folder = Path(home).resolve(), Path(dags_folder).resolve()
        api_port = api_port or free_port()
        self.api_url = f"http://127.0.0.1:{api_port}"
        self.airflow_bin = Path(sys.executable).parent / "airflow"
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self._log_files: dict[str, IO[bytes]] = {}
        self._log_offsets: dict[str, int] = {}  # where each component's log stood when it last started
        self._sessions: set[int] = set()  # session id of every component process ever started
        self.http = requests.Session()
        self.auth_manager = auth_manager
        self.admin_password = secrets.token_urlsafe(16)  # the FAB user ``admin``
        # Inherited AIRFLOW_* variables (AIRFLOW_CONN_*, another AIRFLOW_HOME) would leak into this install.
        self.env = {k: v for k, v in os.environ.items() if not k.lstrip("_").startswith("AIRFLOW")}
        self.env["PATH"] = f"{self.airflow_bin.parent}{os.pathsep}{self.env.get('PATH', '')}"
        self.env |= {
            "AIRFLOW_HOME": str(self.home),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": database_url or f"sqlite:///{self.home / 'airflow.db'}",
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__PARALLELISM": str(parallelism),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_FOLDER": str(self.dags_folder),
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",  # only the runs trigger() asks for
            "AIRFLOW__CORE__AUTH_MANAGER": AUTH_MANAGERS[auth_manager],
            # SimpleAuthManager's middleware then adds an admin JWT to every request: no login needed.
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": str(auth_manager == "simple"),
            # The connection form's Test button (Airflow's default hides it).
            "AIRFLOW__CORE__TEST_CONNECTION": "Enabled",
            # Per instance and explicit: the airflow.cfg that `db migrate` writes has no fernet_key, so
            # connections would be stored unencrypted, unlike any real deployment.
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(64),
            "AIRFLOW__API__SECRET_KEY": secrets.token_urlsafe(64),
            "AIRFLOW__CORE__FERNET_KEY": Fernet.generate_key().decode(),
            "AIRFLOW__API__HOST": "127.0.0.1",  # loopback only
            "AIRFLOW__API__PORT": str(api_port),
            # The log servers' fixed default ports would clash with a second instance on this machine.
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
            "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
            # Without these, task supervisors call http://localhost:8080/execution/ and every task fails.
            "AIRFLOW__API__BASE_URL": self.api_url,
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.api_url}/execution/",
            # Short loops, so a new DAG file is parsed and a triggered run starts within seconds.
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
            "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "5",
            "AIRFLOW__DAG_PROCESSOR__BUNDLE_REFRESH_CHECK_INTERVAL": "1",
            "AIRFLOW__CORE__MIN_SERIALIZED_DAG_UPDATE_INTERVAL": "1",
            "AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME": "0.5",
            "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "1",
            "AIRFLOW__SCHEDULER__JOB_HEARTBEAT_SEC": "1",
            "AIRFLOW__TRIGGERER__JOB_HEARTBEAT_SEC": "1",
        }
        self.workers: dict[str, CeleryWorker] = {}  # by component name, "celery-worker-<hostname>"
        self.redis_url = redis_url  # the Celery broker
        self.celery_queue: str | None = None
        if executor == "CeleryExecutor":
            self._configure_celery(database_url, redis_url, celery_workers, worker_concurrency)
        elif executor != "LocalExecutor":
            raise ValueError(f"executor must be LocalExecutor or CeleryExecutor, not {executor!r}")
        self.env |= extra_env or {}
        for worker in self.workers.values():
            worker.env.update(extra_env or {})

    def _configure_celery(
        self, database_url: str | None, redis_url: str, workers: int, concurrency: int
    ) -> None:
        from sqlalchemy.engine import make_url

        if not database_url or not make_url(database_url).drivername.startswith("postgresql"):
            raise ValueError("the CeleryExecutor needs database_url on PostgreSQL (its result backend too)")
        if not 1 <= workers <= 8:
            raise ValueError(f"celery_workers must be 1 to 8, not {workers}")
        tag = uuid.uuid4().hex[:8]
        self.celery_queue = f"local-airflow-{tag}"
        # Celery's database result backend takes a plain SQLAlchemy URL behind "db+".
        result_backend = make_url(database_url).set(drivername="postgresql")
        self.env |= {
            "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
            "AIRFLOW__CELERY__BROKER_URL": redis_url,
            "AIRFLOW__CELERY__RESULT_BACKEND": f"db+{result_backend.render_as_string(hide_password=False)}",
            # Every key and channel kombu uses in Redis (queues, bindings, unacked, pidbox) gets this prefix.
            "AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__GLOBAL_KEYPREFIX": f"{self.celery_queue}:",
            # The queue tasks are sent to (the dag-processor stamps it on each task) and workers consume.
            "AIRFLOW__OPERATORS__DEFAULT_QUEUE": self.celery_queue,
        }
        for letter in "abcdefgh"[:workers]:
            hostname = f"host-{letter}-{tag}"
            home = self.home / "hosts" / hostname
            env = self.env | {
                "AIRFLOW_HOME": str(home),
                "AIRFLOW__CANVAS_PROVIDER__STATE_DIR": str(home / "canvas_provider"),
                # Airflow 3 workers reach the api-server (Execution API) only: no database to use.
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": NO_METADATA_DB,
                "AIRFLOW__CORE__HOSTNAME_CALLABLE": f"{__name__}.hostname_from_env",
                HOSTNAME_ENV: hostname,
                "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(concurrency),
                "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
                # Task logs where the api-server reads them, as the compose file's shared logs volume: the
                # host names exist only here, so the api-server could not fetch logs from a worker.
                "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(self.home / "logs"),
            }
            worker = CeleryWorker(hostname, home, home / "canvas_provider", env)
            self.workers[f"celery-worker-{hostname}"] = worker

    # --- processes ------------------------------------------------------------------------------------
    def start(self, timeout: float = 180) -> None:
        """Migrate the database, start the components (and workers), wait until each reports healthy."""
        (self.home / "logs").mkdir(parents=True, exist_ok=True)
        self.dags_folder.mkdir(parents=True, exist_ok=True)
        since = datetime.now(timezone.utc)
        self.cli("db", "migrate", timeout=timeout)  # with FAB as auth manager, FAB's tables too
        admin = None
        if self.auth_manager == "fab":  # made while the components start: the first REST call needs it
            admin = subprocess.Popen(
                [sys.executable, "-c", _FAB_ADMIN_SCRIPT],
                env=self.env | {"LOCAL_AIRFLOW_ADMIN_PASSWORD": self.admin_password},
                cwd=self.home,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
        try:
            for component in (*COMPONENTS, *self.workers):
                self._spawn(component)
            deadline = time.monotonic() + timeout
            self._wait_healthy(COMPONENTS, since, deadline)
            if admin is not None:
                _, stderr = admin.communicate(timeout=timeout)
                if admin.returncode != 0:
                    raise RuntimeError(f"creating the FAB user admin failed:\n{stderr[-4000:]}")
                self.http.headers["Authorization"] = f"Bearer {self.login('admin', self.admin_password)}"
            self._wait_workers_ready(tuple(self.workers), deadline)
            if self.workers:
                broker = urlsplit(self.redis_url)
                self.add_connection(
                    REDIS_LOCK_CONN_ID,
                    "redis",
                    host=broker.hostname,
                    port=broker.port or 6379,
                    extra={"db": int(broker.path.strip("/") or 0)},
                )
        except BaseException:
            if admin is not None and admin.poll() is None:
                admin.kill()
            self.stop()
            raise

    def stop(self, grace: float = 10) -> None:
        """SIGTERM the components, SIGKILL their process groups after ``grace`` s, then any leftovers."""
        # The api-server goes last: the triggerer and task supervisors still call it while they stop.
        self._terminate([name for name in self.processes if name != "api-server"], grace)
        self._terminate(["api-server"], grace)
        # Task processes move to process groups of their own (and outlive a scheduler killed in a drill),
        # but stay in the session of the component that forked them.
        for pid in psutil.pids():
            with suppress(OSError):
                if os.getsid(pid) in self._sessions:
                    os.kill(pid, signal.SIGKILL)
        if self.workers:
            self._delete_broker_keys()
        self.http.close()

    def _delete_broker_keys(self) -> None:
        """Remove what kombu left in Redis under this instance's key prefix (queues, bindings)."""
        import redis

        prefix = self.env["AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__GLOBAL_KEYPREFIX"]
        client = redis.Redis.from_url(self.redis_url, socket_timeout=5, socket_connect_timeout=5)
        with suppress(redis.RedisError), client:
            for key in client.scan_iter(match=f"{prefix}*", count=500):
                client.delete(key)

    def kill(self, component: str, sig: signal.Signals = signal.SIGKILL) -> None:
        """Send ``sig`` to a component's process group (for the scheduler: its executor workers too)."""
        os.killpg(self.processes[component].pid, sig)

    def restart(self, component: str, timeout: float = 60) -> None:
        """Stop one component (if it still runs) and start it again; wait until it is healthy."""
        self._terminate([component], grace=15)
        since = datetime.now(timezone.utc)
        self._spawn(component)
        if component in self.workers:
            self._wait_workers_ready((component,), time.monotonic() + timeout)
        else:
            self._wait_healthy((component,), since, time.monotonic() + timeout)

    def __enter__(self) -> LocalAirflow:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def log_tail(self, component: str, lines: int = 40) -> str:
        """The last lines a component wrote to ``home/logs/<component>.log``."""
        text = (self.home / "logs" / f"{component}.log").read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def launch(self, component: str) -> tuple[list[str], dict[str, str], Path]:
        """The command line, environment and working directory a component (or worker) runs with."""
        if worker := self.workers.get(component):
            command = [str(self.airflow_bin), "celery", "worker", "--celery-hostname", worker.hostname]
            return command, worker.env, worker.home
        return [str(self.airflow_bin), component], self.env, self.home

    def _spawn(self, component: str) -> None:
        log = self._log_files[component] = (self.home / "logs" / f"{component}.log").open("ab")
        self._log_offsets[component] = log.tell()
        command, env, cwd = self.launch(component)
        if worker := self.workers.get(component):
            worker.state_dir.mkdir(parents=True, exist_ok=True)
        # A new session is a new process group: kill() and stop() reach what the component forks.
        self.processes[component] = subprocess.Popen(
            command,
            env=env,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self._sessions.add(self.processes[component].pid)

    def _terminate(self, components: list[str], grace: float) -> None:
        procs = {name: self.processes.pop(name) for name in components if name in self.processes}
        # SIGTERM to each main process only, as a container runtime would, so it stops its own children
        # in order. Sent to the whole group, it made the trigger runner stall the triggerer for 10 s.
        for proc in procs.values():
            proc.terminate()
        # After 2 s, SIGTERM to the group of any straggler: the scheduler's LocalExecutor.end() joins each
        # executor worker, and one can still be supervising a task that has finished (seen for 5-15 s).
        started = time.monotonic()
        for deadline in (started + min(2.0, grace), started + grace):
            for proc in procs.values():
                with suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            for proc in procs.values():
                if proc.poll() is None:
                    with suppress(ProcessLookupError):
                        os.killpg(proc.pid, signal.SIGTERM)
        for name, proc in procs.items():
            with suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)  # whatever is left of the group
            proc.wait()
            self._log_files.pop(name).close()

    def _wait_healthy(self, components: tuple[str, ...], since: datetime, deadline: float) -> None:
        """Wait until the API answers and each component has heartbeated since ``since``."""
        health: dict[str, Any] = {}
        while time.monotonic() < deadline:
            for name in components:
                if self.processes[name].poll() is not None:
                    raise RuntimeError(f"{name} exited early:\n{self.log_tail(name)}")
            with suppress(requests.RequestException):
                health = self.http.get(f"{self.api_url}/api/v2/monitor/health", timeout=5).json()
                if all(self._heartbeat_since(health, name, since) for name in components):
                    return
            time.sleep(0.5)
        raise TimeoutError(f"Airflow not healthy in time: {health}")

    def _wait_workers_ready(self, components: tuple[str, ...], deadline: float) -> None:
        """Wait for each worker's "ready." line, then for its answer to a ping through the broker."""
        pending = set(components)
        while pending and time.monotonic() < deadline:
            for name in sorted(pending):
                if self.processes[name].poll() is not None:
                    raise RuntimeError(f"{name} exited early:\n{self.log_tail(name)}")
                log = (self.home / "logs" / f"{name}.log").read_bytes()[self._log_offsets[name] :]
                if f"{self.workers[name].node} ready.".encode() in log:
                    pending.discard(name)
            time.sleep(0.5)
        if pending:
            raise TimeoutError(f"Celery workers not ready in time: {sorted(pending)}")
        if components:
            self.ping_workers(*components)

    def ping_workers(self, *components: str, timeout: float = 10) -> None:
        """Ping workers through the broker (what ``celery inspect ping``, the compose health check, does).

        From this process with Celery alone: the ``airflow``/``celery`` CLI would spend seconds importing
        Airflow. Only the broker settings matter for a ping: the URL and the key prefix.
        """
        from celery import Celery

        nodes = [self.workers[name].node for name in components or self.workers]
        prefix = self.env["AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__GLOBAL_KEYPREFIX"]
        app = Celery(
            "local-airflow-ping",
            broker=self.redis_url,
            broker_transport_options={"global_keyprefix": prefix},
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

    @staticmethod
    def _heartbeat_since(health: dict[str, Any], component: str, since: datetime) -> bool:
        if component not in HEALTH_KEYS:
            return True  # the api-server answered, which is all it can report
        report = health.get(HEALTH_KEYS[component]) or {}
        beat = report.get(f"latest_{HEALTH_KEYS[component]}_heartbeat")
        return report.get("status") == "healthy" and bool(beat) and datetime.fromisoformat(beat) >= since

    # --- CLI and REST -------------------------------------------------------------------------------
    def cli(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """Run ``airflow <args>`` against this installation; raise with its stderr if it fails."""
        cmd = [str(self.airflow_bin), *args]
        result = subprocess.run(
            cmd, env=self.env, cwd=self.home, capture_output=True, text=True, timeout=timeout
        )
        if check and result.returncode != 0:
            raise RuntimeError(f"airflow {args[0]} exited {result.returncode}:\n{result.stderr[-4000:]}")
        return result

    def add_fab_user(
        self, username: str, password: str, role: str, permissions: list[tuple[str, str]] | None = None
    ) -> None:
        """Create a FAB user with ``role`` through FAB's REST API; with ``permissions`` ((action, resource)
        pairs such as ``("can_edit", "Connections")``), create that role first, with exactly those."""
        if permissions is not None:
            actions = [{"action": {"name": a}, "resource": {"name": r}} for a, r in permissions]
            self._fab_api("POST", "/roles", {"name": role, "actions": actions})
        body = {"username": username, "password": password, "roles": [{"name": role}]}
        body |= {"first_name": username, "last_name": "user", "email": f"{username}@example.invalid"}
        self._fab_api("POST", "/users", body)

    def _fab_api(self, method: str, path: str, body: dict[str, Any]) -> None:
        response = self.http.request(method, f"{self.api_url}/auth/fab/v1{path}", json=body, timeout=30)
        if not response.ok:  # the body may echo a password: the status only
            raise RuntimeError(f"{method} /auth/fab/v1{path} -> {response.status_code}")

    def login(self, username: str, password: str) -> str:
        """A JWT for this user from ``POST /auth/token`` (what the provider does with ``airflow_api``)."""
        # Generous: under FAB the first login builds FAB's Flask app inside the api-server.
        body = {"username": username, "password": password}
        response = requests.post(f"{self.api_url}/auth/token", json=body, timeout=90)
        if not response.ok:
            raise RuntimeError(f"login of {username!r} -> {response.status_code}")
        return str(response.json()["access_token"])

    def api(
        self, method: str, path: str, *, ok: tuple[int, ...] = (200,), **kwargs: Any
    ) -> requests.Response:
        """Call the public REST API at ``/api/v2<path>`` as admin; raise unless status in ``ok``.

        ``headers={"Authorization": ...}`` calls it as someone else."""
        response = self.http.request(method, f"{self.api_url}/api/v2{path}", timeout=30, **kwargs)
        if response.status_code not in ok:
            raise RuntimeError(f"{method} {path} -> {response.status_code}: {response.text[:2000]}")
        return response

    def add_connection(
        self,
        conn_id: str,
        conn_type: str,
        *,
        host: str | None = None,
        login: str | None = None,
        password: str | None = None,
        extra: dict[str, Any] | None = None,
        port: int | None = None,
        schema: str | None = None,
    ) -> None:
        """Create or replace a connection (over REST, so no password shows on a command line)."""
        body = {"connection_id": conn_id, "conn_type": conn_type, "host": host, "login": login}
        body |= {"password": password, "extra": None if extra is None else json.dumps(extra)}
        body |= {"port": port, "schema": schema}
        if self.api("POST", "/connections", json=body, ok=(201, 409)).status_code == 409:
            self.api("PATCH", f"/connections/{conn_id}", json=body)

    def get_connection(self, conn_id: str) -> dict[str, Any]:
        """The connection as ``airflow connections get <id> -o json`` shows it to a user.

        That output turns each value inside ``extra_dejson`` into a string (2 -> "2", True -> "True"),
        so ``extra_dejson`` is rebuilt from ``get_uri``, which carries the extra losslessly.
        """
        [conn] = json.loads(self.cli("connections", "get", conn_id, "-o", "json").stdout)
        query = parse_qs(urlsplit(conn["get_uri"]).query, keep_blank_values=True)
        if "__extra__" in query:  # get_uri's form when some extra value is not a string
            conn["extra_dejson"] = json.loads(query["__extra__"][0])
        else:
            conn["extra_dejson"] = {key: values[0] for key, values in query.items()}
        return conn

    def set_variable(self, key: str, value: Any) -> None:
        """Create or update a Variable; a value that is not a string is stored as JSON."""
        body = {"key": key, "value": value if isinstance(value, str) else json.dumps(value)}
        if self.api("PATCH", f"/variables/{key}", json=body, ok=(200, 404)).status_code == 404:
            self.api("POST", "/variables", json=body, ok=(201,))

    def get_variable(self, key: str) -> str | None:
        response = self.api("GET", f"/variables/{key}", ok=(200, 404))
        return response.json()["value"] if response.status_code == 200 else None

    # --- DAGs and runs ------------------------------------------------------------------------------
    def wait_for_dag(self, dag_id: str, timeout: float = 120) -> None:
        """Wait until the dag-processor has parsed ``dag_id``; on timeout, raise with the import errors."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.api("GET", f"/dags/{dag_id}", ok=(200, 404)).status_code == 200:
                return
            time.sleep(1)
        errors = self.api("GET", "/importErrors").json()["import_errors"]
        details = "\n".join(f"{e['filename']}:\n{e['stack_trace']}" for e in errors) or "none"
        raise TimeoutError(f"DAG {dag_id!r} not parsed in {timeout}s. Import errors: {details}")

    def trigger(
        self, dag_id: str, conf: dict[str, Any] | None = None, *, logical_date: datetime | str | None = None
    ) -> str:
        """Unpause ``dag_id``, start a run (``logical_date``: aware datetime or ISO string); return run_id."""
        if isinstance(logical_date, datetime):
            logical_date = logical_date.isoformat()
        self.api("PATCH", f"/dags/{dag_id}", json={"is_paused": False})
        body = {"logical_date": logical_date, "conf": conf or {}}
        return self.api("POST", f"/dags/{dag_id}/dagRuns", json=body).json()["dag_run_id"]

    def wait_for_run(self, dag_id: str, run_id: str, timeout: float = 300) -> str:
        """Poll until the run has finished; return its final state ("success" or "failed")."""
        deadline, state = time.monotonic() + timeout, None
        while time.monotonic() < deadline:
            state = self.api("GET", f"/dags/{dag_id}/dagRuns/{run_id}").json()["state"]
            if state in ("success", "failed"):
                return state
            time.sleep(0.5)
        raise TimeoutError(f"run {run_id} of {dag_id} still {state} after {timeout}s")

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        """All task instances of a run, paging past the API's 100-row limit."""
        rows: list[dict[str, Any]] = []
        while True:
            params = {"limit": 100, "offset": len(rows)}
            page = self.api("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances", params=params).json()
            rows += page["task_instances"]
            if len(rows) >= page["total_entries"] or not page["task_instances"]:
                return rows

    def task_log(
        self, dag_id: str, run_id: str, task_id: str, try_number: int = 1, map_index: int = -1
    ) -> str:
        """A task's log as text: one line per event, with the fields that are not repeated context."""
        path = f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/logs/{try_number}"
        params = {"map_index": map_index, "full_content": True}
        response = self.api("GET", path, params=params, headers={"Accept": "application/json"})
        lines = []
        for entry in response.json()["content"]:
            if isinstance(entry, str):
                lines.append(entry)
                continue
            fields = " ".join(f"{k}={v}" for k, v in entry.items() if k not in LOG_CONTEXT_KEYS)
            lines.append(
                f"[{entry.get('timestamp')}] {entry.get('level')}: {entry.get('event')} {fields}".rstrip()
            )
        return "\n".join(lines)

    def xcom(
        self, dag_id: str, run_id: str, task_id: str, key: str = "return_value", map_index: int = -1
    ) -> Any:
        """An XCom value as the task pushed it (the stored JSON, not the UI's string form)."""
        path = f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/{key}"
        return self.api("GET", path, params={"map_index": map_index}).json()["value"]
