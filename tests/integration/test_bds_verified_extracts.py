"""Verified extracts: nothing reaches its final name or the manifest unless it is a ZIP whose CRC checks out,
and a bad file an older version recorded is found and fetched again (emulator over HTTP, PostgreSQL)."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta
from pathlib import Path

import psycopg
import pytest
from lms_fixtures import COLUMNS, dsn, postgres_connection_fields, user

from airflow_provider_canvas.brightspace.operators.data_sets import (
    BrightspaceDataSetsPullOperator,
    BrightspaceDataSetsToPostgresOperator,
)
from airflow_provider_canvas.common.zip_check import quick_check
from airflow_provider_canvas.exceptions import ExtractFormatError, LmsError
from airflow_provider_canvas.testing.bds_files import CorruptSource
from airflow_provider_canvas.testing.primitives import utcnow


@pytest.fixture
def conns(lms_connection, make_connection) -> tuple[str, str]:
    bs = lms_connection("brightspace", expired=False)
    pg = make_connection("bds_verified_pg", extra={}, **postgres_connection_fields())
    return bs, pg


@pytest.fixture
def users(emulator):
    """Users: a full 3 days ago and a differential 2 days ago."""
    now = utcnow()
    bs = emulator.brightspace
    bs.add_data_set("Users", COLUMNS, [user(i) for i in range(1, 301)], created=now - timedelta(days=3))
    bs.add_extract("Users", "Differential", now - timedelta(days=2), [user(i, f"renamed{i}") for i in (1, 2)])
    return bs


def pull(conns, output: Path) -> dict:
    return BrightspaceDataSetsPullOperator(
        task_id=f"pull_{uuid.uuid4().hex[:6]}",
        data_sets=["Users"],
        location=output,
        brightspace_conn_id=conns[0],
    ).execute({})


def load(conns, output: Path, schema: str) -> dict:
    return BrightspaceDataSetsToPostgresOperator(
        task_id=f"load_{uuid.uuid4().hex[:6]}",
        data_sets=["Users"],
        location=output,
        postgres_conn_id=conns[1],
        schema=schema,
    ).execute({})


def names(schema: str) -> dict[int, str]:
    """UserName by UserId, an integer column since the typed catalogue."""
    with psycopg.connect(dsn()) as db:
        return dict(db.execute(f'SELECT "UserId", "UserName" FROM "{schema}".users').fetchall())


def manifest(output: Path) -> list[dict]:
    return json.loads((output / "users" / "manifest.json").read_text())["extracts"]


def files(output: Path) -> list[str]:
    return sorted(str(p.relative_to(output)) for p in output.rglob("*") if p.is_file())


def test_a_non_zip_body_of_the_right_length_never_reaches_its_final_name(
    emulator, users, conns, schema, tmp_path
):
    pull(conns, tmp_path)
    load(conns, tmp_path, schema)
    recorded, on_disk = manifest(tmp_path), files(tmp_path)
    newest = users.add_extract("Users", "Differential", utcnow(), [user(3, "changed")])
    users.corrupt_extract("Users")  # served with the announced DownloadSize, but not a ZIP

    with pytest.raises(
        ExtractFormatError, match=r"not a ZIP file.*Nothing was kept under users_differential_"
    ):
        pull(conns, tmp_path)

    assert files(tmp_path) == on_disk  # no final name, no partial file
    assert manifest(tmp_path) == recorded
    assert load(conns, tmp_path, schema) == {"Users": []}  # nothing new to load, nothing failing
    # The host serves the real bytes again: the next pull fetches the extract and the load applies it.
    newest.corrupt = False
    assert [p["bds_type"] for p in pull(conns, tmp_path)["Users"]] == ["Differential"]
    load(conns, tmp_path, schema)
    assert names(schema)[3] == "changed"


def test_a_bad_file_an_older_version_recorded_is_found_and_fetched_again(
    emulator, users, conns, schema, tmp_path
):
    pulled = pull(conns, tmp_path)["Users"]
    diff = tmp_path / "users" / pulled[1]["file"]
    size = diff.stat().st_size
    diff.write_bytes(b"".join(CorruptSource(size).iter_range(0, size)))  # what 0.1 kept and recorded
    recorded = manifest(tmp_path)

    again = pull(conns, tmp_path)["Users"]

    assert [p["file"] for p in again] == [pulled[1]["file"]]
    quick_check(diff, size, diff.name)  # a ZIP again
    assert [e["file"] for e in manifest(tmp_path)] == [e["file"] for e in recorded]
    load(conns, tmp_path, schema)
    assert names(schema)[1] == "renamed1"


def test_a_bad_file_brightspace_no_longer_offers_is_named_with_the_entry_to_delete(
    emulator, users, conns, tmp_path
):
    pulled = pull(conns, tmp_path)["Users"]
    diff = tmp_path / "users" / pulled[1]["file"]
    diff.write_bytes(b"<html>proxy error</html>")
    users.retention_days = 1  # the differential of 2 days ago is no longer listed
    recorded = manifest(tmp_path)

    with pytest.raises(LmsError) as caught:
        pull(conns, tmp_path)

    message = str(caught.value)
    assert f"{diff.as_uri()} (" in message
    assert json.dumps({"file": pulled[1]["file"], "created": recorded[1]["created"]}) in message
    assert f"{(tmp_path / 'users' / 'manifest.json').as_uri()}" in message
    assert (
        manifest(tmp_path) == recorded and diff.read_bytes() == b"<html>proxy error</html>"
    )  # left as found
