"""The OAuth token lifecycle shared by both hooks: when to refresh, and how never to lose a token."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

from airflow_provider_canvas.exceptions import LmsConfigurationError, TokenSaveError
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


class TokenLifecycle:
    """Hands out a valid access token for one connection, refreshing it safely.

    * The access token is reused while it has more than ``buffer_seconds`` left.
    * A refresh happens under a lock shared by every worker using the connection, and only if
      the tokens re-read after taking the lock still need it: a single-use refresh token is
      never presented twice, and parallel Canvas tasks do not kill each other's access token.
    * The new tokens are kept in a rescue file, saved to the store and read back before the new
      access token is handed out; the rescue file goes only once the save is confirmed.

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
        self._refresh = refresh
        self._lock = lock
        self._rescue = rescue
        self._buffer = buffer_seconds
        self._tokens: TokenSet | None = None
        self._rejected: set[str] = set()
        self._mutex = threading.Lock()

    def access_token(self) -> str:
        with self._mutex:
            if not self._usable(self._tokens):
                self._tokens = self.store.load()
                if not self._usable(self._tokens):
                    self._tokens = self._refresh_under_lock()
            assert self._tokens is not None and self._tokens.access_token
            return self._tokens.access_token

    @property
    def expires_at(self) -> Any:
        return self._tokens.expires_at if self._tokens else None

    def reject(self, access_token: str) -> None:
        """The API refused this token (revoked, or replaced by another worker's refresh)."""
        with self._mutex:
            self._rejected.add(access_token)

    def _usable(self, tokens: TokenSet | None) -> bool:
        return tokens is not None and tokens.is_usable(self._buffer, rejected=self._rejected)

    def _refresh_under_lock(self) -> TokenSet:
        with self._lock():
            current = self._recover(self.store.load())
            if self._usable(current):
                log.info("Connection %r: another worker refreshed the tokens.", self.store.conn_id)
                return current
            if not current.refresh_token:
                raise LmsConfigurationError(
                    f"connection {self.store.conn_id!r} has no refresh token: run the OAuth "
                    "authorization once and store the refresh token in the connection's extra"
                )
            fresh = self._refresh(current)
            _mask(fresh)
            self.refresh_count += 1
            self._keep(fresh)
            log.info(
                "Connection %r: refreshed the access token (valid until %s); saved to %s.",
                self.store.conn_id,
                fresh.expires_at,
                self.store.location,
            )
            return fresh

    def _recover(self, stored: TokenSet) -> TokenSet:
        """Tokens a crashed or failed save left in the rescue file win if they are newer."""
        rescued = self._rescue.read(self.store.platform)
        if rescued is None:
            return stored
        if not rescued.is_newer_than(stored):
            self._rescue.clear()
            return stored
        _mask(rescued)
        log.warning(
            "Connection %r: restoring tokens that an earlier refresh could not save (%s).",
            self.store.conn_id,
            self._rescue.path,
        )
        self._keep(rescued)
        return rescued

    def _keep(self, tokens: TokenSet) -> None:
        try:
            self._rescue.write(tokens)
        except OSError as err:  # the save below is still the primary copy
            log.error("Could not write the rescue copy %s (%s).", self._rescue.path, err)
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
                if attempt < _SAVE_ATTEMPTS:
                    time.sleep(0.5 * 2**attempt)
            else:
                self._rescue.clear()
                return
        raise TokenSaveError(
            f"The tokens of connection {self.store.conn_id!r} were refreshed but could not be "
            f"saved to {self.store.location} ({reason}). The new tokens are kept in "
            f"{self._rescue.path} (mode 0600). The next refresh on this host restores them "
            "automatically; from another host run `python -m airflow_provider_canvas.tokens.restore "
            f"{self.store.conn_id} {self._rescue.path}` once the metadata store accepts writes. "
            "Do not edit the connection's tokens by hand meanwhile.",
            rescue_path=self._rescue.path,
        )
