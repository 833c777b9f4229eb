"""Fixtures for tests against the emulator over real HTTP and the test metadata database."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
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


@pytest.fixture(autouse=True)
def _metadata_db(metadata_db: None) -> None:
    """Every test here may read connections and variables from the metadata DB (hooks, CLI, dag.test())."""


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


class RefreshWorker:
    """One tests/integration/refresh_worker.py process ("a worker on another host"). A thread reads its
    output, so a wait for a line never misses one that arrived together with the line before."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.process = process
        self.output: list[str] = []
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def returncode(self) -> int | None:
        return self.process.returncode

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._lines.put(line)
        self._lines.put(None)  # end of output: the worker exited

    def wait_for(self, marker: str, timeout: float = 180) -> None:
        """Wait for an output line containing ``marker``; fail at once if the worker exits first."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self._lines.get(timeout=left)
            except queue.Empty:
                break
            if line is None:
                raise AssertionError(f"the worker exited before {marker!r}:\n{''.join(self.output)[-3000:]}")
            self.output.append(line)
            if marker in line:
                return
        raise TimeoutError(f"the worker did not print {marker!r} in {timeout}s")

    def result(self, timeout: float = 120) -> dict[str, Any]:
        """The JSON line the worker ends with, once it has exited."""
        self.process.wait(timeout=timeout)
        self._reader.join(timeout=10)
        while not self._lines.empty():
            if (line := self._lines.get_nowait()) is not None:
                self.output.append(line)
        lines = "".join(self.output).strip().splitlines()
        assert lines, "the worker printed nothing"
        try:
            return json.loads(lines[-1])
        except ValueError as err:
            output = "".join(self.output)[-3000:]
            raise AssertionError(f"the worker did not end with its result:\n{output}") from err

    def reap(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        self._reader.join(timeout=10)
        if self.process.stdout is not None:
            self.process.stdout.close()


WORKER = Path(__file__).with_name("refresh_worker.py")


@pytest.fixture
def refresh_workers() -> Iterator[Callable[..., list[RefreshWorker]]]:
    """Start workers that call the API once ``go`` exists: ``start(conn_id, go, envs)`` starts one per entry
    of ``envs`` (extra environment), all at once, and returns when each is ready (connection read).

    After the test every worker is killed if still running and reaped: also when the test failed or was
    interrupted, so none is left polling for its go-file.
    """
    started: list[RefreshWorker] = []

    def start(conn_id: str, go: Path, envs: list[dict[str, str]]) -> list[RefreshWorker]:
        batch = []
        for env in envs:
            process = subprocess.Popen(
                [sys.executable, str(WORKER), conn_id, str(go)],
                env={**os.environ, **env},
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            started.append(worker := RefreshWorker(process))
            batch.append(worker)
        for worker in batch:  # they import Airflow side by side; each says "ready" once connected
            worker.wait_for("ready")
        return batch

    yield start
    for worker in started:
        worker.reap()
