"""LmsHook, the base of both hooks: the connection, its checks, and the parts every request needs.

The connection itself (find, check, mask) is :mod:`.connected`, shared with the DAP hook; the
parts live in their own modules: the authorised session in :mod:`.transport`, the checks that
never refresh in :mod:`.diagnostics`, the token endpoint in :mod:`..tokens.oauth_client` and the
token lifecycle in :mod:`..tokens.lifecycle`. This module only wires them to one connection.
"""

from __future__ import annotations

from functools import cached_property
from typing import Any, ClassVar, Literal

import requests
from airflow.sdk import BaseHook

from airflow_provider_canvas.exceptions import LmsConfigurationError
from airflow_provider_canvas.hooks.connected import ConnectedHook
from airflow_provider_canvas.hooks.connection_checks import check_base_url, parse_scopes
from airflow_provider_canvas.hooks.diagnostics import AccessTokenChecks
from airflow_provider_canvas.hooks.transport import BearerAuth, LmsTransport
from airflow_provider_canvas.tokens import metadata
from airflow_provider_canvas.tokens.lifecycle import TokenLifecycle
from airflow_provider_canvas.tokens.locks import refresh_lock
from airflow_provider_canvas.tokens.model import TokenSet, extra_value
from airflow_provider_canvas.tokens.oauth_client import OAuthClient
from airflow_provider_canvas.tokens.rescue import RescueFile
from airflow_provider_canvas.tokens.store import TokenStore


class LmsHook(ConnectedHook, LmsTransport, AccessTokenChecks, BaseHook):
    """Base of :class:`CanvasHook` and :class:`BrightspaceHook`.

    Reads and checks the connection, hands out tokens through a
    :class:`~airflow_provider_canvas.tokens.lifecycle.TokenLifecycle` that refreshes them with
    the connection's :class:`~airflow_provider_canvas.tokens.oauth_client.OAuthClient`, and sends
    requests through :class:`~airflow_provider_canvas.hooks.transport.LmsTransport`.

    :param conn_id: the connection to use; default :attr:`default_conn_name`. Airflow may pass it
        as ``canvas_conn_id=`` / ``brightspace_conn_id=`` instead (the Test button does).
    :param timeout: (connect, read) seconds of every request.
    :param max_retries: how often a connection error, a 5xx answer to a read or a throttled
        request is retried.
    :param backoff_seconds: the first retry's wait; it doubles with each retry (with jitter).
    :param max_backoff_seconds: the longest wait between two retries.
    """

    platform: ClassVar[str]
    #: What the host field should look like, for messages.
    example_host: ClassVar[str]
    token_client_auth: ClassVar[Literal["basic", "body"]]
    #: Brightspace refresh tokens die when used: a token request that may have reached the
    #: server is never sent again.
    single_use_refresh_tokens: ClassVar[bool]
    #: Below this many rate-limit units left, requests slow down.
    rate_limit_floor: ClassVar[float] = 0.0

    def _check_connection(self, conn: Any) -> None:
        """Refuse what a person mistyped before any request leaves; say what to type instead."""
        check_base_url(f"the host of {self.conn_label}", conn.host, self.example_host)
        scopes = extra_value(conn.extra_dejson, self.platform, "scopes")
        if scopes:
            try:
                parse_scopes(self.platform, [scopes])
            except LmsConfigurationError as err:
                raise LmsConfigurationError(f"the scopes of {self.conn_label}: {err}") from None

    def extra(self, name: str, default: Any = None) -> Any:
        value = extra_value(self.connection.extra_dejson, self.platform, name)
        return default if value is None else value

    @cached_property
    def base_url(self) -> str:
        return self.connection.host.rstrip("/")

    def get_conn(self) -> requests.Session:
        """A ``requests.Session`` that sends this connection's access token to its host.

        The token is refreshed (and saved) when due, as for every hook call; a redirect to another
        host goes without it. Plain requests: no retries, throttling or error mapping, which
        :meth:`request` adds. The caller closes the session.
        """
        session = requests.Session()
        session.headers["Accept"] = "application/json"
        session.auth = BearerAuth(self.tokens, self.base_url)
        return session

    # Tokens -----------------------------------------------------------------------------------

    @property
    def token_url(self) -> str:
        raise NotImplementedError

    @property
    def refresh_scope(self) -> str | None:
        """The scope parameter of a refresh grant (None: keep the granted scopes)."""
        return None

    @cached_property
    def tokens(self) -> TokenLifecycle:
        return TokenLifecycle(
            TokenStore(self.conn_id, self.platform),
            refresh=self._request_tokens,
            lock=self._refresh_lock,
            rescue=RescueFile.for_connection(metadata.state_dir(), self.conn_id),
            buffer_seconds=int(self.extra("expiry_buffer_seconds", 300)),
            single_use=self.single_use_refresh_tokens,
        )

    def _refresh_lock(self) -> Any:
        timeout = metadata.lock_timeout_seconds()
        return refresh_lock(self.extra("lock_conn_id"), self.conn_id, metadata.state_dir(), timeout)

    @cached_property
    def oauth_client(self) -> OAuthClient:
        """The connection's token endpoint, with this hook's client, session and retry rules."""
        return OAuthClient(
            token_url=self.token_url,
            client_id=self.connection.login,
            client_secret=self.connection.password,
            client_auth=self.token_client_auth,
            server_name=self.hook_name,
            conn_label=self.conn_label,
            session=self.session,
            timeout=self.timeout,
            max_retries=self.max_retries,
            backoff=self._backoff,
            wait=self._wait,
            is_throttled=self._is_throttled,
        )

    def _request_tokens(self, current: TokenSet) -> TokenSet:
        """One refresh_token grant (called by the lifecycle under the refresh lock)."""
        return self.oauth_client.refresh(
            current, single_use=self.single_use_refresh_tokens, scope=self.refresh_scope
        )

    def exchange_authorization_code(
        self, code: str, *, redirect_uri: str, replace_tokens: bool = False
    ) -> tuple[TokenSet, dict[str, Any]]:
        """See :meth:`OAuthClient.exchange_authorization_code`: the first tokens; nothing is saved."""
        return self.oauth_client.exchange_authorization_code(
            code, redirect_uri=redirect_uri, replace_tokens=replace_tokens
        )

    def keep_alive(self) -> dict[str, Any]:
        """Make sure the connection holds a live access token; refresh (and save) if it is due.

        Returns what a scheduled keep-alive task reports: no secrets, only the expiry.
        """
        before = self.tokens.refresh_count
        self.tokens.access_token()
        expires_at = self.tokens.expires_at
        return {
            "conn_id": self.conn_id,
            "refreshed": self.tokens.refresh_count > before,
            "expires_at": expires_at.to_iso8601_string() if expires_at else None,
        }

    # Consent ----------------------------------------------------------------------------------

    @property
    def authorization_endpoint(self) -> str:
        """Where a person consents (OAuth2 authorization endpoint)."""
        raise NotImplementedError

    def authorization_params(self) -> dict[str, str]:
        """Platform-specific parameters of the authorization URL."""
        return {}
