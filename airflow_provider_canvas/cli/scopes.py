"""The scopes the provider's operators need: found in DAG files or operator classes, checked, grouped.

Canvas scopes are developer-key scopes (``url:VERB|/path``); Brightspace scopes are OAuth 2.0
scopes (``group:resource:action``).
"""

from __future__ import annotations

import importlib
import inspect
import json
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

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
from airflow_provider_canvas.exceptions import LmsConfigurationError

#: The group each scope is listed under in Canvas's developer key form (Enforce Scopes). Canvas
#: names the group after the API documentation page of the endpoint, which the path does not
#: tell: SSO settings are documented under Authentication Providers.
CANVAS_SCOPE_GROUPS = {
    SCOPE_GET_ACCOUNT: "Accounts",
    SCOPE_LIST_ACCOUNTS: "Accounts",
    SCOPE_LIST_SUB_ACCOUNTS: "Accounts",
    SCOPE_GET_SSO_SETTINGS: "Authentication Providers",
    SCOPE_PUT_SSO_SETTINGS: "Authentication Providers",
    SCOPE_CREATE_SIS_IMPORT: "SIS Imports",
    SCOPE_LIST_SIS_IMPORTS: "SIS Imports",
    SCOPE_GET_SIS_IMPORT: "SIS Imports",
    SCOPE_START_REPORT: "Account Reports",
    SCOPE_GET_REPORT: "Account Reports",
}
_PROVIDER_PACKAGE = "airflow_provider_canvas."


def platform_of(scope: str) -> str:
    return "canvas" if scope.startswith("url:") else "brightspace"


def group_of(scope: str) -> str:
    if platform_of(scope) == "brightspace":
        return scope.split(":", 1)[0]
    return CANVAS_SCOPE_GROUPS.get(scope, "Other (look the endpoint up in the Canvas API docs)")


def brightspace_covers(granted: Iterable[str], wanted: str) -> bool:
    """Whether a granted scope covers ``wanted``; a ``*`` part matches anything."""
    parts = wanted.split(":")
    for scope in granted:
        have = scope.split(":")
        if len(have) == len(parts) and all(h in ("*", w) for h, w in zip(have, parts, strict=True)):
            return True
    return False


@dataclass
class ScopeReport:
    """Which scope is needed by what, and what could not be told."""

    source: str
    #: scope -> the tasks (``dag_id.task_id``) or operator classes that need it
    used_by: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    #: provider tasks or operators that declare no ``required_scopes``
    undeclared: set[str] = field(default_factory=set)
    #: DAG file -> import error: their operators are unknown
    import_errors: dict[str, str] = field(default_factory=dict)

    def scopes(self, platform: str | None = None) -> list[str]:
        return sorted(s for s in self.used_by if platform in (None, platform_of(s)))

    def grouped(self, platform: str) -> dict[str, list[str]]:
        groups: dict[str, list[str]] = defaultdict(list)
        # Within a group, by path then verb: the order of Canvas's form.
        for scope in sorted(self.scopes(platform), key=lambda s: (s.partition("|")[2], s)):
            groups[group_of(scope)].append(scope)
        return dict(sorted(groups.items()))


def scopes_in_dags(dag_folder: str | Path) -> ScopeReport:
    """The scopes of the provider's operators in the DAGs under ``dag_folder``, as Airflow parses them.

    An operator instance narrows its ``required_scopes`` to what its arguments make it call; a
    mapped task's arguments are only known at run time, so it counts with every scope its class
    can use.
    """
    try:
        from airflow.dag_processing.dagbag import DagBag
    except ImportError:  # Airflow before 3.1
        from airflow.models.dagbag import DagBag  # type: ignore[no-redef]

    folder = Path(dag_folder)
    if not folder.exists():
        raise LmsConfigurationError(
            f"DAG folder {str(folder)!r} does not exist: give --dags-folder, or --all for every operator"
        )
    bag = DagBag(dag_folder=str(folder))
    report = ScopeReport(source=f"the DAGs in {folder}")
    report.import_errors = {str(path): str(error) for path, error in bag.import_errors.items()}
    for dag in bag.dags.values():
        for task in dag.tasks:
            operator_class = getattr(task, "operator_class", type(task))
            if not operator_class.__module__.startswith(_PROVIDER_PACKAGE):
                continue
            scopes = getattr(operator_class if task.is_mapped else task, "required_scopes", None)
            _record(report, f"{dag.dag_id}.{task.task_id}", scopes)
    return report


def scopes_of_operators() -> ScopeReport:
    """Every scope any of the provider's operators can use (what Airflow discovers as operators)."""
    from airflow.sdk import BaseOperator

    from airflow_provider_canvas.get_provider_info import get_provider_info

    report = ScopeReport(source="all of the provider's operators")
    for entry in get_provider_info()["operators"]:
        for module_name in entry["python-modules"]:
            module = importlib.import_module(module_name)
            for name, cls in inspect.getmembers(module, inspect.isclass):
                public = not name.startswith("_") and cls.__module__ == module_name
                if public and issubclass(cls, BaseOperator):
                    _record(report, name, getattr(cls, "required_scopes", None))
    return report


def _record(report: ScopeReport, user: str, scopes: Iterable[str] | None) -> None:
    if scopes is None:  # no ``required_scopes`` at all; () means "needs none"
        report.undeclared.add(user)
        return
    for scope in scopes:
        report.used_by[scope].add(user)


def format_report(report: ScopeReport, output: str = "text") -> str:
    """``text``: grouped as Canvas's form shows them; ``list``: one scope a line; ``json``."""
    if output == "list":
        return "\n".join(report.scopes())
    if output == "json":
        return json.dumps(
            {
                "source": report.source,
                "canvas": report.grouped("canvas"),
                "brightspace": report.grouped("brightspace"),
                "used_by": {scope: sorted(users) for scope, users in sorted(report.used_by.items())},
                "undeclared": sorted(report.undeclared),
                "import_errors": report.import_errors,
            },
            indent=2,
        )
    lines = [f"Scopes needed by {report.source}."]
    for platform, where in (
        ("canvas", "Canvas developer key (Admin > Developer Keys > API key > Enforce Scopes)"),
        ("brightspace", "Brightspace OAuth 2.0 app (Admin Tools > Manage Extensibility > OAuth 2.0)"),
    ):
        groups = report.grouped(platform)
        if not groups:
            continue
        lines += ["", f"{where}:"]
        for group, scopes in groups.items():
            lines.append(f"  {group}")
            for scope in scopes:
                lines += [f"    {scope}", f"        used by {', '.join(sorted(report.used_by[scope]))}"]
    if not report.used_by:
        lines += ["", "No operator of this provider that declares scopes was found."]
    if report.undeclared:
        lines += [
            "",
            "These use operators that declare no required scopes (for Brightspace the connection's "
            f"`scopes` apply): {', '.join(sorted(report.undeclared))}",
        ]
    lines += [
        "",
        "Tasks that call CanvasHook or BrightspaceHook directly (e.g. in @task functions) are not "
        "seen here: add the scopes of the hook methods they call.",
    ]
    for path, error in sorted(report.import_errors.items()):
        lines.append(f"NOT READ (import error, its operators are unknown): {path}: {error.splitlines()[-1]}")
    return "\n".join(lines)


def report_for(platform: str | None, dag_folder: str | Path | None) -> ScopeReport:
    """The scopes of the DAGs in ``dag_folder``, or of every operator when it is None."""
    report = scopes_of_operators() if dag_folder is None else scopes_in_dags(dag_folder)
    if platform is not None:
        report.used_by = defaultdict(
            set, {s: users for s, users in report.used_by.items() if platform_of(s) == platform}
        )
    return report
