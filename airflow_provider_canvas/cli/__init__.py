"""``canvas-oauth``: first tokens for a Canvas or Brightspace connection, the scopes the DAGs need, checks.

Run ``canvas-oauth --help``; the entry point is :func:`airflow_provider_canvas.cli.main.main`.
"""

from __future__ import annotations

from airflow_provider_canvas.brightspace.hooks.brightspace import BrightspaceHook
from airflow_provider_canvas.canvas.hooks.canvas import CanvasHook
from airflow_provider_canvas.tokens.hook import LmsHook

#: The hook of each connection type.
HOOK_CLASSES: dict[str, type[LmsHook]] = {"canvas": CanvasHook, "brightspace": BrightspaceHook}
