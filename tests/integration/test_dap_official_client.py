"""Instructure's own DAP client (instructure-dap-client 2.3.1, in its own virtualenv) against the emulator.

The emulator is this project's reading of DAP's published API document; the official client is
Instructure's. It lists, reads a schema, takes snapshots (jsonl, csv) and an incremental (tsv)
over HTTP, and ``dap initdb`` + ``dap syncdb`` fill a PostgreSQL database whose tables must hold
the same rows and values as the provider's pull and load of the same data.
"""

from __future__ import annotations

import csv
import gzip
import json
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import psycopg
import pytest
from lms_fixtures import dsn
from test_canvas_data_pull import make_op
from test_canvas_data_pull_and_load import source_table

from airflow_provider_canvas.canvas_data.loading.load import DapTableLoader
from airflow_provider_canvas.canvas_data.loading.state import DapTableFolder
from airflow_provider_canvas.testing.dap import DapEmulator
from airflow_provider_canvas.testing.dap_jobs import CallLimit
from airflow_provider_canvas.testing.dap_official_client import OfficialDapClient, official_client_venv
from airflow_provider_canvas.testing.postgres import configured_server, fresh_postgres_database

pytestmark = pytest.mark.dap_client

OFFICIAL_ID, OFFICIAL_SECRET = "us-east-1#5b2e90aa-official", "official-secret-Qw81"
PROVIDER_ID, PROVIDER_SECRET = "us-east-1#7f3c2a10-dap-client", "dap-secret-value-Kx93"
TABLES = ["users", "courses"]  # text, enums, booleans, int64, timestamps, a nested object (jsonb)


@pytest.fixture(scope="module")
def venv() -> Path:
    return official_client_venv()


@pytest.fixture
def dap() -> Iterator[DapEmulator]:
    with DapEmulator(rows={"accounts": 5, "users": 230, "courses": 40, "enrollments": 10}) as emulator:
        emulator.register_client(OFFICIAL_ID, OFFICIAL_SECRET)
        emulator.register_client(PROVIDER_ID, PROVIDER_SECRET)
        emulator.rows_per_object = 100  # several files per job
        # The official client waits 5 s before each look at a job that is not done: jobs that end at
        # once keep the test short (one run below still waits on purpose, for the 202 path).
        emulator.job_seconds = 0.0
        emulator.job_creation = CallLimit(30, 60.0)
        yield emulator


@pytest.fixture
def client(dap, venv, tmp_path) -> OfficialDapClient:
    return OfficialDapClient(venv, dap.url, OFFICIAL_ID, OFFICIAL_SECRET, tmp_path / "official")


def _files(folder: Path, suffix: str) -> list[Path]:
    (job,) = folder.glob("job_*")
    return sorted(job.glob(f"*{suffix}"))


def _text(files: list[Path]) -> list[str]:
    """The lines of gzip files, each file's in turn (a tabular file's header included)."""
    lines: list[str] = []
    for path in files:
        with gzip.open(path, "rt", newline="") as stream:
            lines += stream.read().splitlines()
    return lines


def _truth_as_text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def test_list_schema_snapshots_and_an_incremental_in_every_format(dap, client, tmp_path):
    listed = client.run("list", "--namespace", "canvas")
    assert listed.stdout.split() == sorted(dap.namespaces["canvas"])

    client.run("schema", "--namespace", "canvas", "--table", "users", "--output-directory", "schemas")
    saved = json.loads((client.workdir / "schemas" / "users_schema_version_1.json").read_text())
    assert saved == dap.table("users").schema_json()

    # A job that takes a while: the client gets 202 (waiting), polls, and downloads once complete.
    dap.job_seconds = 1.0
    client.run("snapshot", "--namespace", "canvas", "--table", "users", "--format", "jsonl",
               "--output-directory", "jsonl")  # fmt: skip
    dap.job_seconds = 0.0
    assert [status for table, kind, status in dap.job_requests] == [202]
    files = _files(client.workdir / "jsonl", ".json.gz")
    assert len(files) == 3  # 230 records, 100 per object, each saved under its own name from the URL
    snapshot = [json.loads(line) for line in _text(files)]
    truth = source_table(dap, "users")
    assert {r["key"]["id"]: r["value"] for r in snapshot} == truth

    client.run("snapshot", "--namespace", "canvas", "--table", "courses", "--format", "csv",
               "--output-directory", "csv")  # fmt: skip
    csv_files = _files(client.workdir / "csv", ".csv.gz")
    rows = [row for path in csv_files for row in csv.DictReader(_text([path]))]
    courses = source_table(dap, "courses")
    assert {int(r["key.id"]) for r in rows} == set(courses)
    for row in rows:
        expected = courses[int(row["key.id"])]
        for column in ("name", "workflow_state", "is_public", "start_at", "settings.hide_final_grades"):
            value = expected
            for step in column.split("."):
                value = value.get(step) if isinstance(value, dict) else None
            # CSV writes NULL as nothing; mode expanded (the default) lays the nested object out in columns.
            assert row[f"value.{column}"] == (_truth_as_text(value) or "")

    at = dap.table("users").last_commit
    dap.publish("users", inserts=4, updates=6, deletes=3)
    since = datetime.fromtimestamp(at, timezone.utc).isoformat().replace("+00:00", "Z")
    client.run("incremental", "--namespace", "canvas", "--table", "users", "--format", "tsv",
               "--since", since, "--output-directory", "tsv")  # fmt: skip
    lines = [line.split("	") for line in _text(_files(client.workdir / "tsv", ".tsv.gz"))]
    header = lines[0]
    body = [line for line in lines[1:] if line != header]
    changed = {int(line[header.index("key.id")]): line[header.index("meta.action")] for line in body}
    now = source_table(dap, "users")
    assert sorted(changed.values()).count("D") == 3 and len(changed) == 4 + 6 + 3
    assert all((key in now) == (action == "U") for key, action in changed.items())

    downloads = dap.signed_downloads
    assert downloads and not any(d.had_authorization for d in downloads)


def test_initdb_and_syncdb_fill_the_same_rows_and_values_as_the_provider_load(
    dap, client, make_connection, tmp_path
):
    # A database of its own for the official client (it makes schemas canvas and instructure_dap).
    with fresh_postgres_database() as url:
        official = configured_server().url(url.rsplit("/", 1)[-1])
        conn_id = make_connection(
            "canvas_data_vs_official", "canvas_data", dap.url, {"namespace": "canvas"},
            login=PROVIDER_ID, password=PROVIDER_SECRET,
        )  # fmt: skip
        schema = f"provider_{tmp_path.name[-12:].lower().replace('-', '_')}"

        client.run(
            "initdb", "--namespace", "canvas", "--table", ",".join(TABLES), "--connection-string", official
        )
        provider_sync(conn_id, tmp_path / "pulled", schema)
        for table in TABLES:
            assert_same_rows(official, schema, table, len(source_table(dap, table)))

        dap.advance(inserts=5, updates=7, deletes=4)
        client.run(
            "syncdb", "--namespace", "canvas", "--table", ",".join(TABLES), "--connection-string", official
        )
        provider_sync(conn_id, tmp_path / "pulled", schema)
        for table in TABLES:
            assert_same_rows(official, schema, table, len(source_table(dap, table)))


def provider_sync(conn_id: str, location: Path, schema: str) -> None:
    """canvas_data_2_sync's work without Airflow: the pull (jobs end at once here: no deferral), the loads."""
    make_op(conn_id, location, TABLES, deferrable=False).execute({})
    with psycopg.connect(dsn()) as db:
        loader = DapTableLoader(db, schema)
        for table in TABLES:
            loader.load(DapTableFolder(location, "canvas", table))


def _comparable(value: Any) -> Any:
    """One value as both sides mean it: the official client stores UTC timestamps without a zone."""
    if isinstance(value, datetime):
        moment = value if value.tzinfo else value.replace(tzinfo=timezone.utc)
        return moment.astimezone(timezone.utc).isoformat(timespec="milliseconds")
    return value


def _rows(url: str, schema: str, table: str, columns: list[str]) -> dict[Any, tuple]:
    names = ", ".join(f'"{c}"::text' if c in _ENUMS else f'"{c}"' for c in columns)
    with psycopg.connect(url) as db:
        fetched = db.execute(f'SELECT {names} FROM "{schema}"."{table}"').fetchall()
    return {row[0]: tuple(_comparable(v) for v in row) for row in fetched}


_ENUMS = {"workflow_state"}  # PostgreSQL enum types on the official side, text on the provider's


def assert_same_rows(official: str, schema: str, table: str, expected_rows: int) -> None:
    with psycopg.connect(official) as db:
        columns = [
            r[0]
            for r in db.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_schema = 'canvas' "
                "AND table_name = %s ORDER BY ordinal_position",
                [table],
            )
        ]
    ours = _rows(dsn(), schema, table, columns)
    theirs = _rows(official, "canvas", table, columns)
    assert len(theirs) == expected_rows and columns[0] == "id"
    assert ours == theirs


def test_the_official_client_reads_the_errors_and_waits_out_a_429_as_published(dap, client):
    # Its error classes are chosen by the published fields (NotFoundError needs id and kind): its API says.
    caught = caught_by_the_client(client, 'session.get_table_schema("canvas", "nosuch")')
    assert (
        caught["class"] == "NotFoundError" and caught["id"] == "canvas.nosuch" and caught["kind"] == "table"
    )
    missing = client.run("schema", "--namespace", "canvas", "--table", "nosuch", "--output-directory", "s",
                         check=False)  # fmt: skip
    assert missing.returncode != 0 and "table canvas.nosuch does not exist" in missing.stderr

    client.run("snapshot", "--namespace", "canvas", "--table", "users", "--output-directory", "before")
    at = dap.jobs[next(iter(dap.jobs))].at or 0.0
    dap.reload_table("users")
    since = datetime.fromtimestamp(at, timezone.utc).isoformat()
    refused = caught_by_the_client(
        client,
        f'session.query_incremental("canvas", "users", IncrementalQuery(format=Format.JSONL, mode=None, '
        f'since=datetime.fromisoformat("{since}"), until=None))',
    )
    # Its class reads OutOfRangeError: the client picks the first class whose fields fit, and both
    # have since/until. The published type says which it is.
    assert refused["type"] == "SnapshotRequiredError" and refused["class"] in (
        "OutOfRangeError",
        "SnapshotRequiredError",
    )
    assert "reloaded" in refused["message"]

    dap.job_creation = CallLimit(1, 3.0)
    both = client.run("snapshot", "--namespace", "canvas", "--table", "courses,enrollments",
                      "--output-directory", "throttled")  # fmt: skip
    assert dap.summary()["throttled_job_creations"] == 1  # the second waited for Retry-After, then went on
    assert len(list((client.workdir / "throttled").glob("job_*"))) == 2 and both.seconds >= 2


def caught_by_the_client(client: OfficialDapClient, call: str) -> dict[str, str]:
    """What the client's library raises for ``await <call>``: its class and the error's fields."""
    code = f"""
import asyncio, json
from datetime import datetime
from dap.api import DAPClient
from dap.dap_types import Format, IncrementalQuery

async def main():
    async with DAPClient(tracking=False) as session:
        try:
            await {call}
        except Exception as err:
            print(json.dumps({{"class": type(err).__name__, **{{k: str(v) for k, v in vars(err).items()}}}}))
        else:
            print("{{}}")

asyncio.run(main())
"""
    return json.loads(client.python(code))
