"""Checks that never refresh: the connection form's Test button and ``canvas-oauth check``.

Airflow's Test button runs on an in-memory copy of the connection: a refresh there would spend a
single-use Brightspace refresh token (or end the Canvas access token the tasks hold) and save the
new tokens where nobody reads them. So these checks use the stored access token only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pendulum
import requests

from airflow_provider_canvas.common.net import absolute_url, error_message, is_throttled, redact_url
from airflow_provider_canvas.common.transport import ApiRules
from airflow_provider_canvas.tokens.model import TokenSet


@dataclass(frozen=True)
class AccessTokenCheck:
    """What one request with a stored access token showed. Holds no token."""

    works: bool
    detail: str
    expires_at: pendulum.DateTime | None = None


def test_result(check: AccessTokenCheck) -> tuple[bool, str]:
    """What the Test button shows for ``check``: on failure, also why it never refreshes."""
    if check.works:
        return True, check.detail
    return False, (
        f"{sentence(check.detail)}. This test never refreshes tokens (it runs on a copy of the "
        "connection, where a new refresh token would be lost); a task refreshes and saves them, "
        "e.g. the lms_token_keepalive DAG. `canvas-oauth check` reports more."
    )


@dataclass
class AccessTokenChecks:
    """Requests with a given access token, as it is: for checks (Test button, CLI), never for work."""

    session: requests.Session = field(repr=False)
    base_url: str
    timeout: tuple[float, float]
    rules: ApiRules
    #: Who answers, for messages: "Canvas LMS", "D2L Brightspace".
    server_name: str
    conn_label: str
    #: A cheap GET that any valid token may call.
    whoami_path: str

    def check_access_token(self, tokens: TokenSet) -> AccessTokenCheck:
        """One request with ``tokens.access_token``: no refresh, no retry, nothing saved."""
        expires_at = tokens.expires_at
        if not tokens.access_token:
            return AccessTokenCheck(False, f"{self.conn_label} holds no access token", expires_at)
        if expires_at is not None and expires_at <= pendulum.now("UTC"):
            return AccessTokenCheck(
                False, f"the stored access token expired at {expires_at.to_iso8601_string()}", expires_at
            )
        where = f"GET {redact_url(absolute_url(self.base_url, self.whoami_path))}"
        try:
            response = self.send_with_access_token("GET", self.whoami_path, tokens.access_token)
        except requests.RequestException as err:
            return AccessTokenCheck(False, f"{where} failed: {type(err).__name__}", expires_at)
        with response:
            said = error_message(response) if response.status_code >= 400 else ""
            if self.rules.token_refused(response):
                return AccessTokenCheck(
                    False, f"{self.server_name} refused the stored access token ({said})", expires_at
                )
            if is_throttled(response) or response.status_code >= 500:
                return AccessTokenCheck(
                    False, f"{where}: HTTP {response.status_code}, the token could not be checked", expires_at
                )
            until = f", valid until {expires_at.to_iso8601_string()}" if expires_at else ""
            if response.ok:
                try:
                    who = self.rules.describe_user(response.json())
                except ValueError:
                    who = "user unknown"
                return AccessTokenCheck(
                    True, f"{self.server_name} accepts the stored access token ({who}{until})", expires_at
                )
            # 401 without WWW-Authenticate, 403, 404: the token is valid, only this call is not allowed.
            return AccessTokenCheck(
                True,
                f"{self.server_name} accepts the stored access token{until} "
                f"({where} itself was refused: {said})",
                expires_at,
            )

    def send_with_access_token(
        self,
        method: str,
        path: str,
        access_token: str,
        *,
        params: Mapping[str, Any] | None = None,
    ) -> requests.Response:
        """One request with the given access token, as it is: for checks, never for work."""
        return self.session.request(
            method,
            absolute_url(self.base_url, path),
            params=params,
            headers={"Authorization": f"Bearer {access_token}"},
            timeout=self.timeout,
            allow_redirects=False,
        )


def sentence(text: str) -> str:
    return text[:1].upper() + text[1:]
