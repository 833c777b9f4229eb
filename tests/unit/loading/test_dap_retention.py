"""Retention of pulled Canvas Data 2 batches on a local folder: what every load applied goes after the
keep, oldest first; what a load has not applied (its load failed), the newest batch, and everything
when no load has registered, stay."""

from __future__ import annotations

import gzip
import json
import os
from datetime import timedelta

import pendulum
import pytest

from airflow_provider_canvas.canvas_data.loading.retention import (
    LOADS_DIR,
    apply_retention,
    read_loads,
    register_load,
)
from airflow_provider_canvas.canvas_data.loading.state import DapBatch, DapTableFolder, DapTableState

NOW = pendulum.datetime(2026, 3, 10, tz="UTC")
KEEP = timedelta(days=7)


def batch(job_id: str, kind: str, days_ago: float) -> DapBatch:
    pulled = NOW.subtract(days=days_ago)
    return DapBatch(
        job_id=job_id,
        kind=kind,  # type: ignore[arg-type]
        schema_version=1,
        until=pulled.to_iso8601_string(),
        files=(f"{job_id}/part-0.json.gz",),
        since=None if kind == "snapshot" else pulled.subtract(hours=4).to_iso8601_string(),
        pulled_at=pulled.to_iso8601_string(),
    )


def write_files(folder: DapTableFolder, job_id: str, days_ago: float) -> None:
    directory = folder.batch_dir(job_id)
    directory.mkdir(parents=True, exist_ok=True)
    file = directory / "part-0.json.gz"
    file.write_bytes(gzip.compress(b'{"key": {"id": 1}}\n'))
    stamp = NOW.subtract(days=days_ago).timestamp()
    os.utime(file, (stamp, stamp))


@pytest.fixture
def folder(tmp_path) -> DapTableFolder:
    """users with a 20-day-old snapshot and incrementals 15, 10, 5 and 1 days old, all on disk."""
    table = DapTableFolder(tmp_path, "canvas", "users")
    ages = {"snap": 20, "inc1": 15, "inc2": 10, "inc3": 5, "inc4": 1}
    batches = [batch(j, "snapshot" if j == "snap" else "incremental", age) for j, age in ages.items()]
    table.write_state(DapTableState("canvas", "users", tuple(batches)))
    for job_id, age in ages.items():
        write_files(table, job_id, age)
    return table


def jobs_listed(folder: DapTableFolder) -> list[str]:
    return [b.job_id for b in folder.read_state().batches]


def jobs_on_disk(folder: DapTableFolder) -> list[str]:
    return sorted(p.name for p in folder.path.iterdir() if p.is_dir() and p.name != LOADS_DIR)


def test_with_no_load_registered_nothing_is_removed(folder):
    plan = apply_retention(folder, KEEP, now=NOW)

    assert plan.removed == ()
    assert jobs_listed(folder) == ["snap", "inc1", "inc2", "inc3", "inc4"]
    assert jobs_on_disk(folder) == ["inc1", "inc2", "inc3", "inc4", "snap"]


def test_batches_every_load_applied_go_after_the_keep_oldest_first(folder):
    all_jobs = ["snap", "inc1", "inc2", "inc3", "inc4"]
    register_load(folder, "warehouse.canvas_data.users", all_jobs)
    register_load(folder, "reporting.canvas_data.users", all_jobs)

    plan = apply_retention(folder, KEEP, now=NOW)

    # 20, 15 and 10 days old go; 5 and 1 day old are inside the keep.
    assert plan.removed == ("snap", "inc1", "inc2")
    assert jobs_listed(folder) == ["inc3", "inc4"]
    assert jobs_on_disk(folder) == ["inc3", "inc4"]
    # The state's watermark is unchanged: the next pull goes on where it would have.
    assert folder.read_state().watermark == batch("inc4", "incremental", 1).until


def test_a_load_that_has_not_applied_a_batch_keeps_it_and_everything_after_it(folder):
    register_load(folder, "warehouse.canvas_data.users", ["snap", "inc1", "inc2", "inc3", "inc4"])
    # This load's last run failed: it applied the snapshot and inc1 only.
    register_load(folder, "reporting.canvas_data.users", ["snap", "inc1"])

    plan = apply_retention(folder, KEEP, now=NOW)

    assert plan.removed == ("snap", "inc1")
    assert plan.held_by == ("reporting.canvas_data.users",)
    assert jobs_listed(folder) == ["inc2", "inc3", "inc4"]
    assert jobs_on_disk(folder) == ["inc2", "inc3", "inc4"]


def test_a_load_registered_before_its_first_load_failed_keeps_everything(folder):
    register_load(folder, "warehouse.canvas_data.users", ["snap", "inc1", "inc2", "inc3", "inc4"])
    register_load(folder, "new_warehouse.canvas_data.users", [])  # registered, then its load failed

    assert apply_retention(folder, KEEP, now=NOW).removed == ()
    assert jobs_listed(folder) == ["snap", "inc1", "inc2", "inc3", "inc4"]


def test_the_newest_batch_stays_even_when_everything_is_old_and_applied(tmp_path):
    folder = DapTableFolder(tmp_path, "canvas", "users")
    folder.write_state(DapTableState("canvas", "users", (batch("snap", "snapshot", 30),)))
    write_files(folder, "snap", 30)
    register_load(folder, "warehouse.canvas_data.users", ["snap"])

    assert apply_retention(folder, timedelta(0), now=NOW).removed == ()
    assert jobs_listed(folder) == ["snap"] and jobs_on_disk(folder) == ["snap"]


def test_folders_a_newer_snapshot_replaced_go_once_every_load_applied_it_and_they_are_old(folder):
    # A new snapshot replaced the chain 2 days ago: its folders are no longer listed.
    new = batch("snap2", "snapshot", 2)
    folder.write_state(DapTableState("canvas", "users", (new,)))
    write_files(folder, "snap2", 2)
    write_files(folder, "crashed", 0.5)  # a pull died downloading it half a day ago
    register_load(folder, "warehouse.canvas_data.users", [])
    behind = apply_retention(folder, KEEP, now=NOW)

    register_load(folder, "warehouse.canvas_data.users", ["snap2"])
    plan = apply_retention(folder, KEEP, now=NOW)

    assert behind.removed == () and behind.held_by == ("warehouse.canvas_data.users",)
    # Older than the keep (by their files' times): snap, inc1, inc2; inc3 (5 days) and the crash stay.
    assert plan.removed == ("inc1", "inc2", "snap")
    assert jobs_on_disk(folder) == ["crashed", "inc3", "inc4", "snap2"]
    assert jobs_listed(folder) == ["snap2"]


def test_a_registration_lists_only_batches_still_in_the_state(folder):
    register_load(folder, "warehouse.canvas_data.users", ["snap", "inc2", "gone-long-ago"])

    [record] = read_loads(folder)
    body = json.loads((folder.path / LOADS_DIR / "warehouse.canvas_data.users.json").read_text())
    assert record.applied == frozenset({"snap", "inc2"}) and body["applied"] == ["inc2", "snap"]
