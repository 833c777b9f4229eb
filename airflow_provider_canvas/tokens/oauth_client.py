"""The OAuth 2.0 token endpoint of one connection: the two grants, the response parsing, the error messages.

:class:`OAuthSettings` is what a product's connection says about its token endpoint (the Canvas and
Brightspace settings derive from it); :meth:`OAuthSettings.client` makes the :class:`OAuthClient`
that the hooks use for every refresh and ``canvas-oauth authorize`` for the first tokens. It only
talks to the token endpoint; keeping the tokens is the :class:`TokenLifecycle`'s job.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import requests
from requests.auth import HTTPBasicAuth

from airflow_provider_canvas.common.net import redact_url
from airflow_provider_canvas.common.retry import RetryPolicy
from airflow_provider_canvas.exceptions import LmsAuthError, LmsUnavailableError
from airflow_provider_canvas.tokens.model import TokenSet

#: Why a token request that failed in transit is not sent again, by grant type.
_MAY_HAVE_BEEN_USED = {
    "refresh_token": "The refresh token may have been used; if the next refresh reports invalid_grant, "
    "authorize the connection again.",
    "authorization_code": "The authorization code may have been used: run the authorization again.",
}


@dataclass(frozen=True)
class OAuthSettings:
    """What a connection says about its token endpoint; a product's connection settings derive from it."""

    #: "basic": client credentials as HTTP Basic (Brightspace); "body": in the form (Canvas).
    client_auth: ClassVar[Literal["basic", "body"]]
    #: The refresh token dies when used (Brightspace): a refresh that may have reached the server
    #: is never sent again.
    single_use_refresh_tokens: ClassVar[bool]
    #: Who answers, for messages: "Canvas LMS", "D2L Brightspace".
    server_name: ClassVar[str]

    base_url: str
    token_url: str
    client_id: str
    client_secret: str = field(repr=False)
    #: The scope parameter of a refresh grant (None: keep the granted scopes).
    refresh_scope: str | None

    def client(
        self, *, session: requests.Session, retry: RetryPolicy, timeout: tuple[float, float], conn_label: str
    ) -> OAuthClient:
        """The token endpoint of these settings, sending through ``session`` under ``retry``."""
        return OAuthClient(self, session=session, retry=retry, timeout=timeout, conn_label=conn_label)


@dataclass
class OAuthClient:
    """Sends grants to the token endpoint of ``settings`` and turns the answers into a :class:`TokenSet`.

    The retry policy is the one of the API the endpoint belongs to; a grant that dies when used is
    never sent again once it may have reached the server.
    """

    settings: OAuthSettings
    session: requests.Session = field(repr=False)
    retry: RetryPolicy = field(repr=False)
    timeout: tuple[float, float]
    #: How messages name the connection: "connection 'x'", or "this connection" on the Test button.
    conn_label: str

    def refresh(self, current: TokenSet) -> TokenSet:
        """One refresh_token grant: the new tokens (a Brightspace refresh token dies in it)."""
        response = self._grant(
            "refresh_token",
            single_use=self.settings.single_use_refresh_tokens,
            refresh_token=current.refresh_token,
            scope=self.settings.refresh_scope,
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

        settings = self.settings
        client = WebApplicationClient(settings.client_id)
        if settings.client_auth == "basic":
            auth, credentials = HTTPBasicAuth(settings.client_id, settings.client_secret), {}
        else:
            auth, credentials = (
                None,
                {"client_id": settings.client_id, "client_secret": settings.client_secret},
            )
        if grant_type == "refresh_token":
            body = client.prepare_refresh_body(**body_fields, **credentials)
        else:
            body = client.prepare_request_body(
                include_client_id="client_id" in credentials,
                client_secret=credentials.get("client_secret"),
                **body_fields,
            )
        try:
            response = self.retry.send(
                lambda: self.session.post(
                    settings.token_url,
                    data=body,
                    headers={"Content-Type": "application/x-www-form-urlencoded"},
                    auth=auth,
                    timeout=self.timeout,
                ),
                method="POST",
                url=settings.token_url,
                repeatable=not single_use,
                conn_label=self.conn_label,
                may_have_landed=_MAY_HAVE_BEEN_USED[grant_type],
            )
        except LmsUnavailableError as err:
            # Sent and perhaps taken: the lifecycle then keeps its announcement, so nobody presents it again.
            err.maybe_used = single_use and _MAY_HAVE_BEEN_USED[grant_type] in str(err)  # type: ignore[attr-defined]
            raise
        return self._parse(response, f"POST {redact_url(settings.token_url)}", grant_type)

    def _parse(self, response: requests.Response, where: str, grant_type: str) -> dict[str, Any]:
        from oauthlib.oauth2 import OAuth2Error, WebApplicationClient

        try:
            return dict(
                WebApplicationClient(self.settings.client_id).parse_request_body_response(response.text)
            )
        except OAuth2Error as err:
            if response.status_code >= 500:
                raise LmsUnavailableError(
                    f"{where}: HTTP {response.status_code}",
                    status=response.status_code,
                    url=redact_url(self.settings.token_url),
                ) from None
            raise LmsAuthError(
                self.error_message(err.error, err.description, response.status_code, grant_type),
                error=err.error,
                status=response.status_code,
            ) from None

    def error_message(
        self, error: str | None, description: str | None, status: int, grant_type: str = "refresh_token"
    ) -> str:
        """What the refusal means and what a person does about it."""
        said = f"(HTTP {status} {error}: {description or 'no description'})."
        if grant_type == "authorization_code":
            what = f"{self.settings.server_name} refused the authorization code for {self.conn_label} {said}"
            if error == "invalid_client":
                return f"{what} Check the client ID and client secret."
            if error == "invalid_grant":
                return (
                    f"{what} The code was already used, expired, or was issued for another redirect "
                    "URI: run the authorization again."
                )
            return what
        what = f"{self.settings.server_name} refused to refresh the tokens of {self.conn_label} {said}"
        if error == "invalid_client":
            return f"{what} Check the client ID (login) and client secret (password)."
        if error in ("invalid_grant", "invalid_request"):
            return (
                f"{what} The stored refresh token was revoked, expired or already used: run the "
                "OAuth authorization again and store the new refresh token in the connection."
            )
        return what
