"""LocalAirflow's CeleryExecutor set-up, built without starting anything."""

from __future__ import annotations

from pathlib import Path

import pytest

from airflow_provider_canvas.testing.celery_hosts import HOSTNAME_ENV, hostname_from_env
from airflow_provider_canvas.testing.local_airflow import LocalAirflow

POSTGRES_URL = "postgresql+psycopg2://postgres@127.0.0.1:5432/airflow_e2e_unit"


def _celery(tmp_path: Path, name: str, database_url: str | None, workers: int = 2) -> LocalAirflow:
    airflow = LocalAirflow(
        tmp_path / name,
        tmp_path / "dags",
        database_url=database_url,
        executor="CeleryExecutor",
        celery_workers=workers,
    )
    airflow.http.close()
    return airflow


@pytest.mark.parametrize("database_url", [None, "sqlite:////tmp/airflow.db"])
def test_celery_needs_postgres(tmp_path: Path, database_url: str | None) -> None:
    with pytest.raises(ValueError, match="PostgreSQL"):
        _celery(tmp_path, "home", database_url)


def test_unknown_executor_and_too_many_workers_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="KubernetesExecutor"):
        LocalAirflow(tmp_path / "home", tmp_path / "dags", executor="KubernetesExecutor")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="celery_workers"):
        _celery(tmp_path, "home", POSTGRES_URL, workers=9)


def test_parallel_instances_share_no_queue_keys_or_worker_names(tmp_path: Path) -> None:
    first, second = (_celery(tmp_path, name, POSTGRES_URL) for name in ("one", "two"))
    prefix = "AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__GLOBAL_KEYPREFIX"
    assert first.env["AIRFLOW__OPERATORS__DEFAULT_QUEUE"] != second.env["AIRFLOW__OPERATORS__DEFAULT_QUEUE"]
    assert first.env[prefix] != second.env[prefix]
    assert not {w.hostname for w in first.workers.values()} & {w.hostname for w in second.workers.values()}
    # The result backend is the instance's own database, as Celery's database backend spells it.
    assert (
        first.env["AIRFLOW__CELERY__RESULT_BACKEND"]
        == "db+postgresql://postgres@127.0.0.1:5432/airflow_e2e_unit"
    )


def test_worker_hostname_comes_from_its_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(HOSTNAME_ENV, "host-z")
    assert hostname_from_env() == "host-z"
    monkeypatch.delenv(HOSTNAME_ENV)
    assert hostname_from_env()  # the machine's name
