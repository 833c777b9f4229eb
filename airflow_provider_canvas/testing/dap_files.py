"""Pulled Canvas Data 2 folders made on disk, as the pull leaves them, for the load's tests and benchmark.

Follows the contract in :mod:`airflow_provider_canvas.canvas_data.loading.state`: ``state.json``,
``schema-v<N>.json`` (``{"schema": ..., "version": N}``) and each batch's gzip JSON Lines under
``<job_id>/``. Records are ``{"key": ..., "value": ..., "meta": {"ts": ..., "action": ...}}``;
a delete carries only ``key`` and ``meta``, and ``None`` values are left out, as DAP writes them.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from airflow_provider_canvas.canvas_data.loading.state import DapBatch, DapTableFolder

Record = Mapping[str, Any]


def table_schema(
    key: Mapping[str, Any], value: Mapping[str, Any], required: Sequence[str] = (), version: int = 1
) -> dict[str, Any]:
    """A versioned DAP schema document with these key and value properties."""
    meta = {
        "type": "object",
        "properties": {
            "ts": {"type": "string", "format": "date-time"},
            "action": {"type": "string", "enum": ["U", "D"]},
        },
    }
    return {
        "version": version,
        "schema": {
            "type": "object",
            "properties": {
                "key": {"type": "object", "properties": dict(key), "required": list(key)},
                "value": {"type": "object", "properties": dict(value), "required": list(required)},
                "meta": meta,
            },
        },
    }


def upsert(key: Mapping[str, Any], value: Mapping[str, Any], ts: str, *, action: str | None = "U") -> dict:
    meta = {"ts": ts, **({"action": action} if action else {})}
    return {"key": dict(key), "value": {k: v for k, v in value.items() if v is not None}, "meta": meta}


def delete(key: Mapping[str, Any], ts: str) -> dict:
    return {"key": dict(key), "meta": {"ts": ts, "action": "D"}}


def write_jsonl_gz(path: Path, records: Iterable[Record]) -> int:
    """Write one file; returns how many records it holds."""
    path.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    with gzip.open(path, "wt", encoding="utf-8", compresslevel=1) as out:
        for record in records:
            out.write(json.dumps(record, separators=(",", ":")) + "\n")
            count += 1
    return count


class PulledTable:
    """Adds batches to a table's folder the way the pull does (files first, then ``state.json``)."""

    def __init__(self, root: str | Path, namespace: str, table: str) -> None:
        self.folder = DapTableFolder(root, namespace, table)

    def write_schema(self, document: Mapping[str, Any]) -> None:
        self.folder.path.mkdir(parents=True, exist_ok=True)
        self.folder.schema_file(int(document["version"])).write_text(json.dumps(document))

    def add_batch(
        self,
        job_id: str,
        files: Sequence[Iterable[Record]],
        *,
        until: str,
        since: str | None = None,
        schema_version: int = 1,
    ) -> DapBatch:
        """Write ``files`` (each a list of records) as ``<job_id>/part-<n>.json.gz`` and record the batch."""
        names = []
        for index, records in enumerate(files):
            name = f"{job_id}/part-{index:05d}.json.gz"
            write_jsonl_gz(self.folder.path / name, records)
            names.append(name)
        batch = DapBatch(
            job_id=job_id,
            kind="incremental" if since else "snapshot",
            schema_version=schema_version,
            until=until,
            since=since,
            files=tuple(names),
        )
        self.folder.write_state(self.folder.read_state().with_batch(batch))
        return batch
