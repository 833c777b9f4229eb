"""One version number everywhere, a changelog entry for it, README links that lead to real pages, and
docs that name every connection field, error class and operator the package has."""

from __future__ import annotations

import re
from importlib.metadata import version
from pathlib import Path

import tomllib

from airflow_provider_canvas import __version__
from airflow_provider_canvas.get_provider_info import get_provider_info

ROOT = Path(__file__).resolve().parents[2]
BLOB = "https://github.com/airflow-provider-canvas/airflow-provider-canvas/blob/main/"


def test_the_package_version_is_the_one_pyproject_installs_and_airflow_is_told():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert "version" not in project and "version" in project["dynamic"]
    assert version("airflow-provider-canvas") == __version__
    assert get_provider_info()["versions"] == [__version__]


def test_the_changelog_has_a_section_for_the_package_version_and_one_for_what_is_unreleased():
    headings = re.findall(r"^## (\S+)", (ROOT / "CHANGELOG.md").read_text(), re.MULTILINE)
    assert headings[0] == "Unreleased"
    assert __version__ in headings


def test_readme_links_into_the_repository_name_files_that_exist():
    targets = re.findall(r"\]\(([^)\s]+)\)", (ROOT / "README.md").read_text())
    inside = [t.removeprefix(BLOB) for t in targets if t.startswith(BLOB)]
    assert "docs/troubleshooting.md" in inside and "CHANGELOG.md" in inside
    assert [path for path in inside if not (ROOT / path.split("#")[0]).is_file()] == []


def test_docs_conf_reads_the_package_version():
    # The build reads __init__.py as text (no Airflow import); the pattern must keep matching it.
    text = (ROOT / "airflow_provider_canvas" / "__init__.py").read_text()
    assert re.search(r'^__version__ = "([^"]+)"', text, re.MULTILINE).group(1) == __version__


def test_each_connection_page_names_every_field_of_its_form():
    from airflow_provider_canvas.get_provider_info import CONN_FIELDS

    for conn_type, fields in CONN_FIELDS.items():
        page = (ROOT / "docs" / "connections" / f"{conn_type}.md").read_text()
        assert [name for name in fields if f"`{name}`" not in page] == [], conn_type


def test_the_troubleshooting_page_names_every_error_class():
    import airflow_provider_canvas.exceptions as exceptions

    page = (ROOT / "docs" / "troubleshooting.md").read_text()
    errors = [name for name, value in vars(exceptions).items() if isinstance(value, type) and name[0] != "_"]
    errors = [name for name in errors if issubclass(getattr(exceptions, name), exceptions.LmsError)]
    assert len(errors) >= 17
    assert [name for name in errors if f"`{name}`" not in page] == []


def test_the_operator_pages_name_every_operator_sensor_and_trigger_airflow_is_told_of():
    import importlib
    import inspect

    pages = " ".join(p.read_text() for p in (ROOT / "docs" / "operators").glob("*.md"))
    info = get_provider_info()
    modules = [
        m for kind in ("operators", "sensors", "triggers") for e in info[kind] for m in e["python-modules"]
    ]
    classes = {
        name
        for module in modules
        for name, value in vars(importlib.import_module(module)).items()
        if inspect.isclass(value) and value.__module__ == module and not name.startswith("_")
    }
    assert {"CanvasAccountsOperator", "CanvasDataLoadOperator", "BrightspaceNewExtractTrigger"} <= classes
    assert sorted(name for name in classes if f"`{name}" not in pages) == []
