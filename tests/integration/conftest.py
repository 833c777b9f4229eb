"""Fixtures for tests against the emulator over real HTTP and the test metadata database."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from airflow.models import Connection, Variable
from airflow.utils.session import create_session
from lms_fixtures import CLIENT_ID, CLIENT_SECRET, dsn

from airflow_provider_canvas.testing import LmsEmulator


@pytest.fixture
def emulator() -> Iterator[LmsEmulator]:
    with LmsEmulator() as emu:
        yield emu


@pytest.fixture
def make_connection() -> Iterator[Callable[..., str]]:
    """Create connections in the metadata DB; they are deleted after the test."""
    created: list[str] = []

    def make(conn_id: str, conn_type: str, host: str, extra: dict[str, Any], **fields: Any) -> str:
        with create_session() as session:
            session.query(Connection).filter(Connection.conn_id == conn_id).delete()
            session.add(
                Connection(conn_id=conn_id, conn_type=conn_type, host=host, extra=json.dumps(extra), **fields)
            )
        created.append(conn_id)
        return conn_id

    yield make
    with create_session() as session:
        session.query(Connection).filter(Connection.conn_id.in_(created)).delete()
        # The central token copy of each: a later test's connection of the same id starts clean.
        keys = [f"canvas_provider_tokens__{conn_id}" for conn_id in created]
        session.query(Variable).filter(Variable.key.in_(keys)).delete()


@pytest.fixture
def lms_connection(emulator: LmsEmulator, make_connection: Callable[..., str]) -> Callable[..., str]:
    """A canvas or brightspace connection holding fresh tokens issued by the emulator.

    ``expired=True`` stores an expiry in the past so the first call must refresh.
    """

    def make(platform: str, conn_id: str | None = None, *, expired: bool = True, **extra: Any) -> str:
        side = getattr(emulator, platform)
        side.register_client(CLIENT_ID, CLIENT_SECRET)
        issued = side.issue_tokens(CLIENT_ID)
        fields = {**emulator.connection_extra(platform, issued, expired=expired), **extra}
        return make_connection(
            conn_id or f"{platform}_test",
            platform,
            emulator.url,
            fields,
            login=CLIENT_ID,
            password=CLIENT_SECRET,
        )

    return make


@pytest.fixture
def schema() -> Iterator[str]:
    """A fresh PostgreSQL schema name for one test, dropped (with what the test put in it) afterwards."""
    name = f"bds_test_{uuid.uuid4().hex[:10]}"
    yield name
    with psycopg.connect(dsn(), autocommit=True) as db:
        db.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
