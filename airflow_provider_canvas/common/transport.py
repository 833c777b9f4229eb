"""The authorised HTTP session of a hook: timeouts, retries, throttling, pacing and error mapping.

:class:`LmsTransport` is the part of :class:`~airflow_provider_canvas.tokens.hook.LmsHook` that
sends requests; a platform hook overrides the three rules that differ (what throttling looks like,
how to pace, what a refusal means).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from functools import cached_property
from typing import TYPE_CHECKING, Any

import requests

from airflow_provider_canvas.common.net import (
    SAFE_TO_REPEAT,
    UNUSABLE_REQUEST,
    absolute_url,
    backoff_seconds,
    error_message,
    is_throttled,
    never_sent,
    redact_url,
    same_host,
    throttle_wait_seconds,
    unusable_request_error,
)
from airflow_provider_canvas.exceptions import (
    LmsApiError,
    LmsNotFoundError,
    LmsPermissionError,
    LmsThrottledError,
    LmsUnavailableError,
)

if TYPE_CHECKING:
    import logging

    from airflow_provider_canvas.tokens.lifecycle import TokenLifecycle


class BearerAuth(requests.auth.AuthBase):
    """The lifecycle's access token on requests to one host only (a redirect elsewhere gets none)."""

    def __init__(self, tokens: TokenLifecycle, base_url: str) -> None:
        self._tokens = tokens
        self._base_url = base_url

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        if same_host(request.url or "", self._base_url):
            request.headers["Authorization"] = f"Bearer {self._tokens.access_token()}"
        return request


class LmsTransport:
    """Sends authorised requests for a hook.

    Every request gets a connect/read timeout and a bearer token from the hook's
    :class:`~airflow_provider_canvas.tokens.lifecycle.TokenLifecycle`. Connection errors and 5xx
    answers to reads are retried with exponential backoff and jitter; throttled requests (429, or
    403 "Rate Limit Exceeded") wait (``Retry-After`` or ``X-Rate-Limit-Reset``, at most
    ``max_backoff_seconds``; else backoff) and are sent again; requests are paced when
    ``X-Rate-Limit-Remaining`` runs low. A 401 with ``WWW-Authenticate`` means the token is dead:
    it is refreshed once and the request repeated. Any other 401/403 is final.

    The hook provides ``base_url``, ``tokens``, ``log`` and the retry settings below.
    """

    base_url: str
    conn_label: str
    tokens: TokenLifecycle
    log: logging.Logger
    timeout: tuple[float, float]
    max_retries: int
    backoff_seconds: float
    max_backoff_seconds: float

    @cached_property
    def session(self) -> requests.Session:
        session = requests.Session()
        session.headers["Accept"] = "application/json"
        return session

    def close(self) -> None:
        if "session" in self.__dict__:
            self.session.close()

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
        where = f"{method} {redact_url(url)}"
        refreshed = False
        attempt = 0
        # A file body (a SIS upload) is read by each send: every repeat starts where the first did.
        start = data.tell() if hasattr(data, "seek") and hasattr(data, "tell") else None
        while True:
            attempt += 1
            access_token = self.tokens.access_token()
            if start is not None:
                data.seek(start)
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
            except UNUSABLE_REQUEST as err:
                raise unusable_request_error(err, where, self.conn_label) from None
            except requests.RequestException as err:
                if attempt > self.max_retries or not (method in SAFE_TO_REPEAT or never_sent(err)):
                    raise LmsUnavailableError(
                        f"{where} failed: {type(err).__name__}", status=0, url=redact_url(url)
                    ) from None
                self._wait(self._backoff(attempt), f"{where}: {type(err).__name__}")
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
                        f"{where} still throttled after {self.max_retries} retries",
                        status=response.status_code,
                        url=redact_url(url),
                    )
                delay = self._retry_after(response) or self._backoff(attempt)
                self._wait(delay, f"{where} throttled (HTTP {response.status_code})")
                continue
            if response.status_code >= 500 and method in SAFE_TO_REPEAT and attempt <= self.max_retries:
                response.close()
                self._wait(self._backoff(attempt), f"{where}: HTTP {response.status_code}")
                continue
            if response.status_code >= 400:
                raise self._error(response, method, url, scope)
            self._pace(response)
            return response

    def get_json(self, path_or_url: str, *, scope: str | None = None, **kwargs: Any) -> Any:
        return self.request("GET", path_or_url, scope=scope, **kwargs).json()

    # The platform's rules ---------------------------------------------------------------------

    def _is_throttled(self, response: requests.Response) -> bool:
        return is_throttled(response)

    def _pacing_delay(self, response: requests.Response) -> float:
        """Seconds to wait before the next request, from the rate-limit headers."""
        return 0.0

    def _permission_message(self, where: str, said: str, scope: str | None) -> str:
        return f"{where} was refused: {said}" + (f" (the call needs scope {scope})" if scope else "")

    # Retries and errors -----------------------------------------------------------------------

    def _retry_after(self, response: requests.Response) -> float | None:
        return throttle_wait_seconds(response.headers, self.max_backoff_seconds)

    def _backoff(self, attempt: int) -> float:
        return backoff_seconds(attempt, self.backoff_seconds, self.max_backoff_seconds)

    def _wait(self, seconds: float, why: str) -> None:
        self.log.warning("%s; retrying in %.1fs", why, seconds)
        time.sleep(seconds)

    def _pace(self, response: requests.Response) -> None:
        delay = self._pacing_delay(response)
        if delay > 0:
            self.log.info("Rate limit running low; pausing %.1fs", delay)
            time.sleep(delay)

    def _error(self, response: requests.Response, method: str, url: str, scope: str | None) -> LmsApiError:
        return api_error(response, method, url, scope, self._permission_message)

    @staticmethod
    def _error_message(response: requests.Response) -> str:
        return error_message(response)


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
