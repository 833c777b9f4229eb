"""One retry policy for every request the provider sends: API calls, token grants, DAP logins, downloads.

Connection errors, 5xx answers and throttling (429, or 403 "Rate Limit Exceeded") are retried with
exponential backoff and jitter, or as long as the server asks; a request that may have reached the
server is sent again only when the caller says repeating it is harmless.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import requests

from airflow_provider_canvas.common.net import (
    UNUSABLE_REQUEST,
    backoff_seconds,
    is_throttled,
    never_sent,
    redact_url,
    throttle_wait_seconds,
    unusable_request_error,
)
from airflow_provider_canvas.exceptions import LmsUnavailableError

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RetryPolicy:
    """When to send a request again, and how long to wait first.

    :param max_retries: how often one request is sent again.
    :param backoff_seconds: the first retry's wait; it doubles with each retry (with jitter).
    :param max_backoff_seconds: the longest wait between two retries, also for ``Retry-After``.
    :param throttle_seconds: the wait after a throttled answer that names none (``None``: back off).
        DAP's published limits count per minute and its own client waits 30 s.
    :param throttled: what throttling looks like on this API.
    """

    max_retries: int = 5
    backoff_seconds: float = 1.0
    max_backoff_seconds: float = 60.0
    throttle_seconds: float | None = None
    throttled: Callable[[Any], bool] = field(default=is_throttled, repr=False)
    log: logging.Logger = field(default=_log, repr=False, compare=False)

    def backoff(self, attempt: int) -> float:
        """The wait before the ``attempt``-th retry (1-based)."""
        return backoff_seconds(attempt, self.backoff_seconds, self.max_backoff_seconds)

    def asked_wait(self, response: Any) -> float | None:
        """What a throttled answer asks to wait (``Retry-After``, else ``X-Rate-Limit-Reset``), capped."""
        return throttle_wait_seconds(response.headers, self.max_backoff_seconds)

    def delay(self, response: Any, attempt: int) -> float:
        """The wait before sending again what ``response`` answered: what the server asks, else ours."""
        asked = self.asked_wait(response)
        if asked is not None:
            return asked
        if self.throttled(response) and self.throttle_seconds is not None:
            return self.throttle_seconds
        return self.backoff(attempt)

    def wait(self, seconds: float, why: str) -> None:
        self.log.warning("%s; retrying in %.1fs", why, seconds)
        time.sleep(seconds)

    def send(
        self,
        send: Callable[[], requests.Response],
        *,
        method: str,
        url: str,
        repeatable: bool,
        conn_label: str = "the connection",
        may_have_landed: str = "",
    ) -> requests.Response:
        """``send()`` until it gets an answer worth returning; the last answer when retries run out.

        ``repeatable``: sending the request twice is harmless (a read, a login, a grant that does not
        die when used); otherwise only a request that cannot have reached the server is sent again,
        and ``may_have_landed`` is added to the error. Throttled answers are always sent again (the
        server did not take them); 5xx answers only when ``repeatable``. The caller maps the answer
        it gets back (still throttled, an error) to its own errors.
        """
        where = f"{method} {redact_url(url)}"
        attempt = 0
        while True:
            attempt += 1
            try:
                response = send()
            except UNUSABLE_REQUEST as err:
                raise unusable_request_error(err, where, conn_label) from None
            except requests.RequestException as err:
                safe = repeatable or never_sent(err)
                if attempt > self.max_retries or not safe:
                    hint = "" if safe else f" {may_have_landed}".rstrip()
                    raise LmsUnavailableError(
                        f"{where} failed: {type(err).__name__}.{hint}".rstrip("."),
                        status=0,
                        url=redact_url(url),
                    ) from None
                self.wait(self.backoff(attempt), f"{where}: {type(err).__name__}")
                continue
            throttled = self.throttled(response)
            if not (throttled or (repeatable and response.status_code >= 500)) or attempt > self.max_retries:
                return response
            response.close()
            why = (
                f"throttled (HTTP {response.status_code})" if throttled else f": HTTP {response.status_code}"
            )
            self.wait(self.delay(response, attempt), f"{where}{' ' if throttled else ''}{why}")
