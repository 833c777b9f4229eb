"""Loading pulled Canvas Data 2 tables into the local PostgreSQL: snapshot, incrementals, schema versions,
bad values. The source table is a model kept in Python; the loaded table must equal it exactly."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import psycopg2
import pytest
from lms_fixtures import dsn, table_fingerprint

from airflow_provider_canvas.canvas_data.loading.ledger import LOADS_TABLE, TABLES_TABLE
from airflow_provider_canvas.canvas_data.loading.load import DapTableLoader
from airflow_provider_canvas.exceptions import DapDataError, DapSchemaChangeError, LmsConfigurationError
from airflow_provider_canvas.testing.dap_files import PulledTable, delete, table_schema, upsert

T0 = datetime(2026, 3, 1, tzinfo=timezone.utc)
KEY = {"id": {"type": "integer", "format": "int64"}}
VALUE = {
    "name": {"type": "string"},
    "workflow_state": {"type": "string", "enum": ["active", "deleted"]},
    "created_at": {"type": "string", "format": "date-time"},
    "n": {"type": "integer", "format": "int32"},
    "score": {"type": "number", "format": "float64"},
    "price": {"type": "number", "multipleOf": 0.01, "exclusiveMaximum": 1e8, "exclusiveMinimum": -1e8},
    "is_admin": {"type": "boolean"},
    "settings": {"type": "object"},
}
COLUMNS = ["id", *VALUE, "meta_ts"]
#: Strings that CSV, COPY or the loader's encoding could get wrong; each must come back unchanged.
TRICKY = [
    'say "hi"',
    "a],[b",
    "é ü 中文 😀",
    "ctrl\x01x",
    "cr\rlf\n",
    "null",
    "",
    "back\\slash",
    '"],["',
    "\\N",
    "\\.",
]


def iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


class SourceTable:
    """The table as DAP has it, and the pulled folder its changes are written to."""

    def __init__(self, root: Path, namespace: str = "canvas", table: str = "users") -> None:
        self.pulled = PulledTable(root, namespace, table)
        self.pulled.write_schema(table_schema(KEY, VALUE, required=["name"]))
        self.rows: dict[int, dict[str, Any]] = {}
        self.until = T0
        self.jobs = 0

    @staticmethod
    def value(i: int, version: int = 0) -> dict[str, Any]:
        return {
            "name": TRICKY[i % len(TRICKY)]
            if i % 3 == 0
            else f"User {i} v{version}" + ("\ttab\n\\" * (i % 7 == 0)),
            "workflow_state": "active" if i % 3 else "deleted",
            "created_at": iso(T0 + timedelta(minutes=i)),
            "n": i * 10 + version if i % 5 else None,
            "score": i / 3,
            "price": float(f"{i}.{version:02d}"),  # json writes it as 12.34, as DAP does
            "is_admin": i % 2 == 0,
            "settings": {"i": i, "tags": ["a", TRICKY[i % len(TRICKY)]]} if i % 4 else None,
        }

    def _record(self, i: int, value: dict[str, Any], ts: datetime, action: str | None) -> dict:
        record = upsert({"id": i}, value, iso(ts), action=action)
        self.rows[i] = {"id": i, **value, "meta_ts": iso(ts)}
        return record

    def snapshot(self, ids: range, *, version: int = 0, files: int = 2) -> None:
        self.rows.clear()
        self.jobs += 1
        ts = self.until
        records = [self._record(i, self.value(i, version), ts, None) for i in ids]
        self.until += timedelta(hours=1)
        self.pulled.add_batch(f"job-{self.jobs}", _split(records, files), until=iso(self.until))

    def incremental(
        self,
        changes: list[tuple[int, int | None]],
        files: int = 2,
        schema_version: int = 1,
        **value_changes: Any,
    ) -> None:
        """``changes``: (id, version) upserts and (id, None) deletes, in the order DAP emits them."""
        records = []
        since = self.until
        for step, (i, version) in enumerate(changes, 1):
            ts = since + timedelta(seconds=step)
            if version is None:
                records.append(delete({"id": i}, iso(ts)))
                self.rows.pop(i, None)
            else:
                records.append(self._record(i, {**self.value(i, version), **value_changes}, ts, "U"))
        self.until = since + timedelta(hours=1)
        self.jobs += 1
        self.pulled.add_batch(
            f"job-{self.jobs}",
            _split(records, files),
            since=iso(since),
            until=iso(self.until),
            schema_version=schema_version,
        )

    def expected(self) -> dict[int, tuple]:
        return {i: tuple(_normal(c, row.get(c)) for c in COLUMNS) for i, row in self.rows.items()}


def _split(records: list, parts: int) -> list[list]:
    size = max(1, -(-len(records) // parts))
    return [records[i : i + size] for i in range(0, len(records), size)] or [[]]


def _normal(column: str, value: Any) -> Any:
    if value is None:
        return None
    if column in ("created_at", "meta_ts"):
        return datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    if column == "price":
        return Decimal(repr(value))
    return value


def table_rows(schema: str, table: str = "users", columns: list[str] = COLUMNS) -> dict[int, tuple]:
    names = ", ".join(f'"{c}"' for c in columns)
    with psycopg.connect(dsn()) as db:
        rows = db.execute(f'SELECT {names} FROM "{schema}"."{table}"').fetchall()
    return {row[0]: tuple(row) for row in rows}


def fingerprint(schema: str, table: str = "users") -> tuple:
    """Rows, columns and ledger of a table, to prove a failed load changed nothing."""
    with psycopg.connect(dsn()) as db:
        tables = db.execute(f'SELECT schema_version, watermark FROM "{schema}"."{TABLES_TABLE}"').fetchall()
        return (*table_fingerprint(db, schema, table, LOADS_TABLE), tables)


@pytest.fixture
def source(tmp_path) -> SourceTable:
    return SourceTable(tmp_path / "pulled")


@pytest.fixture
def loader(schema):
    db = psycopg.connect(dsn())
    yield DapTableLoader(db, schema)
    db.close()


def test_snapshot_then_two_incrementals_give_the_source_table_and_a_rerun_is_a_no_op(loader, source, schema):
    source.snapshot(range(1, 1001))
    first = loader.load(source.pulled.folder)
    assert (first.snapshot, first.records, first.rows_upserted, first.schema_version) == (True, 1000, 1000, 1)
    assert table_rows(schema) == source.expected()

    # Updates, deletes, inserts; key 5 changes twice and key 6 is deleted then comes back (last wins).
    source.incremental(
        [(i, 1) for i in range(1, 101)]
        + [(i, None) for i in range(900, 951)]
        + [(i, 1) for i in range(1001, 1101)]
        + [(5, 2), (6, None), (6, 3), (2000, None)]
    )
    second = loader.load(source.pulled.folder)
    assert second.batches == ["job-2"] and not second.snapshot
    assert (second.records, second.rows_upserted, second.rows_deleted) == (255, 200, 51)
    assert table_rows(schema) == source.expected()

    source.incremental([(i, 4) for i in range(90, 111)] + [(i, None) for i in range(1, 11)] + [(900, 5)])
    third = loader.load(source.pulled.folder)
    assert (third.rows_upserted, third.rows_deleted) == (22, 10)
    assert table_rows(schema) == source.expected()

    before = fingerprint(schema)
    again = loader.load(source.pulled.folder)
    assert again.skipped == "up to date" and again.batches == [] and again.schema_version == 1
    assert fingerprint(schema) == before
    with psycopg.connect(dsn()) as db:
        ledger = db.execute(
            f'SELECT job_id, kind, records, delete_records FROM "{schema}"."{LOADS_TABLE}" ORDER BY job_id'
        ).fetchall()
        watermark = db.execute(f'SELECT watermark FROM "{schema}"."{TABLES_TABLE}"').fetchone()[0]
    assert ledger == [
        ("job-1", "snapshot", 1000, 0),
        ("job-2", "incremental", 255, 53),
        ("job-3", "incremental", 32, 10),
    ]
    assert watermark == source.until


def test_several_pending_batches_load_in_one_transaction_through_psycopg2(source, schema):
    source.snapshot(range(1, 301), files=3)
    source.incremental([(i, 1) for i in range(1, 51)] + [(i, None) for i in range(250, 301)])
    source.incremental([(i, 2) for i in range(40, 61)] + [(260, 2)], files=1)
    db = psycopg2.connect(dsn())
    try:
        result = DapTableLoader(db, schema).load(source.pulled.folder, target="canvas_users")
    finally:
        db.close()

    assert result.batches == ["job-1", "job-2", "job-3"] and result.snapshot
    assert result.target == f"{schema}.canvas_users"
    assert table_rows(schema, "canvas_users") == source.expected()


def test_a_new_snapshot_replaces_the_rows_and_keeps_views_on_the_table(loader, source, schema):
    source.snapshot(range(1, 201))
    loader.load(source.pulled.folder)
    with psycopg.connect(dsn()) as db:
        db.execute(f'CREATE VIEW "{schema}".admins AS SELECT id FROM "{schema}".users WHERE is_admin')

    source.snapshot(range(101, 251), version=1)
    result = loader.load(source.pulled.folder)

    assert result.snapshot and result.batches == ["job-2"]
    assert (result.rows_upserted, result.rows_deleted) == (150, 100)
    assert table_rows(schema) == source.expected()
    with psycopg.connect(dsn()) as db:
        assert db.execute(f'SELECT count(*) FROM "{schema}".admins').fetchone()[0] == 75


def test_a_schema_version_that_adds_columns_adds_them_in_the_load(loader, source, schema):
    source.snapshot(range(1, 51))
    loader.load(source.pulled.folder)
    added = {"email": {"type": "string"}, "last_login": {"type": "string", "format": "date-time"}}
    source.pulled.write_schema(table_schema(KEY, {**VALUE, **added}, version=2))

    source.incremental([(3, 1)], files=1, schema_version=2, email="three@example.edu", last_login=iso(T0))
    result = loader.load(source.pulled.folder)

    assert result.added_columns == ["email", "last_login"] and result.schema_version == 2
    rows = table_rows(schema, columns=["id", "email", "last_login"])
    assert rows[3] == (3, "three@example.edu", T0)
    assert rows[4] == (4, None, None)


def test_a_breaking_schema_change_fails_with_what_changed_and_changes_nothing(loader, source, schema):
    source.snapshot(range(1, 51))
    loader.load(source.pulled.folder)
    before = fingerprint(schema)
    changed = {**VALUE, "n": {"type": "string"}}
    del changed["score"]
    source.pulled.write_schema(table_schema(KEY, changed, version=2))
    source.pulled.add_batch(
        "job-v2",
        [[upsert({"id": 1}, {"name": "x", "n": "ten"}, iso(source.until))]],
        since=iso(source.until),
        until=iso(source.until + timedelta(hours=1)),
        schema_version=2,
    )

    with pytest.raises(DapSchemaChangeError) as caught:
        loader.load(source.pulled.folder)

    message = str(caught.value)
    assert "column 'n' changed type from integer to text" in message
    assert "column 'score' was removed" in message
    assert f"DROP TABLE {schema}.users" in message and "force_snapshot=['users']" in message
    assert fingerprint(schema) == before


@pytest.mark.parametrize(
    ("value", "error"),
    [
        ({"created_at": "2026-13-45T00:00:00Z"}, r"column 'created_at': date/time field value out of range$"),
        ({"n": 2**40}, r"column 'n': value is out of range for type integer$"),
        ({"n": "ten"}, r"column 'n': Expected `int \| null`, got `str`"),
    ],
)
def test_a_value_that_does_not_fit_names_file_line_and_column_and_changes_nothing(
    loader, source, schema, value, error
):
    source.snapshot(range(1, 21))
    loader.load(source.pulled.folder)
    before = fingerprint(schema)
    records = [upsert({"id": i}, SourceTable.value(i, 1), iso(source.until), action="U") for i in range(1, 4)]
    records[2]["value"].update(value)
    source.pulled.add_batch(
        "job-bad",
        [[delete({"id": 9}, iso(source.until))], records],
        since=iso(source.until),
        until=iso(source.until + timedelta(hours=1)),
    )

    with pytest.raises(
        DapDataError, match=r"canvas.users incrementals: job-bad/part-00001.json.gz line 3: " + error
    ):
        loader.load(source.pulled.folder)

    assert fingerprint(schema) == before


def test_an_incremental_after_a_gap_is_refused(loader, source, schema):
    source.snapshot(range(1, 11))
    loader.load(source.pulled.folder)
    later = source.until + timedelta(days=1)
    source.pulled.add_batch(
        "job-late",
        [[upsert({"id": 1}, {"name": "x"}, iso(later))]],
        since=iso(later),
        until=iso(later + timedelta(hours=1)),
    )
    never_pulled = r"the changes in between were never pulled\. To start over: .*force_snapshot=\['users'\]"
    with pytest.raises(DapDataError, match=never_pulled):
        loader.load(source.pulled.folder)


def test_a_table_dropped_by_hand_is_made_again_from_the_snapshot(loader, source, schema):
    source.snapshot(range(1, 31))
    source.incremental([(1, 1), (2, None)])
    loader.load(source.pulled.folder)
    with psycopg.connect(dsn()) as db:
        db.execute(f'DROP TABLE "{schema}".users')

    result = loader.load(source.pulled.folder)

    assert result.batches == ["job-1", "job-2"]
    assert table_rows(schema) == source.expected()


def test_a_table_the_loader_did_not_make_is_left_alone(loader, source, schema):
    source.snapshot(range(1, 4))
    with psycopg.connect(dsn()) as db:
        db.execute(f'CREATE SCHEMA "{schema}"')
        db.execute(f'CREATE TABLE "{schema}".users (id bigint)')
    with pytest.raises(LmsConfigurationError, match="exists but this loader did not make it"):
        loader.load(source.pulled.folder)


def test_repeated_keys_in_a_first_snapshot_keep_the_last_row(loader, source, schema):
    source.pulled.add_batch(
        "job-dup",
        [
            [upsert({"id": 1}, {"name": "first"}, iso(T0), action=None)],
            [upsert({"id": 1}, {"name": "last"}, iso(T0), action=None)],
        ],
        until=iso(T0),
    )
    result = loader.load(source.pulled.folder)
    assert result.rows_upserted == 1
    assert table_rows(schema, columns=["id", "name"]) == {1: (1, "last")}


def test_a_bad_incremental_after_a_pending_snapshot_rolls_back_the_snapshot_too(loader, source, schema):
    source.snapshot(range(1, 101))
    source.incremental([(1, 1)], files=1, n="not a number")  # the whole load is one transaction

    with pytest.raises(DapDataError, match=r"job-2/part-00000.json.gz line 1: column 'n'"):
        loader.load(source.pulled.folder)

    with psycopg.connect(dsn()) as db:
        assert db.execute("SELECT to_regclass(%s)", (f'"{schema}".users',)).fetchone()[0] is None
        assert db.execute(f'SELECT count(*) FROM "{schema}"."{LOADS_TABLE}"').fetchone()[0] == 0


def test_two_loads_of_one_table_at_once_apply_each_batch_once(source, schema):
    source.snapshot(range(1, 2001))
    source.incremental([(i, 1) for i in range(1, 500)] + [(i, None) for i in range(1500, 1600)])
    results: list = []
    errors: list = []

    def load() -> None:
        with psycopg.connect(dsn()) as db:
            try:
                results.append(DapTableLoader(db, schema).load(source.pulled.folder))
            except Exception as err:  # surfaced by the assertion below
                errors.append(err)

    threads = [threading.Thread(target=load) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)

    assert errors == []
    assert sorted(r.skipped or "loaded" for r in results) == ["loaded", "up to date"]
    assert table_rows(schema) == source.expected()
    with psycopg.connect(dsn()) as db:
        assert db.execute(f'SELECT count(*) FROM "{schema}"."{LOADS_TABLE}"').fetchone()[0] == 2


def test_a_breaking_change_with_a_new_snapshot_pulled_says_to_drop_and_load_again(loader, source, schema):
    source.snapshot(range(1, 11))
    loader.load(source.pulled.folder)
    source.pulled.write_schema(table_schema({"uuid": {"type": "string"}}, VALUE, version=2))
    source.pulled.add_batch(
        "job-new",
        [[upsert({"uuid": "a"}, {"name": "x"}, iso(source.until), action=None)]],
        until=iso(T0),
        schema_version=2,
    )

    with pytest.raises(DapSchemaChangeError, match=r"the key changed from \['id'\] to \['uuid'\]") as caught:
        loader.load(source.pulled.folder)
    assert f"drop the table (DROP TABLE {schema}.users), and load again: snapshot job-new" in str(
        caught.value
    )

    with psycopg.connect(dsn()) as db:
        db.execute(f'DROP TABLE "{schema}".users')
    assert loader.load(source.pulled.folder).batches == ["job-new"]
    assert table_rows(schema, columns=["uuid", "name"]) == {"a": ("a", "x")}
