"""The authorised HTTP session of a hook: timeouts, retries, throttling, pacing and error mapping.

A hook composes one :class:`Transport` with its token keeper, the shared retry policy and its API's
:class:`ApiRules` (what a refusal means, how to pace).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from functools import partial
from typing import TYPE_CHECKING, Any, Protocol

import requests

from airflow_provider_canvas.common.log import Log
from airflow_provider_canvas.common.net import (
    SAFE_TO_REPEAT,
    absolute_url,
    error_message,
    redact_url,
    retry_after_seconds,
    same_host,
)
from airflow_provider_canvas.common.retry import RetryPolicy
from airflow_provider_canvas.exceptions import (
    LmsApiError,
    LmsError,
    LmsNotFoundError,
    LmsPermissionError,
    LmsThrottledError,
    LmsUnavailableError,
)

if TYPE_CHECKING:
    import httpx


class BearerAuth(requests.auth.AuthBase):
    """The lifecycle's access token on requests to one host only (a redirect elsewhere gets none)."""

    def __init__(self, tokens: AccessTokens, base_url: str) -> None:
        self._tokens = tokens
        self._base_url = base_url

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        if same_host(request.url or "", self._base_url):
            request.headers["Authorization"] = f"Bearer {self._tokens.access_token()}"
        return request


class AccessTokens(Protocol):
    """What the transport needs of a token keeper: today's access token, and news of a refused one."""

    def access_token(self) -> str: ...

    def reject(self, access_token: str) -> None: ...


class ApiRules:
    """How one API answers: what a refusal means, when to slow down, when a 401 means a dead token.

    The defaults fit Canvas and Brightspace; a platform overrides what differs.
    """

    def permission_message(self, where: str, said: str, scope: str | None, conn_label: str) -> str:
        """What a 401/403 that is no dead token means, for a person: which scope or permission."""
        return f"{where} was refused: {said}" + (f" (the call needs scope {scope})" if scope else "")

    def pacing_delay(self, response: requests.Response) -> float:
        """Seconds to wait before the next request, from the rate-limit headers."""
        return 0.0

    def describe_user(self, body: Any) -> str:
        """Who a token belongs to, from the API's whoami answer."""
        return "user unknown"

    def token_refused(self, response: requests.Response | httpx.Response) -> bool:
        """A 401 that means the access token is dead (refresh it and send once more)."""
        return response.status_code == 401 and "WWW-Authenticate" in response.headers

    def error(self, response: Any, method: str, url: str, scope: str | None, conn_label: str) -> LmsError:
        """The error for an answer of 400 or more (``requests`` or ``httpx``)."""
        return api_error(
            response,
            method,
            url,
            scope,
            lambda where, said, scope: self.permission_message(where, said, scope, conn_label),
        )


def json_session() -> requests.Session:
    """A ``requests.Session`` that asks for JSON: the one session a hook owns and closes."""
    session = requests.Session()
    session.headers["Accept"] = "application/json"
    return session


class Transport:
    """Sends authorised requests to one API.

    Every request gets a connect/read timeout and a bearer token from ``tokens``; the
    :class:`~airflow_provider_canvas.common.retry.RetryPolicy` decides what is sent again (connection
    errors, 5xx answers to reads, throttled requests); requests are paced when the API's rate-limit
    headers run low. A dead token (``rules.token_refused``) is rejected, and the request sent once
    more with a new one. Any other 4xx is final, mapped by ``rules.error``. It sends through its
    owner's ``session`` (the hook's, which the hook closes).
    """

    def __init__(
        self,
        *,
        session: requests.Session,
        base_url: str,
        tokens: AccessTokens,
        retry: RetryPolicy,
        timeout: tuple[float, float],
        conn_label: str,
        rules: ApiRules | None = None,
        log: Log,
    ) -> None:
        self.session = session
        self.base_url = base_url
        self.tokens = tokens
        self.retry = retry
        self.timeout = timeout
        self.conn_label = conn_label
        self.rules = rules or ApiRules()
        self.log = log

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
        url = absolute_url(self.base_url, path_or_url)
        refreshed = False
        # A file body (a SIS upload) is read by each send: every repeat starts where the first did.
        start = data.tell() if hasattr(data, "seek") and hasattr(data, "tell") else None

        def send(**options: Any) -> requests.Response:
            if start is not None:
                data.seek(start)
            return self.session.request(method, url, **options)

        while True:
            access_token = self.tokens.access_token()
            response = self.retry.send(
                partial(
                    send,
                    params=params,
                    data=data,
                    json=json,
                    stream=stream,
                    headers={**(headers or {}), "Authorization": f"Bearer {access_token}"},
                    timeout=self.timeout,
                ),
                method=method,
                url=url,
                repeatable=method in SAFE_TO_REPEAT,
                conn_label=self.conn_label,
            )
            if self.rules.token_refused(response) and not refreshed:
                response.close()
                self.tokens.reject(access_token)
                refreshed = True
                continue
            if self.retry.throttled(response):
                response.close()
                raise LmsThrottledError(
                    f"{method} {redact_url(url)} still throttled after {self.retry.max_retries} retries",
                    status=response.status_code,
                    url=redact_url(url),
                    retry_after=retry_after_seconds(response.headers.get("Retry-After")),
                )
            if response.status_code >= 400:
                raise self.rules.error(response, method, url, scope, self.conn_label)
            self._pace(response)
            return response

    def get_json(self, path_or_url: str, *, scope: str | None = None, **kwargs: Any) -> Any:
        return self.request("GET", path_or_url, scope=scope, **kwargs).json()

    def _pace(self, response: requests.Response) -> None:
        delay = self.rules.pacing_delay(response)
        if delay > 0:
            self.log.info("Rate limit running low; pausing %.1fs", delay)
            time.sleep(delay)


def api_error(
    response: Any,
    method: str,
    url: str,
    scope: str | None,
    permission_message: Callable[[str, str, str | None], str],
) -> LmsApiError:
    """The error for an answer of 400 or more (``requests`` or ``httpx``), the API's words included."""
    status, where = response.status_code, f"{method} {redact_url(url)}"
    said = error_message(response)
    if status in (401, 403):
        return LmsPermissionError(
            permission_message(where, said, scope), status=status, url=redact_url(url), required_scope=scope
        )
    if status == 404:
        return LmsNotFoundError(f"{where}: not found ({said})", status=status, url=redact_url(url))
    if status >= 500:
        return LmsUnavailableError(f"{where}: HTTP {status} ({said})", status=status, url=redact_url(url))
    return LmsApiError(f"{where}: HTTP {status} ({said})", status=status, url=redact_url(url))
