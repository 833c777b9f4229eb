"""One version number everywhere, a changelog entry for it, and README links that lead to real pages."""

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
