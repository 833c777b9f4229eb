"""The OAuth 2.0 token endpoint of one connection: the two grants, the response parsing, the error messages.

Used by the hooks for every refresh and by ``canvas-oauth authorize`` for the first tokens. It only
talks to the token endpoint; keeping the tokens is the :class:`TokenLifecycle`'s job.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import requests
from requests.auth import HTTPBasicAuth

from airflow_provider_canvas.exceptions import LmsAuthError, LmsUnavailableError
from airflow_provider_canvas.net import (
    UNUSABLE_REQUEST,
    never_sent,
    redact_url,
    retry_after_seconds,
    unusable_request_error,
)
from airflow_provider_canvas.tokens.model import TokenSet

#: Why a token request that failed in transit is not sent again, by grant type.
_MAY_HAVE_BEEN_USED = {
    "refresh_token": "The refresh token may have been used; if the next refresh reports invalid_grant, "
    "authorize the connection again.",
    "authorization_code": "The authorization code may have been used: run the authorization again.",
}


@dataclass
class OAuthClient:
    """Sends grants to ``token_url`` for one client and turns the answers into a :class:`TokenSet`.

    ``client_auth``: ``basic`` sends the client credentials as HTTP Basic (Brightspace), ``body``
    in the form (Canvas). ``backoff``, ``wait`` and ``is_throttled`` are the hook's retry rules, so
    the token endpoint is treated like the API it belongs to.
    """

    token_url: str
    client_id: str
    client_secret: str = field(repr=False)
    client_auth: Literal["basic", "body"]
    #: Who answers, for messages: "Canvas LMS", "D2L Brightspace".
    server_name: str
    #: How messages name the connection: "connection 'x'", or "this connection" on the Test button.
    conn_label: str
    session: requests.Session = field(repr=False)
    timeout: tuple[float, float]
    max_retries: int
    backoff: Callable[[int], float] = field(repr=False)
    wait: Callable[[float, str], None] = field(repr=False)
    is_throttled: Callable[[requests.Response], bool] = field(repr=False)

    def refresh(self, current: TokenSet, *, single_use: bool, scope: str | None) -> TokenSet:
        """One refresh_token grant. ``single_use``: the refresh token dies when the server sees it."""
        response = self._grant(
            "refresh_token", single_use=single_use, refresh_token=current.refresh_token, scope=scope
        )
        return TokenSet.from_token_response(response, previous=current)

    def exchange_authorization_code(
        self, code: str, *, redirect_uri: str, replace_tokens: bool = False
    ) -> tuple[TokenSet, dict[str, Any]]:
        """The authorization_code grant that ends a person's consent: the connection's first tokens.

        Returns the tokens and the response's other fields (Canvas ``user``, Brightspace ``scope``).
        ``replace_tokens`` (Canvas) destroys the user's other tokens of this developer key. A code
        works once, so a request that may have reached the server is never sent again. Nothing is
        saved here: the caller stores the tokens.
        """
        fields: dict[str, Any] = {"code": code, "redirect_uri": redirect_uri}
        if replace_tokens:
            fields["replace_tokens"] = "1"
        response = self._grant("authorization_code", single_use=True, **fields)
        tokens = TokenSet.from_token_response(response, previous=TokenSet())
        from airflow.sdk.log import mask_secret

        for secret in (tokens.access_token, tokens.refresh_token):
            if secret:
                mask_secret(secret)
        details = {key: value for key, value in response.items() if "token" not in key}
        return tokens, details

    def _grant(self, grant_type: str, *, single_use: bool, **body_fields: Any) -> dict[str, Any]:
        """POST one grant to the token endpoint; return the parsed token response.

        ``single_use``: the grant dies when the server sees it (a Brightspace refresh token, any
        authorization code), so a request that may have reached the server is not sent again.
        """
        # oauthlib only on the rare token paths: a task whose token is fresh never loads it.
        from oauthlib.oauth2 import WebApplicationClient

        client = WebApplicationClient(self.client_id)
        if self.client_auth == "basic":
            auth, credentials = HTTPBasicAuth(self.client_id, self.client_secret), {}
        else:
            auth, credentials = None, {"client_id": self.client_id, "client_secret": self.client_secret}
        if grant_type == "refresh_token":
            body = client.prepare_refresh_body(**body_fields, **credentials)
        else:
            body = client.prepare_request_body(
                include_client_id="client_id" in credentials,
                client_secret=credentials.get("client_secret"),
                **body_fields,
            )
        where = f"POST {redact_url(self.token_url)}"
        attempt = 0
        while True:
            attempt += 1
            try:
                response = self.session.post(
                    self.token_url,
                    data=body,
                    headers={"Content-Type": "application/x-www-form-urlencoded"},
                    auth=auth,
                    timeout=self.timeout,
                )
            except UNUSABLE_REQUEST as err:
                raise unusable_request_error(err, where, self.conn_label) from None
            except requests.RequestException as err:
                retryable = never_sent(err) or not single_use
                if attempt > self.max_retries or not retryable:
                    failure = LmsUnavailableError(
                        f"{where} failed: {type(err).__name__}. "
                        + ("" if retryable else _MAY_HAVE_BEEN_USED[grant_type]),
                        status=0,
                        url=redact_url(self.token_url),
                    )
                    failure.maybe_used = single_use and not never_sent(err)  # the lifecycle reads it
                    raise failure from None
                self.wait(self.backoff(attempt), f"{where}: {type(err).__name__}")
                continue
            retry_5xx = response.status_code >= 500 and not single_use
            if (self.is_throttled(response) or retry_5xx) and attempt <= self.max_retries:
                delay = retry_after_seconds(response.headers.get("Retry-After")) or self.backoff(attempt)
                self.wait(delay, f"{where}: HTTP {response.status_code}")
                continue
            break
        return self._parse(response, where, grant_type)

    def _parse(self, response: requests.Response, where: str, grant_type: str) -> dict[str, Any]:
        from oauthlib.oauth2 import OAuth2Error, WebApplicationClient

        try:
            return dict(WebApplicationClient(self.client_id).parse_request_body_response(response.text))
        except OAuth2Error as err:
            if response.status_code >= 500:
                raise LmsUnavailableError(
                    f"{where}: HTTP {response.status_code}",
                    status=response.status_code,
                    url=redact_url(self.token_url),
                ) from None
            raise LmsAuthError(
                self.error_message(err.error, err.description, response.status_code, grant_type),
                error=err.error,
                status=response.status_code,
            ) from None

    def error_message(
        self, error: str, description: str | None, status: int, grant_type: str = "refresh_token"
    ) -> str:
        """What the refusal means and what a person does about it."""
        said = f"(HTTP {status} {error}: {description or 'no description'})."
        if grant_type == "authorization_code":
            what = f"{self.server_name} refused the authorization code for {self.conn_label} {said}"
            if error == "invalid_client":
                return f"{what} Check the client ID and client secret."
            if error == "invalid_grant":
                return (
                    f"{what} The code was already used, expired, or was issued for another redirect "
                    "URI: run the authorization again."
                )
            return what
        what = f"{self.server_name} refused to refresh the tokens of {self.conn_label} {said}"
        if error == "invalid_client":
            return f"{what} Check the client ID (login) and client secret (password)."
        if error in ("invalid_grant", "invalid_request"):
            return (
                f"{what} The stored refresh token was revoked, expired or already used: run the "
                "OAuth authorization again and store the new refresh token in the connection."
            )
        return what
