"""Where a connection's tokens are kept: its extra, and a central copy in an Airflow Variable.

The Variable ``canvas_provider_tokens__<conn_id>`` is the durable copy every worker can read: new
tokens go there the moment they arrive, before the connection is written, and :meth:`TokenStore.load`
prefers them while they are newer than the connection's. It is written through the Execution API
inside tasks and triggers (no extra credentials) and through the ORM elsewhere. It also remembers a
refresh token the server refused as used, so that no worker presents it again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
from dataclasses import dataclass, replace
from typing import Any

import pendulum

from airflow_provider_canvas.common import airflow_access as metadata
from airflow_provider_canvas.exceptions import MetadataWriteError
from airflow_provider_canvas.tokens.model import TokenSet, complete_extra

log = logging.getLogger(__name__)


def fingerprint(refresh_token: str | None) -> str | None:
    """What the central copy keeps of a spent refresh token: enough to recognise it, useless to use."""
    return hashlib.sha256(refresh_token.encode()).hexdigest()[:24] if refresh_token else None


def worker_name() -> str:
    return f"{socket.gethostname()} (pid {os.getpid()})"


@dataclass(frozen=True)
class CentralCopy:
    """What the Variable holds: the newest tokens, who wrote them and when, and a spent refresh token."""

    tokens: TokenSet
    #: Fingerprint of the refresh token the connection held when these tokens were written. The copy
    #: is ahead of the connection only while the connection still holds that one: a refresh token
    #: pasted or authorized since, or a save that landed, makes the connection win again.
    based_on: str | None = None
    written_by: str | None = None
    written_at: str | None = None
    spent: str | None = None  # fingerprint of a refresh token the server refused as used
    spent_by: str | None = None
    spent_at: str | None = None

    @classmethod
    def parse(cls, value: str, platform: str) -> CentralCopy:
        record = json.loads(value)
        names = ("based_on", "written_by", "written_at", "spent", "spent_by", "spent_at")
        return cls(TokenSet.from_extra(record, platform), **{name: record.get(name) for name in names})

    def is_ahead_of(self, connection: TokenSet) -> bool:
        """Whether these tokens replace the connection's (its save failed, or its writer died)."""
        if self.based_on is not None and self.based_on != fingerprint(connection.refresh_token):
            return False
        return self.tokens.is_newer_than(connection)

    def dump(self) -> str:
        record = {**self.tokens.to_extra(), "based_on": self.based_on}
        record |= {"written_by": self.written_by, "written_at": self.written_at}
        if self.spent:
            record |= {"spent": self.spent, "spent_by": self.spent_by, "spent_at": self.spent_at}
        return json.dumps(record)


class TokenStore:
    """Loads and saves the tokens of one connection, always fresh from the metadata store.

    A connection defined by an ``AIRFLOW_CONN_*`` variable or a secrets backend cannot be written:
    there the central copy is the only place rotated tokens go.
    """

    def __init__(self, conn_id: str, platform: str) -> None:
        self.conn_id = conn_id
        self.platform = platform
        self.variable_key = f"canvas_provider_tokens__{conn_id}"
        #: The central copy as the last :meth:`load` found it.
        self.central: CentralCopy | None = None
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

    def load(self) -> TokenSet:
        """The newest tokens: the connection's, or the central copy's when those are newer."""
        tokens = TokenSet.from_extra(self.load_connection().extra_dejson, self.platform)
        self._connection_tokens = tokens
        self.central = self.load_central()
        self.connection_behind = self.central is not None and self.central.is_ahead_of(tokens)
        return self.central.tokens if self.connection_behind and self.central else tokens

    def load_central(self) -> CentralCopy | None:
        value = metadata.get_variable(self.variable_key)
        return CentralCopy.parse(value, self.platform) if value else None

    def keep_central(self, tokens: TokenSet) -> None:
        """Write the durable copy every worker reads back; raises if the Variable cannot be written."""
        self._write_central(
            replace(
                self.central or CentralCopy(TokenSet()),  # a spent refresh token stays recorded
                tokens=tokens,
                based_on=fingerprint(self._connection_tokens.refresh_token),
                written_by=worker_name(),
                written_at=pendulum.now("UTC").to_iso8601_string(),
            )
        )

    def mark_spent(self, refresh_token: str | None) -> None:
        """Remember in the central copy that the server refused this refresh token as used."""
        self._write_central(
            replace(
                self.load_central() or CentralCopy(TokenSet()),
                spent=fingerprint(refresh_token),
                spent_by=worker_name(),
                spent_at=pendulum.now("UTC").to_iso8601_string(),
            )
        )

    def _write_central(self, copy: CentralCopy) -> None:
        metadata.set_variable(self.variable_key, copy.dump())
        self.central = copy

    def is_spent(self, refresh_token: str | None) -> bool:
        """Whether the last load's central copy says this refresh token was already refused as used."""
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
