"""The HTTP layer both hooks share: one session, timeouts, retries, throttling, token handling."""

from __future__ import annotations

import random
import time
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any, ClassVar, Literal
from urllib.parse import urljoin, urlsplit

import pendulum
import requests
from airflow.sdk import BaseHook
from requests.auth import HTTPBasicAuth
from urllib3.exceptions import NewConnectionError

from airflow_provider_canvas.exceptions import (
    LmsApiError,
    LmsAuthError,
    LmsConfigurationError,
    LmsError,
    LmsNotFoundError,
    LmsPermissionError,
    LmsThrottledError,
    LmsUnavailableError,
)
from airflow_provider_canvas.hooks.connection_checks import check_base_url, parse_scopes
from airflow_provider_canvas.tokens import metadata
from airflow_provider_canvas.tokens.lifecycle import TokenLifecycle
from airflow_provider_canvas.tokens.locks import refresh_lock
from airflow_provider_canvas.tokens.model import TokenSet, extra_value
from airflow_provider_canvas.tokens.rescue import RescueFile
from airflow_provider_canvas.tokens.store import TokenStore

# Only reads are sent again after they may have reached the server: a write that failed with a
# 5xx or a read timeout may have landed, and only the caller can check (e.g. GET after a PUT).
_SAFE_TO_REPEAT = frozenset({"GET", "HEAD", "OPTIONS"})


def redact_url(url: str) -> str:
    """Scheme, host and path only: query strings may hold signatures or bookmarks."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}"


#: Why a token request that failed in transit is not sent again, by grant type.
_MAY_HAVE_BEEN_USED = {
    "refresh_token": "The refresh token may have been used; if the next refresh reports invalid_grant, "
    "authorize the connection again.",
    "authorization_code": "The authorization code may have been used: run the authorization again.",
}


#: Raised by requests before anything is sent, because the URL or a header cannot be used at all:
#: no retry can help, and no token was spent.
_UNUSABLE_REQUEST = (
    requests.exceptions.MissingSchema,
    requests.exceptions.InvalidSchema,
    requests.exceptions.InvalidURL,
    requests.exceptions.InvalidHeader,
)


def _never_sent(err: requests.RequestException) -> bool:
    """True when the request cannot have reached the server (safe to send again)."""
    if isinstance(err, requests.ConnectTimeout):
        return True
    reason = getattr(err.args[0], "reason", None) if err.args else None
    return isinstance(reason, NewConnectionError)


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:]


@dataclass(frozen=True)
class AccessTokenCheck:
    """What one request with a stored access token showed. Holds no token."""

    works: bool
    detail: str
    expires_at: pendulum.DateTime | None = None


class LmsHook(BaseHook):
    """Base of :class:`CanvasHook` and :class:`BrightspaceHook`.

    Every request gets a connect/read timeout and a bearer token from the
    :class:`~airflow_provider_canvas.tokens.lifecycle.TokenLifecycle`. Connection errors and
    5xx answers to reads are retried with exponential backoff and jitter;
    throttled requests wait (``Retry-After`` or backoff) and are sent again; requests are paced
    when ``X-Rate-Limit-Remaining`` runs low. A 401 with ``WWW-Authenticate`` means the token
    is dead: it is refreshed once and the request repeated. Any other 401/403 is final.
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

    def __init__(
        self,
        conn_id: str | None = None,
        *,
        timeout: tuple[float, float] = (10.0, 60.0),
        max_retries: int = 5,
        backoff_seconds: float = 1.0,
        max_backoff_seconds: float = 60.0,
        **conn_id_by_name: str,
    ) -> None:
        super().__init__()
        # Airflow builds a hook as ``Hook(canvas_conn_id=...)`` (``conn_name_attr``), e.g. for the
        # connection form's Test button.
        named = conn_id_by_name.pop(self.conn_name_attr, None)
        if conn_id_by_name:
            raise TypeError(f"{type(self).__name__} got unexpected arguments {sorted(conn_id_by_name)}")
        self.conn_id = conn_id or named or getattr(self, "default_conn_name")  # noqa: B009
        #: How messages name the connection. The Test button runs on a copy under a random id,
        #: which would mean nothing to the person reading the message.
        self.conn_label = f"connection {self.conn_id!r}"
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff_seconds = backoff_seconds
        self.max_backoff_seconds = max_backoff_seconds

    def __repr__(self) -> str:
        return f"{type(self).__name__}(conn_id={self.conn_id!r})"

    # Connection -------------------------------------------------------------------------------

    @cached_property
    def connection(self) -> Any:
        conn = metadata.get_connection(self.conn_id)
        if conn.conn_type != self.conn_type:
            raise LmsConfigurationError(
                f"{self.conn_label} has type {conn.conn_type!r}; "
                f"{type(self).__name__} needs a connection of type {self.conn_type!r}"
            )
        if not conn.login or not conn.password:
            raise LmsConfigurationError(
                f"{self.conn_label} needs the client ID as login and the client secret as password"
            )
        from airflow.sdk.log import mask_secret

        mask_secret(conn.password)
        self._check_connection(conn)
        return conn

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

    @property
    def token_url(self) -> str:
        raise NotImplementedError

    @property
    def refresh_scope(self) -> str | None:
        """The scope parameter of a refresh grant (None: keep the granted scopes)."""
        return None

    @cached_property
    def tokens(self) -> TokenLifecycle:
        store = TokenStore(self.conn_id, self.platform)
        state_dir = metadata.state_dir()
        return TokenLifecycle(
            store,
            refresh=self._request_tokens,
            lock=self._refresh_lock,
            rescue=RescueFile.for_connection(state_dir, self.conn_id),
            buffer_seconds=int(self.extra("expiry_buffer_seconds", 300)),
        )

    def _refresh_lock(self) -> Any:
        timeout = metadata.lock_timeout_seconds()
        return refresh_lock(self.extra("lock_conn_id"), self.conn_id, metadata.state_dir(), timeout)

    @cached_property
    def session(self) -> requests.Session:
        session = requests.Session()
        session.headers["Accept"] = "application/json"
        return session

    def close(self) -> None:
        if "session" in self.__dict__:
            self.session.close()

    # Requests ---------------------------------------------------------------------------------

    def request(
        self,
        method: str,
        path_or_url: str,
        *,
        scope: str | None = None,
        params: Mapping[str, Any] | None = None,
        data: Any = None,
        json: Any = None,
        stream: bool = False,
        headers: Mapping[str, str] | None = None,
    ) -> requests.Response:
        """Send an authorised request and return the successful response (2xx/3xx).

        ``scope`` names the developer-key scope the call needs, so a refusal can say which.
        """
        method = method.upper()
        url = (
            urljoin(self.base_url + "/", path_or_url.lstrip("/")) if "://" not in path_or_url else path_or_url
        )
        refreshed = False
        attempt = 0
        while True:
            attempt += 1
            access_token = self.tokens.access_token()
            try:
                response = self.session.request(
                    method,
                    url,
                    params=params,
                    data=data,
                    json=json,
                    stream=stream,
                    headers={**(headers or {}), "Authorization": f"Bearer {access_token}"},
                    timeout=self.timeout,
                )
            except _UNUSABLE_REQUEST as err:
                raise self._unusable(err, f"{method} {redact_url(url)}") from None
            except requests.RequestException as err:
                if attempt > self.max_retries or not (method in _SAFE_TO_REPEAT or _never_sent(err)):
                    raise LmsUnavailableError(
                        f"{method} {redact_url(url)} failed: {type(err).__name__}",
                        status=0,
                        url=redact_url(url),
                    ) from None
                self._wait(self._backoff(attempt), f"{method} {redact_url(url)}: {type(err).__name__}")
                continue

            if response.status_code == 401 and "WWW-Authenticate" in response.headers and not refreshed:
                response.close()
                self.tokens.reject(access_token)
                refreshed = True
                continue
            if self._is_throttled(response):
                response.close()
                if attempt > self.max_retries:
                    raise LmsThrottledError(
                        f"{method} {redact_url(url)} still throttled after {self.max_retries} retries",
                        status=response.status_code,
                        url=redact_url(url),
                    )
                delay = self._retry_after(response) or self._backoff(attempt)
                self._wait(delay, f"{method} {redact_url(url)} throttled (HTTP {response.status_code})")
                continue
            if response.status_code >= 500 and method in _SAFE_TO_REPEAT and attempt <= self.max_retries:
                response.close()
                self._wait(self._backoff(attempt), f"{method} {redact_url(url)}: HTTP {response.status_code}")
                continue
            if response.status_code >= 400:
                raise self._error(response, method, url, scope)
            self._pace(response)
            return response

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

    def get_json(self, path_or_url: str, *, scope: str | None = None, **kwargs: Any) -> Any:
        return self.request("GET", path_or_url, scope=scope, **kwargs).json()

    def _unusable(self, err: requests.RequestException, where: str) -> LmsConfigurationError:
        return LmsConfigurationError(
            f"{where}: nothing was sent, the URL cannot be used ({type(err).__name__}). Check the host "
            f"and the other URLs of {self.conn_label}; no token was spent."
        )

    def _is_throttled(self, response: requests.Response) -> bool:
        return response.status_code == 429

    @staticmethod
    def _retry_after(response: requests.Response) -> float | None:
        value = response.headers.get("Retry-After", "")
        try:
            return max(0.0, float(value))
        except ValueError:
            return None

    def _backoff(self, attempt: int) -> float:
        ceiling = min(self.max_backoff_seconds, self.backoff_seconds * 2 ** (attempt - 1))
        return random.uniform(ceiling / 2, ceiling)

    def _wait(self, seconds: float, why: str) -> None:
        self.log.warning("%s; retrying in %.1fs", why, seconds)
        time.sleep(seconds)

    def _pacing_delay(self, response: requests.Response) -> float:
        """Seconds to wait before the next request, from the rate-limit headers."""
        return 0.0

    def _pace(self, response: requests.Response) -> None:
        delay = self._pacing_delay(response)
        if delay > 0:
            self.log.info("Rate limit running low; pausing %.1fs", delay)
            time.sleep(delay)

    def _error(self, response: requests.Response, method: str, url: str, scope: str | None) -> LmsApiError:
        status, where = response.status_code, f"{method} {redact_url(url)}"
        said = self._error_message(response)
        if status in (401, 403):
            return LmsPermissionError(
                self._permission_message(where, said, scope),
                status=status,
                url=redact_url(url),
                required_scope=scope,
            )
        if status == 404:
            return LmsNotFoundError(f"{where}: not found ({said})", status=status, url=redact_url(url))
        if status >= 500:
            return LmsUnavailableError(f"{where}: HTTP {status} ({said})", status=status, url=redact_url(url))
        return LmsApiError(f"{where}: HTTP {status} ({said})", status=status, url=redact_url(url))

    def _permission_message(self, where: str, said: str, scope: str | None) -> str:
        return f"{where} was refused: {said}" + (f" (the call needs scope {scope})" if scope else "")

    @staticmethod
    def _error_message(response: requests.Response) -> str:
        """The API's own words, from the JSON shapes both platforms use, else the text."""
        try:
            body = response.json()
        except ValueError:
            return response.text.strip()[:300] or response.reason
        if isinstance(body, dict):
            errors = body.get("errors") or body.get("Errors")
            if isinstance(errors, list) and errors:
                first = errors[0]
                if isinstance(first, dict):
                    return str(first.get("message") or first.get("Message") or first)[:300]
            for key in ("error_description", "message", "Message", "error"):
                if body.get(key):
                    return str(body[key])[:300]
        return str(body)[:300]

    # Checks that never refresh ----------------------------------------------------------------
    # Airflow's Test button runs on an in-memory copy of the connection: a refresh there would
    # spend a single-use Brightspace refresh token (or end the Canvas access token the tasks hold)
    # and save the new tokens where nobody reads them. So checks use the stored access token only.

    @property
    def whoami_path(self) -> str:
        """A cheap GET that any valid token may call."""
        raise NotImplementedError

    def test_connection(self) -> tuple[bool, str]:
        """The connection form's Test button: does the API accept the stored access token?"""
        self.conn_label = "this connection"
        try:
            tokens = TokenSet.from_extra(self.connection.extra_dejson, self.platform)
            check = self.check_access_token(tokens)
        except (LmsError, ValueError) as err:
            return False, _sentence(str(err))
        finally:
            self.close()
        if check.works:
            return True, check.detail
        return False, (
            f"{_sentence(check.detail)}. This test never refreshes tokens (it runs on a copy of the "
            "connection, where a new refresh token would be lost); a task refreshes and saves them, "
            "e.g. the lms_token_keepalive DAG. `canvas-oauth check` reports more."
        )

    def check_access_token(self, tokens: TokenSet) -> AccessTokenCheck:
        """One request with ``tokens.access_token``: no refresh, no retry, nothing saved."""
        expires_at = tokens.expires_at
        if not tokens.access_token:
            return AccessTokenCheck(False, f"{self.conn_label} holds no access token", expires_at)
        if expires_at is not None and expires_at <= pendulum.now("UTC"):
            return AccessTokenCheck(
                False, f"the stored access token expired at {expires_at.to_iso8601_string()}", expires_at
            )
        where = f"GET {redact_url(self.base_url + self.whoami_path)}"
        try:
            response = self.send_with_access_token("GET", self.whoami_path, tokens.access_token)
        except requests.RequestException as err:
            return AccessTokenCheck(False, f"{where} failed: {type(err).__name__}", expires_at)
        with response:
            said = self._error_message(response) if response.status_code >= 400 else ""
            if response.status_code == 401 and "WWW-Authenticate" in response.headers:
                return AccessTokenCheck(
                    False, f"{self.hook_name} refused the stored access token ({said})", expires_at
                )
            if self._is_throttled(response) or response.status_code >= 500:
                return AccessTokenCheck(
                    False, f"{where}: HTTP {response.status_code}, the token could not be checked", expires_at
                )
            until = f", valid until {expires_at.to_iso8601_string()}" if expires_at else ""
            if response.ok:
                try:
                    who = self._describe_user(response.json())
                except ValueError:
                    who = "user unknown"
                return AccessTokenCheck(
                    True, f"{self.hook_name} accepts the stored access token ({who}{until})", expires_at
                )
            # 401 without WWW-Authenticate, 403, 404: the token is valid, only this call is not allowed.
            return AccessTokenCheck(
                True,
                f"{self.hook_name} accepts the stored access token{until} "
                f"({where} itself was refused: {said})",
                expires_at,
            )

    def send_with_access_token(
        self, method: str, path: str, access_token: str, *, params: Mapping[str, Any] | None = None
    ) -> requests.Response:
        """One request with the given access token, as it is: for checks, never for work."""
        return self.session.request(
            method,
            urljoin(self.base_url + "/", path.lstrip("/")),
            params=params,
            headers={"Authorization": f"Bearer {access_token}"},
            timeout=self.timeout,
            allow_redirects=False,
        )

    @property
    def authorization_endpoint(self) -> str:
        """Where a person consents (OAuth2 authorization endpoint)."""
        raise NotImplementedError

    def authorization_params(self) -> dict[str, str]:
        """Platform-specific parameters of the authorization URL."""
        return {}

    def _describe_user(self, body: Any) -> str:
        """Who the token belongs to, from the whoami answer."""
        return "user unknown"

    # Tokens -----------------------------------------------------------------------------------

    def _request_tokens(self, current: TokenSet) -> TokenSet:
        """One refresh_token grant (called by the lifecycle under the refresh lock)."""
        response = self._token_grant(
            "refresh_token",
            single_use=self.single_use_refresh_tokens,
            refresh_token=current.refresh_token,
            scope=self.refresh_scope,
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
        response = self._token_grant("authorization_code", single_use=True, **fields)
        tokens = TokenSet.from_token_response(response, previous=TokenSet())
        from airflow.sdk.log import mask_secret

        for secret in (tokens.access_token, tokens.refresh_token):
            if secret:
                mask_secret(secret)
        details = {key: value for key, value in response.items() if "token" not in key}
        return tokens, details

    def _token_grant(self, grant_type: str, *, single_use: bool, **body_fields: Any) -> dict[str, Any]:
        """POST one grant to the token endpoint; return the parsed token response.

        ``single_use``: the grant dies when the server sees it (a Brightspace refresh token, any
        authorization code), so a request that may have reached the server is not sent again.
        """
        # oauthlib only on the rare token paths: a task whose token is fresh never loads it.
        from oauthlib.oauth2 import WebApplicationClient

        conn = self.connection
        client = WebApplicationClient(conn.login)
        if self.token_client_auth == "basic":
            auth, credentials = HTTPBasicAuth(conn.login, conn.password), {}
        else:
            auth, credentials = None, {"client_id": conn.login, "client_secret": conn.password}
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
            except _UNUSABLE_REQUEST as err:
                raise self._unusable(err, where) from None
            except requests.RequestException as err:
                retryable = _never_sent(err) or not single_use
                if attempt > self.max_retries or not retryable:
                    raise LmsUnavailableError(
                        f"{where} failed: {type(err).__name__}. "
                        + ("" if retryable else _MAY_HAVE_BEEN_USED[grant_type]),
                        status=0,
                        url=redact_url(self.token_url),
                    ) from None
                self._wait(self._backoff(attempt), f"{where}: {type(err).__name__}")
                continue
            retry_5xx = response.status_code >= 500 and not single_use
            if (self._is_throttled(response) or retry_5xx) and attempt <= self.max_retries:
                delay = self._retry_after(response) or self._backoff(attempt)
                self._wait(delay, f"{where}: HTTP {response.status_code}")
                continue
            break
        return self._parse_token_response(response, where, grant_type)

    def _parse_token_response(
        self, response: requests.Response, where: str, grant_type: str = "refresh_token"
    ) -> dict[str, Any]:
        from oauthlib.oauth2 import OAuth2Error, WebApplicationClient

        client = WebApplicationClient(self.connection.login)
        try:
            return dict(client.parse_request_body_response(response.text))
        except OAuth2Error as err:
            if response.status_code >= 500:
                raise LmsUnavailableError(
                    f"{where}: HTTP {response.status_code}",
                    status=response.status_code,
                    url=redact_url(self.token_url),
                ) from None
            raise LmsAuthError(
                self._token_error_message(err.error, err.description, response.status_code, grant_type),
                error=err.error,
                status=response.status_code,
            ) from None

    def _token_error_message(
        self, error: str, description: str | None, status: int, grant_type: str = "refresh_token"
    ) -> str:
        said = f"(HTTP {status} {error}: {description or 'no description'})."
        if grant_type == "authorization_code":
            what = f"{self.hook_name} refused the authorization code for {self.conn_label} {said}"
            if error == "invalid_client":
                return f"{what} Check the client ID and client secret."
            if error == "invalid_grant":
                return (
                    f"{what} The code was already used, expired, or was issued for another redirect "
                    "URI: run the authorization again."
                )
            return what
        what = f"{self.hook_name} refused to refresh the tokens of {self.conn_label} {said}"
        if error == "invalid_client":
            return f"{what} Check the client ID (login) and client secret (password)."
        if error in ("invalid_grant", "invalid_request"):
            return (
                f"{what} The stored refresh token was revoked, expired or already used: run the "
                "OAuth authorization again and store the new refresh token in the connection."
            )
        return what
