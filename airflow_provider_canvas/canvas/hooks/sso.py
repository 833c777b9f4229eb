"""Canvas SSO settings as data: which keys exist, what a valid value is, what differs, what a run did.

No HTTP here: :meth:`CanvasHook.reconcile_sso_settings` reads and writes, this module decides.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import urlsplit

from airflow_provider_canvas.exceptions import LmsConfigurationError

#: The SSO settings Canvas documents; anything else is refused before any request.
SSO_SETTING_KEYS = ("login_handle_name", "change_password_url", "auth_discovery_url", "unknown_user_url")
#: The SSO settings whose value must be an absolute http(s) URL when set.
SSO_URL_KEYS = ("change_password_url", "auth_discovery_url", "unknown_user_url")


def validate_sso_settings(settings: Mapping[str, Any]) -> dict[str, str | None]:
    """The settings to apply, checked: documented keys only, URLs absolute http(s), None = unset.

    An empty string and None both mean "unset" (Canvas unsets a key sent empty) and come back as
    None; keys not given are not in the result, so Canvas keeps them.
    """
    if not isinstance(settings, Mapping):
        raise LmsConfigurationError(f"SSO settings must be a mapping, got {type(settings).__name__}")
    unknown = sorted(set(settings) - set(SSO_SETTING_KEYS))
    if unknown:
        raise LmsConfigurationError(
            f"unknown SSO setting(s) {unknown}; Canvas knows {list(SSO_SETTING_KEYS)}"
        )
    checked: dict[str, str | None] = {}
    for key, value in settings.items():
        if value is None or (isinstance(value, str) and not value.strip()):
            checked[key] = None
            continue
        if not isinstance(value, str):
            raise LmsConfigurationError(f"SSO setting {key} must be a string or empty, got {value!r}")
        value = value.strip()
        if key in SSO_URL_KEYS:
            parts = urlsplit(value)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise LmsConfigurationError(
                    f"SSO setting {key} must be an absolute http(s) URL or empty (to unset it), got {value!r}"
                )
        checked[key] = value
    return checked


def sso_differences(desired: Mapping[str, str | None], actual: Mapping[str, Any]) -> dict[str, str | None]:
    """The desired keys whose value Canvas does not have (unset, None and "" are the same)."""
    return {key: value for key, value in desired.items() if (actual.get(key) or None) != value}


@dataclass(frozen=True)
class SsoReconciliation:
    """What :meth:`CanvasHook.reconcile_sso_settings` found and did.

    ``changes`` maps each key that differed to its desired value (None = unset); ``after`` is
    what Canvas reports once the run is done (``before`` when nothing was written).
    """

    conn_id: str
    account_id: int | str
    changed: bool
    dry_run: bool
    changes: dict[str, str | None] = field(default_factory=dict)
    before: dict[str, Any] = field(default_factory=dict)
    after: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe, for XCom."""
        return asdict(self)
