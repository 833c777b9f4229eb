"""CanvasHook: the Canvas LMS REST API (accounts, SSO settings) with self-refreshing OAuth tokens."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import quote

import requests

from airflow_provider_canvas.canvas.connection import CanvasSettings
from airflow_provider_canvas.canvas.hooks.sso import SsoReconciliation, sso_differences, validate_sso_settings
from airflow_provider_canvas.common.net import error_message, is_throttled, redact_url
from airflow_provider_canvas.common.transport import ApiRules
from airflow_provider_canvas.exceptions import (
    LmsApiError,
    LmsConfigurationError,
    LmsError,
    LmsUnavailableError,
)
from airflow_provider_canvas.tokens.hook import LmsHook

#: Developer-key scopes of the calls this hook makes, in Canvas's ``url:VERB|/path`` form.
SCOPE_GET_ACCOUNT = "url:GET|/api/v1/accounts/:id"
SCOPE_LIST_ACCOUNTS = "url:GET|/api/v1/accounts"
SCOPE_LIST_SUB_ACCOUNTS = "url:GET|/api/v1/accounts/:account_id/sub_accounts"
SCOPE_GET_SSO_SETTINGS = "url:GET|/api/v1/accounts/:account_id/sso_settings"
SCOPE_PUT_SSO_SETTINGS = "url:PUT|/api/v1/accounts/:account_id/sso_settings"

_PAGE_SIZE = 100
_SIS_PREFIX = "sis_account_id:"


def normalize_account_id(account_id: Any) -> int | str:
    """A Canvas account id as the API takes it: an int, or ``sis_account_id:XYZ``.

    Digit strings (what a Jinja template renders) become ints; anything else is refused before any
    request, so a typo never reaches Canvas.
    """
    if isinstance(account_id, bool):  # bool is an int subclass; True is no account id
        raise LmsConfigurationError(
            f"account id must be a number or 'sis_account_id:...', got {account_id!r}"
        )
    if isinstance(account_id, int) and account_id > 0:
        return account_id
    if isinstance(account_id, str):
        text = account_id.strip()
        if text.isdigit() and int(text) > 0:
            return int(text)
        if text.startswith(_SIS_PREFIX) and text[len(_SIS_PREFIX) :].strip():
            return text
    raise LmsConfigurationError(
        f"account id must be a positive number or 'sis_account_id:...', got {account_id!r}"
    )


def _account_path(account_id: int | str, suffix: str = "") -> str:
    # SIS ids may hold spaces or other characters that must be escaped in a path segment.
    segment = quote(str(normalize_account_id(account_id)), safe=":")
    return f"/api/v1/accounts/{segment}{suffix}"


class CanvasApiRules(ApiRules):
    """Canvas's answers: a leaky bucket per token to pace on, refusals that name the scope."""

    def __init__(self, rate_limit_floor: float = 150.0, rate_limit_drain_per_second: float = 10.0) -> None:
        #: The bucket holds ~700 units and drains ~10 units/s; below the floor, requests slow down.
        self.rate_limit_floor = rate_limit_floor
        self.rate_limit_drain_per_second = rate_limit_drain_per_second

    def pacing_delay(self, response: requests.Response) -> float:
        try:
            remaining = float(response.headers["X-Rate-Limit-Remaining"])
        except (KeyError, ValueError):
            return 0.0
        if remaining >= self.rate_limit_floor:
            return 0.0
        return min(10.0, (self.rate_limit_floor - remaining) / self.rate_limit_drain_per_second)

    def permission_message(self, where: str, said: str, scope: str | None, conn_label: str) -> str:
        if "scope" in said.lower():
            return (
                f"{where}: the developer key lacks scope {scope or '(unknown)'} (Canvas said: {said}). "
                "Add the scope to the developer key (Admin > Developer Keys) and authorize "
                f"{conn_label} again."
            )
        return (
            f"{where}: the Canvas user who authorized {conn_label} lacks the "
            f"permission for this call (Canvas said: {said})."
        )

    def describe_user(self, body: Any) -> str:
        return f"user {body.get('name')!r}, id {body.get('id')}" if isinstance(body, dict) else "user unknown"


class CanvasHook(LmsHook):
    """Talks to one Canvas instance through a ``canvas`` connection (see :class:`CanvasSettings`).

    host: the Canvas base URL; login/password: developer key ID and secret; extra: tokens
    (kept up to date by the hook), ``scopes``, ``expiry_buffer_seconds``, ``lock_conn_id``.

    :param conn_id: a ``canvas`` connection; default ``canvas_default`` (also as ``canvas_conn_id=``).
    :param timeout: (connect, read) seconds of every request.
    :param max_retries: retries of connection errors, 5xx answers to reads and throttled requests.
    :param backoff_seconds: the first retry's wait, doubled for each further retry (with jitter).
    :param max_backoff_seconds: the longest wait between two retries.
    """

    conn_name_attr = "canvas_conn_id"
    default_conn_name = "canvas_default"
    conn_type = "canvas"
    hook_name = "Canvas LMS"
    settings_class = CanvasSettings
    api_rules = CanvasApiRules()

    settings: CanvasSettings

    @property
    def whoami_path(self) -> str:
        return "/api/v1/users/self"

    @property
    def authorization_endpoint(self) -> str:
        return self.settings.authorization_endpoint

    def authorization_params(self) -> dict[str, str]:
        # Shown beside the token in the user's Approved Integrations, so the person can tell it apart.
        return {"purpose": f"Airflow connection {self.conn_id}"}

    def probe_scope(self, scope: str, access_token: str) -> tuple[bool | None, str]:
        """Whether ``access_token`` holds the developer-key ``scope``, and what the probe showed.

        A GET of the scope's path with every ``:param`` as ``self`` (one item per page): Canvas
        checks scopes before it looks anything up, so every answer but "Insufficient scopes" means
        granted. Other verbs are not probed, since a check never writes: ``None``.
        """
        verb, _, path = scope.removeprefix("url:").partition("|")
        if verb != "GET":
            return None, "not probed: a check sends no writes"
        probe_path = "/".join("self" if part.startswith(":") else part for part in path.split("/"))
        try:
            response = self.checks.send_with_access_token(
                "GET", probe_path, access_token, params={"per_page": 1}
            )
        except requests.RequestException as err:
            return None, f"GET {probe_path} failed: {type(err).__name__}"
        with response:
            said = error_message(response) if response.status_code >= 400 else ""
        if response.status_code == 401 and "WWW-Authenticate" in response.headers:
            return None, f"the access token was refused ({said})"
        if response.status_code == 401 and "scope" in said.lower():
            return False, f"Canvas said: {said}"
        if response.status_code in (401, 403) and not is_throttled(response):
            return True, f"the user who authorized lacks the permission (Canvas said: {said})"
        if response.status_code >= 500 or is_throttled(response):
            return None, f"HTTP {response.status_code}: could not tell"
        return True, "probed"

    # API --------------------------------------------------------------------------------------

    def paginate(
        self, path: str, params: Mapping[str, Any] | None = None, *, scope: str | None = None
    ) -> Iterator[dict[str, Any]]:
        """Every item of a list endpoint, page after page, following ``Link: rel="next"``.

        Memory stays at one page. Canvas may clamp ``per_page`` below what was asked for and
        may omit ``rel="last"``; neither matters here.
        """
        url: str | None = path
        query: Mapping[str, Any] | None = {"per_page": _PAGE_SIZE, **(params or {})}
        pages = items = 0
        while url:
            response = self.request("GET", url, params=query, scope=scope)
            page = response.json()
            pages += 1
            items += len(page)
            if pages == 1 and response.links.get("next") and len(page) < _PAGE_SIZE:
                self.log.info("Canvas serves %d items per page for %s.", len(page), redact_url(response.url))
            if pages % 50 == 0:
                self.log.info(
                    "%s: %d items read from %d pages so far", redact_url(response.url), items, pages
                )
            yield from page
            next_url = response.links.get("next", {}).get("url")
            if next_url is not None and next_url in (url, response.url):
                # A next link pointing at the page just read would loop forever.
                raise LmsApiError(
                    f"{redact_url(next_url)}: Canvas sent the page just read as rel=next",
                    status=response.status_code,
                    url=redact_url(next_url),
                )
            url = next_url
            query = None  # the next link carries the query, bookmark included
        self.log.info("%s: %d items from %d pages", path, items, pages)

    def get_account(self, account_id: int | str) -> dict[str, Any]:
        """One account, by Canvas id or ``sis_account_id:XYZ``; 404 raises LmsNotFoundError."""
        return self.get_json(_account_path(account_id), scope=SCOPE_GET_ACCOUNT)

    def list_accounts(self) -> Iterator[dict[str, Any]]:
        """The accounts the token's user administers."""
        return self.paginate("/api/v1/accounts", scope=SCOPE_LIST_ACCOUNTS)

    def list_sub_accounts(self, account_id: int | str, *, recursive: bool = True) -> Iterator[dict[str, Any]]:
        """The sub-accounts of an account (the account itself excluded), the whole tree by default."""
        return self.paginate(
            _account_path(account_id, "/sub_accounts"),
            {"recursive": "true" if recursive else "false"},
            scope=SCOPE_LIST_SUB_ACCOUNTS,
        )

    def get_sso_settings(self, account_id: int | str) -> dict[str, Any]:
        body = self.get_json(_account_path(account_id, "/sso_settings"), scope=SCOPE_GET_SSO_SETTINGS)
        return body["sso_settings"]

    def update_sso_settings(
        self, account_id: int | str, settings: Mapping[str, str | None]
    ) -> dict[str, Any]:
        """PUT the given keys only (Canvas keeps omitted ones); ``None`` or ``""`` unsets a key.

        The settings are validated first (see :func:`validate_sso_settings`). Returns the settings
        as Canvas reports them after the change.
        """
        checked = validate_sso_settings(settings)
        form = {f"sso_settings[{key}]": value or "" for key, value in checked.items()}
        response = self.request(
            "PUT", _account_path(account_id, "/sso_settings"), data=form, scope=SCOPE_PUT_SSO_SETTINGS
        )
        return response.json()["sso_settings"]

    def reconcile_sso_settings(
        self,
        account_id: int | str,
        settings: Mapping[str, str | None],
        *,
        require_root_account: bool = True,
        dry_run: bool = False,
    ) -> SsoReconciliation:
        """Make an account's SSO settings what ``settings`` says; change only what differs.

        Everything is validated before the first request. With ``require_root_account`` the account
        is read first and a sub-account refused. After the PUT the settings Canvas reports are
        compared with the desired ones; a 5xx answer to the PUT is followed by a GET, and only what
        did not land is sent once more. ``dry_run`` reads and compares, and writes nothing.
        """
        account_id = normalize_account_id(account_id)
        desired = validate_sso_settings(settings)
        if not desired:
            raise LmsConfigurationError("no SSO settings given: nothing to restore")
        where = f"account {account_id} of {self.conn_id!r}"
        if require_root_account:
            account_id = self._root_account_id(account_id)
        before = self.get_sso_settings(account_id)
        changes = sso_differences(desired, before)
        result = SsoReconciliation(self.conn_id, account_id, False, dry_run, changes, before, before)
        if not changes:
            self.log.info("SSO settings of %s already as desired: nothing to change.", where)
            return result
        for key, value in changes.items():
            self.log.info("%s %s: %r -> %r", where, key, before.get(key), value)
        if dry_run:
            self.log.info("Dry run: %d setting(s) of %s would change; nothing written.", len(changes), where)
            return result
        after = self._put_sso_changes(account_id, desired, changes)
        still_different = sso_differences(desired, after)
        if still_different:
            raise LmsError(
                f"Canvas accepted the SSO settings update of {where} but reports other values for "
                f"{sorted(still_different)}: {json.dumps({k: after.get(k) for k in still_different})}"
            )
        self.log.info("Changed %d SSO setting(s) of %s: %s.", len(changes), where, ", ".join(changes))
        return SsoReconciliation(self.conn_id, account_id, True, dry_run, changes, before, after)

    def _root_account_id(self, account_id: int | str) -> int:
        account = self.get_account(account_id)
        if account.get("parent_account_id") is not None:
            raise LmsConfigurationError(
                f"account {account_id} ({account.get('name')!r}) of {self.conn_id!r} is a "
                f"sub-account (its parent is {account['parent_account_id']}); SSO settings belong to "
                "the root account, so nothing was changed."
            )
        self.log.info(
            "Account %s of %r is the root account %r.", account["id"], self.conn_id, account.get("name")
        )
        return int(account["id"])

    def _put_sso_changes(
        self, account_id: int | str, desired: Mapping[str, str | None], changes: Mapping[str, str | None]
    ) -> dict[str, Any]:
        """PUT the changes; after a 5xx, look before sending them again (once): a PUT may have landed."""
        try:
            return self.update_sso_settings(account_id, changes)
        except LmsUnavailableError as err:
            self.log.warning(
                "The SSO settings update failed (%s); reading them back to see if it landed.", err
            )
        current = self.get_sso_settings(account_id)
        remaining = sso_differences(desired, current)
        if not remaining:
            self.log.info("The update had landed despite the error.")
            return current
        self.log.warning(
            "The update did not land (%s still differ); sending it once more.", ", ".join(remaining)
        )
        try:
            return self.update_sso_settings(account_id, remaining)
        except LmsUnavailableError as err:
            raise LmsUnavailableError(
                f"the SSO settings of account {account_id} of {self.conn_id!r} could not be "
                f"updated: {err}. {sorted(remaining)} were still different after the first failure; "
                "run the task again when Canvas answers.",
                status=err.status,
                url=err.url,
            ) from err
