"""What the Canvas Data 2 pull does in one table's folder: schemas, batches and their ``state.json``.

The folder layout and state are :mod:`airflow_provider_canvas.canvas_data.loading.state`, shared with the
load. A batch enters the state only after all its files are stored and verified, and only if the
state still ends where the job began (another pull may have advanced it meanwhile).
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Iterator, Sequence
from typing import Any

import pendulum

from airflow_provider_canvas.canvas_data.hooks.models import DapJob
from airflow_provider_canvas.canvas_data.hooks.objects import PulledObject
from airflow_provider_canvas.canvas_data.loading.state import DapBatch, DapTableFolder
from airflow_provider_canvas.common.log import Log
from airflow_provider_canvas.common.templating import name_list
from airflow_provider_canvas.exceptions import LmsConfigurationError, LmsError, TokenLockTimeout

_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
#: ``tables="all"``: every table DAP lists in the namespace when the pull runs.
ALL_TABLES = "all"


def table_names(tables: Any, *, empty: bool = False) -> list[str]:
    """Table names from a list, or a rendered template (JSON / Python list, or comma-separated).

    ``empty``: an empty list (or ``None``) is allowed, as for an option naming a few tables.
    """
    if empty and not tables:
        return []
    return name_list(
        tables,
        refusal="tables must be a non-empty list of DAP table names (letters, digits, _)",
        valid=lambda name: _NAME.fullmatch(name) is not None,
    )


def batches_to_repull(
    location: Any, namespace: str, tables: Sequence[str], job_ids: Sequence[str] | str
) -> dict[str, DapBatch]:
    """The recorded batch of each table named by ``job_ids`` (the pull's ``repull_batches``).

    Every job id must name a batch in the state of one of ``tables``, and one table at most one.
    """
    wanted = table_names(job_ids, empty=True)
    found: dict[str, DapBatch] = {}
    for table in tables:
        for batch in DapTableFolder(location, namespace, table).read_state().batches:
            if batch.job_id not in wanted:
                continue
            if table in found:
                raise LmsConfigurationError(
                    f"repull_batches names two batches of {namespace}.{table} ({found[table].job_id}, "
                    f"{batch.job_id}): name one per run"
                )
            found[table] = batch
    missing = sorted(set(wanted) - {b.job_id for b in found.values()})
    if missing:
        raise LmsConfigurationError(
            f"repull_batches names {missing}, which no state.json of the tables pulled lists "
            f"(under {location}/{namespace}); the load's error names the job id to re-pull"
        )
    return found


def check_name(what: str, value: str) -> str:
    """A namespace, table or job id that will name a folder: refuse anything that could leave it."""
    if not _NAME.fullmatch(value) or ".." in value:
        raise LmsError(f"{what} {value!r} cannot name a folder; refusing it")
    return value


def save_schema(folder: DapTableFolder, body: dict[str, Any]) -> int:
    """Keep DAP's schema answer as ``schema-v<N>.json`` (once per version); returns N."""
    version = int(body["version"])
    if not folder.schema_file(version).exists():
        folder.write_text(folder.schema_file(version).name, json.dumps(body, indent=2) + "\n")
    return version


@contextlib.contextmanager
def table_lock(folder: DapTableFolder, timeout: float) -> Iterator[None]:
    """Serialise the read-modify-write of one table's ``state.json`` on this host.

    On object storage there is no lock to take: ``state.json`` has a single writer because one pull
    of a location runs at a time (``max_active_runs=1``), and a pull that finds the state moved on
    while its job ran records nothing (:func:`record_batch`).
    """
    if not folder.is_local:
        yield
        return
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
    log: Log,
    *,
    replaces: str | None = None,
) -> DapBatch | None:
    """Add the job's batch to the table's state (or find it there: a job DAP handed back again);
    None (and a warning) if another pull moved it on.

    ``replaces``: the job id of the batch this job pulled again (same window): it takes its place.
    Call under :func:`table_lock`, after every file of the job is on disk.
    """
    if job.schema_version is None or job.watermark is None:
        raise LmsError(f"DAP job {job.id} is complete but names no schema_version / at / until")
    state = folder.read_state()
    if replaces is not None:
        batch = _batch_of(job, since, pulled)
        if not any(b.job_id == replaces for b in state.batches):
            log.warning(
                "%s.%s: batch %s is gone from the state; its re-pull is not recorded",
                folder.namespace,
                folder.table,
                replaces,
            )
            return None
        folder.write_state(state.replacing(replaces, batch))
        log.info("%s.%s: batch %s re-pulled as %s", folder.namespace, folder.table, replaces, job.id)
        return batch
    recorded = next((batch for batch in state.batches if batch.job_id == job.id), None)
    if recorded is not None:
        # DAP hands back the existing job for an identical query while the table has not changed:
        # the batch is already in the state (a second entry would make the load and retention see two).
        log.info("%s.%s: DAP handed back job %s, already recorded", folder.namespace, folder.table, job.id)
        return recorded
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
    batch = _batch_of(job, since, pulled)
    folder.write_state(state.with_batch(batch))
    return batch


def _batch_of(job: DapJob, since: str | None, pulled: Sequence[PulledObject]) -> DapBatch:
    return DapBatch(
        job_id=job.id,
        kind="incremental" if since is not None else "snapshot",
        schema_version=job.schema_version or 0,
        until=job.watermark or "",
        files=tuple(f"{job.id}/{item.name}" for item in pulled),
        since=job.since or since,
        pulled_at=pendulum.now("UTC").to_iso8601_string(),
    )


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
