"""Test set-up shared by every test: an isolated Airflow home with a migrated SQLite metadata DB, and the
session's PostgreSQL (the machine's, or an embedded one: airflow_provider_canvas.testing.postgres)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

from cryptography.fernet import Fernet

# Airflow reads its configuration at import time: point it at a private home first.
_HOME = Path(tempfile.mkdtemp(prefix="canvas-provider-tests-"))
os.environ.update(
    {
        "AIRFLOW_HOME": str(_HOME),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{_HOME}/airflow.db",
        "AIRFLOW__CANVAS_PROVIDER__STATE_DIR": str(_HOME / "canvas_provider"),
        "AIRFLOW__CANVAS_PROVIDER__LOCK_TIMEOUT_SECONDS": "60",
        # One key for this process and the subprocesses it starts, so all read each other's secrets.
        "AIRFLOW__CORE__FERNET_KEY": Fernet.generate_key().decode(),
    }
)

import pytest  # noqa: E402
from redis_server import RedisServer, redis_for_tests  # noqa: E402

from airflow_provider_canvas.testing.postgres import PostgresServer, postgres_server  # noqa: E402

AIRFLOW = str(Path(sys.executable).parent / "airflow")
# Where an embedded PostgreSQL keeps its data for the session (ignored by git), one directory per session.
SCRATCH = Path(__file__).resolve().parents[1] / ".scratch"
_session_resources = ExitStack()
_postgres: PostgresServer | None = None


def pytest_sessionstart(session: pytest.Session) -> None:
    global _postgres
    SCRATCH.mkdir(exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="postgres-", dir=SCRATCH))
    _session_resources.callback(shutil.rmtree, scratch, ignore_errors=True)
    # Started here, before any test module reads the address, and exported to every subprocess.
    _postgres = _session_resources.enter_context(postgres_server(scratch))
    subprocess.run([AIRFLOW, "db", "migrate"], check=True, capture_output=True, env=os.environ)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    _session_resources.close()


def pytest_report_header(config: pytest.Config) -> str:
    return f"postgresql: {_postgres.address} ({_postgres.description})" if _postgres else ""


@pytest.fixture
def airflow_home() -> Path:
    return _HOME


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """The Redis every Redis test uses (see tests/redis_server.py)."""
    with redis_for_tests() as server:
        yield server
