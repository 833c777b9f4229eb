"""Canvas operators: read accounts (one, the administered ones, a sub-account tree) and restore SSO settings.

They orchestrate only: every HTTP detail (paging, throttling, tokens, error wording) is in CanvasHook.
"""

from __future__ import annotations

import itertools
import json
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from functools import cached_property
from typing import TYPE_CHECKING, Any, Literal, get_args

from airflow.sdk import BaseOperator

from airflow_provider_canvas.canvas.hooks.canvas import (
    SCOPE_GET_ACCOUNT,
    SCOPE_GET_SSO_SETTINGS,
    SCOPE_LIST_ACCOUNTS,
    SCOPE_LIST_SUB_ACCOUNTS,
    SCOPE_PUT_SSO_SETTINGS,
    CanvasHook,
    normalize_account_id,
)
from airflow_provider_canvas.canvas.operators._jsonl import JsonLinesWriter, OutputPath, read_json_lines
from airflow_provider_canvas.exceptions import (
    LmsConfigurationError,
    LmsError,
    LmsNotFoundError,
    LmsPermissionError,
)

if TYPE_CHECKING:
    from airflow.sdk import Context

__all__ = ["CanvasAccountsOperator", "CanvasSsoSettingsOperator", "read_json_lines", "summarize_accounts"]

AccountsMode = Literal["account", "administered", "sub_accounts"]


class _CanvasOperator(BaseOperator):
    """The connection, a hook made only when the task runs, and errors that name what is missing."""

    #: Developer-key scopes the operator's calls need (Canvas's ``url:VERB|/path`` form). The class
    #: attribute lists every scope the operator can use; an instance narrows it to what its arguments
    #: make it call.
    required_scopes: tuple[str, ...] = ()

    def __init__(
        self,
        *,
        canvas_conn_id: str = CanvasHook.default_conn_name,
        hook_params: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.canvas_conn_id = canvas_conn_id
        # Passed to CanvasHook: timeout, max_retries, backoff_seconds, max_backoff_seconds.
        self.hook_params = dict(hook_params or {})

    @cached_property
    def hook(self) -> CanvasHook:
        return CanvasHook(self.canvas_conn_id, **self.hook_params)

    @contextmanager
    def _canvas_calls(self, account_id: int | str | None) -> Iterator[None]:
        """Say which account is unknown on which instance, and every scope the task needs."""
        self._warn_about_ungranted_scopes()
        try:
            yield
        except LmsNotFoundError as err:
            if account_id is None:
                raise
            raise LmsNotFoundError(
                f"Canvas connection {self.canvas_conn_id!r} has no account {account_id!r} ({err})",
                status=err.status,
                url=err.url,
            ) from err
        except LmsPermissionError as err:
            raise LmsPermissionError(
                f"{err} (this {type(self).__name__} task uses the developer-key scopes: "
                f"{', '.join(self.required_scopes)})",
                status=err.status,
                url=err.url,
                required_scope=err.required_scope,
            ) from err
        finally:
            self.hook.close()

    def _warn_about_ungranted_scopes(self) -> None:
        # The connection may record the scopes its token was granted; a gap will end in a 401.
        granted = self.hook.extra("scopes")
        if not granted:
            return
        missing = [scope for scope in self.required_scopes if scope not in str(granted).split()]
        if missing:
            self.log.warning(
                "Connection %r lists scopes without %s; Canvas will refuse those calls if the "
                "developer key enforces scopes.",
                self.canvas_conn_id,
                ", ".join(missing),
            )


class CanvasAccountsOperator(_CanvasOperator):
    """Read Canvas accounts: one account, the accounts the user administers, or a sub-account tree.

    :param mode: ``"account"`` (``account_id``), ``"administered"`` (``GET /api/v1/accounts``) or
        ``"sub_accounts"`` (the sub-accounts of ``account_id``, the whole tree when ``recursive``).
    :param account_id: a Canvas id or ``sis_account_id:XYZ`` (templated).
    :param include_root: in ``sub_accounts`` mode, put ``account_id`` itself first.
    :param output_path: where to write the accounts as JSON Lines when there are more than
        ``xcom_max_accounts``: a local path or an object-storage URL (templated).
    :param output_conn_id: the object-storage connection of ``output_path``.
    :param xcom_max_accounts: up to this many accounts go to XCom in the result; more are written
        to ``output_path``. 0 with an ``output_path`` always writes the file.

    Returns ``{"mode", "account_id", "count", "by_workflow_state", "path", "accounts"}``: either
    ``accounts`` (the list) or ``path`` (the file) is set, never both. Memory stays at one page of
    accounts when writing a file.
    """

    template_fields: Sequence[str] = ("canvas_conn_id", "account_id", "output_path", "output_conn_id")
    required_scopes = (SCOPE_GET_ACCOUNT, SCOPE_LIST_ACCOUNTS, SCOPE_LIST_SUB_ACCOUNTS)
    ui_color = "#e4f0e8"

    def __init__(
        self,
        *,
        mode: AccountsMode = "account",
        account_id: int | str | None = None,
        recursive: bool = True,
        include_root: bool = False,
        output_path: OutputPath | None = None,
        output_conn_id: str | None = None,
        xcom_max_accounts: int = 100,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if mode not in get_args(AccountsMode):
            raise LmsConfigurationError(f"mode must be one of {get_args(AccountsMode)}, got {mode!r}")
        if (mode == "administered") != (account_id is None):
            raise LmsConfigurationError(
                "mode 'administered' takes no account_id"
                if account_id is not None
                else f"mode {mode!r} needs an account_id"
            )
        if include_root and mode != "sub_accounts":
            raise LmsConfigurationError("include_root only applies to mode 'sub_accounts'")
        if xcom_max_accounts < 0:
            raise LmsConfigurationError("xcom_max_accounts must be 0 or more")
        self.mode = mode
        self.account_id = account_id
        self.recursive = recursive
        self.include_root = include_root
        self.output_path = output_path
        self.output_conn_id = output_conn_id
        self.xcom_max_accounts = xcom_max_accounts
        scopes = {
            "account": (SCOPE_GET_ACCOUNT,),
            "administered": (SCOPE_LIST_ACCOUNTS,),
            "sub_accounts": ((SCOPE_GET_ACCOUNT,) if include_root else ()) + (SCOPE_LIST_SUB_ACCOUNTS,),
        }
        self.required_scopes = scopes[mode]

    def execute(self, context: Context) -> dict[str, Any]:
        account_id = None if self.mode == "administered" else normalize_account_id(self.account_id)
        with self._canvas_calls(account_id):
            result = self._deliver(self._accounts(account_id))
        result = {"mode": self.mode, "account_id": account_id, **result}
        self.log.info(
            "%d account(s) from %r (%s%s): %s%s",
            result["count"],
            self.canvas_conn_id,
            self.mode,
            "" if account_id is None else f" of {account_id}",
            json.dumps(result["by_workflow_state"], sort_keys=True),
            f"; written to {result['path']}" if result["path"] else "",
        )
        return result

    def _accounts(self, account_id: int | str | None) -> Iterable[dict[str, Any]]:
        if self.mode == "account":
            assert account_id is not None
            return [self.hook.get_account(account_id)]
        if self.mode == "administered":
            return self.hook.list_accounts()
        assert account_id is not None
        tree = self.hook.list_sub_accounts(account_id, recursive=self.recursive)
        if self.include_root:
            return itertools.chain([self.hook.get_account(account_id)], tree)
        return tree

    def _deliver(self, accounts: Iterable[dict[str, Any]]) -> dict[str, Any]:
        """Keep a small result for XCom; stream a large one to the JSON Lines file."""
        states: Counter[str] = Counter()
        pending = iter(accounts)
        inline: list[dict[str, Any]] = []
        overflow = False
        for account in pending:
            states[str(account.get("workflow_state"))] += 1
            inline.append(account)
            if len(inline) > self.xcom_max_accounts:
                overflow = True
                break
        always_file = self.xcom_max_accounts == 0 and self.output_path is not None
        if not overflow and not always_file:
            return {"count": len(inline), "by_workflow_state": dict(states), "path": None, "accounts": inline}
        if self.output_path is None:
            raise LmsConfigurationError(
                f"more than {self.xcom_max_accounts} accounts: too many for XCom. Set output_path "
                "(a local path or an object-storage URL) to write them as JSON Lines, or raise "
                "xcom_max_accounts."
            )
        with JsonLinesWriter(self.output_path, conn_id=self.output_conn_id) as writer:
            for account in inline:
                writer.write(account)
            inline.clear()  # from here on, one page at a time
            for account in pending:
                states[str(account.get("workflow_state"))] += 1
                writer.write(account)
        return {
            "count": writer.count,
            "by_workflow_state": dict(states),
            "path": str(writer.target),
            "accounts": None,
        }


class CanvasSsoSettingsOperator(_CanvasOperator):
    """Make a Canvas root account's SSO settings what they should be; change only what differs.

    :param settings: the desired values of any of ``login_handle_name``, ``change_password_url``,
        ``auth_discovery_url``, ``unknown_user_url`` (templated). ``None`` or ``""`` unsets a
        setting; a key left out is left alone. URLs must be absolute http(s) URLs.
    :param account_id: the root account, a Canvas id or ``sis_account_id:XYZ`` (templated).
    :param require_root_account: read the account first and refuse to touch a sub-account.
    :param dry_run: read and compare, log what would change, write nothing.

    Everything is validated before the first request. After a PUT the settings Canvas reports are
    compared with the desired ones. A 5xx answer to the PUT is followed by a GET: if the change
    landed, the task succeeds; if not, the PUT is sent once more.

    Returns ``{"conn_id", "account_id", "changed", "dry_run", "changes", "before", "after"}``;
    ``changes`` maps each differing key to its desired value (None = unset).
    """

    template_fields: Sequence[str] = ("canvas_conn_id", "account_id", "settings")
    template_fields_renderers = {"settings": "json"}
    required_scopes = (SCOPE_GET_ACCOUNT, SCOPE_GET_SSO_SETTINGS, SCOPE_PUT_SSO_SETTINGS)
    ui_color = "#fde9d9"

    def __init__(
        self,
        *,
        settings: Mapping[str, str | None] | str,
        account_id: int | str,
        require_root_account: bool = True,
        dry_run: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.settings = settings
        self.account_id = account_id
        self.require_root_account = require_root_account
        # Not "self.dry_run": BaseOperator already has a dry_run() method.
        self.dry_run_only = dry_run
        self.required_scopes = tuple(
            scope
            for scope in type(self).required_scopes
            if not (scope == SCOPE_GET_ACCOUNT and not require_root_account)
            and not (scope == SCOPE_PUT_SSO_SETTINGS and dry_run)
        )

    def execute(self, context: Context) -> dict[str, Any]:
        settings = _as_mapping(self.settings)
        account_id = normalize_account_id(self.account_id)
        with self._canvas_calls(account_id):
            result = self.hook.reconcile_sso_settings(
                account_id,
                settings,
                require_root_account=self.require_root_account,
                dry_run=self.dry_run_only,
            )
        return result.to_dict()


def _as_mapping(settings: Mapping[str, Any] | str) -> Mapping[str, Any]:
    # A Jinja template renders to a string unless the DAG renders native objects.
    if isinstance(settings, str):
        try:
            settings = json.loads(settings)
        except ValueError:
            raise LmsConfigurationError(
                f"settings must be a mapping or a JSON object, got {settings[:100]!r}; with a Jinja "
                "template, set render_template_as_native_obj=True on the DAG"
            ) from None
    if not isinstance(settings, Mapping):
        raise LmsConfigurationError(f"settings must be a mapping, got {type(settings).__name__}")
    return settings


def summarize_accounts(accounts: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Counts by ``workflow_state`` and by depth of an account listing.

    Depth 0 is an account whose parent is not in the listing (the root, when the listing includes
    it); its sub-accounts are depth 1, and so on. Holds one parent id per account.
    """
    parents: dict[int, int | None] = {}
    states: Counter[str] = Counter()
    for account in accounts:
        parents[int(account["id"])] = account.get("parent_account_id")
        states[str(account.get("workflow_state"))] += 1
    depths: dict[int, int] = {}
    for account_id in parents:
        chain: list[int] = []
        node: int | None = account_id
        while node is not None and node in parents and node not in depths:
            chain.append(node)
            if len(chain) > len(parents):
                raise LmsError(f"the parent links of account {account_id} form a cycle")
            node = parents[node]
        depth = depths.get(node, -1) if node is not None else -1
        for member in reversed(chain):
            depth += 1
            depths[member] = depth
    by_depth = Counter(depths.values())
    return {
        "count": len(parents),
        "by_workflow_state": dict(sorted(states.items())),
        "by_depth": {str(depth): by_depth[depth] for depth in sorted(by_depth)},
        "max_depth": max(by_depth, default=0),
    }
