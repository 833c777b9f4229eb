"""What was pulled for one Canvas Data 2 table: a ``state.json`` beside the files it lists.

The pull writes it, the load reads it; the load's own ledger in PostgreSQL says which batches
are in the warehouse. The pull never advances past what it has on disk: a batch is recorded only
after all its files are downloaded, verified and renamed to their final names, so the next
incremental starts at the last recorded ``until`` and nothing between two jobs is missed.

Layout, under the pull's location: ``<namespace>/<table>/state.json``, the schema of each version
as ``schema-v<N>.json`` and each batch's files in ``<job_id>/`` (names as DAP gave them).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from airflow_provider_canvas.common.files import write_atomically
from airflow_provider_canvas.exceptions import LmsConfigurationError

STATE_NAME = "state.json"
BatchKind = Literal["snapshot", "incremental"]


@dataclass(frozen=True)
class DapBatch:
    """One completed DAP job whose files are all on disk.

    ``since`` is None for a snapshot; ``until`` is the watermark the next incremental starts at
    (DAP's ``at`` for a snapshot, its ``until`` for an incremental). Times are ISO-8601 UTC as
    DAP wrote them. ``files`` are relative to the table's folder.
    """

    job_id: str
    kind: BatchKind
    schema_version: int
    until: str
    files: tuple[str, ...]
    format: str = "jsonl"
    since: str | None = None
    pulled_at: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "files": list(self.files)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DapBatch:
        return cls(**{**data, "files": tuple(data["files"])})


@dataclass(frozen=True)
class DapTableState:
    """Every batch pulled for one table, oldest first, and the watermark to go on from."""

    namespace: str
    table: str
    batches: tuple[DapBatch, ...] = field(default_factory=tuple)

    @property
    def watermark(self) -> str | None:
        """Where the next incremental starts; None: nothing pulled yet, take a snapshot."""
        return self.batches[-1].until if self.batches else None

    def with_batch(self, batch: DapBatch) -> DapTableState:
        """A new snapshot makes every earlier batch obsolete; an incremental is appended."""
        if batch.kind == "snapshot":
            return replace(self, batches=(batch,))
        return replace(self, batches=(*self.batches, batch))


class DapTableFolder:
    """The local folder of one table's pulled batches and its ``state.json``."""

    def __init__(self, root: str | Path, namespace: str, table: str) -> None:
        self.namespace = namespace
        self.table = table
        self.path = Path(root) / namespace / table

    def __repr__(self) -> str:
        return f"DapTableFolder({str(self.path)!r})"

    def read_state(self) -> DapTableState:
        file = self.path / STATE_NAME
        if not file.exists():
            return DapTableState(self.namespace, self.table)
        try:
            data = json.loads(file.read_text())
            batches = tuple(DapBatch.from_dict(item) for item in data["batches"])
        except (ValueError, KeyError, TypeError) as exc:
            raise LmsConfigurationError(
                f"{file} is not a readable Canvas Data 2 pull state ({exc}); move it away to start "
                "again with a snapshot of this table"
            ) from exc
        return DapTableState(self.namespace, self.table, batches)

    def write_state(self, state: DapTableState) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        body = {
            "namespace": state.namespace,
            "table": state.table,
            "batches": [batch.to_dict() for batch in state.batches],
        }
        write_atomically(self.path / STATE_NAME, json.dumps(body, indent=2) + "\n")

    def schema_file(self, version: int) -> Path:
        return self.path / f"schema-v{version}.json"

    def batch_dir(self, job_id: str) -> Path:
        return self.path / job_id

    def files_of(self, batch: DapBatch) -> Sequence[Path]:
        return [self.path / name for name in batch.files]
