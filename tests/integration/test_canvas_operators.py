"""The Canvas operators over real HTTP against emulated Canvas instances, with the real metadata DB."""

from __future__ import annotations

import importlib.util
import json
import shutil
import time
import tracemalloc
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from airflow.utils.state import DagRunState
from lms_fixtures import CLIENT_ID, CLIENT_SECRET
from structlog.testing import capture_logs

from airflow_provider_canvas.canvas.hooks.canvas import (
    SCOPE_GET_ACCOUNT,
    SCOPE_GET_SSO_SETTINGS,
    SCOPE_PUT_SSO_SETTINGS,
    CanvasHook,
)
from airflow_provider_canvas.canvas.operators.accounts import (
    CanvasAccountsOperator,
    CanvasSsoSettingsOperator,
    read_json_lines,
    summarize_accounts,
)
from airflow_provider_canvas.exceptions import LmsConfigurationError, LmsNotFoundError, LmsPermissionError
from airflow_provider_canvas.testing import LmsEmulator

FAST = {"backoff_seconds": 0.01, "max_backoff_seconds": 0.05}
PRODUCTION_SSO = {
    "login_handle_name": "Uniqname",
    "change_password_url": "https://password.example.edu/",
    "auth_discovery_url": "https://login.example.edu/canvas/discovery",
    "unknown_user_url": "https://example.edu/no-account",
}
TEST_SSO = {
    "login_handle_name": "Uniqname",  # same as production: must not be sent
    "auth_discovery_url": "https://login-test.example.edu/canvas/discovery",
    "change_password_url": "",  # unset on test
    # unknown_user_url absent: left as it is
}


def _connect(emu: LmsEmulator, make_connection: Callable[..., str], conn_id: str, **client: Any) -> str:
    """A canvas connection to `emu` holding live tokens."""
    emu.canvas.register_client(CLIENT_ID, CLIENT_SECRET, **client)
    issued = emu.canvas.issue_tokens(CLIENT_ID)
    # The leaky bucket is exercised on purpose elsewhere; here pacing would only slow the tests.
    emu.canvas.bucket_drain_per_second = 1_000_000.0
    return make_connection(
        conn_id,
        "canvas",
        emu.url,
        emu.connection_extra("canvas", issued),
        login=CLIENT_ID,
        password=CLIENT_SECRET,
    )


@pytest.fixture
def beta_emulator() -> Iterator[LmsEmulator]:
    with LmsEmulator() as emu:
        yield emu


@pytest.fixture
def instances(emulator, beta_emulator, make_connection) -> dict[str, LmsEmulator]:
    """canvas_test and canvas_beta, both just refreshed from production."""
    emus = {"canvas_test": emulator, "canvas_beta": beta_emulator}
    for conn_id, emu in emus.items():
        _connect(emu, make_connection, conn_id)
        emu.canvas.add_account(1, "University", sis_account_id="UNIV")
        emu.canvas.add_account(2, "College of Engineering", parent_account_id=1)
        emu.canvas.set_sso_settings(1, **PRODUCTION_SSO)
    return emus


def _puts(emu: LmsEmulator) -> list:
    return [r for r in emu.api_requests if r.method == "PUT"]


def _sso(conn_id: str, **kwargs: Any) -> CanvasSsoSettingsOperator:
    kwargs.setdefault("settings", TEST_SSO)
    kwargs.setdefault("account_id", 1)
    return CanvasSsoSettingsOperator(
        task_id=f"sso_{conn_id}", canvas_conn_id=conn_id, hook_params=FAST, **kwargs
    )


# Accounts ---------------------------------------------------------------------------------------


def test_10000_account_tree_to_json_lines_each_account_once_memory_flat(emulator, make_connection, tmp_path):
    conn_id = _connect(emulator, make_connection, "canvas_prod")
    emulator.canvas.generate_account_tree(10_000, root_id=1, fanout=10)
    emulator.canvas.per_page_clamp = 50
    emulator.canvas.include_last_link = False
    CanvasHook(conn_id).get_json("/api/v1/accounts/1/sub_accounts", params={"recursive": "true"})  # warm
    emulator.reset_records()
    target = tmp_path / "out" / "accounts.jsonl"
    operator = CanvasAccountsOperator(
        task_id="tree",
        canvas_conn_id=conn_id,
        mode="sub_accounts",
        account_id=1,
        include_root=True,
        output_path=str(target),
        xcom_max_accounts=0,
    )

    started = time.perf_counter()
    tracemalloc.start()
    result = operator.execute({})
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    elapsed = time.perf_counter() - started

    pages = [r for r in emulator.api_requests if r.path.endswith("/sub_accounts")]
    assert result == {
        "mode": "sub_accounts",
        "account_id": 1,
        "count": 10_000,
        "by_workflow_state": {"active": 10_000},
        "path": str(target),
        "accounts": None,
    }
    assert len(pages) == 200
    ids = [account["id"] for account in read_json_lines(target)]
    assert ids[0] == 1  # the root first
    assert sorted(ids) == list(range(1, 10_001))  # every account exactly once
    assert [p.name for p in target.parent.iterdir()] == ["accounts.jsonl"]  # no temp file left
    # Holding these accounts takes ~7 MB (see test_canvas_hook); streaming stays at a page.
    assert peak < 1_500_000, peak
    summary = summarize_accounts(read_json_lines(target))
    assert summary["by_depth"] == {"0": 1, "1": 10, "2": 100, "3": 1_000, "4": 8_889}
    print(
        f"\n10,000 accounts to JSON Lines: {len(pages)} pages, {elapsed:.2f}s, "
        f"{target.stat().st_size / 1e6:.1f} MB file, tracemalloc peak {peak / 1e6:.2f} MB"
    )


def test_large_result_to_an_object_storage_path(emulator, make_connection, tmp_path):
    conn_id = _connect(emulator, make_connection, "canvas_prod")
    emulator.canvas.generate_account_tree(300, root_id=1)
    url = f"file://{tmp_path}/bucket/accounts.jsonl"

    result = CanvasAccountsOperator(
        task_id="tree",
        canvas_conn_id=conn_id,
        mode="sub_accounts",
        account_id="sis_account_id:ROOT-1",
        output_path=url,
        xcom_max_accounts=10,
    ).execute({})

    assert result["path"] == url
    assert result["count"] == 299
    assert result["accounts"] is None
    assert sorted(a["id"] for a in read_json_lines(url)) == list(range(2, 301))
    assert [p.name for p in (tmp_path / "bucket").iterdir()] == ["accounts.jsonl"]


def test_small_results_go_to_xcom(emulator, make_connection, tmp_path):
    conn_id = _connect(emulator, make_connection, "canvas_prod")
    emulator.canvas.generate_account_tree(30, root_id=1)
    emulator.canvas.add_account(100, "Other root")

    one = CanvasAccountsOperator(task_id="a", canvas_conn_id=conn_id, account_id="sis_account_id:A5").execute(
        {}
    )
    administered = CanvasAccountsOperator(task_id="b", canvas_conn_id=conn_id, mode="administered").execute(
        {}
    )
    children = CanvasAccountsOperator(
        task_id="c",
        canvas_conn_id=conn_id,
        mode="sub_accounts",
        account_id="1",  # as a template renders it
        recursive=False,
        output_path=str(tmp_path / "unused.jsonl"),
    ).execute({})

    assert [a["id"] for a in one["accounts"]] == [5]
    assert one["path"] is None
    assert [a["id"] for a in administered["accounts"]] == [1, 100]
    assert children["count"] == 10  # fanout 10
    assert children["path"] is None
    assert not (tmp_path / "unused.jsonl").exists()
    json.dumps([one, administered, children])  # XCom-serialisable as is


def test_too_many_accounts_for_xcom_without_a_path_is_a_clear_error(emulator, make_connection):
    conn_id = _connect(emulator, make_connection, "canvas_prod")
    emulator.canvas.generate_account_tree(50, root_id=1)

    with pytest.raises(
        LmsConfigurationError, match=r"more than 20 accounts: too many for XCom\. Set output_path"
    ):
        CanvasAccountsOperator(
            task_id="t", canvas_conn_id=conn_id, mode="sub_accounts", account_id=1, xcom_max_accounts=20
        ).execute({})


def test_unknown_account_says_which_account_on_which_instance(emulator, make_connection, tmp_path):
    conn_id = _connect(emulator, make_connection, "canvas_prod")
    emulator.canvas.add_account(1, "Root")

    with pytest.raises(LmsNotFoundError, match="'canvas_prod' has no account 404404"):
        CanvasAccountsOperator(
            task_id="t",
            canvas_conn_id=conn_id,
            mode="sub_accounts",
            account_id=404404,
            output_path=str(tmp_path / "a.jsonl"),
            xcom_max_accounts=0,
        ).execute({})

    assert list(tmp_path.iterdir()) == []


# SSO settings -----------------------------------------------------------------------------------


def test_sso_restore_on_two_instances_then_second_run_changes_nothing(instances):
    expected = {
        **PRODUCTION_SSO,
        "auth_discovery_url": TEST_SSO["auth_discovery_url"],
        "change_password_url": None,
    }

    first = {conn_id: _sso(conn_id).execute({}) for conn_id in instances}

    for conn_id, emu in instances.items():
        assert first[conn_id]["changed"] is True
        assert first[conn_id]["changes"] == {
            "auth_discovery_url": TEST_SSO["auth_discovery_url"],
            "change_password_url": None,
        }
        assert first[conn_id]["before"] == PRODUCTION_SSO
        assert first[conn_id]["after"] == expected
        assert emu.canvas.get_sso_settings(1) == expected
        (write,) = emu.canvas.sso_writes  # one PUT, with only the keys that differed
        assert write.changes == {
            "auth_discovery_url": TEST_SSO["auth_discovery_url"],
            "change_password_url": None,
        }

    with capture_logs() as logs:
        second = {conn_id: _sso(conn_id).execute({}) for conn_id in instances}

    for conn_id, emu in instances.items():
        assert second[conn_id]["changed"] is False
        assert second[conn_id]["changes"] == {}
        assert len(emu.canvas.sso_writes) == 1
        assert len(_puts(emu)) == 1
    said = [entry["event"] for entry in logs]
    assert sum("already as desired: nothing to change" in line for line in said) == 2, said


def test_sso_dry_run_reads_and_reports_but_writes_nothing(instances):
    emu = instances["canvas_test"]

    result = _sso("canvas_test", dry_run=True).execute({})

    assert result["dry_run"] is True
    assert result["changed"] is False
    assert set(result["changes"]) == {"auth_discovery_url", "change_password_url"}
    assert _puts(emu) == []
    assert emu.canvas.sso_writes == []
    assert emu.canvas.get_sso_settings(1) == PRODUCTION_SSO


def test_sso_missing_put_scope_names_the_scope(emulator, make_connection):
    conn_id = _connect(
        emulator, make_connection, "canvas_test", scopes=[SCOPE_GET_ACCOUNT, SCOPE_GET_SSO_SETTINGS]
    )
    emulator.canvas.add_account(1, "University")
    emulator.canvas.set_sso_settings(1, **PRODUCTION_SSO)

    with pytest.raises(LmsPermissionError) as raised:
        _sso(conn_id).execute({})

    message = str(raised.value)
    assert raised.value.required_scope == SCOPE_PUT_SSO_SETTINGS
    assert f"the developer key lacks scope {SCOPE_PUT_SSO_SETTINGS}" in message
    assert "CanvasSsoSettingsOperator task uses the developer-key scopes" in message
    assert emulator.canvas.sso_writes == []


def test_sso_refuses_a_sub_account(instances):
    emu = instances["canvas_test"]

    with pytest.raises(LmsConfigurationError, match=r"is a sub-account .* nothing was changed"):
        _sso("canvas_test", account_id=2).execute({})

    assert [r.path for r in emu.api_requests] == ["/api/v1/accounts/2"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"settings": {"auth_discovery_url": "https://x.edu", "login_url": "https://x.edu"}}, "login_url"),
        ({"settings": {"auth_discovery_url": "login-test.example.edu"}}, "absolute http"),
        ({"settings": {}}, "no SSO settings given"),
        ({"settings": "not json"}, "render_template_as_native_obj"),
        ({"account_id": "root"}, "account id must be"),
    ],
)
def test_sso_bad_input_is_refused_before_any_request(instances, kwargs, message):
    emu = instances["canvas_test"]

    with pytest.raises(LmsConfigurationError, match=message):
        _sso("canvas_test", **kwargs).execute({})

    assert emu.api_requests == []


def test_sso_unknown_account_is_a_clear_error_before_any_write(instances):
    emu = instances["canvas_test"]

    with pytest.raises(LmsNotFoundError, match="'canvas_test' has no account 'sis_account_id:NOPE'"):
        _sso("canvas_test", account_id="sis_account_id:NOPE").execute({})

    assert _puts(emu) == []


def test_connection_of_the_wrong_type_is_refused_before_any_request(emulator, make_connection):
    conn_id = make_connection("canvas_test", "http", emulator.url, {}, login="a", password="b")

    with pytest.raises(LmsConfigurationError, match="needs a connection of type 'canvas'"):
        _sso(conn_id).execute({})

    assert emulator.api_requests == []


def test_sso_restore_survives_403_and_429_throttling(instances):
    emu = instances["canvas_beta"]
    emu.throttle_next("canvas", 2, status=403)  # the account check and the GET are throttled
    result = _sso("canvas_beta").execute({})
    assert result["changed"] is True

    emu.canvas.set_sso_settings(1, **PRODUCTION_SSO)  # the next refresh from production
    emu.throttle_next("canvas", 3, status=429, retry_after=0)
    assert _sso("canvas_beta").execute({})["changed"] is True

    statuses = [r.status for r in emu.api_requests]
    assert statuses.count(403) == 2
    assert statuses.count(429) == 3
    assert len(emu.canvas.sso_writes) == 2


def _fail_first_put(emu: LmsEmulator, mocker, status: int = 502) -> None:
    original = CanvasHook.update_sso_settings
    calls = {"n": 0}

    def update(hook: CanvasHook, account_id: Any, settings: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 1:
            emu.fail_next("canvas", 1, status)  # the PUT itself answers 5xx, before Canvas applies it
        return original(hook, account_id, settings)

    mocker.patch.object(CanvasHook, "update_sso_settings", update)


def test_5xx_on_the_put_ends_with_the_desired_settings_written_once(instances, mocker):
    emu = instances["canvas_test"]
    _fail_first_put(emu, mocker)

    result = _sso("canvas_test").execute({})

    assert result["changed"] is True
    assert emu.canvas.get_sso_settings(1)["auth_discovery_url"] == TEST_SSO["auth_discovery_url"]
    assert len(emu.canvas.sso_writes) == 1
    assert [r.status for r in _puts(emu)] == [502, 200]


def test_5xx_on_the_put_is_followed_by_a_get_before_any_second_put(instances, mocker):
    emu = instances["canvas_test"]
    _fail_first_put(emu, mocker)

    _sso("canvas_test").execute({})

    calls = [(r.method, r.path, r.status) for r in emu.api_requests]
    assert calls[-3:] == [
        ("PUT", "/api/v1/accounts/1/sso_settings", 502),
        ("GET", "/api/v1/accounts/1/sso_settings", 200),
        ("PUT", "/api/v1/accounts/1/sso_settings", 200),
    ]


def test_templated_fields_serve_several_instances(instances):
    context = {"params": {"account": "sis_account_id:UNIV", "discovery": "https://login-beta.example.edu/d"}}
    operator = CanvasSsoSettingsOperator(
        task_id="templated",
        canvas_conn_id="canvas_{{ params.get('instance', 'beta') }}",
        account_id="{{ params.account }}",
        settings={"auth_discovery_url": "{{ params.discovery }}"},
        hook_params=FAST,
    )
    operator.render_template_fields(context)

    result = operator.execute(context)

    assert operator.canvas_conn_id == "canvas_beta"
    assert result["account_id"] == 1  # the SIS id resolved to the root account's id
    assert instances["canvas_beta"].canvas.get_sso_settings(1)["auth_discovery_url"] == (
        "https://login-beta.example.edu/d"
    )
    assert instances["canvas_test"].canvas.sso_writes == []


def test_inventory_file_summary(emulator, make_connection, tmp_path: Path):
    conn_id = _connect(emulator, make_connection, "canvas_prod")
    emulator.canvas.add_account(1, "Root")
    emulator.canvas.add_account(2, "A", parent_account_id=1)
    emulator.canvas.add_account(3, "B", parent_account_id=2, workflow_state="deleted")  # never listed
    emulator.canvas.add_account(4, "C", parent_account_id=2)

    result = CanvasAccountsOperator(
        task_id="t",
        canvas_conn_id=conn_id,
        mode="sub_accounts",
        account_id=1,
        include_root=True,
        output_path=str(tmp_path / "inv.jsonl"),
        xcom_max_accounts=0,
    ).execute({})

    assert summarize_accounts(read_json_lines(result["path"])) == {
        "count": 3,
        "by_workflow_state": {"active": 3},
        "by_depth": {"0": 1, "1": 1, "2": 1},
        "max_depth": 2,
    }


def test_the_sso_dag_instances_drive_one_operator_per_instance(instances, mocker):
    """What the DAG's mapped task does: its instances task's kwargs, one operator each."""
    spec = importlib.util.spec_from_file_location(
        "sso_dag", Path(__file__).parents[2] / "dags" / "canvas_sso_settings_restore.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    mapping = {
        "canvas_test": {
            "account_id": 1,
            "settings": {"auth_discovery_url": "https://login-test.example.edu/d"},
        },
        "canvas_beta": {
            "account_id": "sis_account_id:UNIV",
            "settings": {"auth_discovery_url": "https://login-beta.example.edu/d"},
        },
    }
    mocker.patch.object(module.Variable, "get", return_value=mapping)  # the scheduled run's source
    task = module.canvas_sso_settings_restore().get_task("instances")

    for dry_run in (True, False, False):
        kwargs = task.python_callable(params={"instances": module.EXAMPLE_INSTANCES, "dry_run": dry_run})
        results = [
            CanvasSsoSettingsOperator(task_id=f"restore_{i}", hook_params=FAST, **k).execute({})
            for i, k in enumerate(kwargs)
        ]
        if dry_run:
            assert [r["changed"] for r in results] == [False, False]
            assert [r["changes"] != {} for r in results] == [True, True]

    assert [r["changed"] for r in results] == [False, False]  # the second real run
    for conn_id, emu in instances.items():
        wanted = mapping[conn_id]["settings"]["auth_discovery_url"]
        assert emu.canvas.get_sso_settings(1)["auth_discovery_url"] == wanted
        assert len(emu.canvas.sso_writes) == 1


# The example DAGs, run in-process with dag.test() ------------------------------------------------

DAGS = Path(__file__).parents[2] / "dags"


def _dag_under_test(name: str, tmp_path: Path, monkeypatch) -> Any:
    # dag.test() serialises the DAG from the dags-folder bundle: point that at a folder with this DAG.
    from airflow import settings

    folder = tmp_path / "dags"
    folder.mkdir(exist_ok=True)
    shutil.copy(DAGS / f"{name}.py", folder)
    monkeypatch.setattr(settings, "DAGS_FOLDER", str(folder))
    spec = importlib.util.spec_from_file_location(f"{name}_{uuid.uuid4().hex}", folder / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return getattr(module, name)()


def test_sso_dag_restores_two_instances_then_reports_no_change(instances, tmp_path, monkeypatch):
    dag = _dag_under_test("canvas_sso_settings_restore", tmp_path, monkeypatch)
    conf = {
        "instances": {
            conn_id: {
                "account_id": 1,
                "settings": {"auth_discovery_url": f"https://login.{conn_id}.example.edu/d"},
            }
            for conn_id in instances
        },
        "dry_run": False,
    }

    started = time.perf_counter()
    first = dag.test(run_conf=conf)
    second = dag.test(run_conf=conf)
    elapsed = time.perf_counter() - started

    assert first.state == DagRunState.SUCCESS and second.state == DagRunState.SUCCESS
    mapped = [ti for ti in second.get_task_instances() if ti.task_id == "restore_sso_settings"]
    assert sorted(ti.rendered_map_index for ti in mapped) == ["canvas_beta", "canvas_test"]
    assert {ti.state for ti in mapped} == {"success"}
    for conn_id, emu in instances.items():
        assert (
            emu.canvas.get_sso_settings(1)["auth_discovery_url"] == f"https://login.{conn_id}.example.edu/d"
        )
        assert len(emu.canvas.sso_writes) == 1  # the second run wrote nothing
    print(f"\ncanvas_sso_settings_restore: two dag.test() runs over two instances in {elapsed:.1f}s")


def test_inventory_dag_writes_the_tree_and_summarises_it(emulator, make_connection, tmp_path, monkeypatch):
    _connect(emulator, make_connection, "canvas_default")
    emulator.canvas.generate_account_tree(1_111, root_id=1, fanout=10)
    dag = _dag_under_test("canvas_account_inventory", tmp_path, monkeypatch)

    run = dag.test(run_conf={"output_dir": str(tmp_path / "inventory")})

    assert run.state == DagRunState.SUCCESS
    (written,) = (tmp_path / "inventory").iterdir()
    assert written.name.startswith("canvas_accounts_") and written.suffix == ".jsonl"
    summary = summarize_accounts(read_json_lines(written))
    assert summary["count"] == 1_111
    assert summary["by_depth"] == {"0": 1, "1": 10, "2": 100, "3": 1_000}
