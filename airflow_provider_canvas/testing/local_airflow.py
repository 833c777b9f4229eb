"""Run a real local Airflow 3 (scheduler, dag-processor, triggerer, api-server; LocalExecutor) for tests.

Tasks run supervised with the ORM blocked, unlike ``airflow dags test``; the test side talks REST and CLI.
With ``executor="CeleryExecutor"`` tasks run on Celery workers instead, each as if on its own host.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from contextlib import suppress
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any, Literal
from urllib.parse import urlsplit

import psutil
import requests
from cryptography.fernet import Fernet

from airflow_provider_canvas.testing.airflow_client import AirflowClient
from airflow_provider_canvas.testing.celery_hosts import (
    PREFIX_KEY,
    REDIS_LOCK_CONN_ID,
    REDIS_URL,
    CeleryWorker,
    celery_site,
    delete_broker_keys,
    ping_workers,
)
from airflow_provider_canvas.testing.primitives import free_port

COMPONENTS = ("scheduler", "dag-processor", "triggerer", "api-server")  # also their `airflow` sub-commands
# Health-report section of each component that heartbeats into the database (the api-server does not).
HEALTH_KEYS = {"scheduler": "scheduler", "dag-processor": "dag_processor", "triggerer": "triggerer"}
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


class LocalAirflow(AirflowClient):
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
        api_port = api_port or free_port()
        super().__init__(f"http://127.0.0.1:{api_port}", Path(home).resolve(), {})
        self.dags_folder = Path(dags_folder).resolve()
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self._log_files: dict[str, IO[bytes]] = {}
        self._log_offsets: dict[str, int] = {}  # where each component's log stood when it last started
        self._sessions: set[int] = set()  # session id of every component process ever started
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
            site = celery_site(
                self.home, self.env, database_url, redis_url, celery_workers, worker_concurrency
            )
            self.celery_queue, self.env, self.workers = site.queue, site.env, site.workers
        elif executor != "LocalExecutor":
            raise ValueError(f"executor must be LocalExecutor or CeleryExecutor, not {executor!r}")
        self.env |= extra_env or {}
        for worker in self.workers.values():
            worker.env.update(extra_env or {})

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
                admin.communicate()
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
            delete_broker_keys(self.redis_url, self.env[PREFIX_KEY])
        self.http.close()

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
        """Ping these workers (all without arguments) through the broker; raise if one stays silent."""
        nodes = [self.workers[name].node for name in components or self.workers]
        ping_workers(self.redis_url, self.env[PREFIX_KEY], nodes, timeout)

    @staticmethod
    def _heartbeat_since(health: dict[str, Any], component: str, since: datetime) -> bool:
        if component not in HEALTH_KEYS:
            return True  # the api-server answered, which is all it can report
        report = health.get(HEALTH_KEYS[component]) or {}
        beat = report.get(f"latest_{HEALTH_KEYS[component]}_heartbeat")
        if not beat:
            return False
        return report.get("status") == "healthy" and datetime.fromisoformat(beat) >= since
