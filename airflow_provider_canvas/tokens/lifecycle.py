"""The OAuth token lifecycle shared by both hooks: when to refresh, and how never to lose a token."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from airflow_provider_canvas.common import airflow_access as metadata
from airflow_provider_canvas.exceptions import (
    LmsAuthError,
    LmsConfigurationError,
    MetadataWriteError,
    TokenSaveError,
)
from airflow_provider_canvas.tokens.durable import DurableCopy
from airflow_provider_canvas.tokens.model import TokenSet
from airflow_provider_canvas.tokens.record import fingerprint
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

    Lets a test kill a worker at a known step (``announced``, ``token_response``, ``durable_copy``,
    ``saved``). ``CANVAS_PROVIDER_DRILL_MARK=<file>``: the pid is written there when it stalls.
    """
    name, _, seconds = os.environ.get("CANVAS_PROVIDER_DRILL_STALL", "").partition(":")
    if name == step:
        log.warning("Drill: stalled after %s for %ss.", step, seconds)
        mark = os.environ.get("CANVAS_PROVIDER_DRILL_MARK")
        if mark:
            Path(mark).write_text(str(os.getpid()))
        time.sleep(float(seconds))


class TokenLifecycle:
    """Hands out a valid access token for one connection, refreshing it safely.

    * The access token is reused while it has more than ``buffer_seconds`` left.
    * A refresh happens under a lock shared by every worker using the connection, and only if
      the tokens re-read after taking the lock still need it: a single-use refresh token is
      never presented twice, and parallel Canvas tasks do not kill each other's access token.
    * Before a single-use refresh token is presented, the refresh is announced centrally (the lock
      backend, else the Variable); a worker that finds an announcement nobody completed does not
      present that token but fails naming the worker that died and where its tokens may be.
    * New tokens go first to a local rescue file, then to the lock backend's durable copy (a
      millisecond), then to the Airflow Variable every worker reads, then to the connection, which
      is read back. Each record has a generation, and the refresh tokens it rotated away from are
      remembered: a connection holding an older one is stale, whatever it says.
    * If the connection cannot be written, the task goes on: the central copies hold the tokens,
      and the next worker that can write the connection puts them there.
    * A refresh token the server refused as used is remembered centrally: no worker presents it
      again. On such a refusal the central copies' tokens are tried before the chain is given up.

    ``refresh`` performs the token request (HTTP lives in the hook); ``lock`` opens the lock and
    yields the lock backend's durable copy (None for the file lock).
    """

    def __init__(
        self,
        store: TokenStore,
        refresh: Callable[[TokenSet], TokenSet],
        lock: Callable[[], AbstractContextManager[DurableCopy | None]],
        rescue: RescueFile,
        *,
        buffer_seconds: int,
        single_use: bool = True,
    ) -> None:
        self.store = store
        self.refresh_count = 0
        #: Seconds from the last token response to its durable central copy (None: not written).
        self.custody_seconds: float | None = None
        self._refresh = refresh
        self._lock = lock
        self._rescue = rescue
        self._buffer = buffer_seconds
        self._single_use = single_use
        self._tokens: TokenSet | None = None
        self._rejected: set[str] = set()
        self._mutex = threading.Lock()

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

        with self._mutex, self._lock() as durable:

            def prepare() -> None:
                if before_save is not None:
                    before_save()
                self.store.load(durable)  # what the connection holds now: the central record records it

            saved = self._keep(tokens, time.monotonic(), durable, prepare=prepare, obtained_by="authorized")
            self._tokens = tokens
        return saved

    def reject(self, access_token: str) -> None:
        """The API refused this token (revoked, or replaced by another worker's refresh)."""
        with self._mutex:
            self._rejected.add(access_token)

    def _usable(self, tokens: TokenSet | None) -> bool:
        return tokens is not None and tokens.is_usable(self._buffer, rejected=self._rejected)

    def _under_lock(self, *, refresh: bool) -> TokenSet:
        """Re-read under the lock; write back what only a central copy holds; refresh if still due."""
        with self._lock() as durable:
            current = self._recover(self.store.load(durable), durable)
            self._sync_copies(durable)
            caught_up = self.store.connection_behind and self.store.writable
            if caught_up:
                self._catch_up(current)
            if self._usable(current):
                if refresh and not caught_up:
                    log.info("Connection %r: another worker refreshed the tokens.", self.store.conn_id)
                return current
            return self._refresh_now(current, durable)

    def _refresh_now(self, current: TokenSet, durable: DurableCopy | None, *, retry: bool = True) -> TokenSet:
        if not current.refresh_token:
            raise LmsConfigurationError(
                f"connection {self.store.conn_id!r} has no refresh token: run the OAuth "
                "authorization once and store the refresh token in the connection's extra"
            )
        if self.store.is_spent(current.refresh_token):
            raise LmsAuthError(self._lost_message("already"), error="invalid_grant")
        if self._single_use:
            self._refuse_interrupted(current)
            self._refuse_foreign(current, durable)
            # Written before the token leaves: if this worker dies from here on, nobody presents it again.
            self._announce(current, durable)
            _drill_stall("announced")
        try:
            fresh = self._refresh(current)
        except LmsAuthError as err:
            if err.error != "invalid_grant":
                self._withdraw(durable)
                raise
            self._mark_spent(durable, current)
            alternative = self._central_alternative(current, durable) if retry else None
            if alternative is not None:
                if self._usable(alternative):
                    return alternative
                return self._refresh_now(alternative, durable, retry=False)
            raise LmsAuthError(f"{err} {self._lost_message('now')}", error=err.error) from None
        except Exception as err:
            if not getattr(err, "maybe_used", False):  # the server answered, or never saw it
                self._withdraw(durable)
            raise
        received = time.monotonic()
        self.refresh_count += 1
        _drill_stall("token_response")
        saved = self._keep(fresh, received, durable, presented=current)
        log.info(
            "Connection %r: refreshed the access token (valid until %s, generation %s); saved to %s.",
            self.store.conn_id,
            fresh.expires_at,
            self.store.central.generation if self.store.central else "?",
            self.store.location if saved else self._central_names(durable),
        )
        return fresh

    def _announce(self, current: TokenSet, durable: DurableCopy | None) -> None:
        try:
            self.store.announce(durable, current, str(self._rescue.path))
        except Exception as err:
            where = (
                durable.name if durable is not None else f"the Airflow Variable {self.store.variable_key!r}"
            )
            raise MetadataWriteError(
                f"the refresh of connection {self.store.conn_id!r} could not be announced in {where} "
                f"({type(err).__name__}: {err}), so its refresh token was not presented: the stored tokens "
                "are intact. Retry once that store accepts writes."
            ) from None

    def _refuse_interrupted(self, current: TokenSet) -> None:
        """A refresh announced for this token and never completed: its worker died or lost the lock."""
        central = self.store.central
        announced = central.announce if central else None
        if announced is None or announced.presenting != fingerprint(current.refresh_token):
            return
        conn_id = self.store.conn_id
        raise LmsAuthError(
            f"A refresh of connection {conn_id!r} was started by worker {announced.host} (pid "
            f"{announced.pid}) at {announced.at}, recorded in {central.source if central else '?'}, and "
            "never completed: that worker died or lost the lock after announcing it. The refresh token "
            "it presented may be consumed, so it is not presented again. If the token response arrived, "
            f"the new tokens are only in that worker's rescue file {announced.rescue} on host "
            f"{announced.host}: restore them there with `python -m airflow_provider_canvas.tokens.restore "
            f"{conn_id} {announced.rescue}`. If that file does not exist, authorize again: "
            f"`canvas-oauth authorize {conn_id}`.",
            error="refresh_interrupted",
        )

    def _refuse_foreign(self, current: TokenSet, durable: DurableCopy | None) -> None:
        """One refresh token, one connection: a copied connection would present a consumed token."""
        held = fingerprint(current.refresh_token)
        if durable is None or held is None:
            return
        try:
            owner = durable.owner(held)
        except Exception as err:  # the check is a guard, not the refresh: report and go on
            log.warning("Could not check who owns the refresh token in %s (%s).", durable.name, err)
            return
        if owner != self.store.conn_id:
            raise LmsConfigurationError(
                f"the refresh token of connection {self.store.conn_id!r} (fingerprint {held[:8]}) belongs "
                f"to connection {owner!r}, which presented or received it first ({durable.name}): the "
                "connection was copied. It is not presented, since one of the two would present a "
                f"consumed token. Authorize {self.store.conn_id!r} on its own: `canvas-oauth authorize "
                f"{self.store.conn_id}`."
            )

    def _central_alternative(self, refused: TokenSet, durable: DurableCopy | None) -> TokenSet | None:
        """After ``invalid_grant``: tokens of a central copy that hold another, newer refresh token."""
        self.store.load(durable)
        gone = fingerprint(refused.refresh_token)
        records = [r for r in (self.store.durable_record, self.store.variable_record) if r is not None]
        for record in records:
            # Only a token no store knows as rotated away from: an older one is consumed for sure.
            older = any(record.current in other.superseded for other in records)
            if record.current not in (None, gone, record.spent) and not older:
                log.warning(
                    "Connection %r: the refresh token presented was refused as used; %s. Trying those.",
                    self.store.conn_id,
                    record.describe(),
                )
                return record.tokens
        return None

    def _sync_copies(self, durable: DurableCopy | None) -> None:
        """Bring the lock backend and the Variable to the same generation (a worker died between them)."""
        store = self.store
        if durable is None or store.central is None:
            return
        behind = [record for record in (store.durable_record, store.variable_record) if record is not None]
        if len(behind) == 2 and behind[0].generation == behind[1].generation:
            return
        try:
            if store.durable_record is None or store.durable_record.generation < store.central.generation:
                store.write_durable(durable, store.central)
            else:
                store.write_variable(store.central)
        except Exception as err:
            log.warning("Connection %r: could not bring the central copies level (%s).", store.conn_id, err)

    def _withdraw(self, durable: DurableCopy | None) -> None:
        try:
            self.store.withdraw(durable)
        except Exception as err:  # the refresh's own error is what the caller needs
            log.error("Could not withdraw the announced refresh of %r (%s).", self.store.conn_id, err)

    def _catch_up(self, tokens: TokenSet) -> None:
        """Write to the connection what only a central copy holds (a save failed, or its worker died)."""
        central = self.store.central
        log.warning(
            "Connection %r: the connection holds older tokens than %s, where %s kept the tokens it "
            "refreshed at %s and could not save to the connection. Using those and writing them to the "
            "connection now.",
            self.store.conn_id,
            central.describe() if central else "the central copy",
            central.written_by if central and central.written_by else "another worker",
            central.written_at if central and central.written_at else "an unknown time",
        )
        reason = self._save(tokens)
        if reason is not None:
            self._warn_unsaved(reason)

    def _recover(self, stored: TokenSet, durable: DurableCopy | None) -> TokenSet:
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
        self._keep(rescued, time.monotonic(), durable, presented=stored)
        return rescued

    def _mark_spent(self, durable: DurableCopy | None, current: TokenSet) -> None:
        try:
            self.store.mark_spent(durable, current.refresh_token)
        except Exception as err:  # the refusal itself is what matters; report it either way
            log.error("Could not record the refused refresh token of %r (%s).", self.store.conn_id, err)

    def _lost_message(self, when: str) -> str:
        store = self.store
        central = store.central
        refused = (
            f" (the server refused it when worker {central.spent_by} presented it at {central.spent_at})"
            if when == "already" and central is not None and central.spent_by
            else ""
        )
        held = [f"the connection holds refresh token {(store.connection_fingerprint or '-')[:8]}"]
        held += [record.describe() for record in (store.durable_record, store.variable_record) if record]
        return (
            f"The refresh token stored for connection {store.conn_id!r} was {when} refused as used{refused}, "
            f"and no store holds a newer one ({'; '.join(held)}), so it is not presented again. Live "
            "tokens can only be in the rescue file of a worker that died during a refresh (`rescue/` "
            "under the state_dir of that worker's host): restore it with `python -m "
            "airflow_provider_canvas.tokens.restore <conn_id> <file>` there. "
            f"Otherwise authorize again: `canvas-oauth authorize {store.conn_id}`."
        )

    def _central_names(self, durable: DurableCopy | None) -> str:
        variable = f"the Airflow Variable {self.store.variable_key!r}"
        return f"{durable.name} and {variable} only" if durable is not None else f"{variable} only"

    def _keep(
        self,
        tokens: TokenSet,
        received: float,
        durable: DurableCopy | None,
        *,
        presented: TokenSet | None = None,
        prepare: Callable[[], None] | None = None,
        obtained_by: str = "refreshed",
    ) -> bool:
        """Lock backend, rescue file, Variable, connection: in that order, each as soon as possible.

        The lock backend's copy comes first, on the lock's open connection: a local fsync can take
        longer on a busy disk. Returns whether the tokens reached the connection (or, for a shadowed
        one, a central copy).
        """
        durable_ok = False
        if durable is not None and prepare is None:  # a refresh: the record is known already
            record = self.store.next_record(
                tokens, presented if presented is not None else self._connection()
            )
            durable_ok = self._keep_central(lambda: self.store.write_durable(durable, record), durable.name)
            if durable_ok:
                self._durable_now(received)
        # Masked after the lock backend's copy: inside a task, each mask_secret is a round trip to the
        # supervisor (about half a second at load), and nothing before this point logs a token.
        _mask(tokens)
        try:
            self._rescue.write(tokens)
        except OSError as err:  # the central copies and the save below still follow
            log.error("Could not write the rescue copy %s (%s).", self._rescue.path, err)
        if prepare is not None:  # consent: the record follows what the connection holds after this
            prepare()
            record = self.store.next_record(tokens, self._connection())
            durable_ok = durable is not None and self._keep_central(
                lambda: self.store.write_durable(durable, record), durable.name
            )
            if durable_ok:
                self._durable_now(received)
        elif durable is None or not durable_ok:
            record = self.store.next_record(
                tokens, presented if presented is not None else self._connection()
            )
        variable_ok = self._keep_central(
            lambda: self.store.write_variable(record), f"the Airflow Variable {self.store.variable_key!r}"
        )
        if variable_ok and not durable_ok:
            self._durable_now(received)
        if durable is not None and durable_ok and self._single_use and tokens.refresh_token:
            self._claim(durable, tokens)
        central_ok = durable_ok or variable_ok
        if self.store.writable:
            reason = self._save(tokens)
        else:  # a shadowed connection: the central copies are where its tokens live
            reason = None if central_ok else "no central copy could be written"
        if reason is None:
            _drill_stall("saved")
            self._rescue.clear()
            return True
        if central_ok:
            self._rescue.clear()  # a central copy holds them for every worker
            self._warn_unsaved(reason, durable if durable_ok else None)
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

    def _connection(self) -> TokenSet:
        return self.store.connection_tokens

    def _durable_now(self, received: float) -> None:
        self.custody_seconds = time.monotonic() - received
        _drill_stall("durable_copy")

    def _claim(self, durable: DurableCopy, tokens: TokenSet) -> None:
        try:
            durable.owner(fingerprint(tokens.refresh_token) or "")
        except Exception as err:
            log.warning("Could not record the owner of the new refresh token in %s (%s).", durable.name, err)

    def _keep_central(self, write: Callable[[], None], where: str) -> bool:
        try:
            write()
        except Exception as err:
            log.error(
                "Connection %r: could not write the new tokens to %s (%s: %s).",
                self.store.conn_id,
                where,
                type(err).__name__,
                err,
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

    def _warn_unsaved(self, reason: str | None, durable: DurableCopy | None = None) -> None:
        """Said every time: while the connection lags, deleting a central copy loses the chain."""
        copies = self._central_names(durable).removesuffix(" only")
        log.warning(
            "Connection %r: the refreshed tokens could not be written to the connection (%s). They are "
            "kept in %s, which every worker reads, and the next task that can write the connection puts "
            "them there; nothing is lost and this task goes on. Until then %s the only durable copy of "
            "the live tokens: deleting it (a variables import, a metadata restore) loses the token "
            "chain. To let tasks write connections, create the connection %r (login/password of an "
            "Airflow user allowed to edit connections, or a bearer token) or fix its credentials; see "
            "docs/tokens.md.",
            self.store.conn_id,
            reason,
            copies,
            "that is" if durable is None else "those are",
            metadata.api_conn_id(),
        )
