"""What a package index shows of the provider: license, classifiers, project links, a README that renders."""

from __future__ import annotations

import re
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[2]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
HOME = "https://github.com/airflow-provider-canvas/airflow-provider-canvas"


def test_the_license_file_is_the_apache_license_and_is_packaged():
    assert PROJECT["license"] == "Apache-2.0"
    assert PROJECT["license-files"] == ["LICENSE"]
    text = (ROOT / "LICENSE").read_text()
    assert text.lstrip().startswith("Apache License\n") and "Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text


def test_classifiers_say_airflow_provider_and_the_tested_python():
    classifiers = PROJECT["classifiers"]
    assert {"Framework :: Apache Airflow", "Framework :: Apache Airflow :: Provider"} <= set(classifiers)
    assert "Programming Language :: Python :: 3.11" in classifiers  # the version CI runs
    assert "Topic :: Education" in classifiers
    assert PROJECT["requires-python"] == ">=3.10" and "Programming Language :: Python :: 3.10" in classifiers


def test_project_links_point_at_one_home():
    urls = PROJECT["urls"]
    assert {"Homepage", "Source", "Issues", "Documentation"} <= set(urls)
    assert all(url.startswith(HOME) for url in urls.values())


def test_readme_links_work_outside_the_repository():
    # The index renders README.md as the long description, where a relative link leads nowhere.
    targets = re.findall(r"\]\(([^)\s]+)\)", (ROOT / "README.md").read_text())
    assert targets, "the README has links"
    assert [t for t in targets if not t.startswith(("https://", "http://"))] == []
    assert all(t.startswith(f"{HOME}/blob/main/") for t in targets if "github.com" in t)
