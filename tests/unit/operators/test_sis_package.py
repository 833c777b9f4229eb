"""The SIS payload: the same CSVs make the same ZIP (and checksum); Canvas's header rules are checked."""

from __future__ import annotations

import zipfile

import pytest

from airflow_provider_canvas.canvas.operators._sis_package import build_package, csv_kind, missing_columns
from airflow_provider_canvas.exceptions import LmsConfigurationError


def write(path, text: str):
    path.write_text(text)
    return path


def test_the_same_csvs_make_the_same_zip_whatever_their_file_times(tmp_path):
    users = write(tmp_path / "users.csv", "user_id,login_id,status\nu1,l1,active\nu2,l2,active\n")
    first = build_package([users])
    users.touch()  # a newer mtime must not change the payload
    second = build_package([users])
    try:
        assert first.sha256 == second.sha256 and first.size == second.size
        assert first.rows_by_kind() == {"users": 2}
        with zipfile.ZipFile(first.path) as archive:
            assert archive.read("users.csv") == users.read_bytes()
    finally:
        first.discard()
        second.discard()
    assert not first.path.exists()


@pytest.mark.parametrize(
    ("headers", "kind"),
    [
        (["user_id", "login_id", "status"], "users"),
        (["section_id", "user_id", "role", "status"], "enrollments"),
        (["course_id", "user_integration_id", "role_id", "status"], "enrollments"),
        (["course_id", "short_name", "long_name", "status"], "courses"),
        (["section_id", "course_id", "name", "status"], "sections"),
        (["term_id", "name", "status"], "terms"),
        (["account_id", "parent_account_id", "name", "status"], "accounts"),
        (["id", "name"], None),
    ],
)
def test_files_are_recognised_by_their_headers_as_canvas_does(headers, kind):
    assert csv_kind(headers) == kind


def test_missing_required_columns_are_named():
    assert missing_columns("enrollments", ["course_id", "user_id"]) == ["role|role_id", "status"]


def test_a_zip_with_a_non_csv_member_is_refused(tmp_path):
    archive = tmp_path / "sis.zip"
    with zipfile.ZipFile(archive, "w") as out:
        out.writestr("users.csv", "user_id,login_id,status\nu1,l1,active\n")
        out.writestr("notes.txt", "hello")
    with pytest.raises(LmsConfigurationError, match=r"notes\.txt"):
        build_package(archive)


def test_unrecognised_headers_are_refused_with_what_canvas_needs(tmp_path):
    bad = write(tmp_path / "people.csv", "id,email\n1,a@example.edu\n")
    with pytest.raises(LmsConfigurationError, match=r"people\.csv: Canvas would not recognise"):
        build_package([bad], workdir=tmp_path)
    assert list(tmp_path.glob("canvas-sis-*")) == []  # the half-built ZIP is gone
