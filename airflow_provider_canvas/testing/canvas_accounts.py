"""Canvas accounts for the emulator: the account tree, SSO settings and Canvas's Link-header pagination."""

from __future__ import annotations

import base64
import binascii
import bisect
import hashlib
import json
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

from airflow_provider_canvas.testing.canvas_oauth import CanvasOAuth, Grant
from airflow_provider_canvas.testing.primitives import EmulatorHost, Request, Response, json_response, utcnow

NOT_FOUND = {"errors": [{"message": "The specified resource does not exist."}]}
USER_NOT_AUTHORIZED = {
    "status": "unauthorized",
    "errors": [{"message": "user not authorized to perform that action"}],
}
SSO_KEYS = ("login_handle_name", "change_password_url", "auth_discovery_url", "unknown_user_url")


@dataclass(slots=True)
class Account:
    id: int
    name: str
    parent_account_id: int | None
    root_account_id: int | None
    sis_account_id: str | None = None
    workflow_state: str = "active"
    integration_id: str | None = None
    default_time_zone: str = "America/Denver"
    default_storage_quota_mb: int = 500

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            # Derived, not stored: keeps generating 100,000 accounts cheap.
            "uuid": hashlib.sha1(f"canvas-account-{self.id}".encode()).hexdigest(),
            "parent_account_id": self.parent_account_id,
            "root_account_id": self.root_account_id,
            "workflow_state": self.workflow_state,
            "default_time_zone": self.default_time_zone,
            "sis_account_id": self.sis_account_id,
            "integration_id": self.integration_id,
            "default_storage_quota_mb": self.default_storage_quota_mb,
        }


@dataclass(frozen=True)
class SsoWrite:
    """One successful PUT of SSO settings: which keys it changed to what (None = unset)."""

    account_id: int
    changes: dict[str, str | None]
    at: datetime


class CanvasAccounts(CanvasOAuth):
    """Accounts and SSO settings: the setup API tests use and the handlers the routes call."""

    def __init__(self, emulator: EmulatorHost) -> None:
        super().__init__(emulator)
        self.unauthorized_users: set[int] = set()  # users who are not account admins
        self.per_page_default = 10
        self.per_page_clamp = 50
        self.include_last_link = False
        self.accounts: dict[int, Account] = {}
        # Children lists (key None = root accounts) are kept sorted so pages are slices, not scans.
        self._children: dict[int | None, list[int]] = {}
        self._sis: dict[str, int] = {}
        self._descendants: dict[int, list[int]] = {}
        self._sso: dict[int, dict[str, str | None]] = {}
        self._sso_writes: list[SsoWrite] = []

    def add_account(
        self,
        id: int,
        name: str,
        parent_account_id: int | None = None,
        sis_account_id: str | None = None,
        workflow_state: str = "active",
        integration_id: str | None = None,
    ) -> Account:
        with self._lock:
            if id in self.accounts:
                raise ValueError(f"account {id} already exists")
            root_id: int | None = None
            if parent_account_id is not None:
                parent = self.accounts.get(parent_account_id)
                if parent is None:
                    raise ValueError(f"parent account {parent_account_id} does not exist")
                root_id = parent.root_account_id or parent.id
            account = Account(
                id, name, parent_account_id, root_id, sis_account_id, workflow_state, integration_id
            )
            self._insert(account)
            return account

    def generate_account_tree(self, count: int, root_id: int = 1, fanout: int = 10) -> None:
        """`count` accounts in all (root included), ids root_id.., breadth-first, `fanout` children each."""
        if count < 1 or fanout < 1:
            raise ValueError("count and fanout must be positive")
        with self._lock:
            if any(aid in self.accounts for aid in range(root_id, root_id + count)):
                raise ValueError("generated account ids collide with existing accounts")
            self._insert(Account(root_id, "Root Account", None, None, f"ROOT-{root_id}"))
            for index in range(1, count):
                aid = root_id + index
                parent = root_id + (index - 1) // fanout
                self._insert(Account(aid, f"Account {aid}", parent, root_id, f"A{aid}"))

    def set_sso_settings(self, account_id: int, **values: str | None) -> None:
        unknown = set(values) - set(SSO_KEYS)
        if unknown:
            raise ValueError(f"unknown SSO settings {sorted(unknown)}")
        with self._lock:
            self._sso_for(account_id).update({k: v or None for k, v in values.items()})

    def get_sso_settings(self, account_id: int) -> dict[str, str | None]:
        with self._lock:
            return dict(self._sso_for(account_id))

    @property
    def sso_writes(self) -> list[SsoWrite]:
        with self._lock:
            return list(self._sso_writes)

    # ================================================================= internals: state
    def _insert(self, account: Account) -> None:
        self.accounts[account.id] = account
        if account.sis_account_id:
            self._sis[account.sis_account_id] = account.id
        self._descendants.clear()
        if account.workflow_state == "deleted":
            return  # deleted accounts are fetchable by id but never listed
        siblings = self._children.setdefault(account.parent_account_id, [])
        if not siblings or siblings[-1] < account.id:
            siblings.append(account.id)
        else:
            bisect.insort(siblings, account.id)

    def _descendants_of(self, account_id: int) -> list[int]:
        with self._lock:
            cached = self._descendants.get(account_id)
            if cached is None:
                # Computed once per tree version; every page after that is a bisect and a slice.
                cached = []
                queue = deque(self._children.get(account_id, ()))
                while queue:
                    aid = queue.popleft()
                    cached.append(aid)
                    queue.extend(self._children.get(aid, ()))
                cached.sort()
                self._descendants[account_id] = cached
            return cached

    def _sso_for(self, account_id: int) -> dict[str, str | None]:
        return self._sso.setdefault(account_id, dict.fromkeys(SSO_KEYS))

    def _resolve(self, ref: str) -> Account | None:
        if ref == "self":
            roots = self._children.get(None)
            return self.accounts.get(roots[0]) if roots else None
        if ref.startswith("sis_account_id:"):
            aid = self._sis.get(ref[len("sis_account_id:") :])
            return None if aid is None else self.accounts.get(aid)
        return self.accounts.get(int(ref)) if ref.isdigit() else None

    def _get_account(self, request: Request, grant: Grant, params: dict[str, str]) -> Response:
        account = self._resolve(params["id"])
        return json_response(404, NOT_FOUND) if account is None else json_response(200, account.to_json())

    def _get_user(self, request: Request, grant: Grant, params: dict[str, str]) -> Response:
        if params["id"] not in ("self", str(grant.user_id)):
            return json_response(401, USER_NOT_AUTHORIZED)
        return json_response(200, self._user_json(grant.user_id))

    def _list_roots(self, request: Request, grant: Grant, params: dict[str, str]) -> Response:
        return self._paginate(request, self._children.get(None, []))

    def _sub_accounts(self, request: Request, grant: Grant, params: dict[str, str]) -> Response:
        account = self._resolve(params["account_id"])
        if account is None:
            return json_response(404, NOT_FOUND)
        if (request.arg("recursive") or "").lower() in ("true", "1"):
            ids = self._descendants_of(account.id)
        else:
            ids = self._children.get(account.id, [])
        return self._paginate(request, ids)

    def _get_sso(self, request: Request, grant: Grant, params: dict[str, str]) -> Response:
        account = self._resolve(params["account_id"])
        if account is None:
            return json_response(404, NOT_FOUND)
        if account.parent_account_id is not None:
            return json_response(401, USER_NOT_AUTHORIZED)  # SSO settings need root-account admin rights
        return json_response(200, {"sso_settings": self.get_sso_settings(account.id)})

    def _put_sso(self, request: Request, grant: Grant, params: dict[str, str]) -> Response:
        account = self._resolve(params["account_id"])
        if account is None:
            return json_response(404, NOT_FOUND)
        if account.parent_account_id is not None:
            return json_response(401, USER_NOT_AUTHORIZED)
        changes: dict[str, str | None] = {}
        body = request.json()
        if isinstance(body, dict) and isinstance(body.get("sso_settings"), dict):
            for key in SSO_KEYS:
                if key in body["sso_settings"]:
                    changes[key] = body["sso_settings"][key] or None
        for source in (request.query, request.form):
            for key in SSO_KEYS:
                values = source.get(f"sso_settings[{key}]")
                if values is not None:
                    changes[key] = values[-1] or None  # an empty value unsets the setting
        with self._lock:
            settings = self._sso_for(account.id)
            settings.update(changes)
            if changes:
                self._sso_writes.append(SsoWrite(account.id, changes, utcnow()))
            return json_response(200, {"sso_settings": dict(settings)})

    # ----------------------------------------------------------------- pagination
    def _paginate(self, request: Request, ids: Sequence[int]) -> Response:
        try:
            per_page = int(request.arg("per_page") or self.per_page_default)
        except ValueError:
            per_page = self.per_page_default
        if per_page < 1:
            per_page = self.per_page_default
        per_page = min(per_page, self.per_page_clamp)  # silently, as Canvas does
        page = request.arg("page") or "first"
        if page == "first":
            start = 0
        elif page.isdigit():
            start = (max(int(page), 1) - 1) * per_page
        elif page.startswith("bookmark:"):
            last_id = _decode_bookmark(page)
            if last_id is None:
                return json_response(400, {"errors": [{"message": "invalid bookmark"}]})
            start = bisect.bisect_right(ids, last_id)  # ids are sorted: the bookmark is the last id seen
        else:
            return json_response(400, {"errors": [{"message": "invalid page"}]})
        page_ids = ids[start : start + per_page]
        accounts = [self.accounts[aid].to_json() for aid in page_ids]

        def link(page_value: str, rel: str) -> str:
            return f'<{self._page_url(request, page_value, per_page)}>; rel="{rel}"'

        links = [link(page, "current")]
        if start + per_page < len(ids):
            links.append(link(_bookmark(ids[start + per_page - 1]), "next"))
        if start > 0:
            prev_start = max(0, start - per_page)
            links.append(link("first" if prev_start == 0 else _bookmark(ids[prev_start - 1]), "prev"))
        links.append(link("first", "first"))
        if self.include_last_link:
            last_start = max(0, (len(ids) - 1) // per_page * per_page)
            links.append(link("first" if last_start == 0 else _bookmark(ids[last_start - 1]), "last"))
        return json_response(200, accounts, {"Link": ",".join(links)})

    def _page_url(self, request: Request, page: str, per_page: int) -> str:
        # access_token never goes into a Link: clients log links.
        kept = [
            (key, value)
            for key, values in request.query.items()
            if key not in ("page", "per_page", "access_token")
            for value in values
        ]
        kept += [("page", page), ("per_page", str(per_page))]
        return f"{self._emu.url}{request.path}?{urlencode(kept)}"


def _fmt(value: float) -> str:
    return f"{value:.3f}"


def _bookmark(last_id: int) -> str:
    raw = base64.urlsafe_b64encode(json.dumps([last_id]).encode()).decode().rstrip("=")
    return f"bookmark:{raw}"


def _decode_bookmark(page: str) -> int | None:
    raw = page[len("bookmark:") :]
    try:
        value = json.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
    except (ValueError, binascii.Error):
        return None
    if isinstance(value, list) and len(value) == 1 and isinstance(value[0], int):
        return value[0]
    return None
