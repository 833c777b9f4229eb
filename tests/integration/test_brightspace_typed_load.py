"""Typed tables: catalogue types in PostgreSQL, type errors that name row and column, text tables of
earlier versions, and what a newer full keeps (views, grants, the table) when it replaces the rows."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import psycopg
import psycopg2
import pytest
from lms_fixtures import dsn

from airflow_provider_canvas.brightspace.loading.catalogue import CATALOGUE, column_types_for, key_columns_for
from airflow_provider_canvas.brightspace.loading.postgres import PostgresExtractLoader
from airflow_provider_canvas.exceptions import ExtractFormatError, LmsConfigurationError
from airflow_provider_canvas.testing.brightspace import build_zip, csv_bytes

T0 = datetime(2026, 11, 1, tzinfo=timezone.utc)
USERS = ["UserId", "UserName", "OrgDefinedId", "IsActive", "SignupDate", "OrgRoleId", "LastAccessed", "Note"]


def brightspace_user(i: int, **more: str) -> dict[str, str]:
    """A Users row as Brightspace writes it: True/False, ISO 8601 UTC with 7 digits, empty = NULL."""
    return {
        "UserId": str(i),
        "UserName": f"user{i}",
        "OrgDefinedId": f"{i:05d}",  # leading zeros: text keeps them
        "IsActive": "True" if i % 2 else "False",
        "SignupDate": "2024-01-05T14:22:10.1234567Z",
        "OrgRoleId": "103",
        "LastAccessed": "" if i % 3 else "2026-10-31T23:59:59.0000000Z",
        "Note": "free text",
        **more,
    }


def write(path: Path, rows: list[dict], columns: list[str] = USERS) -> Path:
    path.write_bytes(build_zip([("Users.csv", csv_bytes(columns, rows))], T0))
    return path


@pytest.fixture
def db():
    with psycopg.connect(dsn(), autocommit=True) as conn:
        yield conn


@pytest.fixture
def loader(schema):
    conn = psycopg.connect(dsn())
    yield PostgresExtractLoader(conn, schema)
    conn.close()


def load(loader, path, extract_id, days=0, bds_type="Full", **kwargs):
    kwargs.setdefault("column_types", column_types_for("Users"))
    return loader.load(
        path, "users", ["UserId"], extract_id=extract_id, bds_type=bds_type,
        created_at=T0 + timedelta(days), data_set="Users", **kwargs,
    )  # fmt: skip


def types_of(db, schema: str, table: str = "users") -> dict[str, str]:
    rows = db.execute(
        "SELECT column_name::text, data_type::text FROM information_schema.columns "
        "WHERE table_schema = %s AND table_name = %s",
        (schema, table),
    ).fetchall()
    return dict(rows)


def fingerprint(db, schema: str) -> tuple:
    digest = f"SELECT count(*), md5(string_agg(t::text, '|' ORDER BY t::text)) FROM \"{schema}\".users t"
    ledger = f'SELECT count(*) FROM "{schema}"._bds_extract_loads'
    return types_of(db, schema), db.execute(digest).fetchone(), db.execute(ledger).fetchone()


def test_catalogue_covers_the_common_data_sets_with_their_keys():
    common = ["Users", "Org Units", "User Enrollments", "Grade Results", "Content User Progress"]
    common += ["Quiz Attempts", "Course Access", "Role Details", "Org Unit Ancestors", "User Logins"]
    for name in common:
        schema = CATALOGUE[name]
        assert schema.keys and schema.documented
        assert all(key in schema.columns or name == "User Logins" for key in schema.keys), name
    assert key_columns_for("Grade Results") == ["OrgUnitId", "GradeObjectId", "UserId"]
    assert column_types_for("Users")["UserId"] == "integer"
    assert "OrgRoleId" not in column_types_for("Users", ["OrgRoleId"])
    assert column_types_for("Users", ["*"]) == {} and column_types_for("Not Documented") == {}


def test_first_load_and_later_loads_give_typed_columns(loader, db, schema, tmp_path):
    load(loader, write(tmp_path / "full.zip", [brightspace_user(i) for i in range(1, 2011)]), "full")
    diff = [brightspace_user(2011, UserName="new", IsActive="")]
    load(loader, write(tmp_path / "d.zip", diff), "diff", days=1, bds_type="Differential")

    assert types_of(db, schema) == {
        "UserId": "integer", "UserName": "text", "OrgDefinedId": "text", "IsActive": "boolean",
        "SignupDate": "timestamp with time zone", "OrgRoleId": "integer",
        "LastAccessed": "timestamp with time zone", "Note": "text",
    }  # fmt: skip
    # The example: max() of an integer key is numeric (2011), not the text '999'.
    assert db.execute(f'SELECT max("UserId"), count(*) FROM "{schema}".users').fetchone() == (2011, 2011)
    columns = '"IsActive", "SignupDate", "LastAccessed", "OrgDefinedId"'
    row = db.execute(f'SELECT {columns} FROM "{schema}".users WHERE "UserId" = 5').fetchone()
    assert row == (True, datetime(2024, 1, 5, 14, 22, 10, 123457, tzinfo=timezone.utc), None, "00005")
    assert db.execute(f'SELECT "IsActive" FROM "{schema}".users WHERE "UserId" = 2011').fetchone() == (None,)


@pytest.mark.parametrize("driver", ["psycopg", "psycopg2"])
@pytest.mark.parametrize(
    ("bds_type", "full_extracts"), [("Full", "replace"), ("Full", "merge"), ("Differential", "replace")]
)
def test_a_value_that_does_not_fit_names_row_and_column_and_changes_nothing(
    db, schema, tmp_path, driver, bds_type, full_extracts
):
    conn = psycopg2.connect(dsn()) if driver == "psycopg2" else psycopg.connect(dsn())
    typed = PostgresExtractLoader(conn, schema)
    try:
        load(typed, write(tmp_path / "full.zip", [brightspace_user(i) for i in range(1, 101)]), "full")
        before = fingerprint(db, schema)
        rows = [brightspace_user(i) for i in range(1, 101)]
        rows[41]["OrgRoleId"] = "Student"  # row 42: a role name where the role id belongs
        bad = write(tmp_path / "bad.zip", rows)

        with pytest.raises(ExtractFormatError) as raised:
            load(typed, bad, "bad", days=7, bds_type=bds_type, full_extracts=full_extracts)

        message = str(raised.value)
        assert "row 42 (CSV line 43), column 'OrgRoleId': value 'Student' does not fit integer" in message
        assert "the table is unchanged" in message and "text_columns={'Users': ['OrgRoleId']}" in message
        assert "user42" not in message  # the rest of the row stays out of the error
        assert fingerprint(db, schema) == before
        assert typed.newest_loaded("users") == ("full", T0)  # the connection is usable again
    finally:
        conn.close()


def test_a_bad_first_load_creates_no_table_and_text_columns_are_the_way_out(loader, db, schema, tmp_path):
    bad = write(tmp_path / "bad.zip", [brightspace_user(1), brightspace_user(2, SignupDate="2024-13-45")])

    with pytest.raises(
        ExtractFormatError, match=r"row 2 \(CSV line 3\), column 'SignupDate': value '2024-13-45'"
    ):
        load(loader, bad, "bad")
    assert db.execute("SELECT to_regclass(%s)", (f'"{schema}".users',)).fetchone() == (None,)

    result = load(loader, bad, "bad", column_types=column_types_for("Users", ["SignupDate"]))

    assert result.rows_upserted == 2
    assert types_of(db, schema)["SignupDate"] == "text" and types_of(db, schema)["UserId"] == "integer"


def test_text_tables_of_earlier_versions_stay_text_until_migrated(loader, db, schema, tmp_path):
    rows = [brightspace_user(i) for i in range(1, 1001)]
    load(loader, write(tmp_path / "old.zip", rows), "old", column_types={})  # as earlier versions did
    load(loader, write(tmp_path / "d1.zip", [brightspace_user(1001)]), "d1", days=1, bds_type="Differential")
    assert set(types_of(db, schema).values()) == {"text"}  # catalogue types apply to new columns only

    db.execute(f"""UPDATE "{schema}".users SET "OrgRoleId" = 'x' WHERE "UserId" = '7'""")
    before = fingerprint(db, schema)
    with pytest.raises(LmsConfigurationError, match=r"column 'OrgRoleId' holds a value that is not integer"):
        load(loader, write(tmp_path / "d2.zip", [brightspace_user(1002)]), "d2", days=2,
             bds_type="Differential", migrate_text_columns=True)  # fmt: skip
    assert fingerprint(db, schema) == before

    db.execute(f"""UPDATE "{schema}".users SET "OrgRoleId" = '' WHERE "UserId" = '7'""")
    result = load(loader, write(tmp_path / "d2.zip", [brightspace_user(1002)]), "d2", days=2,
                  bds_type="Differential", migrate_text_columns=True)  # fmt: skip

    assert sorted(result.retyped_columns) == ["IsActive", "LastAccessed", "OrgRoleId", "SignupDate", "UserId"]
    assert types_of(db, schema)["UserId"] == "integer" and types_of(db, schema)["Note"] == "text"
    assert db.execute(f'SELECT max("UserId"), count("OrgRoleId") FROM "{schema}".users').fetchone() == (
        1002,
        1001,
    )


def test_replacing_keeps_views_grants_and_the_table(loader, db, schema, tmp_path):
    load(loader, write(tmp_path / "full.zip", [brightspace_user(i) for i in range(1, 301)]), "full")
    db.execute(f'CREATE VIEW "{schema}".active AS SELECT "UserId" FROM "{schema}".users WHERE "IsActive"')
    db.execute(f'GRANT SELECT ON "{schema}".users TO PUBLIC')
    oid = db.execute("SELECT %s::regclass::oid", (f'"{schema}".users',)).fetchone()
    newer = [brightspace_user(i) for i in range(11, 401)] + [brightspace_user(11, UserName="last wins")]

    result = load(loader, write(tmp_path / "full2.zip", newer), "full2", days=7)

    assert (result.method, result.rows_read, result.rows_upserted, result.rows_deleted) == (
        "replace",
        391,
        390,
        10,
    )
    assert db.execute("SELECT %s::regclass::oid", (f'"{schema}".users',)).fetchone() == oid
    assert db.execute(f'SELECT count(*) FROM "{schema}".active').fetchone() == (195,)
    assert db.execute(f'SELECT "UserName" FROM "{schema}".users WHERE "UserId" = 11').fetchone() == (
        "last wins",
    )
    assert db.execute(
        "SELECT has_table_privilege('public', %s, 'SELECT')", (f'"{schema}".users',)
    ).fetchone() == (True,)  # fmt: skip
    key = db.execute(
        "SELECT conname FROM pg_constraint WHERE conrelid = %s::regclass AND contype = 'p'",
        (f'"{schema}".users',),
    ).fetchone()
    assert key == ("users_pkey",)  # the same key, rebuilt


def test_a_table_other_tables_point_at_is_merged_not_truncated(loader, db, schema, tmp_path):
    load(loader, write(tmp_path / "full.zip", [brightspace_user(i) for i in range(1, 51)]), "full")
    db.execute(f'CREATE TABLE "{schema}".notes ("UserId" integer REFERENCES "{schema}".users)')
    db.execute(f'INSERT INTO "{schema}".notes VALUES (5)')

    result = load(
        loader, write(tmp_path / "full2.zip", [brightspace_user(i) for i in range(1, 61)]), "full2", 7
    )

    assert (result.method, result.rows_upserted, result.rows_deleted) == ("merge", 10, 0)
    assert db.execute(f'SELECT count(*) FROM "{schema}".users').fetchone() == (60,)


def test_typed_is_deleted_deletes_in_every_path(db, schema, tmp_path):
    columns = ["OrgUnitId", "Name", "IsDeleted", "CreatedDate"]
    rows = [{"OrgUnitId": str(i), "Name": f"ou{i}", "IsDeleted": str(i % 10 == 0), "CreatedDate": ""}
            for i in range(1, 101)]  # fmt: skip
    types = column_types_for("Org Units")
    with psycopg.connect(dsn()) as conn:
        loader = PostgresExtractLoader(conn, schema)
        for extract_id, days, bds_type in (("f1", 0, "Full"), ("d1", 1, "Differential"), ("f2", 7, "Full")):
            path = tmp_path / f"{extract_id}.zip"
            path.write_bytes(build_zip([("OrgUnits.csv", csv_bytes(columns, rows))], T0))
            loader.load(path, "org_units", ["OrgUnitId"], extract_id=extract_id, bds_type=bds_type,
                        created_at=T0 + timedelta(days), column_types=types)  # fmt: skip
            assert db.execute(f'SELECT count(*) FROM "{schema}".org_units').fetchone() == (90,), extract_id
            rows[0]["IsDeleted"] = "True"  # deleted in the next extract
            rows[-1]["IsDeleted"] = "False"
    assert types_of(db, schema, "org_units")["IsDeleted"] == "boolean"
