"""Which PostgreSQL the tests and the demo use: the configured server if it answers, else an embedded one."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from airflow_provider_canvas.testing.postgres import (
    MODE_VARIABLE,
    URL_VARIABLE,
    PostgresServer,
    configured_server,
    postgres_server,
)
from airflow_provider_canvas.testing.primitives import free_port


def test_auto_uses_the_configured_server_when_it_answers(monkeypatch, tmp_path: Path) -> None:
    session_server = configured_server()  # the session's one: it answers
    monkeypatch.setenv(MODE_VARIABLE, "auto")

    with postgres_server(tmp_path / "postgres") as server:
        assert server == session_server
        assert os.environ[URL_VARIABLE] == server.url()

    assert not (tmp_path / "postgres").exists()  # nothing embedded was started


@pytest.fixture
def scratch() -> Iterator[Path]:
    """A directory under the repository's .scratch: as root the server runs as ``nobody``, which cannot
    enter pytest's private tmp_path."""
    root = Path(__file__).resolve().parents[2] / ".scratch"
    root.mkdir(exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix="postgres-test-", dir=root))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_embedded_server_has_the_test_database_and_stops_at_the_end(monkeypatch, scratch: Path) -> None:
    monkeypatch.setenv(MODE_VARIABLE, "embedded")
    monkeypatch.setenv(URL_VARIABLE, "postgresql://postgres@127.0.0.1:5432")

    with postgres_server(scratch / "postgres") as server:
        assert server.host == "127.0.0.1" and server.port != 5432
        # Child processes are told where it is, and that the choice is made.
        assert (os.environ[MODE_VARIABLE], os.environ[URL_VARIABLE]) == ("system", server.url())
        with psycopg.connect(server.url("test"), connect_timeout=10) as db:
            assert db.execute("SELECT current_user, version()").fetchone()[0] == "postgres"
            assert db.execute("SELECT rolsuper FROM pg_roles WHERE rolname = 'postgres'").fetchone()[0]

    assert not server.answers()
    assert not (scratch / "postgres" / "data").exists()
    assert os.environ[URL_VARIABLE] == "postgresql://postgres@127.0.0.1:5432"  # restored


def test_system_refuses_an_address_where_nothing_answers(monkeypatch, tmp_path: Path) -> None:
    nothing_there = PostgresServer("127.0.0.1", free_port())
    monkeypatch.setenv(MODE_VARIABLE, "system")
    monkeypatch.setenv(URL_VARIABLE, nothing_there.url())

    with (
        pytest.raises(RuntimeError, match=f"no PostgreSQL answers at {nothing_there.address}"),
        postgres_server(tmp_path / "postgres"),
    ):
        pass


def test_an_unknown_mode_is_refused(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv(MODE_VARIABLE, "docker")

    with (
        pytest.raises(ValueError, match="must be one of auto, system, embedded"),
        postgres_server(tmp_path / "postgres"),
    ):
        pass
