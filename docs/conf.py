"""Sphinx settings of the provider's documentation: Markdown pages (MyST), a theme that needs no network."""

from __future__ import annotations

import re
from pathlib import Path

# The version is read from the package's source, not imported: the build needs no Airflow.
_INIT = Path(__file__).resolve().parent.parent / "airflow_provider_canvas" / "__init__.py"
release = re.search(r'^__version__ = "([^"]+)"', _INIT.read_text(), re.MULTILINE).group(1)
version = release

project = "airflow-provider-canvas"
author = "airflow-provider-canvas contributors"
copyright = "airflow-provider-canvas contributors"

extensions = ["myst_parser"]
source_suffix = {".md": "markdown"}
# Pages other sessions drop into docs/ are picked up by the globbing toctrees; only the build is excluded.
exclude_patterns = ["_build"]
root_doc = "index"

# Headings become link targets, so pages can point at a section: [text](tokens.md#the-rescue-file).
myst_heading_anchors = 3
myst_enable_extensions = ["colon_fence", "deflist"]

html_theme = "alabaster"
html_title = f"airflow-provider-canvas {release}"
html_theme_options = {"description": "Canvas, Brightspace and Canvas Data 2 for Apache Airflow 3"}
html_static_path: list[str] = []
# Nothing is fetched at build time or when a page is read: no external fonts, no search-engine hints.
html_show_sourcelink = False
