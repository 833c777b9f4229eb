"""``canvas-oauth scopes`` on the example DAGs: the list is exactly what their operators call.

The proof: a developer key restricted to exactly the listed scopes runs both Canvas DAGs to success,
every request they make falls under a listed scope, and a key missing any one listed scope makes
some call of those DAGs fail with that scope named.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import uuid
from pathlib import Path
from typing import Any

import pendulum
from airflow.dag_processing.dagbag import DagBag
from airflow.utils.state import DagRunState
from lms_fixtures import CLIENT_ID, CLIENT_SECRET

# The fake browser and the authorize runner are shared with the authorize tests.
from test_cli_authorize import browser, cli_connections, client_secret, run_authorize  # noqa: F401

from airflow_provider_canvas.canvas.hooks.canvas import (
    SCOPE_GET_ACCOUNT,
    SCOPE_GET_SSO_SETTINGS,
    SCOPE_LIST_ACCOUNTS,
    SCOPE_LIST_SUB_ACCOUNTS,
    SCOPE_PUT_SSO_SETTINGS,
)
from airflow_provider_canvas.canvas.hooks.sis import (
    SCOPE_CREATE_SIS_IMPORT,
    SCOPE_GET_REPORT,
    SCOPE_GET_SIS_IMPORT,
    SCOPE_LIST_SIS_IMPORTS,
    SCOPE_START_REPORT,
)
from airflow_provider_canvas.cli.main import main
from airflow_provider_canvas.exceptions import LmsPermissionError

DAGS = Path(__file__).parents[2] / "dags"
#: The DAGs the proof below runs (canvas_sis_nightly's scopes are proven by its e2e test, whose
#: developer key enforces exactly what this command lists for it).
ACCOUNT_DAGS = ("canvas_account_inventory.py", "canvas_sso_settings_restore.py")
SIS_SCOPES = [
    SCOPE_CREATE_SIS_IMPORT,
    SCOPE_LIST_SIS_IMPORTS,
    SCOPE_GET_SIS_IMPORT,
    SCOPE_START_REPORT,
    SCOPE_GET_REPORT,
]
CONN_ID = "canvas_dags"
PRODUCTION_DISCOVERY = "https://login.example.edu/canvas/discovery"  # copied over by the refresh
WANTED = {"auth_discovery_url": "https://login-test.example.edu/canvas/discovery"}
FAST = {"backoff_seconds": 0.01, "max_backoff_seconds": 0.05}


def scopes_output(capsys, *args: str) -> str:
    assert main(["scopes", *args]) == 0
    return capsys.readouterr().out


def test_scopes_of_the_example_dags_grouped_as_the_developer_key_form(capsys):
    out = scopes_output(capsys, "--dags-folder", str(DAGS), "--platform", "canvas")

    groups: dict[str, list[str]] = {}
    for line in out.splitlines():
        if re.fullmatch(r"  \S.*", line):
            groups[line.strip()] = current = []
        elif re.fullmatch(r"    url:\S+", line):
            current.append(line.strip())
    assert groups == {
        "Account Reports": [SCOPE_START_REPORT, SCOPE_GET_REPORT],
        "Accounts": [SCOPE_LIST_SUB_ACCOUNTS, SCOPE_GET_ACCOUNT],
        "Authentication Providers": [SCOPE_GET_SSO_SETTINGS, SCOPE_PUT_SSO_SETTINGS],
        "SIS Imports": [SCOPE_LIST_SIS_IMPORTS, SCOPE_CREATE_SIS_IMPORT, SCOPE_GET_SIS_IMPORT],
    }
    assert "used by canvas_account_inventory.read_account_tree\n" in out
    assert "used by canvas_sis_nightly.sis_import\n" in out
    brightspace = scopes_output(capsys, "--dags-folder", str(DAGS), "--platform", "brightspace")
    assert "brightspace_data_sets_pull.pull" in brightspace
    for scope in ("datasets:bds:read", "datahub:dataexports:read", "datahub:dataexports:download"):
        assert f"    {scope}\n" in brightspace


def test_scopes_list_json_and_all_operators(capsys):
    listed = scopes_output(
        capsys, "--dags-folder", str(DAGS), "--platform", "canvas", "--format", "list"
    ).split()
    assert listed == sorted(
        [
            SCOPE_GET_ACCOUNT,
            SCOPE_LIST_SUB_ACCOUNTS,
            SCOPE_GET_SSO_SETTINGS,
            SCOPE_PUT_SSO_SETTINGS,
            *SIS_SCOPES,
        ]
    )
    as_json = json.loads(scopes_output(capsys, "--dags-folder", str(DAGS), "--format", "json"))
    assert as_json["used_by"][SCOPE_PUT_SSO_SETTINGS] == ["canvas_sso_settings_restore.restore_sso_settings"]
    everything = scopes_output(capsys, "--all", "--platform", "canvas", "--format", "list").split()
    assert everything == sorted([*listed, SCOPE_LIST_ACCOUNTS])


def test_a_dag_file_that_does_not_import_is_reported(tmp_path, capsys):
    shutil.copy(DAGS / "canvas_account_inventory.py", tmp_path)
    (tmp_path / "broken_dag.py").write_text(
        "from airflow.sdk import dag\nraise ImportError('no such thing')\n"
    )

    assert main(["scopes", "--dags-folder", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert SCOPE_LIST_SUB_ACCOUNTS in out
    assert "NOT READ" in out and "broken_dag.py" in out


# The proof against the emulator --------------------------------------------------------------------


def _run_dag(name: str, run_conf: dict[str, Any], tmp_path: Path, monkeypatch) -> Any:
    # dag.test() serialises the DAG from the dags-folder bundle: point that at a folder with this DAG.
    from airflow import settings

    folder = tmp_path / f"dags_{name}"
    folder.mkdir()
    shutil.copy(DAGS / f"{name}.py", folder)
    monkeypatch.setattr(settings, "DAGS_FOLDER", str(folder))
    spec = importlib.util.spec_from_file_location(f"{name}_{uuid.uuid4().hex}", folder / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return getattr(module, name)().test(run_conf=run_conf)


def _run_dag_operators(bag: DagBag, tmp_path: Path) -> list[LmsPermissionError]:
    """Each Canvas operator task of the example DAGs, with its arguments as a run renders them."""
    refused = []
    inventory = bag.dags["canvas_account_inventory"].get_task("read_account_tree")
    inventory.render_template_fields(
        {
            "params": {
                "canvas_conn_id": CONN_ID,
                "root_account_id": 1,
                "output_dir": str(tmp_path / "inventory"),
                "output_conn_id": None,
            },
            "dag_run": type("Run", (), {"run_after": pendulum.now("UTC")}),
        }
    )
    inventory.hook_params = FAST
    sso_dag = bag.dags["canvas_sso_settings_restore"]
    mapped = sso_dag.get_task("restore_sso_settings")
    kwargs = sso_dag.get_task("instances").python_callable(
        params={"instances": {CONN_ID: {"account_id": 1, "settings": WANTED}}, "dry_run": False}
    )
    operators = [inventory] + [
        mapped.operator_class(task_id=mapped.task_id, hook_params=FAST, **k) for k in kwargs
    ]
    for operator in operators:
        operator.__dict__.pop("hook", None)  # a new hook (and token) per run
        try:
            operator.execute({})
        except LmsPermissionError as err:
            refused.append(err)
    return refused


def _scope_pattern(scope: str) -> tuple[str, re.Pattern[str]]:
    verb, _, path = scope.removeprefix("url:").partition("|")
    return verb, re.compile("^" + re.sub(r":\w+", "[^/]+", path) + r"(\.json)?$")


def test_the_listed_scopes_are_exactly_what_the_example_dags_call(
    emulator,
    browser,  # noqa: F811 (the imported fixture)
    cli_connections,  # noqa: F811 (the imported fixture)
    make_connection,
    capsys,
    tmp_path,
    monkeypatch,
):
    dags = tmp_path / "account_dags"
    dags.mkdir()
    for name in ACCOUNT_DAGS:
        shutil.copy(DAGS / name, dags)
    listed = scopes_output(
        capsys, "--dags-folder", str(dags), "--platform", "canvas", "--format", "list"
    ).split()
    emulator.canvas.register_client(CLIENT_ID, CLIENT_SECRET, scopes=listed)  # Enforce Scopes: exactly these
    emulator.canvas.generate_account_tree(31, fanout=5)
    emulator.canvas.set_sso_settings(1, auth_discovery_url=PRODUCTION_DISCOVERY)

    # 1. authorize asks for what the DAGs need, and the DAGs run on that connection.
    assert (
        run_authorize(emulator, "canvas", CONN_ID, [], cli_connections, "--scopes-from-dags", str(dags)) == 0
    )
    inventory = _run_dag(
        "canvas_account_inventory",
        {"canvas_conn_id": CONN_ID, "output_dir": str(tmp_path / "out")},
        tmp_path,
        monkeypatch,
    )
    sso = _run_dag(
        "canvas_sso_settings_restore",
        {"instances": {CONN_ID: {"account_id": 1, "settings": WANTED}}, "dry_run": False},
        tmp_path,
        monkeypatch,
    )
    assert inventory.state == DagRunState.SUCCESS and sso.state == DagRunState.SUCCESS
    assert emulator.canvas.get_sso_settings(1)["auth_discovery_url"] == WANTED["auth_discovery_url"]

    # 2. Every request the DAGs made falls under a listed scope, and every listed scope was used.
    calls = [r for r in emulator.api_requests if r.platform == "canvas"]
    assert calls and {r.status for r in calls} == {200}
    patterns = {scope: _scope_pattern(scope) for scope in listed}
    used = set()
    for call in calls:
        covering = [
            s for s, (verb, path) in patterns.items() if verb == call.method and path.match(call.path)
        ]
        assert covering, f"{call.method} {call.path} is not covered by a listed scope"
        used.update(covering)
    assert used == set(listed)

    # 3. Without any one listed scope, some call of the DAGs fails, naming that scope.
    bag = DagBag(dag_folder=str(dags))
    for index, missing in enumerate(listed):
        client_id = f"key-without-{index}"
        emulator.canvas.register_client(client_id, CLIENT_SECRET, scopes=[s for s in listed if s != missing])
        issued = emulator.canvas.issue_tokens(client_id)
        make_connection(
            CONN_ID,
            "canvas",
            emulator.url,
            emulator.connection_extra("canvas", issued),
            login=client_id,
            password=CLIENT_SECRET,
        )
        emulator.canvas.set_sso_settings(1, auth_discovery_url=PRODUCTION_DISCOVERY)  # refreshed again

        refused = _run_dag_operators(bag, tmp_path)

        assert missing in {err.required_scope for err in refused}, f"nothing needed {missing}"
        assert all(err.required_scope == missing for err in refused)
