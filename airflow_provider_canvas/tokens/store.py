"""Where a connection's tokens are kept: its extra, a central record in an Airflow Variable, the lock backend.

The Variable ``canvas_provider_tokens__<conn_id>`` is the central record every worker reads: written
through the Execution API inside tasks and triggers (no extra credentials) and through the ORM
elsewhere. Where the connection has a lock backend, the same record (encrypted) is kept there too,
written first because it takes a millisecond; under the lock the newest generation of the three wins.
The record also remembers a refresh token the server refused as used, and a refresh in flight.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

from airflow_provider_canvas.common import airflow_access as metadata
from airflow_provider_canvas.exceptions import MetadataWriteError
from airflow_provider_canvas.tokens.durable import DurableCopy
from airflow_provider_canvas.tokens.model import TokenSet, complete_extra
from airflow_provider_canvas.tokens.record import (
    Announcement,
    CentralCopy,
    fingerprint,
    newest,
    now,
    worker_name,
)

log = logging.getLogger(__name__)


class TokenStore:
    """Loads and saves the tokens of one connection, always fresh from the metadata store.

    A connection defined by an ``AIRFLOW_CONN_*`` variable or a secrets backend cannot be written:
    there the central copy is the only place rotated tokens go.
    """

    def __init__(self, conn_id: str, platform: str) -> None:
        self.conn_id = conn_id
        self.platform = platform
        self.variable_key = f"canvas_provider_tokens__{conn_id}"
        #: The newest central record as the last :meth:`load` found it, and each store's own.
        self.central: CentralCopy | None = None
        self.durable_record: CentralCopy | None = None
        self.variable_record: CentralCopy | None = None
        #: True when the last :meth:`load` found newer tokens in the central copy than in the connection.
        self.connection_behind = False
        self._connection_tokens = TokenSet()
        self._shadowed_by: str | None = None
        self._checked_shadow = False

    @property
    def location(self) -> str:
        if self.writable:
            return f"the extra of connection {self.conn_id!r}"
        return f"the Airflow Variable {self.variable_key!r}"

    @property
    def writable(self) -> bool:
        """Whether the connection's own extra can hold the tokens (not shadowed by env or a backend)."""
        return self._shadow() is None

    def load_connection(self) -> Any:
        return metadata.get_connection(self.conn_id)

    def load(self, durable: DurableCopy | None = None) -> TokenSet:
        """The newest tokens: the connection's, or the central record's when those are newer.

        ``durable``: the lock backend's copy, read too (under the lock); it wins a tie with the Variable.
        """
        tokens = TokenSet.from_extra(self.load_connection().extra_dejson, self.platform)
        self._connection_tokens = tokens
        self.durable_record = self._read_durable(durable) if durable is not None else None
        self.variable_record = self.load_central()
        self.central = newest(self.durable_record, self.variable_record)
        self.connection_behind = self.central is not None and self.central.is_ahead_of(tokens)
        return self.central.tokens if self.connection_behind and self.central else tokens

    def load_central(self) -> CentralCopy | None:
        value = metadata.get_variable(self.variable_key)
        where = f"the Airflow Variable {self.variable_key!r}"
        return CentralCopy.parse(value, self.platform, where) if value else None

    def _read_durable(self, durable: DurableCopy) -> CentralCopy | None:
        try:
            value = durable.read()
        except Exception as err:  # e.g. another Fernet key: the Variable still serves
            log.error("Could not read %s (%s: %s).", durable.name, type(err).__name__, err)
            return None
        return CentralCopy.parse(value, self.platform, durable.name) if value else None

    @property
    def connection_tokens(self) -> TokenSet:
        """What the connection held at the last :meth:`load`."""
        return self._connection_tokens

    @property
    def connection_fingerprint(self) -> str | None:
        return fingerprint(self._connection_tokens.refresh_token)

    def next_record(self, tokens: TokenSet, presented: TokenSet) -> CentralCopy:
        """The next generation after ``presented`` (a spent refresh token stays recorded)."""
        return (self.central or CentralCopy(TokenSet())).after(tokens, presented)

    def write_durable(self, durable: DurableCopy, record: CentralCopy) -> None:
        """Write ``record`` to the lock backend (raises if it cannot)."""
        durable.write(record.dump())
        self.durable_record = replace(record, source=durable.name)
        self.central = self.durable_record

    def write_variable(self, record: CentralCopy) -> None:
        """Write ``record`` to the Variable every worker reads (raises if it cannot)."""
        metadata.set_variable(self.variable_key, record.dump())
        self.variable_record = replace(record, source=f"the Airflow Variable {self.variable_key!r}")
        self.central = newest(self.durable_record, self.variable_record)

    def keep_central(self, tokens: TokenSet) -> None:
        """Write ``tokens`` as the next generation to the Variable (a shadowed connection's save)."""
        self.write_variable(self.next_record(tokens, self._connection_tokens))

    def announce(self, durable: DurableCopy | None, presenting: TokenSet, rescue: str) -> None:
        """Record centrally that this worker is about to present ``presenting``'s refresh token."""
        announcement = Announcement.mine(presenting.refresh_token, rescue)
        record = replace(self.central or CentralCopy(TokenSet()), announce=announcement)
        self._write_first(durable, record)

    def withdraw(self, durable: DurableCopy | None) -> None:
        """The refresh failed and this worker says so: its announcement is no longer a warning."""
        if self.central is not None and self.central.announce is not None:
            self._write_first(durable, replace(self.central, announce=None))

    def mark_spent(self, durable: DurableCopy | None, refresh_token: str | None) -> None:
        """Remember centrally that the server refused this refresh token as used."""
        base = self.central or self.load_central() or CentralCopy(TokenSet())
        spent = fingerprint(refresh_token)
        record = replace(base, spent=spent, spent_by=worker_name(), spent_at=now(), announce=None)
        self._write_first(durable, record)
        if durable is not None:
            self.write_variable(record)

    def _write_first(self, durable: DurableCopy | None, record: CentralCopy) -> None:
        if durable is not None:
            self.write_durable(durable, record)
        else:
            self.write_variable(record)

    def is_spent(self, refresh_token: str | None) -> bool:
        """Whether the last load's central record says this refresh token was already refused as used."""
        return bool(self.central and self.central.spent and self.central.spent == fingerprint(refresh_token))

    def save(self, tokens: TokenSet) -> None:
        """Write the tokens to the connection and read them back; raise if a reader would not see them."""
        if not self.writable:
            self.keep_central(tokens)
            return
        connection = self.load_connection()
        # Legacy-named token keys would hold stale values beside the new ones: renamed.
        extra = complete_extra(connection.conn_type, connection.extra_dejson)
        extra.update(tokens.to_extra())
        metadata.write_connection_extra(self.conn_id, connection.conn_type, extra)
        stored = TokenSet.from_extra(self.load_connection().extra_dejson, self.platform)
        if stored.refresh_token != tokens.refresh_token:
            raise MetadataWriteError(
                f"after the write, {self.location} still returns other tokens: something else "
                "defines this connection"
            )
        self.connection_behind = False

    def _shadow(self) -> str | None:
        if not self._checked_shadow:
            self._checked_shadow = True
            self._shadowed_by = metadata.shadowing_source(self.conn_id)
            if self._shadowed_by:
                log.warning(
                    "Connection %r is defined by %s, so refreshed tokens cannot be written back "
                    "to it. They are kept in the Airflow Variable %r and read from there. Store "
                    "the connection in the metadata database to keep tokens with the connection.",
                    self.conn_id,
                    self._shadowed_by,
                    self.variable_key,
                )
        return self._shadowed_by
