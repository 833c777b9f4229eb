"""What Airflow discovers about this provider: connection types, hooks, operators, settings."""

from __future__ import annotations

from typing import Any

from airflow_provider_canvas import __version__

_STRING = {"type": ["string", "null"]}


def _secret(label: str, description: str) -> dict[str, Any]:
    return {"label": label, "schema": {**_STRING, "format": "password"}, "description": description}


def _text(label: str, description: str, **schema: Any) -> dict[str, Any]:
    return {"label": label, "schema": {**_STRING, **schema}, "description": description}


# Fields shared by both platforms; each platform adds its own below. No field name may hold a word
# Airflow's secrets masker looks for (token, secret, password, ...) unless its value is a secret:
# the form would show and save ``***`` instead of the default.
_TOKEN_FIELDS: dict[str, dict[str, Any]] = {
    "refresh_token": _secret("Refresh token", "Kept up to date by the hook after every refresh."),
    "access_token": _secret("Access token", "Kept up to date by the hook; may be left empty."),
    "expires_at": _text("Access token expires at", "ISO-8601 UTC, written by the hook; may be left empty."),
    "redirect_uri": _text("Redirect URI", "The developer key's / OAuth app's redirect URI."),
    "expiry_buffer_seconds": {
        "label": "Refresh this many seconds before expiry",
        "schema": {"type": ["integer", "null"], "default": 300, "minimum": 0},
    },
    "lock_conn_id": _text(
        "Token lock connection",
        "Empty: a file lock (one host). Workers on several hosts: the id of a postgres connection "
        "(advisory lock) or a redis connection (expiring lock).",
    ),
}

#: The ``conn-fields`` of each connection type: extra keys, labels, defaults.
CONN_FIELDS: dict[str, dict[str, dict[str, Any]]] = {
    "canvas": {
        **_TOKEN_FIELDS,
        "scopes": _text(
            "Scopes",
            "The developer key's scopes, separated by spaces, e.g. url:GET|/api/v1/accounts/:id",
        ),
    },
    "brightspace": {
        **_TOKEN_FIELDS,
        "oauth_url": _text(
            "Token URL",
            "The OAuth 2.0 token endpoint; D2L's for every instance is the default.",
            default="https://auth.brightspace.com/core/connect/token",
        ),
        "scopes": _text(
            "Scopes",
            "OAuth 2.0 scopes (group:resource:action) separated by spaces.",
            default="datahub:dataexports:* datasets:bds:read",
        ),
        "lp_version": _text("LP API version", "Learning Platform API version.", default="1.49"),
        "bds_api": _text(
            "Data Sets API",
            "datasets (current listing), dataExport (older listing), or auto: datasets from LP 1.43.",
            enum=["auto", "datasets", "dataExport"],
            default="auto",
        ),
    },
    # Canvas Data 2 (Instructure DAP): client credentials only, so no token fields.
    "canvas_data": {
        "namespace": _text(
            "Namespace",
            "The DAP namespace used unless an operator names one: canvas, canvas_logs, catalog, new_quizzes.",
            default="canvas",
        ),
    },
}


def extra_defaults(conn_type: str) -> dict[str, Any]:
    """Every extra field of ``conn_type`` with its default (None where it has none).

    Airflow's edit form offers only the extra keys a connection already holds, so a connection
    written by the provider carries them all: a person can then fill in e.g. ``lock_conn_id``.
    """
    return {name: field["schema"].get("default") for name, field in CONN_FIELDS.get(conn_type, {}).items()}


_UI_BEHAVIOUR: dict[str, Any] = {
    "hidden-fields": ["schema", "port", "extra"],
    "relabeling": {"login": "Client ID", "password": "Client secret"},
}


def get_provider_info() -> dict[str, Any]:
    return {
        "package-name": "airflow-provider-canvas",
        "name": "Canvas LMS and D2L Brightspace",
        "description": "Canvas (Instructure) and Brightspace (D2L) hooks and operators with "
        "OAuth tokens that refresh themselves and are never lost.",
        "versions": [__version__],
        "connection-types": [
            {
                "connection-type": "canvas",
                "hook-class-name": "airflow_provider_canvas.canvas.hooks.canvas.CanvasHook",
                "hook-name": "Canvas LMS",
                "conn-fields": CONN_FIELDS["canvas"],
                "ui-field-behaviour": {
                    **_UI_BEHAVIOUR,
                    "placeholders": {
                        "host": "https://myschool.instructure.com",
                        "login": "Developer key ID, e.g. 10000000000123",
                        "password": "Developer key secret",
                    },
                },
            },
            {
                "connection-type": "brightspace",
                "hook-class-name": "airflow_provider_canvas.brightspace.hooks.brightspace.BrightspaceHook",
                "hook-name": "D2L Brightspace",
                "conn-fields": CONN_FIELDS["brightspace"],
                "ui-field-behaviour": {
                    **_UI_BEHAVIOUR,
                    "placeholders": {
                        "host": "https://myschool.brightspace.com",
                        "login": "OAuth 2.0 client ID",
                        "password": "OAuth 2.0 client secret",
                    },
                },
            },
            {
                "connection-type": "canvas_data",
                "hook-class-name": "airflow_provider_canvas.canvas_data.hooks.canvas_data.CanvasDataHook",
                "hook-name": "Canvas Data 2 (DAP)",
                "conn-fields": CONN_FIELDS["canvas_data"],
                "ui-field-behaviour": {
                    "hidden-fields": ["schema", "port", "extra"],
                    "relabeling": {
                        "host": "API URL",
                        "login": "DAP client ID",
                        "password": "DAP client secret",
                    },
                    "placeholders": {
                        "host": "https://api-gateway.instructure.com (the default when empty)",
                        "login": "From identity.instructure.com, e.g. us-east-1#0123abcd-...",
                        "password": "DAP client secret",
                    },
                },
            },
        ],
        "integrations": [
            {
                "integration-name": "Canvas LMS",
                "external-doc-url": "https://canvas.instructure.com/doc/api/",
                "tags": ["software"],
            },
            {
                "integration-name": "D2L Brightspace",
                "external-doc-url": "https://docs.valence.desire2learn.com/",
                "tags": ["software"],
            },
            {
                "integration-name": "Canvas Data 2",
                "external-doc-url": "https://developerdocs.instructure.com/services/dap",
                "tags": ["software"],
            },
        ],
        "hooks": [
            {
                "integration-name": "Canvas LMS",
                "python-modules": [
                    "airflow_provider_canvas.canvas.hooks.canvas",
                    "airflow_provider_canvas.canvas.hooks.canvas_async",
                ],
            },
            {
                "integration-name": "D2L Brightspace",
                "python-modules": ["airflow_provider_canvas.brightspace.hooks.brightspace"],
            },
            {
                "integration-name": "Canvas Data 2",
                "python-modules": [
                    "airflow_provider_canvas.canvas_data.hooks.canvas_data",
                    "airflow_provider_canvas.canvas_data.hooks.canvas_data_async",
                ],
            },
        ],
        "operators": [
            {
                "integration-name": "Canvas LMS",
                "python-modules": [
                    "airflow_provider_canvas.canvas.operators.accounts",
                    "airflow_provider_canvas.canvas.operators.sis_import",
                    "airflow_provider_canvas.canvas.operators.reports",
                ],
            },
            {
                "integration-name": "D2L Brightspace",
                "python-modules": [
                    "airflow_provider_canvas.brightspace.operators.data_sets",
                    "airflow_provider_canvas.brightspace.operators.ads",
                ],
            },
            {
                "integration-name": "Canvas Data 2",
                "python-modules": [
                    "airflow_provider_canvas.canvas_data.operators.pull",
                    "airflow_provider_canvas.canvas_data.operators.load",
                ],
            },
        ],
        "sensors": [
            {
                "integration-name": "D2L Brightspace",
                "python-modules": ["airflow_provider_canvas.brightspace.sensors.new_extract"],
            },
        ],
        "triggers": [
            {
                "integration-name": "Canvas LMS",
                "python-modules": ["airflow_provider_canvas.canvas.triggers.progress"],
            },
            {
                "integration-name": "D2L Brightspace",
                "python-modules": [
                    "airflow_provider_canvas.brightspace.triggers.ads",
                    "airflow_provider_canvas.brightspace.triggers.new_extract",
                ],
            },
            {
                "integration-name": "Canvas Data 2",
                "python-modules": ["airflow_provider_canvas.canvas_data.triggers.jobs"],
            },
        ],
        "config": {
            "canvas_provider": {
                "description": "Where the Canvas/Brightspace hooks keep token state.",
                "options": {
                    "state_dir": {
                        "description": "Directory for token lock files and the rescue copy of "
                        "refreshed tokens that could not be saved yet. Default: "
                        "$AIRFLOW_HOME/canvas_provider.",
                        "version_added": "0.1.0",
                        "type": "string",
                        "example": "/opt/airflow/canvas_provider",
                        "default": "",
                    },
                    "airflow_api_url": {
                        "description": "Base URL of the Airflow api-server that task code uses "
                        "to save refreshed tokens into connections. Default: derived from "
                        "[core] execution_api_server_url.",
                        "version_added": "0.1.0",
                        "type": "string",
                        "example": "http://airflow-apiserver:8080",
                        "default": "",
                    },
                    "airflow_api_conn_id": {
                        "description": "Connection with the credentials task code uses to save "
                        "refreshed tokens: login/password of an Airflow user allowed to edit "
                        "connections (exchanged at /auth/token for a JWT), or an API token in "
                        "password with login empty (sent as a bearer token). If it does not exist, "
                        "no credentials are sent (enough for SimpleAuthManager with all users admin).",
                        "version_added": "0.1.0",
                        "type": "string",
                        "example": "airflow_api",
                        "default": "airflow_api",
                    },
                    "lock_timeout_seconds": {
                        "description": "How long a refresh waits for another worker's refresh.",
                        "version_added": "0.1.0",
                        "type": "integer",
                        "example": "120",
                        "default": "120",
                    },
                },
            }
        },
    }
