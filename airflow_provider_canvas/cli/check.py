"""``canvas-oauth check``: does the stored access token work, until when, and with which scopes.

Uses the stored access token only: it never refreshes, so it never spends a single-use
Brightspace refresh token nor ends the Canvas access token that running tasks hold.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pendulum

from airflow_provider_canvas.canvas.hooks.canvas import CanvasHook
from airflow_provider_canvas.cli import HOOK_CLASSES
from airflow_provider_canvas.cli.scopes import brightspace_covers, report_for
from airflow_provider_canvas.common import airflow_access as metadata
from airflow_provider_canvas.common.connection import parse_scopes
from airflow_provider_canvas.exceptions import LmsConfigurationError
from airflow_provider_canvas.tokens.diagnostics import AccessTokenCheck
from airflow_provider_canvas.tokens.model import TokenSet
from airflow_provider_canvas.tokens.store import TokenStore


@dataclass(frozen=True)
class Line:
    """One reported fact; ``ok`` False makes the check fail, None is unknown."""

    label: str
    ok: bool | None
    text: str

    def __str__(self) -> str:
        status = {True: "ok", False: "FAIL", None: "?"}[self.ok]
        return f"{self.label:<8} {status:<5} {self.text}"


def check_connection(
    conn_id: str, *, scopes: Sequence[str] = (), dag_folder: str | None = None
) -> list[Line]:
    """The lines of the report: token, expiry, then one per required scope.

    Required: ``scopes`` if given, else those of the operators in the DAGs under ``dag_folder``, or
    of every operator when it is None.
    """
    from airflow.exceptions import AirflowNotFoundException

    try:
        conn = metadata.get_connection(conn_id)
    except AirflowNotFoundException:
        raise LmsConfigurationError(
            f"connection {conn_id!r} does not exist: run `canvas-oauth authorize {conn_id}` first"
        ) from None
    platform = conn.conn_type
    if platform not in HOOK_CLASSES:
        raise LmsConfigurationError(
            f"connection {conn_id!r} has type {platform!r}, not canvas or brightspace"
        )
    hook = HOOK_CLASSES[platform](conn_id)
    try:
        tokens = TokenStore(conn_id, platform).load()
        token_check = hook.check_access_token(tokens)
        lines = [_token_line(token_check), _expiry_line(tokens)]
        # Brightspace refreshes ask for the connection's scopes (a default when unset).
        stored = hook.refresh_scope if platform == "brightspace" else hook.extra("scopes")
        recorded = parse_scopes(platform, [stored or ""])
        required = _required(platform, scopes, dag_folder)
        if platform == "brightspace" and not required:
            lines.append(
                Line(
                    "scopes",
                    None,
                    "the Brightspace operators declare no required scopes; the connection asks for "
                    f"{' '.join(recorded) or '(none)'} at each refresh",
                )
            )
        for scope in required:
            if isinstance(hook, CanvasHook):
                lines.append(_canvas_scope_line(hook, scope, tokens, token_check.works, recorded))
            else:
                lines.append(_brightspace_scope_line(scope, recorded))
        return lines
    finally:
        hook.close()


def _required(platform: str, scopes: Sequence[str], dag_folder: str | None) -> list[str]:
    if scopes:
        return parse_scopes(platform, scopes)
    return report_for(platform, dag_folder).scopes(platform)


def _token_line(check: AccessTokenCheck) -> Line:
    if check.works:
        return Line("token", True, check.detail)
    return Line(
        "token",
        False,
        f"{check.detail}. check never refreshes: a task using the connection (e.g. the "
        "lms_token_keepalive DAG) refreshes and saves the tokens; then check again",
    )


def _expiry_line(tokens: TokenSet) -> Line:
    if tokens.expires_at is None:
        return Line("expires", None, "unknown: the connection records no expiry")
    left = tokens.expires_at - pendulum.now("UTC")
    when = tokens.expires_at.to_iso8601_string()
    if left.total_seconds() <= 0:
        return Line("expires", False, f"{when}: expired")
    return Line("expires", True, f"{when} (in {left.in_words()})")


def _canvas_scope_line(
    hook: CanvasHook, scope: str, tokens: TokenSet, token_works: bool, recorded: list[str]
) -> Line:
    fix = (
        f"add it to developer key {hook.connection.login} (Admin > Developer Keys > Enforce Scopes), "
        f"then run `canvas-oauth authorize {hook.conn_id}` with it"
    )
    # Reads are probed; writes are never sent by a check, so they count as recorded.
    if token_works and tokens.access_token and scope.startswith("url:GET|"):
        granted, how = hook.probe_scope(scope, tokens.access_token)
        if granted is None:
            return Line("scope", None, f"{scope}: {how}")
        if granted:
            return Line("scope", True, f"{scope}: granted ({how})")
        return Line("scope", False, f"{scope}: NOT granted ({how}); {fix}")
    if not recorded:
        return Line(
            "scope",
            None,
            f"{scope}: unknown (not probed; the connection records no scopes, so the developer key "
            "probably does not enforce scopes and allows every endpoint)",
        )
    if scope in recorded:
        return Line("scope", True, f"{scope}: granted at authorization (recorded; not probed)")
    return Line("scope", False, f"{scope}: NOT requested at authorization; {fix}")


def _brightspace_scope_line(scope: str, recorded: list[str]) -> Line:
    if brightspace_covers(recorded, scope):
        return Line("scope", True, f"{scope}: granted at authorization (recorded; not probed)")
    return Line(
        "scope", False, f"{scope}: NOT granted; add it to the app's Scope, then authorize again with it"
    )
