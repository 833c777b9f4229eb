"""Where a connection's tokens are kept: in its extra, or in a Variable when the extra is read-only."""

from __future__ import annotations

import json
import logging
from typing import Any

from airflow_provider_canvas.tokens import metadata
from airflow_provider_canvas.tokens.model import TokenSet, complete_extra

log = logging.getLogger(__name__)


class TokenStore:
    """Loads and saves the tokens of one connection, always fresh from the metadata store.

    A connection defined by an ``AIRFLOW_CONN_*`` variable or a secrets backend cannot be
    written: its rotated tokens go to the Variable named by :attr:`variable_key` instead, and
    :meth:`load` prefers them over the connection's own while they are newer.
    """

    def __init__(self, conn_id: str, platform: str) -> None:
        self.conn_id = conn_id
        self.platform = platform
        self.variable_key = f"canvas_provider_tokens__{conn_id}"
        self._shadowed_by: str | None = None
        self._checked_shadow = False

    @property
    def location(self) -> str:
        if self._shadow() is None:
            return f"the extra of connection {self.conn_id!r}"
        return f"the Airflow Variable {self.variable_key!r}"

    def load_connection(self) -> Any:
        return metadata.get_connection(self.conn_id)

    def load(self) -> TokenSet:
        tokens = TokenSet.from_extra(self.load_connection().extra_dejson, self.platform)
        if self._shadow() is not None:
            kept = metadata.get_variable(self.variable_key)
            if kept:
                kept_tokens = TokenSet.from_extra(json.loads(kept), self.platform)
                if kept_tokens.is_newer_than(tokens):
                    return kept_tokens
        return tokens

    def save(self, tokens: TokenSet) -> None:
        """Write the tokens and read them back; raise if the reader would not see them."""
        if self._shadow() is not None:
            metadata.set_variable(self.variable_key, json.dumps(tokens.to_extra()))
        else:
            connection = self.load_connection()
            # Legacy-named token keys would hold stale values beside the new ones: renamed.
            extra = complete_extra(connection.conn_type, connection.extra_dejson)
            extra.update(tokens.to_extra())
            metadata.write_connection_extra(self.conn_id, connection.conn_type, extra)
        if self.load().refresh_token != tokens.refresh_token:
            raise metadata.MetadataWriteError(
                f"after the write, {self.location} still returns other tokens: something else "
                "defines this connection"
            )

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
