"""The central record of a connection's tokens: generation, the chain rotated through, a refresh in flight.

The same JSON goes into the Airflow Variable and (encrypted) into the lock backend; only fingerprints
of refresh tokens other than the current one are kept, never the tokens.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
from dataclasses import dataclass, field, replace
from typing import Any

import pendulum

from airflow_provider_canvas.tokens.model import TokenSet

#: How many rotated-away refresh tokens the record remembers: a backup older than this is not recognised.
CHAIN_LENGTH = 64


def fingerprint(refresh_token: str | None) -> str | None:
    """What a record keeps of a refresh token other than its current one: enough to recognise it."""
    return hashlib.sha256(refresh_token.encode()).hexdigest()[:24] if refresh_token else None


def worker_name() -> str:
    return f"{socket.gethostname()} (pid {os.getpid()})"


def now() -> str:
    return pendulum.now("UTC").to_iso8601_string()


@dataclass(frozen=True)
class Announcement:
    """A refresh in flight: written before a refresh token is presented, cleared by its outcome."""

    presenting: str  # fingerprint of the refresh token being presented
    host: str
    pid: int
    at: str
    rescue: str  # where that worker keeps the token response until it is durable

    @classmethod
    def mine(cls, refresh_token: str | None, rescue: str) -> Announcement:
        return cls(fingerprint(refresh_token) or "", socket.gethostname(), os.getpid(), now(), rescue)


@dataclass(frozen=True)
class CentralCopy:
    """The newest tokens of a connection as one store holds them, with their generation."""

    tokens: TokenSet
    #: +1 on every refresh or authorization; the highest generation among the stores wins.
    generation: int = 0
    #: Fingerprints of the refresh tokens this chain rotated away from, oldest first. A connection
    #: still holding one of them holds a stale copy (a backup, an import, a form left open).
    superseded: tuple[str, ...] = ()
    #: Fingerprint of the refresh token the connection held when these tokens were written (records
    #: written before generations existed are compared by it).
    based_on: str | None = None
    written_by: str | None = None
    written_at: str | None = None
    spent: str | None = None  # fingerprint of a refresh token the server refused as used
    spent_by: str | None = None
    spent_at: str | None = None
    announce: Announcement | None = None
    #: Which store this record was read from, for messages (not stored).
    source: str = field(default="", compare=False)

    @classmethod
    def parse(cls, value: str, platform: str, source: str) -> CentralCopy:
        record = json.loads(value)
        names = ("based_on", "written_by", "written_at", "spent", "spent_by", "spent_at")
        announce = record.get("announce")
        return cls(
            TokenSet.from_extra(record, platform),
            generation=int(record.get("generation") or 0),
            superseded=tuple(record.get("superseded") or ()),
            announce=Announcement(**announce) if announce else None,
            source=source,
            **{name: record.get(name) for name in names},
        )

    def dump(self) -> str:
        record: dict[str, Any] = {**self.tokens.to_extra(), "generation": self.generation}
        record |= {"superseded": list(self.superseded), "based_on": self.based_on}
        record |= {"written_by": self.written_by, "written_at": self.written_at}
        if self.spent:
            record |= {"spent": self.spent, "spent_by": self.spent_by, "spent_at": self.spent_at}
        if self.announce:
            record["announce"] = self.announce.__dict__
        return json.dumps(record)

    @property
    def current(self) -> str | None:
        return fingerprint(self.tokens.refresh_token)

    def is_ahead_of(self, connection: TokenSet) -> bool:
        """Whether these tokens replace the connection's.

        Yes when the connection holds a refresh token this chain rotated away from (its save failed,
        its writer died, or an older copy was written back), or the same one with an older access
        token. No when it holds one this record never saw: pasted, authorized or restored since.
        """
        held = fingerprint(connection.refresh_token)
        if held in self.superseded:
            return True
        if held == self.current or (self.based_on is not None and held == self.based_on):
            return self.tokens.is_newer_than(connection)
        return not self.superseded and self.based_on is None and self.tokens.is_newer_than(connection)

    def after(self, tokens: TokenSet, presented: TokenSet) -> CentralCopy:
        """The next generation: ``tokens`` replaced ``presented`` (a refresh, an authorization, a restore)."""
        chain = list(self.superseded)
        for old in (fingerprint(presented.refresh_token), self.current):
            if old and old != fingerprint(tokens.refresh_token) and old not in chain:
                chain.append(old)
        return replace(
            self,
            tokens=tokens,
            generation=self.generation + 1,
            superseded=tuple(chain[-CHAIN_LENGTH:]),
            based_on=fingerprint(presented.refresh_token),
            written_by=worker_name(),
            written_at=now(),
            announce=None,
        )

    def describe(self) -> str:
        """Which generation and refresh token (fingerprint) this store holds, for messages."""
        return f"{self.source} holds generation {self.generation} (refresh token {(self.current or '-')[:8]})"


def newest(*copies: CentralCopy | None) -> CentralCopy | None:
    """The record with the highest generation; on a tie the first given (the lock backend)."""
    found = [copy for copy in copies if copy is not None]
    return max(found, key=lambda copy: copy.generation, default=None) if found else None
