"""An example DAG unpaused before anything is configured skips and says what to set, never fails."""

from __future__ import annotations

import importlib.util
import shutil
import uuid
from pathlib import Path

import pytest
from airflow.sdk import DAG
from airflow.utils.state import DagRunState, TaskInstanceState

DAGS = Path(__file__).parents[2] / "dags"


def load_dag(path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> DAG:
    # dag.test() serialises the DAG from the dags-folder bundle: point that at a folder with this DAG.
    from airflow import settings

    folder = tmp_path / "dags"
    folder.mkdir()
    shutil.copy(path, folder)
    monkeypatch.setattr(settings, "DAGS_FOLDER", str(folder))
    spec = importlib.util.spec_from_file_location(f"example_{uuid.uuid4().hex}", folder / path.name)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    # ``with DAG(...) as dag`` files name it; ``@dag`` files define a function named as the file.
    dag = getattr(module, "dag", None)
    return dag if isinstance(dag, DAG) else getattr(module, path.stem)()


@pytest.mark.parametrize(
    ("dag_file", "to_set"),
    [
        ("canvas_sso_settings_restore.py", "set the Airflow Variable 'canvas_sso_settings_restore'"),
        ("canvas_account_inventory.py", "create the connection 'canvas_default' (type canvas"),
        ("brightspace_data_sets_pull.py", "create the connection 'brightspace_warehouse' (type postgres"),
        ("lms_token_keepalive.py", "create the connection 'brightspace_default' (type brightspace"),
        ("canvas_data_2_sync.py", "create the connection 'canvas_data_default' (type canvas_data"),
        ("brightspace_on_new_extract.py", "create the connection 'brightspace_warehouse' (type postgres"),
        ("canvas_sis_nightly.py", "create the connection 'sis_source' (type postgres"),
    ],
)
def test_an_unconfigured_example_dag_skips_with_what_to_set(dag_file, to_set, capfd, tmp_path, monkeypatch):
    run = load_dag(DAGS / dag_file, tmp_path, monkeypatch).test()

    assert run.state == DagRunState.SUCCESS
    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    assert set(states.values()) == {TaskInstanceState.SKIPPED}, states
    logged = capfd.readouterr().out  # dag.test() logs each task in-process
    assert "Not configured yet" in logged and to_set in logged
