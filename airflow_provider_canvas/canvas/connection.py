"""A ``canvas`` connection, parsed once: the instance, its token endpoint, the developer key's scopes."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from airflow_provider_canvas.tokens.settings import LmsSettings


@dataclass(frozen=True)
class CanvasSettings(LmsSettings):
    """host: the Canvas base URL; login/password: the developer key's ID and secret."""

    platform = "canvas"
    example_host = "https://myschool.instructure.com"
    server_name = "Canvas LMS"
    client_auth = "body"
    # Canvas refresh tokens do not rotate: a retried refresh cannot lose one.
    single_use_refresh_tokens = False
    url_fields = {"base_url": ("the host", example_host)}

    @classmethod
    def parse(cls, conn: Any, extras: Mapping[str, Any], conn_label: str) -> CanvasSettings:
        fields = cls.common_fields(conn, extras, conn_label)
        return cls(token_url=f"{fields['base_url']}/login/oauth2/token", refresh_scope=None, **fields)

    @property
    def authorization_endpoint(self) -> str:
        """Where a person consents (OAuth2 authorization endpoint)."""
        return f"{self.base_url}/login/oauth2/auth"
