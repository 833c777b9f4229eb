"""Removing pulled Canvas Data 2 batches that every load of the table has applied, after a keep.

Each load registers what it has applied in ``<table>/_loads/<load>.json`` (its own file: one
writer each), before it loads and again after. The pull, the single writer of ``state.json``,
then removes, oldest first, the batches every registered load has applied and that were pulled
more than ``keep`` ago; the newest batch always stays (its ``until`` is where the next pull
starts). ``state.json`` is rewritten before the files go, so it never lists a missing file.
Batch folders the state no longer lists (replaced by a newer snapshot, or left by a pull that
died) go once every load has applied the oldest listed batch and they are older than ``keep``.
With no load registered, nothing is removed.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

import pendulum

from airflow_provider_canvas.canvas_data.loading.state import (
    STATE_NAME,
    DapBatch,
    DapTableFolder,
    DapTableState,
)

#: Where loads register; not a DAP job id (those are letters, digits and dashes).
LOADS_DIR = "_loads"
#: How long applied batches stay by default: a week of DAP's 4-hourly batches (42), so a load can be
#: looked into, or a table made again from its snapshot, for a week after the fact.
DEFAULT_KEEP = timedelta(days=7)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoadRecord:
    """What one load (one PostgreSQL target table) has applied of a pulled table."""

    name: str
    applied: frozenset[str]
    loaded_at: str


@dataclass(frozen=True)
class RetentionPlan:
    """What retention keeps in ``state.json`` and which batch folders it removes."""

    state: DapTableState
    removed: tuple[str, ...] = ()
    held_by: tuple[str, ...] = ()  # loads that have not applied the oldest batch kept


def load_name(postgres_conn_id: str, schema: str, target: str) -> str:
    """The file name a load registers under: its connection, schema and table."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", f"{postgres_conn_id}.{schema}.{target}")


def register_load(folder: DapTableFolder, name: str, applied: Iterable[str]) -> None:
    """Record which of the table's pulled batches the load ``name`` has applied (only those still listed)."""
    listed = {batch.job_id for batch in folder.read_state().batches}
    body = {
        "load": name,
        "applied": sorted(set(applied) & listed),
        "loaded_at": pendulum.now("UTC").to_iso8601_string(),
    }
    folder.write_text(f"{LOADS_DIR}/{name}.json", json.dumps(body, indent=2) + "\n")


def read_loads(folder: DapTableFolder) -> list[LoadRecord]:
    directory = folder.path / LOADS_DIR
    if not directory.exists():
        return []
    records = []
    for file in sorted(directory.iterdir(), key=str):
        if not file.name.endswith(".json"):
            continue
        body = json.loads(file.read_text())
        records.append(LoadRecord(body["load"], frozenset(body["applied"]), body["loaded_at"]))
    return records


def _older_than(stamp: str | datetime | None, keep: timedelta, now: datetime) -> bool:
    if stamp is None:
        return False  # age unknown: keep it
    moment = pendulum.parse(stamp) if isinstance(stamp, str) else stamp
    return now - moment >= keep  # type: ignore[operator]


def plan_retention(
    state: DapTableState,
    loads: Sequence[LoadRecord],
    orphans: dict[str, datetime | None],
    *,
    keep: timedelta,
    now: datetime,
) -> RetentionPlan:
    """The batches to drop, oldest first, and which unlisted folders (``orphans``, by newest file) go."""
    if not loads or not state.batches:
        return RetentionPlan(state)
    chain = list(state.batches)
    dropped: list[DapBatch] = []
    while len(chain) > 1:  # the newest batch stays: its watermark is where the next pull starts
        oldest = chain[0]
        if not all(oldest.job_id in load.applied for load in loads):
            break
        if not _older_than(oldest.pulled_at, keep, now):
            break
        dropped.append(chain.pop(0))
    oldest = chain[0]
    held_by = tuple(load.name for load in loads if oldest.job_id not in load.applied)
    gone = [name for name, newest in orphans.items() if not held_by and _older_than(newest, keep, now)]
    return RetentionPlan(
        replace(state, batches=tuple(chain)), tuple(b.job_id for b in dropped) + tuple(sorted(gone)), held_by
    )


def _newest_file_time(directory: Any) -> datetime | None:
    """When the newest file of a (flat) batch folder was written: mtime, or the object's LastModified."""
    stamps = [file.stat().st_mtime for file in directory.iterdir()]
    if not stamps or not all(stamps):  # a store that tells no time: the age is unknown
        return None
    return pendulum.from_timestamp(max(stamps))


def unlisted_batch_folders(folder: DapTableFolder, state: DapTableState) -> dict[str, datetime | None]:
    """Batch folders in the table's folder that ``state`` does not list, with their newest file's time."""
    if not folder.path.exists():
        return {}
    listed = {batch.job_id for batch in state.batches}
    found = {}
    for entry in folder.path.iterdir():
        name = entry.name
        if name in listed or name in (LOADS_DIR, STATE_NAME) or not entry.is_dir():
            continue
        found[name] = _newest_file_time(entry)
    return found


def _remove(folder: DapTableFolder, job_id: str) -> None:
    target = folder.batch_dir(job_id)
    if folder.is_local:
        shutil.rmtree(target, ignore_errors=True)
    elif target.exists():
        target.rmdir(recursive=True)


def apply_retention(
    folder: DapTableFolder, keep: timedelta, *, now: datetime | None = None, logger: logging.Logger = log
) -> RetentionPlan:
    """Remove what every load has applied and ``keep`` has passed for. Call by the state's single writer."""
    state = folder.read_state()
    loads = read_loads(folder)
    now = now or pendulum.now("UTC")
    plan = plan_retention(state, loads, unlisted_batch_folders(folder, state), keep=keep, now=now)
    label = f"{folder.namespace}.{folder.table}"
    if not loads:
        logger.info("%s: no load has registered yet under %s; nothing is removed", label, folder.uri)
        return plan
    if plan.state != state:
        folder.write_state(plan.state)  # first: the state never lists a removed file
    for job_id in plan.removed:
        _remove(folder, job_id)
    if plan.removed:
        logger.info(
            "%s: removed %d batch folder(s) every load has applied, older than %s: %s",
            label,
            len(plan.removed),
            keep,
            ", ".join(plan.removed),
        )
    if plan.held_by:
        logger.info(
            "%s: kept batches from %s on: load(s) %s have not applied it yet",
            label,
            plan.state.batches[0].job_id,
            ", ".join(plan.held_by),
        )
    return plan
