"""Loading extract ZIPs into the local PostgreSQL: upserts, schema drift, deletes, and bad input."""

from __future__ import annotations

import logging
import zipfile
from datetime import datetime, timedelta, timezone
from pathlib import Path

import psycopg
import psycopg2
import pytest
from airflow.providers.postgres.hooks.postgres import PostgresHook
from lms_fixtures import COLUMNS, dsn, postgres_connection_fields, table_fingerprint, user

from airflow_provider_canvas.brightspace.loading.postgres import (
    LEDGER_TABLE,
    PostgresExtractLoader,
    key_columns_for,
)
from airflow_provider_canvas.common.airflow_access import get_connection
from airflow_provider_canvas.exceptions import ExtractFormatError, LmsConfigurationError
from airflow_provider_canvas.testing.brightspace import build_zip, csv_bytes

T0 = datetime(2026, 11, 1, tzinfo=timezone.utc)


def write_zip(path: Path, rows: list[dict], columns: list[str] = COLUMNS, member: str = "Users.csv") -> Path:
    path.write_bytes(build_zip([(member, csv_bytes(columns, rows))], T0))
    return path


@pytest.fixture
def pg_conn_id(make_connection) -> str:
    return make_connection("bds_warehouse", extra={}, **postgres_connection_fields())


@pytest.fixture
def loader(pg_conn_id, schema) -> PostgresExtractLoader:
    # The way the operator gets its connection (works outside a task too).
    hook = PostgresHook(postgres_conn_id=pg_conn_id, connection=get_connection(pg_conn_id))
    db = hook.get_conn()
    yield PostgresExtractLoader(db, schema)
    db.close()


def rows_of(schema: str, table: str = "users") -> dict[str, dict]:
    with psycopg.connect(dsn()) as db, db.cursor(row_factory=psycopg.rows.dict_row) as cur:
        cur.execute(f'SELECT * FROM "{schema}"."{table}"')
        return {row["UserId"]: row for row in cur.fetchall()}


def fingerprint(schema: str, table: str = "users") -> tuple:
    """Rows and columns of the table, to prove a failed load changed nothing."""
    with psycopg.connect(dsn()) as db:
        return table_fingerprint(db, schema, table, LEDGER_TABLE)


def load_full(loader, tmp_path, n: int = 2000):
    path = write_zip(tmp_path / "full.zip", [user(i) for i in range(1, n + 1)])
    return loader.load(path, "users", ["UserId"], extract_id="full-1", bds_type="Full", created_at=T0)


def test_full_then_differential_gives_the_right_rows(loader, schema, tmp_path):
    full = load_full(loader, tmp_path)
    diff_rows = (
        [user(i, name=f"renamed{i}") for i in range(1, 101)]  # 100 updates
        + [user(i, deleted=True) for i in range(101, 151)]  # 50 deletions
        + [user(i) for i in range(2001, 2301)]  # 300 new users
    )
    diff = write_zip(tmp_path / "diff.zip", diff_rows)

    result = loader.load(
        diff,
        "users",
        ["UserId"],
        extract_id="diff-1",
        bds_type="Differential",
        created_at=T0 + timedelta(days=1),
    )

    assert (full.rows_read, full.rows_upserted) == (2000, 2000)
    assert (result.rows_read, result.rows_upserted, result.rows_deleted) == (450, 400, 50)
    rows = rows_of(schema)
    assert len(rows) == 2000 - 50 + 300
    assert rows["1"]["UserName"] == "renamed1" and rows["100"]["UserName"] == "renamed100"
    assert rows["151"]["UserName"] == "user151" and "150" not in rows and "101" not in rows
    assert rows["2300"]["OrgDefinedId"] == "S02300"

    # The same extract again: skipped by the ledger; an older one: skipped too.
    before = fingerprint(schema)
    again = loader.load(
        diff,
        "users",
        ["UserId"],
        extract_id="diff-1",
        bds_type="Differential",
        created_at=T0 + timedelta(days=1),
    )
    older = loader.load(
        diff,
        "users",
        ["UserId"],
        extract_id="diff-0",
        bds_type="Differential",
        created_at=T0 - timedelta(days=1),
    )
    assert again.skipped == "already loaded" and "older than" in older.skipped
    assert fingerprint(schema) == before
    assert loader.newest_loaded("users") == ("diff-1", T0 + timedelta(days=1))


@pytest.mark.parametrize(("bds_type", "full_extracts"), [("Differential", "replace"), ("Full", "merge")])
def test_merging_identical_rows_rewrites_nothing(loader, schema, tmp_path, bds_type, full_extracts):
    load_full(loader, tmp_path, n=500)
    path = write_zip(tmp_path / "same.zip", [user(i) for i in range(1, 501)])

    result = loader.load(
        path, "users", ["UserId"], extract_id="2", bds_type=bds_type, created_at=T0 + timedelta(days=7),
        full_extracts=full_extracts,
    )  # fmt: skip

    assert (result.method, result.rows_read, result.rows_upserted, result.rows_deleted) == (
        "merge",
        500,
        0,
        0,
    )


def test_a_newer_full_replaces_every_row_and_says_so(loader, schema, tmp_path):
    load_full(loader, tmp_path, n=500)
    path = write_zip(tmp_path / "same.zip", [user(i) for i in range(1, 501)])

    result = loader.load(
        path, "users", ["UserId"], extract_id="full-2", bds_type="Full", created_at=T0 + timedelta(days=7)
    )

    # A replace rewrites the table: rows_upserted is every row it now holds, not only changed ones.
    assert (result.method, result.rows_read, result.rows_upserted, result.rows_deleted) == (
        "replace",
        500,
        500,
        0,
    )
    assert len(rows_of(schema)) == 500


def test_new_column_is_added_and_a_differential_without_a_column_leaves_it_alone(
    loader, schema, tmp_path, caplog
):
    load_full(loader, tmp_path, n=100)
    with_email = write_zip(
        tmp_path / "v2.zip", [user(i, Email=f"u{i}@x.edu") for i in (1, 2, 500)], columns=[*COLUMNS, "Email"]
    )
    result = loader.load(with_email, "users", ["UserId"], extract_id="d1", created_at=T0 + timedelta(days=1))

    assert result.added_columns == ["Email"]
    rows = rows_of(schema)
    assert rows["1"]["Email"] == "u1@x.edu" and rows["500"]["Email"] == "u500@x.edu"
    assert rows["3"]["Email"] is None and len(rows) == 101

    without_org_id = write_zip(
        tmp_path / "v3.zip",
        [
            {"UserId": "2", "UserName": "two", "IsDeleted": "False", "Email": "two@x.edu"},
            {"UserId": "600", "UserName": "new", "IsDeleted": "False", "Email": "new@x.edu"},
        ],
        columns=["UserId", "UserName", "IsDeleted", "Email"],
    )
    with caplog.at_level(logging.WARNING, logger="airflow_provider_canvas.brightspace.loading.postgres"):
        result = loader.load(
            without_org_id, "users", ["UserId"], extract_id="d2", bds_type="Differential",
            created_at=T0 + timedelta(days=2),
        )  # fmt: skip

    assert result.missing_columns == ["OrgDefinedId"] and result.rows_upserted == 2
    assert "OrgDefinedId" in caplog.text and "unchanged on the rows it updates" in caplog.text
    rows = rows_of(schema)
    # An upsert changes only the columns it carries: row 2 keeps the OrgDefinedId it had.
    assert rows["2"]["OrgDefinedId"] == "S00002" and rows["2"]["UserName"] == "two"
    assert rows["2"]["Email"] == "two@x.edu" and rows["3"]["OrgDefinedId"] == "S00003"
    assert rows["600"]["OrgDefinedId"] is None and rows["600"]["UserName"] == "new"  # new: nothing to keep

    # A full stands for the whole data set: merged or replaced, the column it lacks is emptied.
    only = {"UserId": "2", "UserName": "2", "IsDeleted": "False", "Email": ""}
    full = write_zip(tmp_path / "v4.zip", [only], columns=list(only))
    loader.load(
        full, "users", ["UserId"], extract_id="f2", bds_type="Full", created_at=T0 + timedelta(days=3),
        full_extracts="merge",
    )  # fmt: skip
    assert [(r["UserId"], r["OrgDefinedId"]) for r in rows_of(schema).values()] == [("2", None)]


def test_deleted_rows_can_be_kept_with_their_flag(loader, schema, tmp_path):
    load_full(loader, tmp_path, n=10)
    diff = write_zip(tmp_path / "d.zip", [user(3, deleted=True)])

    result = loader.load(
        diff, "users", ["UserId"], extract_id="d", created_at=T0 + timedelta(days=1), deleted_rows="flag"
    )

    assert result.rows_deleted == 0
    assert rows_of(schema)["3"]["IsDeleted"] == "True"


def test_repeated_key_in_one_extract_last_row_wins(loader, schema, tmp_path):
    path = write_zip(tmp_path / "dup.zip", [user(1, name="first"), user(2), user(1, name="last")])

    result = loader.load(path, "users", ["UserId"], extract_id="dup", created_at=T0)

    assert result.rows_read == 3 and result.rows_upserted == 2
    assert rows_of(schema)["1"]["UserName"] == "last"


def test_composite_key_and_quoting_through_psycopg2(schema, tmp_path):
    columns = ["OrgUnitId", "UserId", "RoleName", "Note"]
    rows = [
        {"OrgUnitId": "10", "UserId": "1", "RoleName": "Student", "Note": 'says "hi", then\nleaves'},
        {"OrgUnitId": "10", "UserId": "2", "RoleName": "Instructor", "Note": ""},
        {"OrgUnitId": "11", "UserId": "1", "RoleName": "Student", "Note": "ünïcødé"},
    ]
    path = write_zip(tmp_path / "enr.zip", rows, columns=columns, member="UserEnrollments.csv")
    db = psycopg2.connect(dsn())
    try:
        result = PostgresExtractLoader(db, schema).load(
            path, "user_enrollments", key_columns_for("User Enrollments"), extract_id="e1", created_at=T0
        )
    finally:
        db.close()

    assert result.rows_upserted == 3
    with psycopg.connect(dsn()) as check:
        got = check.execute(
            f'SELECT "Note" FROM "{schema}".user_enrollments ORDER BY 1 NULLS FIRST'
        ).fetchall()
    assert [r[0] for r in got] == [None, 'says "hi", then\nleaves', "ünïcødé"]


def _corrupt_member(path: Path) -> None:
    """Flip bytes in the middle of the compressed CSV: the ZIP opens, the data stream fails."""
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as archive:
        info = archive.infolist()[0]
    start = info.header_offset + 30 + len(info.filename.encode())
    middle = start + info.compress_size // 2
    data[middle : middle + 64] = bytes(b ^ 0x5A for b in data[middle : middle + 64])
    path.write_bytes(bytes(data))


BAD_INPUTS = {
    "not a zip": (lambda p: p.write_bytes(b"this is not a zip archive\n" * 400), "not a readable ZIP"),
    "truncated zip": (
        lambda p: p.write_bytes(write_zip(p, [user(i) for i in range(5000)]).read_bytes()[:30_000]),
        "not a readable ZIP",
    ),
    "corrupt data": (
        lambda p: (write_zip(p, [user(i) for i in range(5000)]), _corrupt_member(p)),
        "corrupt or truncated",
    ),
    "two files": (
        lambda p: p.write_bytes(
            build_zip([("Users.csv", csv_bytes(COLUMNS, [user(1)])), ("Other.csv", "a\n1\n")], T0)
        ),
        "holds 2 files",
    ),
    "path traversal": (
        lambda p: p.write_bytes(build_zip([("../../etc/Users.csv", csv_bytes(COLUMNS, [user(1)]))], T0)),
        r"contain '\.\.'",
    ),
    "key column missing": (
        lambda p: write_zip(p, [{"Id": "1", "UserName": "x"}], columns=["Id", "UserName"]),
        r"header does not match.*\['UserId'\] missing",
    ),
    "ragged row": (
        lambda p: p.write_bytes(build_zip([("Users.csv", "UserId,UserName\n1,a\n2,b,SECRET-VALUE\n")], T0)),
        "at CSV line 3",
    ),
    "duplicate header": (
        lambda p: p.write_bytes(build_zip([("Users.csv", "UserId,UserName,UserName\n1,a,b\n")], T0)),
        "repeats columns",
    ),
    "blank key": (lambda p: write_zip(p, [user(1), {**user(2), "UserId": ""}]), "empty key column"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_refused_and_the_table_is_unchanged(loader, schema, tmp_path, case):
    load_full(loader, tmp_path, n=300)
    before = fingerprint(schema)
    make, message = BAD_INPUTS[case]
    bad = tmp_path / "bad.zip"
    make(bad)

    with pytest.raises(ExtractFormatError, match=message) as raised:
        loader.load(bad, "users", ["UserId"], extract_id="bad", created_at=T0 + timedelta(days=1))

    assert "SECRET-VALUE" not in str(raised.value)  # row data never reaches the error
    assert fingerprint(schema) == before
    # The connection is usable afterwards (rolled back, not stuck in a failed transaction).
    assert loader.newest_loaded("users") == ("full-1", T0)


def test_bad_input_into_a_new_table_creates_nothing(loader, schema, tmp_path):
    bad = tmp_path / "bad.zip"
    write_zip(bad, [user(i) for i in range(5000)])
    _corrupt_member(bad)

    with pytest.raises(ExtractFormatError):
        loader.load(bad, "users", ["UserId"], extract_id="bad", created_at=T0)

    with psycopg.connect(dsn()) as db:
        assert db.execute("SELECT to_regclass(%s)", (f'"{schema}".users',)).fetchone()[0] is None


def test_table_without_the_key_is_a_configuration_error(loader, schema, tmp_path):
    with psycopg.connect(dsn(), autocommit=True) as db:
        db.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
        db.execute(f'CREATE TABLE "{schema}".users ("UserId" text, "UserName" text)')

    with pytest.raises(LmsConfigurationError, match="no primary key or unique index"):
        loader.load(
            write_zip(tmp_path / "u.zip", [user(1)]), "users", ["UserId"], extract_id="u", created_at=T0
        )


def test_unknown_data_set_needs_key_columns():
    assert key_columns_for("Org Units") == ["OrgUnitId"]
    assert key_columns_for("Grade Objects", {"Grade Objects": ["GradeObjectId", "OrgUnitId"]}) == [
        "GradeObjectId",
        "OrgUnitId",
    ]
    with pytest.raises(LmsConfigurationError, match="key_columns"):
        key_columns_for("Some New Data Set")


def test_first_load_copies_into_a_new_keyed_table_without_deleted_rows(loader, schema, tmp_path):
    rows = [user(i, deleted=i % 10 == 0) for i in range(1, 1001)]
    rows += [user(5, name="again"), user(7, deleted=True), user(20, name="back")]  # the last row wins
    path = write_zip(tmp_path / "full.zip", rows)

    result = loader.load(path, "users", ["UserId"], extract_id="full", created_at=T0)

    stored = rows_of(schema)
    assert (result.rows_read, result.rows_upserted, result.rows_deleted) == (1003, 900, 0)
    assert len(stored) == 900 and "10" not in stored and "7" not in stored
    assert stored["5"]["UserName"] == "again" and stored["20"]["UserName"] == "back"
    with psycopg.connect(dsn()) as db:
        key = db.execute(
            "SELECT array_agg(a.attname::text) FROM pg_index i JOIN pg_attribute a "
            "ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) WHERE i.indrelid = %s::regclass "
            "AND i.indisprimary",
            (f'"{schema}".users',),
        ).fetchone()[0]
    assert key == ["UserId"]  # differentials can upsert by it


def test_blank_key_in_a_first_load_creates_nothing(loader, schema, tmp_path):
    path = write_zip(tmp_path / "full.zip", [user(1), {**user(2), "UserId": ""}, user(3)])

    with pytest.raises(ExtractFormatError, match="1 rows have an empty key column"):
        loader.load(path, "users", ["UserId"], extract_id="full", created_at=T0)

    with psycopg.connect(dsn()) as db:
        assert db.execute("SELECT to_regclass(%s)", (f'"{schema}".users',)).fetchone()[0] is None
    assert loader.newest_loaded("users") is None


@pytest.mark.parametrize("full_extracts", ["replace", "merge"])
def test_a_newer_full_extract_drops_rows_deleted_without_a_trace(loader, schema, tmp_path, full_extracts):
    load_full(loader, tmp_path, n=100)
    diff = write_zip(tmp_path / "diff.zip", [user(i) for i in range(101, 111)])
    loader.load(
        diff, "users", ["UserId"], extract_id="diff", bds_type="Differential", created_at=T0 + timedelta(1)
    )
    # Users 1-5 were hard-deleted in Brightspace: no differential says so; the next full lacks them.
    full = write_zip(tmp_path / "full2.zip", [user(i) for i in range(6, 111)] + [user(7, deleted=True)])

    result = loader.load(
        full, "users", ["UserId"], extract_id="full-2", bds_type="Full", created_at=T0 + timedelta(7),
        full_extracts=full_extracts,
    )  # fmt: skip

    rows = rows_of(schema)
    assert result.method == full_extracts and result.rows_deleted == 5 + 1  # 1-5 gone, 7 flagged deleted
    # merge: no row changed; replace: every row rewritten (the 104 the table now holds).
    assert result.rows_upserted == (104 if full_extracts == "replace" else 0)
    assert sorted(map(int, rows)) == [6, *range(8, 111)]
    # A differential never removes rows it does not mention.
    later = write_zip(tmp_path / "diff2.zip", [user(200)])
    loader.load(
        later, "users", ["UserId"], extract_id="diff-2", bds_type="Differential", created_at=T0 + timedelta(8)
    )
    assert len(rows_of(schema)) == len(rows) + 1
