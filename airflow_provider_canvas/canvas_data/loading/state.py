"""What was pulled for one Canvas Data 2 table: a ``state.json`` beside the files it lists.

The pull writes it, the load reads it; the load's own ledger in PostgreSQL says which batches
are in the warehouse. The pull never advances past what it has on disk: a batch is recorded only
after all its files are downloaded, verified and renamed to their final names, so the next
incremental starts at the last recorded ``until`` and nothing between two jobs is missed.

Layout, under the pull's location: ``<namespace>/<table>/state.json``, the schema of each version
as ``schema-v<N>.json`` and each batch's files in ``<job_id>/`` (names as DAP gave them). The
location is a local folder or an ObjectStoragePath (``s3://``, ``gs://``, ``file://``): locally
files are replaced by an fsync'd rename; on object storage each object is one upload, which the
store shows whole or not at all, and ``state.json`` has a single writer (one pull at a time).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from airflow_provider_canvas.common.files import write_atomically
from airflow_provider_canvas.common.locations import storage_root
from airflow_provider_canvas.exceptions import LmsConfigurationError

if TYPE_CHECKING:
    from airflow.sdk import ObjectStoragePath

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

    def replacing(self, job_id: str, batch: DapBatch) -> DapTableState:
        """``batch`` (a re-pull of the same window) in the place of the batch of ``job_id``."""
        return replace(self, batches=tuple(batch if b.job_id == job_id else b for b in self.batches))


def force_snapshot_remedy(table: str) -> str:
    """How a person makes the pull start the table over: the option to set, as it is written."""
    return f"run the pull (CanvasDataPullOperator) with force_snapshot=[{table!r}], then load"


def repull_remedy(job_ids: Sequence[str]) -> str:
    """How a person has batches pulled again: the option to set, as it is written."""
    return f"run the pull (CanvasDataPullOperator) with repull_batches={sorted(set(job_ids))!r}, then load"


def job_of(name: str) -> str:
    """The job id of a batch file named relative to its table folder (``<job id>/<file>``)."""
    return Path(name).parts[0]


class DapTableFolder:
    """The folder of one table's pulled batches and its ``state.json``: local, or on object storage."""

    def __init__(self, root: str | os.PathLike[str] | ObjectStoragePath, namespace: str, table: str) -> None:
        self.namespace = namespace
        self.table = table
        base = storage_root(root)
        self.is_local = isinstance(base, Path)
        self.path: Any = base / namespace / table

    @property
    def uri(self) -> str:
        return self.path.as_uri() if self.is_local else str(self.path)

    def __repr__(self) -> str:
        return f"DapTableFolder({self.uri!r})"

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
        body = {
            "namespace": state.namespace,
            "table": state.table,
            "batches": [batch.to_dict() for batch in state.batches],
        }
        self.write_text(STATE_NAME, json.dumps(body, indent=2) + "\n")

    def write_text(self, name: str, text: str) -> None:
        """Replace the small file ``name`` (relative to the folder): readers see it whole or not at all."""
        target = self.path / name
        if self.is_local:
            target.parent.mkdir(parents=True, exist_ok=True)
            write_atomically(target, text)
        else:
            target.write_text(text)  # one PUT: the store shows the old object or the new one

    def schema_file(self, version: int) -> Any:
        return self.path / f"schema-v{version}.json"

    def batch_dir(self, job_id: str) -> Any:
        return self.path / job_id

    def files_of(self, batch: DapBatch) -> Sequence[Any]:
        return [self.path / name for name in batch.files]
