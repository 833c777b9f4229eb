"""BrightspaceHook: the D2L Brightspace API with single-use OAuth refresh tokens kept safe."""

from __future__ import annotations

from typing import Any, ClassVar

import requests

from airflow_provider_canvas.hooks.base import LmsHook

DEFAULT_TOKEN_URL = "https://auth.brightspace.com/core/connect/token"
DEFAULT_SCOPES = "datahub:dataexports:*"
DEFAULT_LP_VERSION = "1.49"


class BrightspaceHook(LmsHook):
    """Talks to one Brightspace instance through a ``brightspace`` connection.

    host: the Brightspace base URL; login/password: OAuth 2.0 client ID and secret; extra:
    tokens (kept up to date by the hook), ``token_url``, ``scopes``, ``lp_version``,
    ``expiry_buffer_seconds``, ``lock_conn_id``.
    """

    conn_name_attr = "brightspace_conn_id"
    default_conn_name = "brightspace_default"
    conn_type = "brightspace"
    hook_name = "D2L Brightspace"

    platform: ClassVar[str] = "brightspace"
    token_client_auth = "basic"
    single_use_refresh_tokens = True

    @property
    def token_url(self) -> str:
        return self.extra("token_url", DEFAULT_TOKEN_URL)

    @property
    def refresh_scope(self) -> str:
        return self.extra("scopes", DEFAULT_SCOPES)

    @property
    def lp_version(self) -> str:
        return str(self.extra("lp_version", DEFAULT_LP_VERSION))

    def lp_path(self, path: str) -> str:
        """``/d2l/api/lp/{version}/<path>`` for this connection's LP API version."""
        return f"/d2l/api/lp/{self.lp_version}/{path.lstrip('/')}"

    def whoami(self) -> dict[str, Any]:
        return self.get_json(self.lp_path("users/whoami"))

    def _pacing_delay(self, response: requests.Response) -> float:
        try:
            remaining = float(response.headers["X-Rate-Limit-Remaining"])
            reset = float(response.headers.get("X-Rate-Limit-Reset", 0))
        except (KeyError, ValueError):
            return 0.0
        return min(60.0, reset) if remaining <= 0 else 0.0

    def _permission_message(self, where: str, said: str, scope: str | None) -> str:
        return (
            f"{where} was refused: {said}. The OAuth 2.0 app or the token of connection "
            f"{self.conn_id!r} lacks scope {scope or '(see the error)'}, or its user lacks the role "
            "permission; add it and authorize again."
        )
