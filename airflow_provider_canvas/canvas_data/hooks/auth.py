"""The DAP access token of one hook: logged in when first needed, kept in memory until shortly before expiry.

DAP uses OAuth client credentials: the client ID and secret buy a JWT at ``/ids/auth/login``; there is
no refresh token, so nothing rotates and nothing is saved (the ``tokens/`` lifecycle is for Canvas and
Brightspace refresh tokens). A token the API refuses is dropped and the next request logs in again.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from airflow_provider_canvas.canvas_data.hooks.models import EXPIRY_BUFFER_SECONDS, DapAccessToken


class DapTokenCache:
    """Hands out a live DAP JWT, in the shape ``LmsTransport`` asks its ``tokens`` for.

    :param login: one login (``POST /ids/auth/login``), returning the new token.
    :param buffer_seconds: a token this close to its expiry is replaced.
    """

    def __init__(
        self, login: Callable[[], DapAccessToken], buffer_seconds: float = EXPIRY_BUFFER_SECONDS
    ) -> None:
        self._login = login
        self._buffer = buffer_seconds
        self._token: DapAccessToken | None = None
        self._lock = threading.Lock()
        #: How many logins this cache made (for logs and tests).
        self.login_count = 0

    def __repr__(self) -> str:
        return f"DapTokenCache(logins={self.login_count})"

    def access_token(self) -> str:
        with self._lock:
            if self._token is None or not self._token.usable(self._buffer):
                self._token = self._login()
                self.login_count += 1
            return self._token.access_token

    def reject(self, access_token: str | None = None) -> None:
        """The API refused ``access_token`` (None: whatever is cached): the next call logs in again."""
        with self._lock:
            if self._token is not None and access_token in (None, self._token.access_token):
                self._token = None

    @property
    def expires_at(self) -> float | None:
        return self._token.expires_at if self._token else None
