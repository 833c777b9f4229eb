"""ApiHook: a connected hook that sends authorised requests through one Transport under one RetryPolicy.

The Canvas and Brightspace hooks (``tokens/hook.py``) and the Canvas Data 2 hook derive from it and
say only where their access tokens come from (``tokens``) and how their API answers (``api_rules``).
"""

from __future__ import annotations

from functools import cached_property
from typing import Any, ClassVar

import requests

from airflow_provider_canvas.common.connection import ConnectedHook
from airflow_provider_canvas.common.retry import RetryPolicy
from airflow_provider_canvas.common.transport import AccessTokens, ApiRules, Transport


class ApiHook(ConnectedHook):
    """A hook with an authorised session: :meth:`request` and :meth:`get_json` (see :class:`Transport`)."""

    #: The API's answers: refusals, pacing, what a dead token looks like.
    api_rules: ClassVar[ApiRules] = ApiRules()
    #: Where the access tokens come from (a subclass's ``cached_property``).
    tokens: AccessTokens

    @property
    def base_url(self) -> str:
        return str(self.settings.base_url)

    @cached_property
    def retry(self) -> RetryPolicy:
        return RetryPolicy(self.max_retries, self.backoff_seconds, self.max_backoff_seconds, log=self.log)

    @cached_property
    def session(self) -> requests.Session:
        session = requests.Session()
        session.headers["Accept"] = "application/json"
        return session

    def close(self) -> None:
        if "session" in self.__dict__:
            self.session.close()

    @cached_property
    def transport(self) -> Transport:
        return Transport(
            base_url=self.base_url,
            tokens=self.tokens,
            retry=self.retry,
            timeout=self.timeout,
            conn_label=self.conn_label,
            rules=self.api_rules,
            log=self.log,
        )

    def request(self, method: str, path_or_url: str, **kwargs: Any) -> requests.Response:
        """See :meth:`Transport.request`: an authorised request, retried as the policy says."""
        return self.transport.request(method, path_or_url, **kwargs)

    def get_json(self, path_or_url: str, **kwargs: Any) -> Any:
        return self.transport.get_json(path_or_url, **kwargs)
