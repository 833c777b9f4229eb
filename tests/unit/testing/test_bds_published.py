"""The Brightspace emulator as D2L publishes it: plugin IDs, catalogue columns, values of documented types."""

from __future__ import annotations

import csv
import io
import re
import subprocess
import sys
import uuid
import zipfile
from datetime import datetime, timezone
from decimal import Decimal

import pytest

from airflow_provider_canvas.brightspace.hooks.brightspace import check_member_name
from airflow_provider_canvas.brightspace.loading.catalogue import _SCHEMAS, CATALOGUE
from airflow_provider_canvas.exceptions import ExtractFormatError
from airflow_provider_canvas.testing import LmsEmulator
from airflow_provider_canvas.testing.bds_files import GeneratedZip
from airflow_provider_canvas.testing.bds_plugins import PUBLISHED

CREATED = datetime(2026, 12, 1, 6, 30, 5, 123456, tzinfo=timezone.utc)
# D2L's own sample client (bds-headless-client-example 1.2.0, main.py) hard-codes these.
D2L_SAMPLE = {
    ("Organizational Units", "Full"): "07a9e561-e22f-4e82-8dd6-7bfb14c91776",
    ("Grade Objects", "Full"): "793668a8-2c58-4e5e-b263-412d28d5703f",
    ("Users", "Full"): "1d6d722e-b572-456f-97c1-d526570daa6b",
    ("Grade Results", "Full"): "9d8a96b4-8145-416d-bd18-11402bc58f8d",
    ("User Enrollments", "Full"): "533f84c8-b2ad-4688-94dc-c839952e9c4f",
    ("User Enrollments", "Differential"): "a78735f2-7210-4a57-aac1-e0f6bd714349",
}


@pytest.fixture
def bs():
    with LmsEmulator() as emu:
        yield emu.brightspace


def test_every_catalogued_data_set_has_its_published_full_plugin_id(bs):
    for schema in _SCHEMAS:
        published = PUBLISHED[schema.name]
        data_set = bs.add_data_set(schema.name)
        assert data_set.full_plugin_id == published.full, schema.name
        assert published.differential is None or data_set.differential_plugin_id == published.differential
        assert published.source  # where each ID comes from is written down
    ids = [i for ds in bs.data_sets.values() for i in (ds.full_plugin_id, ds.differential_plugin_id)]
    assert len(ids) == len(set(ids)) == 2 * len(_SCHEMAS)
    for (name, kind), plugin in D2L_SAMPLE.items():
        data_set = bs.data_sets[name]
        assert (data_set.full_plugin_id if kind == "Full" else data_set.differential_plugin_id) == plugin


def test_a_published_id_serves_one_data_set_and_an_unknown_one_gets_a_generated_id(bs):
    long = bs.add_data_set("Organizational Units")
    short = bs.add_data_set("Org Units", ["OrgUnitId", "Name"])
    widgets = bs.add_data_set("Widgets", ["WidgetId"])

    assert long.full_plugin_id == PUBLISHED["Org Units"].full
    assert short.full_plugin_id != long.full_plugin_id  # the second name of one data set: generated
    assert uuid.UUID(short.full_plugin_id) and uuid.UUID(widgets.differential_plugin_id)
    assert bs.add_data_set("Users", ["UserId"], plugin_id="given").full_plugin_id == "given"


def test_a_data_set_named_alone_takes_columns_keys_and_types_from_the_catalogue(bs):
    grades = bs.add_data_set("Grade Objects", rows_count=3)
    logins = bs.add_data_set("User Logins")

    schema = CATALOGUE["Grade Objects"]
    assert grades.columns[0] == "GradeObjectId" and set(grades.columns) == set(schema.columns)
    assert grades.types["MaxPoints"] == "numeric" and grades.types["IsDeleted"] == "boolean"
    assert logins.columns[0] == "LoginAttemptId" and logins.types["LoginAttemptId"] == "text"
    header, *rows = csv.reader(io.StringIO(_csv_of(grades.extracts[0].served), newline=""))
    assert header == grades.columns and len(rows) == 3
    assert Decimal(rows[0][header.index("MaxPoints")]) == Decimal("1.125")  # not "MaxPoints-0000..."
    with pytest.raises(ValueError, match="not in the catalogue: give its columns"):
        bs.add_data_set("Widgets")


def test_generated_values_fit_every_documented_type():
    types = {
        "Id": "integer", "Big": "bigint", "Small": "smallint", "Flag": "boolean", "IsDeleted": "boolean",
        "Amount": "numeric", "Ratio": "double precision", "At": "timestamptz", "Day": "timestamp",
        "Guid": "uuid", "Note": "text",
    }  # fmt: skip
    source = GeneratedZip("Typed.csv", list(types), 12_345, 1, CREATED, types)

    data = b"".join(source.iter_range(0, source.size))
    assert len(data) == source.size  # fixed width: the announced size is exact
    text = _csv_of(source)
    header, *rows = csv.reader(io.StringIO(text, newline=""))
    assert len(rows) == 12_345 and header == list(types)
    for row in (rows[0], rows[9_999], rows[-1]):
        value = dict(zip(header, row, strict=True))
        assert -(2**31) <= int(value["Id"]) < 2**31 and int(value["Big"]) == int(value["Id"])
        assert 0 <= int(value["Small"]) <= 32_767
        assert (value["Flag"], value["IsDeleted"]) == ("True", "False")
        assert re.fullmatch(r"\d+\.\d{9}", value["Amount"])  # decimal(19, 9) as D2L writes it
        assert Decimal(value["Amount"]) % 1 == Decimal("0.125")
        assert float(value["Ratio"]) % 1 == 0.5
        assert value["At"] == "2026-12-01T06:30:05.1234560Z"  # the extract's date, 7 digits, UTC
        assert datetime.fromisoformat(value["At"]) == CREATED
        assert value["Day"] == "2026-12-01T06:30:05.1234560"  # local time: no zone
        assert uuid.UUID(value["Guid"])
        assert "," in value["Note"] and '"quoted"' in value["Note"] and "\n" in value["Note"]
    assert len({row[0] for row in rows}) == len(rows)  # keys stay unique


def test_the_member_name_must_be_the_data_sets():
    for member, data_set in [
        ("Users.csv", "Users"),
        ("Users_Differential.csv", "Users"),
        ("UserEnrollments_20261201.csv", "User Enrollments"),
        ("OrganizationalUnits.csv", "Org Units"),  # the long name of the same data set
        ("OrgUnits.csv", "Org Units"),
    ]:
        check_member_name(member, data_set, "x.zip")
    for member, data_set in [("OrgUnits.csv", "Users"), ("QuizAttemptsLog.csv", "Quiz Attempts")]:
        with pytest.raises(ExtractFormatError, match=rf"holds '{member}', but an extract of data set"):
            check_member_name(member, data_set, "x.zip")


def _csv_of(source) -> str:
    with zipfile.ZipFile(io.BytesIO(b"".join(source.iter_range(0, source.size)))) as archive:
        (name,) = archive.namelist()
        return archive.read(name).decode("utf-8")


def test_the_emulator_still_runs_without_importing_airflow():
    # Importing Airflow takes over logging: the standalone emulator's request log would vanish.
    code = "import sys, airflow_provider_canvas.testing.__main__; assert 'airflow' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
