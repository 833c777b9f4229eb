"""The Canvas operators' own logic on a mocked hook: validation, scopes, 5xx handling, files, the DAGs."""

from __future__ import annotations

import importlib.util
import json
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pendulum
import pytest
from airflow.sdk.exceptions import AirflowSkipException

from airflow_provider_canvas.canvas.hooks.canvas import (
    SCOPE_GET_ACCOUNT,
    SCOPE_GET_SSO_SETTINGS,
    SCOPE_LIST_ACCOUNTS,
    SCOPE_LIST_SUB_ACCOUNTS,
    SCOPE_PUT_SSO_SETTINGS,
    CanvasHook,
    normalize_account_id,
    validate_sso_settings,
)
from airflow_provider_canvas.canvas.operators._jsonl import JsonLinesWriter
from airflow_provider_canvas.canvas.operators.accounts import (
    CanvasAccountsOperator,
    CanvasSsoSettingsOperator,
    read_json_lines,
    summarize_accounts,
)
from airflow_provider_canvas.exceptions import LmsConfigurationError, LmsError, LmsUnavailableError

DAGS = Path(__file__).parents[3] / "dags"
UNSET = dict.fromkeys(("login_handle_name", "change_password_url", "auth_discovery_url", "unknown_user_url"))
WANTED = {"auth_discovery_url": "https://login-test.example.edu/d"}
PUT_FAILED = LmsUnavailableError("PUT x: HTTP 502 (Bad Gateway)", status=502, url="x")
#: What the hook asks Canvas; everything else in the hook runs.
API_CALLS = ("extra", "close", "get_account", "list_accounts", "list_sub_accounts", "get_sso_settings")
API_CALLS += ("update_sso_settings",)


@pytest.fixture
def hook(mocker) -> Any:
    """The CanvasHook the operators make, its API calls answered by a mock of a root account 1.

    The hook's own logic (SSO reconciliation) runs for real on those answers.
    """
    hook = mocker.MagicMock()
    for name in API_CALLS:
        mocker.patch.object(CanvasHook, name, getattr(hook, name))
    hook.extra.return_value = None
    hook.get_account.return_value = {"id": 1, "name": "Root", "parent_account_id": None}
    hook.get_sso_settings.return_value = {**UNSET, "auth_discovery_url": "https://login.example.edu/d"}
    hook.update_sso_settings.return_value = {**UNSET, **WANTED}
    return hook


def _sso(**kwargs: Any) -> CanvasSsoSettingsOperator:
    kwargs.setdefault("settings", WANTED)
    kwargs.setdefault("account_id", 1)
    return CanvasSsoSettingsOperator(task_id="sso", **kwargs)


# Input ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (1, 1),
        ("42", 42),
        (" 7 ", 7),
        ("sis_account_id:UNIV", "sis_account_id:UNIV"),
        ("sis_account_id:A B", "sis_account_id:A B"),
    ],
)
def test_account_ids_canvas_takes(given, expected):
    assert normalize_account_id(given) == expected


@pytest.mark.parametrize(
    "given", [0, -1, True, None, 1.0, "", "self", "root", "sis_account_id:", "sis_id:X", "1/2"]
)
def test_account_ids_canvas_does_not_take(given):
    with pytest.raises(LmsConfigurationError, match="account id must be"):
        normalize_account_id(given)


def test_sso_settings_validation():
    assert validate_sso_settings(
        {"login_handle_name": " Uniqname ", "change_password_url": "", "unknown_user_url": None}
    ) == {"login_handle_name": "Uniqname", "change_password_url": None, "unknown_user_url": None}
    assert validate_sso_settings({"auth_discovery_url": "http://idp.example.edu:8443/x?y=1"})
    for bad, message in [
        ({"auth_discovery_url": "/relative"}, "absolute http"),
        ({"auth_discovery_url": "https://"}, "absolute http"),
        ({"login_handle_name": 5}, "must be a string or empty"),
        ({"LOGIN_HANDLE_NAME": "x"}, "unknown SSO setting"),
        (["auth_discovery_url"], "must be a mapping"),
    ]:
        with pytest.raises(LmsConfigurationError, match=message):
            validate_sso_settings(bad)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"mode": "tree", "account_id": 1}, "mode must be one of"),
        ({"mode": "administered", "account_id": 1}, "takes no account_id"),
        ({"mode": "sub_accounts"}, "needs an account_id"),
        ({"mode": "account", "account_id": 1, "include_root": True}, "include_root only applies"),
        ({"mode": "account", "account_id": 1, "xcom_max_accounts": -1}, "0 or more"),
    ],
)
def test_accounts_operator_arguments_are_checked_when_the_dag_is_parsed(kwargs, message):
    with pytest.raises(LmsConfigurationError, match=message):
        CanvasAccountsOperator(task_id="t", **kwargs)


def test_no_hook_and_no_connection_at_parse_time(mocker):
    made = mocker.patch("airflow_provider_canvas.canvas.operators.accounts.CanvasHook")
    CanvasAccountsOperator(task_id="a", mode="administered")
    _sso()
    made.assert_not_called()


def test_settings_may_arrive_as_json_text(hook):
    _sso(settings=json.dumps(WANTED)).execute({})
    hook.update_sso_settings.assert_called_once_with(1, WANTED)


# Scopes -----------------------------------------------------------------------------------------


def test_required_scopes_are_listed_on_the_class_and_narrowed_per_task():
    assert CanvasSsoSettingsOperator.required_scopes == (
        SCOPE_GET_ACCOUNT,
        SCOPE_GET_SSO_SETTINGS,
        SCOPE_PUT_SSO_SETTINGS,
    )
    assert set(CanvasAccountsOperator.required_scopes) == {
        SCOPE_GET_ACCOUNT,
        SCOPE_LIST_ACCOUNTS,
        SCOPE_LIST_SUB_ACCOUNTS,
    }
    assert _sso(dry_run=True).required_scopes == (SCOPE_GET_ACCOUNT, SCOPE_GET_SSO_SETTINGS)
    assert _sso(require_root_account=False).required_scopes == (
        SCOPE_GET_SSO_SETTINGS,
        SCOPE_PUT_SSO_SETTINGS,
    )
    assert CanvasAccountsOperator(task_id="a", mode="administered").required_scopes == (SCOPE_LIST_ACCOUNTS,)
    assert CanvasAccountsOperator(
        task_id="b", mode="sub_accounts", account_id=1, include_root=True
    ).required_scopes == (SCOPE_GET_ACCOUNT, SCOPE_LIST_SUB_ACCOUNTS)
    for scope in CanvasSsoSettingsOperator.required_scopes + CanvasAccountsOperator.required_scopes:
        assert scope.startswith(("url:GET|/api/v1/", "url:PUT|/api/v1/"))


def test_a_connection_recording_fewer_scopes_is_warned_about(hook, mocker):
    hook.extra.return_value = f"{SCOPE_GET_ACCOUNT} {SCOPE_GET_SSO_SETTINGS}"
    operator = _sso()
    warning = mocker.spy(operator.log, "warning")

    operator.execute({})

    assert SCOPE_PUT_SSO_SETTINGS in warning.call_args.args[2]


# SSO: what is sent, and a 5xx on the PUT ---------------------------------------------------------


def test_only_differing_keys_are_put_and_absent_keys_left_alone(hook):
    hook.get_sso_settings.return_value = {
        **UNSET,
        "login_handle_name": "Uniqname",
        "auth_discovery_url": "https://login.example.edu/d",
        "unknown_user_url": "https://example.edu/x",
    }
    hook.update_sso_settings.side_effect = lambda _, changes: {
        **hook.get_sso_settings.return_value,
        **changes,
    }

    result = _sso(settings={"login_handle_name": "Uniqname", **WANTED, "change_password_url": ""}).execute({})

    # change_password_url is already unset, login_handle_name already right, unknown_user_url not asked for.
    hook.update_sso_settings.assert_called_once_with(1, WANTED)
    assert result["changes"] == WANTED
    assert result["after"]["unknown_user_url"] == "https://example.edu/x"


def test_a_5xx_put_that_landed_is_not_sent_again(hook):
    hook.update_sso_settings.side_effect = PUT_FAILED
    hook.get_sso_settings.side_effect = [
        {**UNSET, "auth_discovery_url": "https://old.example.edu"},
        {**UNSET, **WANTED},
    ]

    result = _sso().execute({})

    assert result["changed"] is True
    assert result["after"]["auth_discovery_url"] == WANTED["auth_discovery_url"]
    assert hook.update_sso_settings.call_count == 1
    assert hook.get_sso_settings.call_count == 2


def test_a_5xx_put_that_did_not_land_is_sent_once_more(hook):
    hook.update_sso_settings.side_effect = [PUT_FAILED, {**UNSET, **WANTED}]

    assert _sso().execute({})["changed"] is True

    assert hook.update_sso_settings.call_count == 2
    assert hook.get_sso_settings.call_count == 2  # before, and after the failure


def test_two_failed_puts_end_with_a_clear_error(hook):
    hook.update_sso_settings.side_effect = [PUT_FAILED, PUT_FAILED]

    with pytest.raises(LmsUnavailableError, match=r"could not be updated.*run the task again"):
        _sso().execute({})

    assert hook.update_sso_settings.call_count == 2


def test_a_put_canvas_answers_with_other_values_fails(hook):
    hook.update_sso_settings.return_value = {**UNSET, "auth_discovery_url": "https://login.example.edu/d"}

    with pytest.raises(LmsError, match=r"accepted the SSO settings update .* reports other values"):
        _sso().execute({})


def test_a_sub_account_is_refused_before_reading_sso_settings(hook):
    hook.get_account.return_value = {"id": 5, "name": "Dept", "parent_account_id": 1}

    with pytest.raises(LmsConfigurationError, match="sub-account"):
        _sso(account_id=5).execute({})

    hook.get_sso_settings.assert_not_called()
    hook.update_sso_settings.assert_not_called()


# Accounts: XCom or file ---------------------------------------------------------------------------


def _accounts(count: int, fail_after: int | None = None) -> Iterator[dict[str, Any]]:
    for index in range(1, count + 1):
        if fail_after is not None and index > fail_after:
            raise LmsUnavailableError("GET x: HTTP 503", status=503, url="x")
        yield {"id": index, "parent_account_id": None if index == 1 else 1, "workflow_state": "active"}


def test_a_failure_mid_listing_leaves_the_previous_file_and_no_temp_file(hook, tmp_path):
    target = tmp_path / "accounts.jsonl"
    target.write_text("previous run\n")
    hook.list_sub_accounts.return_value = _accounts(1000, fail_after=600)
    operator = CanvasAccountsOperator(
        task_id="t", mode="sub_accounts", account_id=1, output_path=str(target), xcom_max_accounts=10
    )

    with pytest.raises(LmsUnavailableError):
        operator.execute({})

    assert target.read_text() == "previous run\n"
    assert list(tmp_path.iterdir()) == [target]


def test_the_result_spills_to_the_file_only_past_the_xcom_limit(hook, tmp_path):
    target = tmp_path / "a.jsonl"
    operator = CanvasAccountsOperator(
        task_id="t", mode="sub_accounts", account_id=1, output_path=str(target), xcom_max_accounts=5
    )
    hook.list_sub_accounts.return_value = _accounts(5)
    assert operator.execute({})["count"] == 5
    assert not target.exists()

    hook.list_sub_accounts.return_value = _accounts(6)
    result = operator.execute({})

    assert (result["count"], result["path"], result["accounts"]) == (6, str(target), None)
    assert [a["id"] for a in read_json_lines(target)] == [1, 2, 3, 4, 5, 6]


def test_json_lines_writer_keeps_unicode_and_cleans_up(tmp_path):
    target = tmp_path / "deep" / "x.jsonl"
    with JsonLinesWriter(target) as writer:
        writer.write({"name": "Université de Montréal ✓"})
        assert not target.exists()  # nothing under the final name until complete
    assert list(read_json_lines(target)) == [{"name": "Université de Montréal ✓"}]
    assert writer.bytes_written == target.stat().st_size
    assert [p.name for p in target.parent.iterdir()] == ["x.jsonl"]


def test_summary_by_state_and_depth_whatever_the_order():
    accounts = [
        {"id": 4, "parent_account_id": 3, "workflow_state": "active"},
        {"id": 3, "parent_account_id": 1, "workflow_state": "deleted"},
        {"id": 1, "parent_account_id": None, "workflow_state": "active"},
        {"id": 2, "parent_account_id": 1, "workflow_state": "active"},
        {"id": 9, "parent_account_id": 77, "workflow_state": "active"},  # parent outside the listing
    ]
    assert summarize_accounts(accounts) == {
        "count": 5,
        "by_workflow_state": {"active": 4, "deleted": 1},
        "by_depth": {"0": 2, "1": 2, "2": 1},
        "max_depth": 2,
    }
    with pytest.raises(LmsError, match="cycle"):
        summarize_accounts([{"id": 1, "parent_account_id": 2}, {"id": 2, "parent_account_id": 1}])


# The example DAGs ---------------------------------------------------------------------------------


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, DAGS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_example_dags_import_cleanly_and_fast():
    from airflow.dag_processing.dagbag import DagBag

    started = time.perf_counter()
    bag = DagBag(dag_folder=str(DAGS))
    elapsed = time.perf_counter() - started

    assert bag.import_errors == {}
    sso = bag.dags["canvas_sso_settings_restore"]
    inventory = bag.dags["canvas_account_inventory"]
    assert {t.task_id for t in sso.tasks} == {"instances", "restore_sso_settings"}
    assert set(sso.params["instances"]) == {"canvas_test", "canvas_beta"}
    assert sso.params["dry_run"] is False
    assert {t.task_id for t in inventory.tasks} == {"check_setup", "read_account_tree", "summarize"}
    assert elapsed < 10, elapsed  # parsing imports no hook, opens no connection


def test_sso_dag_checks_every_instance_before_any_runs():
    module = _load("canvas_sso_settings_restore")
    good = {"account_id": 1, "settings": {"auth_discovery_url": "https://t.example.edu/d"}}

    kwargs = module.instance_kwargs(
        {"canvas_test": good, "canvas_beta": {**good, "account_id": "2"}}, dry_run=True
    )

    assert kwargs == [
        {"canvas_conn_id": "canvas_beta", "account_id": "2", "settings": good["settings"], "dry_run": True},
        {"canvas_conn_id": "canvas_test", "account_id": 1, "settings": good["settings"], "dry_run": True},
    ]
    for bad, message in [
        ({}, "non-empty"),
        ({"canvas_test": {"settings": {}}}, "exactly the keys"),
        ({"canvas_test": good, "canvas_beta": {**good, "account_id": "beta"}}, "'canvas_beta': account id"),
        ({"canvas_test": {**good, "settings": {"auth_discovery_url": "nope"}}}, "'canvas_test': SSO setting"),
    ]:
        with pytest.raises(LmsConfigurationError, match=message):
            module.instance_kwargs(bad, dry_run=False)


def test_sso_dag_never_applies_its_example_and_reads_the_variable_instead(mocker):
    module = _load("canvas_sso_settings_restore")
    task = module.canvas_sso_settings_restore().get_task("instances")
    variable = mocker.patch.object(module.Variable, "get", return_value=None)
    params = {"instances": module.EXAMPLE_INSTANCES, "dry_run": False}

    with pytest.raises(AirflowSkipException, match="set the Airflow Variable 'canvas_sso_settings_restore'"):
        task.python_callable(params=params)

    mine = {"canvas_beta": {"account_id": 1, "settings": {"auth_discovery_url": "https://b.example.edu/d"}}}
    variable.return_value = mine
    assert [k["canvas_conn_id"] for k in task.python_callable(params=params)] == ["canvas_beta"]
    variable.assert_called_with("canvas_sso_settings_restore", default=None, deserialize_json=True)
    # Instances given at trigger time win over the Variable.
    variable.reset_mock()
    assert task.python_callable(params={"instances": mine, "dry_run": True})[0]["dry_run"] is True
    variable.assert_not_called()


def test_inventory_dag_renders_a_dated_path_per_run(hook):
    module = _load("canvas_account_inventory")
    task = module.canvas_account_inventory().get_task("read_account_tree")
    run_after = pendulum.datetime(2026, 3, 2, 6, 0, tz="UTC")
    params = {"canvas_conn_id": "canvas_prod", "root_account_id": "sis_account_id:UNIV"}
    params |= {"output_dir": "s3://bucket/canvas", "output_conn_id": None}

    task.render_template_fields({"params": params, "dag_run": type("Run", (), {"run_after": run_after})()})

    assert task.canvas_conn_id == "canvas_prod"
    assert task.account_id == "sis_account_id:UNIV"
    assert task.output_path == "s3://bucket/canvas/canvas_accounts_20260302T060000.jsonl"
    assert task.output_conn_id == ""  # "no connection": the default for the URL's scheme


def test_the_hook_reports_a_reconciliation_as_data(hook):
    result = CanvasHook("canvas_test").reconcile_sso_settings("1", WANTED)

    assert (result.conn_id, result.account_id, result.changed, result.dry_run) == (
        "canvas_test",
        1,
        True,
        False,
    )
    assert result.changes == WANTED and result.after["auth_discovery_url"] == WANTED["auth_discovery_url"]
    assert result.to_dict()["before"] == {**UNSET, "auth_discovery_url": "https://login.example.edu/d"}
