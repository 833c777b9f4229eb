"""The OAuth token lifecycle shared by both hooks: when to refresh, and how never to lose a token."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

from airflow_provider_canvas.common import airflow_access as metadata
from airflow_provider_canvas.exceptions import LmsAuthError, LmsConfigurationError, TokenSaveError
from airflow_provider_canvas.tokens.model import TokenSet
from airflow_provider_canvas.tokens.rescue import RescueFile
from airflow_provider_canvas.tokens.store import TokenStore

log = logging.getLogger(__name__)

_SAVE_ATTEMPTS = 3


def _mask(tokens: TokenSet) -> None:
    from airflow.sdk.log import mask_secret

    for secret in (tokens.access_token, tokens.refresh_token):
        if secret:
            mask_secret(secret)


def _drill_stall(step: str) -> None:
    """Failure drills only: ``CANVAS_PROVIDER_DRILL_STALL=<step>:<seconds>`` holds the refresh here.

    Lets a test kill a worker at a known step (``token_response``, ``durable_copy``, ``saved``).
    """
    name, _, seconds = os.environ.get("CANVAS_PROVIDER_DRILL_STALL", "").partition(":")
    if name == step:
        log.warning("Drill: stalled after %s for %ss.", step, seconds)
        time.sleep(float(seconds))


class TokenLifecycle:
    """Hands out a valid access token for one connection, refreshing it safely.

    * The access token is reused while it has more than ``buffer_seconds`` left.
    * A refresh happens under a lock shared by every worker using the connection, and only if
      the tokens re-read after taking the lock still need it: a single-use refresh token is
      never presented twice, and parallel Canvas tasks do not kill each other's access token.
    * New tokens go first to a local rescue file, then to the central copy every worker reads
      (an Airflow Variable), then to the connection, which is read back. If the connection cannot
      be written, the task goes on: the central copy holds the tokens, and the next worker that
      can write the connection puts them there.
    * A refresh token the server refused as used is remembered in the central copy: no worker
      presents it again, each fails at once with an error that says where live tokens could be.

    ``refresh`` performs the token request (HTTP lives in the hook); ``lock`` opens the lock.
    """

    def __init__(
        self,
        store: TokenStore,
        refresh: Callable[[TokenSet], TokenSet],
        lock: Callable[[], AbstractContextManager[None]],
        rescue: RescueFile,
        *,
        buffer_seconds: int,
    ) -> None:
        self.store = store
        self.refresh_count = 0
        #: Seconds from the last token response to its durable central copy (None: not written).
        self.custody_seconds: float | None = None
        self._refresh = refresh
        self._lock = lock
        self._rescue = rescue
        self._buffer = buffer_seconds
        self._tokens: TokenSet | None = None
        self._rejected: set[str] = set()
        self._mutex = threading.Lock()
        self._warned_unsaved = False

    def access_token(self) -> str:
        with self._mutex:
            if not self._usable(self._tokens):
                self._tokens = self.store.load()
                due = not self._usable(self._tokens)
                if due or (self.store.connection_behind and self.store.writable):
                    self._tokens = self._under_lock(refresh=due)
            assert self._tokens is not None and self._tokens.access_token
            return self._tokens.access_token

    @property
    def expires_at(self) -> Any:
        return self._tokens.expires_at if self._tokens else None

    def adopt(self, tokens: TokenSet, *, before_save: Callable[[], None] | None = None) -> bool:
        """Keep tokens a person's consent produced (``canvas-oauth authorize``) as a refresh keeps its own.

        Under the refresh lock: the rescue file first, then ``before_save`` (the CLI creates or
        updates the connection there), then the central copy and the connection, read back.
        Returns whether the connection holds them (else the central copy does, and says so).
        """
        _mask(tokens)

        def prepare() -> None:
            if before_save is not None:
                before_save()
            self.store.load()  # what the connection holds now: the central copy records it

        with self._mutex, self._lock():
            saved = self._keep(tokens, time.monotonic(), prepare=prepare, obtained_by="authorized")
            self._tokens = tokens
        return saved

    def reject(self, access_token: str) -> None:
        """The API refused this token (revoked, or replaced by another worker's refresh)."""
        with self._mutex:
            self._rejected.add(access_token)

    def _usable(self, tokens: TokenSet | None) -> bool:
        return tokens is not None and tokens.is_usable(self._buffer, rejected=self._rejected)

    def _under_lock(self, *, refresh: bool) -> TokenSet:
        """Re-read under the lock; write back what only the central copy holds; refresh if still due."""
        with self._lock():
            current = self._recover(self.store.load())
            caught_up = self.store.connection_behind and self.store.writable
            if caught_up:
                self._catch_up(current)
            if self._usable(current):
                if refresh and not caught_up:
                    log.info("Connection %r: another worker refreshed the tokens.", self.store.conn_id)
                return current
            return self._refresh_now(current)

    def _refresh_now(self, current: TokenSet) -> TokenSet:
        if not current.refresh_token:
            raise LmsConfigurationError(
                f"connection {self.store.conn_id!r} has no refresh token: run the OAuth "
                "authorization once and store the refresh token in the connection's extra"
            )
        if self.store.is_spent(current.refresh_token):
            raise LmsAuthError(self._lost_message("already"), error="invalid_grant")
        try:
            fresh = self._refresh(current)
        except LmsAuthError as err:
            if err.error != "invalid_grant":
                raise
            self._mark_spent(current)
            raise LmsAuthError(f"{err} {self._lost_message('now')}", error=err.error) from None
        received = time.monotonic()
        _mask(fresh)
        self.refresh_count += 1
        _drill_stall("token_response")
        saved = self._keep(fresh, received)
        log.info(
            "Connection %r: refreshed the access token (valid until %s); saved to %s.",
            self.store.conn_id,
            fresh.expires_at,
            self.store.location if saved else f"the Airflow Variable {self.store.variable_key!r} only",
        )
        return fresh

    def _catch_up(self, tokens: TokenSet) -> None:
        """Write to the connection what only the central copy holds (a save failed, or its worker died)."""
        central = self.store.central
        log.warning(
            "Connection %r: the connection holds older tokens than the Airflow Variable %r, where %s "
            "kept the tokens it refreshed at %s and could not save to the connection. Using those and "
            "writing them to the connection now.",
            self.store.conn_id,
            self.store.variable_key,
            central.written_by if central and central.written_by else "another worker",
            central.written_at if central and central.written_at else "an unknown time",
        )
        reason = self._save(tokens)
        if reason is not None:
            self._warn_unsaved(reason)

    def _recover(self, stored: TokenSet) -> TokenSet:
        """Tokens a crashed or failed save left in this host's rescue file win if they are newer."""
        rescued = self._rescue.read(self.store.platform)
        if rescued is None:
            return stored
        if not rescued.is_newer_than(stored):
            self._rescue.clear()
            return stored
        _mask(rescued)
        log.warning(
            "Connection %r: restoring tokens that an earlier refresh on this host could not save (%s).",
            self.store.conn_id,
            self._rescue.path,
        )
        self._keep(rescued, time.monotonic())
        return rescued

    def _mark_spent(self, current: TokenSet) -> None:
        try:
            self.store.mark_spent(current.refresh_token)
        except Exception as err:  # the refusal itself is what matters; report it either way
            log.error("Could not record the refused refresh token in %r (%s).", self.store.variable_key, err)

    def _lost_message(self, when: str) -> str:
        central = self.store.central
        refused = (
            f" by {central.spent_by} at {central.spent_at}"
            if when == "already" and central is not None
            else ""
        )
        return (
            f"The refresh token stored for connection {self.store.conn_id!r} was {when} refused as used"
            f"{refused}, and neither the connection nor the Airflow Variable {self.store.variable_key!r} "
            "holds newer tokens, so it is not presented again. Live tokens can only be in the rescue "
            f"file of a worker that died during a refresh ({self._rescue.path.parent}/ on that host): "
            "restore it with `python -m airflow_provider_canvas.tokens.restore <conn_id> <file>`. "
            f"Otherwise authorize again: `canvas-oauth authorize {self.store.conn_id}`."
        )

    def _keep(
        self,
        tokens: TokenSet,
        received: float,
        *,
        prepare: Callable[[], None] | None = None,
        obtained_by: str = "refreshed",
    ) -> bool:
        """Rescue file, central copy, connection: in that order, each as soon as possible.

        Returns whether the tokens reached the connection (or, for a shadowed one, the Variable).
        """
        try:
            self._rescue.write(tokens)
        except OSError as err:  # the central copy and the save below still follow
            log.error("Could not write the rescue copy %s (%s).", self._rescue.path, err)
        if prepare is not None:
            prepare()
        durable = self._keep_central(tokens)
        if durable:
            self.custody_seconds = time.monotonic() - received
            _drill_stall("durable_copy")
        if self.store.writable:
            reason = self._save(tokens)
        else:  # a shadowed connection: the Variable is where its tokens live
            reason = None if durable else "the Airflow Variable could not be written"
        if reason is None:
            _drill_stall("saved")
            self._rescue.clear()
            return True
        if durable:
            self._rescue.clear()  # the central copy holds them for every worker
            self._warn_unsaved(reason)
            return False
        raise TokenSaveError(
            f"The tokens of connection {self.store.conn_id!r} were {obtained_by} but could be saved neither "
            f"to {self.store.location} ({reason}) nor to the Airflow Variable {self.store.variable_key!r}. "
            f"The new tokens are kept in {self._rescue.path} (mode 0600). The next refresh on this host "
            "restores them automatically; from another host run `python -m "
            f"airflow_provider_canvas.tokens.restore {self.store.conn_id} {self._rescue.path}` once the "
            "metadata store accepts writes. Do not edit the connection's tokens by hand meanwhile.",
            rescue_path=self._rescue.path,
        )

    def _keep_central(self, tokens: TokenSet) -> bool:
        try:
            self.store.keep_central(tokens)
        except Exception as err:
            log.error(
                "Connection %r: could not write the central copy to the Airflow Variable %r (%s: %s); "
                "until the connection is saved, the new tokens are only in %s.",
                self.store.conn_id,
                self.store.variable_key,
                type(err).__name__,
                err,
                self._rescue.path,
            )
            return False
        return True

    def _save(self, tokens: TokenSet) -> str | None:
        """Save to the connection with retries; the reason of the last failure, or None when saved."""
        reason = None
        for attempt in range(1, _SAVE_ATTEMPTS + 1):
            try:
                self.store.save(tokens)
            except Exception as err:
                reason = f"{type(err).__name__}: {err}"
                log.warning(
                    "Saving the tokens of connection %r failed (attempt %d/%d): %s",
                    self.store.conn_id,
                    attempt,
                    _SAVE_ATTEMPTS,
                    reason,
                )
                if not getattr(err, "retryable", True):
                    break  # refused credentials and the like: a second try cannot go better
                if attempt < _SAVE_ATTEMPTS:
                    time.sleep(0.5 * 2**attempt)
            else:
                return None
        return reason

    def _warn_unsaved(self, reason: str | None) -> None:
        if self._warned_unsaved:
            return
        self._warned_unsaved = True
        log.warning(
            "Connection %r: the refreshed tokens could not be written to the connection (%s). They are "
            "kept in the Airflow Variable %r, which every worker reads, and the next task that can write "
            "the connection puts them there; nothing is lost and this task goes on. To let tasks write "
            "connections, create the connection %r (login/password of an Airflow user allowed to edit "
            "connections, or a bearer token) or fix its credentials; see docs/tokens.md.",
            self.store.conn_id,
            reason,
            self.store.variable_key,
            metadata.api_conn_id(),
        )
