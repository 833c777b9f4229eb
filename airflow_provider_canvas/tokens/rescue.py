"""A private file that holds refreshed tokens until they are safely saved to the connection."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

from airflow_provider_canvas.common.files import write_atomically
from airflow_provider_canvas.tokens.model import TokenSet


class RescueFile:
    """Written (atomically, mode 0600) before the save and removed after it.

    A single-use refresh token exists nowhere else between the token response and a successful
    save: if the save fails or the process dies, the next refresh on this host finds it here.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    @classmethod
    def for_connection(cls, state_dir: str | Path, conn_id: str) -> RescueFile:
        slug = re.sub(r"[^A-Za-z0-9_.-]", "_", conn_id)
        digest = hashlib.sha256(conn_id.encode()).hexdigest()[:8]
        return cls(Path(state_dir) / "rescue" / f"{slug}-{digest}.json")

    def write(self, tokens: TokenSet) -> None:
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        write_atomically(self.path, json.dumps(tokens.to_extra()))

    def read(self, platform: str) -> TokenSet | None:
        try:
            return TokenSet.from_extra(json.loads(self.path.read_text()), platform)
        except FileNotFoundError:
            return None

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)
