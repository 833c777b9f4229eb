"""Scope strings: the accepted forms, the Canvas form's groups, wildcards, and the report formats."""

from __future__ import annotations

import json

import pytest

from airflow_provider_canvas.canvas.hooks.canvas import (
    SCOPE_GET_ACCOUNT,
    SCOPE_GET_SSO_SETTINGS,
    SCOPE_LIST_SUB_ACCOUNTS,
    SCOPE_PUT_SSO_SETTINGS,
)
from airflow_provider_canvas.cli.scopes import (
    ScopeReport,
    brightspace_covers,
    format_report,
    group_of,
)
from airflow_provider_canvas.common.connection import parse_scopes
from airflow_provider_canvas.exceptions import LmsConfigurationError


def test_canvas_scopes_split_on_spaces_and_dedupe():
    given = [f"{SCOPE_GET_ACCOUNT} {SCOPE_PUT_SSO_SETTINGS}", SCOPE_GET_ACCOUNT, "url:POST|/api/graphql"]
    assert parse_scopes("canvas", given) == [
        SCOPE_GET_ACCOUNT,
        SCOPE_PUT_SSO_SETTINGS,
        "url:POST|/api/graphql",
    ]


@pytest.mark.parametrize(
    "bad",
    [
        "GET|/api/v1/accounts/:id",  # no url: prefix
        "url:GET/api/v1/accounts/:id",  # no bar
        "url:get|/api/v1/accounts",  # verb in lower case
        "url:FETCH|/api/v1/accounts",  # no such verb
        "url:GET|api/v1/accounts",  # relative path
        "url:GET|/api/v1/a|b",  # two bars
        "datahub:dataexports:*",  # a Brightspace scope
    ],
)
def test_malformed_canvas_scopes_are_refused_with_the_form(bad):
    with pytest.raises(LmsConfigurationError) as raised:
        parse_scopes("canvas", [SCOPE_GET_ACCOUNT, bad])
    assert repr(bad) in str(raised.value) and "url:VERB|/path" in str(raised.value)


def test_brightspace_scopes():
    assert parse_scopes("brightspace", ["datahub:dataexports:* reporting:job:create"]) == [
        "datahub:dataexports:*",
        "reporting:job:create",
    ]
    for bad in ("datahub:dataexports", "url:GET|/d2l/api", "core:*:*:*"):
        with pytest.raises(LmsConfigurationError, match="group:resource:action"):
            parse_scopes("brightspace", [bad])


def test_groups_are_those_of_the_developer_key_form():
    assert group_of(SCOPE_GET_ACCOUNT) == group_of(SCOPE_LIST_SUB_ACCOUNTS) == "Accounts"
    # Canvas documents SSO settings under Authentication Providers, and groups them there.
    assert group_of(SCOPE_GET_SSO_SETTINGS) == group_of(SCOPE_PUT_SSO_SETTINGS) == "Authentication Providers"
    assert group_of("url:GET|/api/v1/courses/:id").startswith("Other")
    assert group_of("reporting:job:create") == "reporting"


def test_brightspace_wildcards():
    assert brightspace_covers(["datahub:dataexports:*"], "datahub:dataexports:read")
    assert brightspace_covers(["core:*:*"], "core:users:read")
    assert not brightspace_covers(["datahub:dataexports:read"], "datahub:dataexports:download")
    assert not brightspace_covers(["datahub:*"], "datahub:dataexports:read")


def _report() -> ScopeReport:
    report = ScopeReport(source="the DAGs in dags")
    report.used_by[SCOPE_PUT_SSO_SETTINGS].add("sso.restore")
    report.used_by[SCOPE_GET_ACCOUNT].update({"sso.restore", "inventory.read"})
    report.used_by["datahub:dataexports:read"].add("bds.pull")
    report.undeclared.add("bds.load")
    report.import_errors["dags/broken.py"] = "Traceback...\nImportError: nothing"
    return report


def test_text_format_groups_scopes_one_a_line_with_their_users():
    lines = format_report(_report()).splitlines()

    canvas = lines.index("Canvas developer key (Admin > Developer Keys > API key > Enforce Scopes):")
    assert lines[canvas + 1 : canvas + 7] == [
        "  Accounts",
        f"    {SCOPE_GET_ACCOUNT}",
        "        used by inventory.read, sso.restore",
        "  Authentication Providers",
        f"    {SCOPE_PUT_SSO_SETTINGS}",
        "        used by sso.restore",
    ]
    assert "  datahub" in lines and "    datahub:dataexports:read" in lines
    assert any("declare no required scopes" in line and "bds.load" in line for line in lines)
    assert (
        lines[-1]
        == "NOT READ (import error, its operators are unknown): dags/broken.py: ImportError: nothing"
    )


def test_list_and_json_formats():
    report = _report()
    assert format_report(report, "list").splitlines() == sorted(
        [SCOPE_GET_ACCOUNT, SCOPE_PUT_SSO_SETTINGS, "datahub:dataexports:read"]
    )
    as_json = json.loads(format_report(report, "json"))
    assert as_json["canvas"] == {
        "Accounts": [SCOPE_GET_ACCOUNT],
        "Authentication Providers": [SCOPE_PUT_SSO_SETTINGS],
    }
    assert as_json["brightspace"] == {"datahub": ["datahub:dataexports:read"]}
    assert as_json["undeclared"] == ["bds.load"]
