"""LmsHook, the base of the Canvas and Brightspace hooks: one connection, its tokens, its transport.

The hook composes its parts, each built from the connection's settings (a product's
``connection.py``): the :class:`~airflow_provider_canvas.tokens.oauth_client.OAuthClient` of its
token endpoint, the :class:`~airflow_provider_canvas.tokens.lifecycle.TokenLifecycle` that keeps
the tokens, the :class:`~airflow_provider_canvas.common.transport.Transport` that sends requests
with them, and the checks that never refresh (:mod:`.diagnostics`). None of them calls back into
the hook.
"""

from __future__ import annotations

import os
from functools import cached_property, partial
from typing import Any, ClassVar

import requests

from airflow_provider_canvas.common import airflow_access
from airflow_provider_canvas.common.connection import ConnectedHook
from airflow_provider_canvas.common.download import DownloadedFile, StreamingDownload
from airflow_provider_canvas.common.transport import BearerAuth, json_session
from airflow_provider_canvas.exceptions import LmsError
from airflow_provider_canvas.tokens.diagnostics import (
    AccessTokenCheck,
    AccessTokenChecks,
    sentence,
    test_result,
)
from airflow_provider_canvas.tokens.lifecycle import TokenLifecycle
from airflow_provider_canvas.tokens.locks import refresh_lock
from airflow_provider_canvas.tokens.model import TokenSet
from airflow_provider_canvas.tokens.oauth_client import OAuthClient
from airflow_provider_canvas.tokens.rescue import RescueFile
from airflow_provider_canvas.tokens.settings import LmsSettings
from airflow_provider_canvas.tokens.store import TokenStore


class LmsHook(ConnectedHook):
    """Base of :class:`CanvasHook` and :class:`BrightspaceHook` (see :class:`ConnectedHook` for the
    constructor's parameters).

    ``settings`` (a :class:`~airflow_provider_canvas.tokens.settings.LmsSettings`) is the connection
    parsed once; ``tokens`` hands out a live access token, refreshing and saving it when due;
    :meth:`request` / :meth:`get_json` send authorised requests; :meth:`test_connection` checks
    the stored token without ever refreshing it.
    """

    settings_class: ClassVar[type[LmsSettings]]
    settings: LmsSettings

    @property
    def platform(self) -> str:
        return self.settings_class.platform

    def extra(self, name: str, default: Any = None) -> Any:
        """A field of the connection's extra (legacy key names accepted)."""
        return self.settings.extras.get(name, default)

    # Composition ------------------------------------------------------------------------------

    @cached_property
    def oauth_client(self) -> OAuthClient:
        """The connection's token endpoint, sending on this hook's session under its retry policy."""
        return self.settings.client(
            session=self.session, retry=self.retry, timeout=self.timeout, conn_label=self.conn_label
        )

    def token_keeper(self) -> TokenLifecycle:
        return self.tokens

    @cached_property
    def tokens(self) -> TokenLifecycle:
        state_dir = airflow_access.state_dir()
        return TokenLifecycle(
            TokenStore(self.conn_id, self.platform),
            refresh=self.oauth_client.refresh,
            lock=partial(
                refresh_lock,
                self.settings.lock_conn_id,
                self.conn_id,
                state_dir,
                airflow_access.lock_timeout_seconds(),
            ),
            rescue=RescueFile.for_connection(state_dir, self.conn_id),
            buffer_seconds=self.settings.expiry_buffer_seconds,
            single_use=self.settings.single_use_refresh_tokens,
        )

    @cached_property
    def checks(self) -> AccessTokenChecks:
        return AccessTokenChecks(
            session=self.session,
            base_url=self.base_url,
            timeout=self.timeout,
            rules=self.api_rules,
            server_name=self.settings_class.server_name,
            conn_label=self.conn_label,
            whoami_path=self.whoami_path,
        )

    @property
    def whoami_path(self) -> str:
        """A cheap GET that any valid token may call."""
        raise NotImplementedError

    # Requests ---------------------------------------------------------------------------------

    def get_conn(self) -> requests.Session:
        """A ``requests.Session`` that sends this connection's access token to its host.

        The token is refreshed (and saved) when due, as for every hook call; a redirect to another
        host goes without it. Plain requests: no retries, throttling or error mapping, which
        :meth:`request` adds. The caller closes the session.
        """
        session = json_session()
        session.auth = BearerAuth(self.tokens, self.base_url)
        return session

    def download(self, url: str, destination: str | os.PathLike[str], **options: Any) -> DownloadedFile:
        """Stream ``url`` to ``destination``, completely or not at all: see :class:`StreamingDownload`.

        A redirect to storage on another host goes there without the bearer token.
        """
        engine = StreamingDownload(
            base_url=self.base_url,
            authorised_get=lambda url, headers, scope: self.request(
                "GET", url, scope=scope, stream=True, headers=headers
            ),
            session=self.session,
            timeout=self.timeout,
            retry=self.retry,
            log=self.log,
        )
        return engine.fetch(url, destination, **options)

    # Tokens -----------------------------------------------------------------------------------

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

    def test_connection(self) -> tuple[bool, str]:
        """The connection form's Test button: does the API accept the stored access token? Never refreshes."""
        self.conn_label = "this connection"
        try:
            check = self.check_access_token(TokenSet.from_extra(self.connection.extra_dejson, self.platform))
        except (LmsError, ValueError) as err:
            return False, sentence(str(err))
        finally:
            self.close()
        return test_result(check)

    def check_access_token(self, tokens: TokenSet) -> AccessTokenCheck:
        """See :meth:`AccessTokenChecks.check_access_token`: one request, no refresh, nothing saved."""
        return self.checks.check_access_token(tokens)

    # Consent ----------------------------------------------------------------------------------

    @property
    def authorization_endpoint(self) -> str:
        """Where a person consents (OAuth2 authorization endpoint)."""
        raise NotImplementedError

    def authorization_params(self) -> dict[str, str]:
        """Platform-specific parameters of the authorization URL."""
        return {}
