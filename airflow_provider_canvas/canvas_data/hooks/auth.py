"""The DAP access token of one hook: logged in when first needed, kept in memory until shortly before expiry.

DAP uses OAuth client credentials: the client ID and secret buy a JWT at ``/ids/auth/login``; there is
no refresh token, so nothing rotates and nothing is saved (the ``tokens/`` lifecycle is for Canvas and
Brightspace refresh tokens). A token the API refuses is dropped and the next request logs in again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import requests

from airflow_provider_canvas.canvas_data.hooks.models import (
    EXPIRY_BUFFER_SECONDS,
    LOGIN_PATH,
    DapAccessToken,
    dap_api_error,
    dap_error_message,
    login_refused,
)
from airflow_provider_canvas.common.net import absolute_url, redact_url
from airflow_provider_canvas.common.retry import RetryPolicy


@dataclass
class DapLogin:
    """``POST /ids/auth/login`` with the client credentials by HTTP Basic. Nothing is saved anywhere."""

    base_url: str
    client_id: str
    client_secret: str = field(repr=False)
    session: requests.Session = field(repr=False)
    retry: RetryPolicy = field(repr=False)
    timeout: tuple[float, float]
    log: logging.Logger = field(repr=False)

    def __call__(self) -> DapAccessToken:
        url = absolute_url(self.base_url, LOGIN_PATH)
        where = f"POST {redact_url(url)}"
        # A login changes nothing on the server: sending it again is always safe.
        with self.retry.send(
            lambda: self.session.post(
                url,
                data={"grant_type": "client_credentials"},
                auth=(self.client_id, self.client_secret),
                timeout=self.timeout,
                allow_redirects=False,
            ),
            method="POST",
            url=url,
            repeatable=True,
        ) as response:
            if response.status_code in (400, 401, 403):
                raise login_refused(response.status_code, dap_error_message(response), where)
            if response.status_code >= 300:
                raise dap_api_error(response, "POST", url)
            try:
                token = DapAccessToken.from_login(response.json())
            except ValueError:
                raise login_refused(response.status_code, "not JSON", where) from None
        self.log.info("Logged in to DAP at %s; token valid for %.0f min", self.base_url, token_minutes(token))
        return token


def token_minutes(token: DapAccessToken) -> float:
    return (token.expires_at - time.time()) / 60


class DapTokenCache:
    """Hands out a live DAP JWT, in the shape the transport asks its ``tokens`` for.

    :param login: one login (:class:`DapLogin`), returning the new token.
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
