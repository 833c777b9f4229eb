"""Canvas account ids as the API takes them, and the paths built from them."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from airflow_provider_canvas.exceptions import LmsConfigurationError

_SIS_PREFIX = "sis_account_id:"


def normalize_account_id(account_id: Any) -> int | str:
    """A Canvas account id as the API takes it: an int, or ``sis_account_id:XYZ``.

    Digit strings (what a Jinja template renders) become ints; anything else is refused before any
    request, so a typo never reaches Canvas.
    """
    if isinstance(account_id, bool):  # bool is an int subclass; True is no account id
        raise LmsConfigurationError(
            f"account id must be a number or 'sis_account_id:...', got {account_id!r}"
        )
    if isinstance(account_id, int) and account_id > 0:
        return account_id
    if isinstance(account_id, str):
        text = account_id.strip()
        if text.isdigit() and int(text) > 0:
            return int(text)
        if text.startswith(_SIS_PREFIX) and text[len(_SIS_PREFIX) :].strip():
            return text
    raise LmsConfigurationError(
        f"account id must be a positive number or 'sis_account_id:...', got {account_id!r}"
    )


def account_path(account_id: int | str, suffix: str = "") -> str:
    # SIS ids may hold spaces or other characters that must be escaped in a path segment.
    segment = quote(str(normalize_account_id(account_id)), safe=":")
    return f"/api/v1/accounts/{segment}{suffix}"


_account_path = account_path
