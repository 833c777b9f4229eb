"""What the Canvas Data 2 pull does in one table's folder: schemas, batches and their ``state.json``.

The folder layout and state are :mod:`airflow_provider_canvas.canvas_data.loading.state`, shared with the
load. A batch enters the state only after all its files are on disk and verified, and only if the
state still ends where the job began (another pull may have advanced it meanwhile).
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
from collections.abc import Iterator, Sequence
from typing import Any

import pendulum

from airflow_provider_canvas.canvas_data.hooks.models import DapJob
from airflow_provider_canvas.canvas_data.hooks.objects import PulledObject
from airflow_provider_canvas.canvas_data.loading.state import DapBatch, DapTableFolder
from airflow_provider_canvas.common.files import write_atomically
from airflow_provider_canvas.common.templating import name_list
from airflow_provider_canvas.exceptions import LmsError, TokenLockTimeout

_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")


def table_names(tables: Any) -> list[str]:
    """Table names from a list, or a rendered template (JSON / Python list, or comma-separated)."""
    return name_list(
        tables,
        refusal="tables must be a non-empty list of DAP table names (letters, digits, _)",
        valid=lambda name: _NAME.fullmatch(name) is not None,
    )


def check_name(what: str, value: str) -> str:
    """A namespace, table or job id that will name a folder: refuse anything that could leave it."""
    if not _NAME.fullmatch(value) or ".." in value:
        raise LmsError(f"{what} {value!r} cannot name a folder; refusing it")
    return value


def save_schema(folder: DapTableFolder, body: dict[str, Any]) -> int:
    """Keep DAP's schema answer as ``schema-v<N>.json`` (once per version); returns N."""
    version = int(body["version"])
    target = folder.schema_file(version)
    if not target.exists():
        folder.path.mkdir(parents=True, exist_ok=True)
        write_atomically(target, json.dumps(body, indent=2) + "\n")
    return version


@contextlib.contextmanager
def table_lock(folder: DapTableFolder, timeout: float) -> Iterator[None]:
    """Serialise the read-modify-write of one table's ``state.json`` on this host."""
    from airflow_provider_canvas.common import airflow_access as metadata
    from airflow_provider_canvas.tokens.locks import file_lock

    try:
        with file_lock(metadata.state_dir(), f"dap-pull:{folder.path}", timeout):
            yield
    except TokenLockTimeout:
        raise LmsError(f"another pull of {folder.path} held its lock for {timeout:.0f}s") from None


def record_batch(
    folder: DapTableFolder,
    job: DapJob,
    since: str | None,
    pulled: Sequence[PulledObject],
    log: logging.Logger,
) -> DapBatch | None:
    """Add the job's batch to the table's state; None (and a warning) if another pull moved it on.

    Call under :func:`table_lock`, after every file of the job is on disk.
    """
    if job.schema_version is None or job.watermark is None:
        raise LmsError(f"DAP job {job.id} is complete but names no schema_version / at / until")
    state = folder.read_state()
    if since is not None and state.watermark != since:
        log.warning(
            "%s.%s: the state moved from %s to %s while job %s ran; its batch is not recorded",
            folder.namespace,
            folder.table,
            since,
            state.watermark,
            job.id,
        )
        return None
    batch = DapBatch(
        job_id=job.id,
        kind="incremental" if since is not None else "snapshot",
        schema_version=job.schema_version,
        until=job.watermark,
        files=tuple(f"{job.id}/{item.name}" for item in pulled),
        since=job.since or since,
        pulled_at=pendulum.now("UTC").to_iso8601_string(),
    )
    folder.write_state(state.with_batch(batch))
    return batch


def batch_summary(batch: DapBatch, pulled: Sequence[PulledObject]) -> dict[str, Any]:
    """What XCom and the asset event say about a batch: no URLs, no secrets."""
    return {
        "job_id": batch.job_id,
        "kind": batch.kind,
        "schema_version": batch.schema_version,
        "since": batch.since,
        "until": batch.until,
        "files": list(batch.files),
        "records": sum(item.records for item in pulled),
        "bytes": sum(item.size for item in pulled),
    }
