"""The token set kept in a connection's extra, and how token responses turn into one."""

from __future__ import annotations

from collections.abc import Container, Mapping
from dataclasses import dataclass, field
from typing import Any

import pendulum
from pendulum import DateTime

from airflow_provider_canvas.common.connection import MASKED as MASKED
from airflow_provider_canvas.common.connection import extra_value as extra_value

#: The keys of a connection's extra that hold token state, written by the hook.
TOKEN_KEYS = ("access_token", "refresh_token", "expires_at")
#: Extra keys renamed since 0.1.0: ``token_url`` made Airflow's form show and save ``***``.
RENAMED_KEYS = {"token_url": "oauth_url"}


def is_token_key(key: str) -> bool:
    """True for an extra key holding token state, legacy ``extra__<platform>__<name>`` names included."""
    return any(key == name or key.endswith(f"__{name}") for name in TOKEN_KEYS)


def complete_extra(conn_type: str, extra: Mapping[str, Any]) -> dict[str, Any]:
    """``extra`` with plain key names and every field of the connection type present.

    Legacy ``extra__<type>__<name>`` keys and renamed keys move to their current names (a value
    already under the current name wins). Airflow's edit form offers only the keys a connection
    holds, so the missing ones are added with their defaults: a person can then fill them in.
    """
    from airflow_provider_canvas.get_provider_info import extra_defaults

    defaults = extra_defaults(conn_type)
    current = dict(extra)
    for key in list(current):
        name = key.removeprefix(f"extra__{conn_type}__")
        name = RENAMED_KEYS.get(name, name)
        if name == key:
            continue
        value = current.pop(key)
        if value not in (None, "", MASKED) and current.get(name) in (None, ""):
            current[name] = value
    return {**defaults, **current}


@dataclass(frozen=True)
class TokenSet:
    """Access token, refresh token and expiry. Secrets stay out of ``repr``."""

    access_token: str | None = field(default=None, repr=False)
    refresh_token: str | None = field(default=None, repr=False)
    expires_at: DateTime | None = None

    @classmethod
    def from_extra(cls, extra: Mapping[str, Any], platform: str) -> TokenSet:
        expires_at = extra_value(extra, platform, "expires_at")
        return cls(
            access_token=extra_value(extra, platform, "access_token"),
            refresh_token=extra_value(extra, platform, "refresh_token"),
            expires_at=pendulum.parse(expires_at).in_tz("UTC") if expires_at else None,
        )

    @classmethod
    def from_token_response(cls, response: Mapping[str, Any], *, previous: TokenSet) -> TokenSet:
        """Canvas sends no refresh token on a refresh grant: the previous one stays valid."""
        expires_in = response.get("expires_in")
        return cls(
            access_token=response["access_token"],
            refresh_token=response.get("refresh_token") or previous.refresh_token,
            expires_at=pendulum.now("UTC").add(seconds=int(expires_in)) if expires_in else None,
        )

    def to_extra(self) -> dict[str, str | None]:
        return {
            "access_token": self.access_token,
            "refresh_token": self.refresh_token,
            "expires_at": self.expires_at.to_iso8601_string() if self.expires_at else None,
        }

    def is_usable(self, buffer_seconds: int, *, rejected: Container[str] = ()) -> bool:
        """True while the access token has more than ``buffer_seconds`` left and was not rejected."""
        if not self.access_token or self.access_token in rejected or self.expires_at is None:
            return False
        return (self.expires_at - pendulum.now("UTC")).total_seconds() > buffer_seconds

    def is_newer_than(self, other: TokenSet) -> bool:
        """Tokens issued later expire later: the order of two token sets of one connection."""
        if self.expires_at is None:
            return False
        return other.expires_at is None or self.expires_at > other.expires_at
