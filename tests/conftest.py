"""Test set-up shared by every test: an isolated Airflow home whose SQLite metadata DB is migrated once, for
the tests that use it (``metadata_db``), the session's PostgreSQL (the machine's, or an embedded one:
airflow_provider_canvas.testing.postgres) and the markers that pick the fast loop (README, "Fast loop")."""

from __future__ import annotations

import os
import shutil
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


# Marks by folder, so `-m` picks a layer without a marker in each file: tests/e2e start a real Airflow,
# tests/integration use the emulator over HTTP, PostgreSQL and Redis, tests/unit nothing of the kind.
_LAYERS = ("unit", "integration", "e2e")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    tests = Path(__file__).parent
    for item in items:
        layer = item.path.relative_to(tests).parts[0]
        if layer in _LAYERS and layer not in {mark.name for mark in item.iter_markers()}:
            item.add_marker(layer)


@pytest.fixture(scope="session")
def metadata_db() -> None:
    """The SQLite metadata DB of this session's Airflow home, migrated on first use.

    In this process, as ``airflow db migrate`` does for a new database (tables from the ORM, stamped), but
    without a second interpreter importing Airflow: a run whose tests need no DB does not pay for it.
    """
    from airflow.utils.db import initdb

    initdb()


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
