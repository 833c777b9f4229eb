"""Airflow discovers the provider, its two connection types and their form fields."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import airflow
import jsonschema

from airflow_provider_canvas.get_provider_info import get_provider_info


def _airflow_cli(*args: str) -> list[dict]:
    import sys

    executable = str(Path(sys.executable).parent / "airflow")
    out = subprocess.run([executable, *args, "-o", "json"], check=True, capture_output=True, text=True).stdout
    return json.loads(out[out.index("[") :])


def test_provider_info_is_valid_for_airflow():
    schema = json.loads((Path(airflow.__file__).parent / "provider_info.schema.json").read_text())
    jsonschema.validate(get_provider_info(), schema)


def test_connection_forms_mark_secrets_and_relabel_login():
    for conn_type in get_provider_info()["connection-types"]:
        if conn_type["connection-type"] == "canvas_data":
            continue  # client credentials, no tokens: see the test below
        fields = conn_type["conn-fields"]
        assert fields["refresh_token"]["schema"]["format"] == "password"
        assert fields["access_token"]["schema"]["format"] == "password"
        assert conn_type["ui-field-behaviour"]["relabeling"] == {
            "login": "Client ID",
            "password": "Client secret",
        }


def test_airflow_lists_the_provider_and_both_connection_types():
    providers = {row["package_name"] for row in _airflow_cli("providers", "list")}
    assert "airflow-provider-canvas" in providers
    hooks = {row["connection_type"]: row["class"] for row in _airflow_cli("providers", "hooks")}
    assert hooks["canvas"] == "airflow_provider_canvas.canvas.hooks.canvas.CanvasHook"
    assert hooks["brightspace"] == "airflow_provider_canvas.brightspace.hooks.brightspace.BrightspaceHook"
    assert hooks["canvas_data"] == "airflow_provider_canvas.canvas_data.hooks.canvas_data.CanvasDataHook"


def test_the_canvas_data_form_asks_for_the_dap_client_and_a_namespace_only():
    [form] = [c for c in get_provider_info()["connection-types"] if c["connection-type"] == "canvas_data"]
    assert set(form["conn-fields"]) == {"namespace"}
    assert form["conn-fields"]["namespace"]["schema"]["default"] == "canvas"
    assert form["ui-field-behaviour"]["relabeling"]["password"] == "DAP client secret"
    # The masker hides every field named like a secret: a plain field must not be named so.
    assert not any(word in "namespace" for word in ("token", "secret", "password", "key"))
