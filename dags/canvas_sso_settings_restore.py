"""Put back the SSO settings of non-production Canvas instances after Instructure refreshes them.

Instructure copies production over the beta instance every week and over the test instance with
each release, and production's ``auth_discovery_url`` comes along: test and beta then send people to
the production login. Each run checks, for every instance (one Airflow connection each), that the
account is the root account, reads its SSO settings and changes only those that differ. A run after
which nothing differs writes nothing and says so.

Where the desired settings come from: the ``instances`` param of a manual trigger, or, when it is
left at the example below, the Airflow Variable ``canvas_sso_settings_restore`` (JSON of the same
shape). The example itself is never applied. An empty value unsets a setting; a setting left out is
left alone. The developer key needs the scopes ``url:GET|/api/v1/accounts/:id``,
``url:GET|/api/v1/accounts/:account_id/sso_settings`` and
``url:PUT|/api/v1/accounts/:account_id/sso_settings``.
"""

from __future__ import annotations

from typing import Any

import pendulum
from airflow.sdk import Param, Variable, dag, task
from airflow.sdk.exceptions import AirflowSkipException

from airflow_provider_canvas.canvas.hooks.canvas import normalize_account_id, validate_sso_settings
from airflow_provider_canvas.canvas.operators.accounts import CanvasSsoSettingsOperator
from airflow_provider_canvas.exceptions import LmsConfigurationError
from airflow_provider_canvas.setup_check import SETUP_GUIDE

VARIABLE = "canvas_sso_settings_restore"

#: {connection id: {"account_id": root account, "settings": {...}}}: shown in the trigger form.
EXAMPLE_INSTANCES: dict[str, Any] = {
    "canvas_test": {
        "account_id": 1,
        "settings": {
            "auth_discovery_url": "https://login-test.example.edu/canvas/discovery",
            "change_password_url": "https://password-test.example.edu/",
        },
    },
    "canvas_beta": {
        "account_id": 1,
        "settings": {
            "auth_discovery_url": "https://login-beta.example.edu/canvas/discovery",
            "change_password_url": "https://password-beta.example.edu/",
        },
    },
}


def instance_kwargs(instances: Any, *, dry_run: bool) -> list[dict[str, Any]]:
    """One CanvasSsoSettingsOperator's arguments per instance, all checked before any instance runs."""
    if not isinstance(instances, dict) or not instances:
        raise LmsConfigurationError(
            "instances must be a non-empty JSON object {connection id: {account_id, settings}}"
        )
    kwargs = []
    for conn_id, spec in sorted(instances.items()):
        if not isinstance(spec, dict) or set(spec) != {"account_id", "settings"}:
            raise LmsConfigurationError(
                f"instance {conn_id!r}: expected exactly the keys account_id and settings, got {spec!r}"
            )
        try:
            normalize_account_id(spec["account_id"])
            validate_sso_settings(spec["settings"])
        except LmsConfigurationError as err:
            raise LmsConfigurationError(f"instance {conn_id!r}: {err}") from None
        kwargs.append(
            {
                "canvas_conn_id": conn_id,
                "account_id": spec["account_id"],
                "settings": spec["settings"],
                "dry_run": dry_run,
            }
        )
    return kwargs


@dag(
    # Monday morning: after the weekly beta refresh. Adjust to when your instances are refreshed.
    schedule="0 6 * * 1",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["canvas", "sso"],
    doc_md=__doc__,
    params={
        "instances": Param(
            EXAMPLE_INSTANCES,
            type="object",
            description=f"{{connection id: {{account_id, settings}}}}. Left as this example, the "
            f"Variable {VARIABLE} is used instead.",
        ),
        "dry_run": Param(False, type="boolean", description="Compare and log only; write nothing."),
    },
)
def canvas_sso_settings_restore() -> None:
    @task
    def instances(params: dict[str, Any]) -> list[dict[str, Any]]:
        mapping = params["instances"]
        if mapping == EXAMPLE_INSTANCES:
            mapping = Variable.get(VARIABLE, default=None, deserialize_json=True)
            if mapping is None:  # the example values are never applied: skip, and say what to set
                raise AirflowSkipException(
                    f"Not configured yet: set the Airflow Variable {VARIABLE!r} (JSON like the instances "
                    f"param), or trigger with your own instances. See the {SETUP_GUIDE}."
                )
        return instance_kwargs(mapping, dry_run=bool(params["dry_run"]))

    # One mapped task per instance: a failure on test does not stop beta.
    CanvasSsoSettingsOperator.partial(
        task_id="restore_sso_settings",
        map_index_template="{{ task.canvas_conn_id }}",
    ).expand_kwargs(instances())


canvas_sso_settings_restore()
