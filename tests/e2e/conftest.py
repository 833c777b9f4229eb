"""The ``local_airflow`` fixture: one real Airflow for the whole e2e session, DAGs from tests/e2e/dags."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from airflow_provider_canvas.testing.local_airflow import LocalAirflow
from airflow_provider_canvas.testing.postgres import fresh_postgres_database

E2E_DAGS = Path(__file__).parent / "dags"


def e2e_backend() -> str:
    """``CANVAS_E2E_DB=postgres|sqlite``; by default PostgreSQL, the session's server (tests/conftest.py)."""
    backend = os.environ.get("CANVAS_E2E_DB") or "postgres"
    if backend not in ("postgres", "sqlite"):
        raise ValueError(f"CANVAS_E2E_DB must be postgres or sqlite, not {backend!r}")
    return backend


def event_dag_env(home: Path) -> dict[str, str]:
    """For dags/bds_on_new_extract.py (tests/e2e/test_bds_events.py): where it pulls to, how often its watcher
    polls, and OpenLineage's real listener writing to a file, for the DAGs that enable it only."""
    transport = {"type": "file", "log_file_path": str(home / "openlineage.jsonl"), "append": True}
    return {
        "BRIGHTSPACE_BDS_LOCATION": str(home / "bds"),
        "BRIGHTSPACE_WATCH_POLL_SECONDS": "3",
        "AIRFLOW__OPENLINEAGE__TRANSPORT": json.dumps(transport),
        "AIRFLOW__OPENLINEAGE__SELECTIVE_ENABLE": "True",
        "AIRFLOW__OPENLINEAGE__NAMESPACE": "e2e",
    }


@pytest.fixture(scope="session")
def local_airflow(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalAirflow]:
    with ExitStack() as stack:
        database_url = None
        if e2e_backend() == "postgres":
            database_url = stack.enter_context(fresh_postgres_database())
        home = tmp_path_factory.mktemp("airflow_home")
        airflow = LocalAirflow(home, E2E_DAGS, database_url=database_url, extra_env=event_dag_env(home))
        stack.callback(airflow.stop)
        airflow.start()
        yield airflow
