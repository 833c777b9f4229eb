"""Operator arguments that may be Jinja templates: telling one apart, and a rendered list of names."""

from __future__ import annotations

import ast
import contextlib
import json
from collections.abc import Callable, Sequence
from typing import Any

from airflow_provider_canvas.exceptions import LmsConfigurationError


def is_template(value: Any) -> bool:
    """True for an argument still to be rendered (its value is known at run time only)."""
    return isinstance(value, str) and "{{" in value


def name_list(value: Any, *, refusal: str, valid: Callable[[str], bool] | None = None) -> list[str]:
    """Names from a list, or a rendered template (JSON / Python list, or comma-separated), each once.

    ``refusal`` says what was expected (the error adds what came); ``valid`` checks each name.
    """
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            # JSON, or a Python list rendered without native objects; anything else is refused below.
            for parse in (json.loads, ast.literal_eval):
                with contextlib.suppress(ValueError, SyntaxError):
                    value = parse(text)
                    break
        else:
            value = [part.strip() for part in text.split(",") if part.strip()]
    ok = isinstance(value, Sequence) and not isinstance(value, str) and bool(value)
    if not ok or not all(isinstance(name, str) and (valid is None or valid(name)) for name in value):
        raise LmsConfigurationError(f"{refusal}, got {value!r}")
    return list(dict.fromkeys(value))
