"""What the Brightspace pull and load decide from the manifest, and where the manifest lives."""

from __future__ import annotations

import json
from datetime import timedelta

import pendulum
import pytest
from airflow.sdk import ObjectStoragePath

from airflow_provider_canvas.brightspace.hooks.models import BdsExtract
from airflow_provider_canvas.brightspace.loading.pull_state import (
    DataSetFolder,
    PulledExtract,
    plan_load,
    plan_pull,
    slug,
)
from airflow_provider_canvas.brightspace.operators.data_sets import _names, data_set_asset
from airflow_provider_canvas.exceptions import DifferentialGapError, LmsConfigurationError, LmsError

NOW = pendulum.datetime(2026, 11, 20, 6, tz="UTC")


def extract(bds_type: str, days_ago: float) -> BdsExtract:
    return BdsExtract(
        "Users", bds_type, NOW.subtract(hours=days_ago * 24), f"https://x/{bds_type}/{days_ago}", 100
    )


def pulled(e: BdsExtract) -> PulledExtract:
    return PulledExtract(DataSetFolder.file_name(e), e.bds_type, e.created.to_iso8601_string(), 100)


AVAILABLE = [extract("Full", 13), extract("Full", 6), *(extract("Differential", d) for d in (12, 5, 3, 1))]


def days(plan: list[BdsExtract]) -> list[tuple[str, float]]:
    return [(e.bds_type, (NOW - e.created).total_seconds() / 86400) for e in plan]


def test_first_pull_takes_the_newest_full_and_the_differentials_after_it():
    assert days(plan_pull(AVAILABLE, [], now=NOW)) == [
        ("Full", 6),
        ("Differential", 5),
        ("Differential", 3),
        ("Differential", 1),
    ]


def test_later_pulls_take_only_newer_differentials_unless_a_newer_full_is_wanted():
    state = [
        pulled(extract("Full", 13)),
        pulled(extract("Differential", 12)),
        pulled(extract("Differential", 5)),
    ]

    assert days(plan_pull(AVAILABLE, state, now=NOW)) == [("Differential", 3), ("Differential", 1)]
    assert days(plan_pull(AVAILABLE, state, full="newer", now=NOW)) == [
        ("Full", 6),
        ("Differential", 5),
        ("Differential", 3),
        ("Differential", 1),
    ]
    up_to_date = [pulled(extract("Full", 6)), pulled(extract("Differential", 1))]
    assert plan_pull(AVAILABLE, up_to_date, full="newer", now=NOW) == []


def test_gap_longer_than_retention_raises_unless_a_newer_full_closes_it():
    state = [pulled(extract("Full", 20))]
    with pytest.raises(DifferentialGapError, match="20 days ago"):
        plan_pull(AVAILABLE, state, now=NOW)
    assert days(plan_pull(AVAILABLE, state, full="newer", now=NOW))[0] == ("Full", 6)
    # 13.9 days is still inside the window.
    assert plan_pull(
        AVAILABLE, [pulled(extract("Differential", 13.9))], now=NOW, retention=timedelta(days=14)
    )


def test_nothing_to_start_from_and_bad_policy_are_errors():
    with pytest.raises(LmsError, match="no full extract"):
        plan_pull([extract("Differential", 1)], [], now=NOW)
    with pytest.raises(LmsConfigurationError, match="full must be one of"):
        plan_pull(AVAILABLE, [], full="weekly", now=NOW)  # type: ignore[arg-type]


def test_load_plan_starts_from_the_newest_full_then_follows_the_chain():
    chain = [pulled(e) for e in (extract("Full", 6), extract("Differential", 5), extract("Differential", 1))]
    full, d5, d1 = chain

    assert plan_load(chain, None) == [full, d5, d1]
    assert plan_load(chain, d5.created_at) == [d1]
    assert plan_load(chain, d1.created_at) == []
    assert plan_load(chain, NOW.subtract(days=9)) == [full, d5, d1]  # the table predates the full
    with pytest.raises(LmsError, match="no full extract"):
        plan_load([d5], None)


def test_local_manifest_is_written_atomically_and_pruned_before_the_newest_full(tmp_path):
    folder = DataSetFolder(str(tmp_path), "Users")
    state: list[PulledExtract] = []
    for e in (
        extract("Full", 13),
        extract("Differential", 12),
        extract("Full", 6),
        extract("Differential", 5),
    ):
        state = folder.record(state, pulled(e))

    assert [e.bds_type for e in state] == ["Full", "Differential"]
    assert folder.read_manifest() == state
    assert [p.name for p in (tmp_path / "users").iterdir()] == ["manifest.json"]  # no temp files left
    assert json.loads((tmp_path / "users" / "manifest.json").read_text())["data_set"] == "Users"


def test_unreadable_manifest_is_reported_not_ignored(tmp_path):
    (tmp_path / "users").mkdir()
    (tmp_path / "users" / "manifest.json").write_text("{not json")
    with pytest.raises(LmsError, match="not a manifest this provider wrote"):
        DataSetFolder(tmp_path, "Users").read_manifest()


def test_object_storage_folder_keeps_manifest_and_files_there(tmp_path):
    from airflow.sdk.io import attach
    from fsspec.implementations.memory import MemoryFileSystem

    attach("memory", fs=MemoryFileSystem())  # stands in for s3:// or gs:// (no provider needed)
    root = ObjectStoragePath("memory://bds-unit-test/extracts")
    folder = DataSetFolder(root, "Org Units")
    local = tmp_path / "x.zip"
    local.write_bytes(b"PK" + b"\0" * 3_000_000)

    folder.upload(local, "Full/org_units_full_1.zip")
    folder.record([], PulledExtract("Full/org_units_full_1.zip", "Full", NOW.to_iso8601_string(), 3_000_002))

    assert not folder.is_local and folder.uri == "memory://bds-unit-test/extracts/org_units"
    assert folder.size_of("Full/org_units_full_1.zip") == 3_000_002
    assert [e.file for e in DataSetFolder(root, "Org Units").read_manifest()] == ["Full/org_units_full_1.zip"]
    with folder.open("Full/org_units_full_1.zip") as remote:
        assert remote.read(2) == b"PK"
    assert data_set_asset(root, "Org Units").uri == "memory://bds-unit-test/extracts/org_units"


def test_names_and_slugs():
    assert slug("User Enrollments") == "user_enrollments" and slug("Org Units") == "org_units"
    assert _names("['Users', 'Org Units']") == ["Users", "Org Units"]
    assert _names('["Users"]') == ["Users"]
    assert _names("Users, Org Units,Users") == ["Users", "Org Units"]
    with pytest.raises(LmsConfigurationError):
        _names([])
    with pytest.raises(LmsConfigurationError):
        _names("[Users")
    with pytest.raises(LmsConfigurationError):
        slug("***")
