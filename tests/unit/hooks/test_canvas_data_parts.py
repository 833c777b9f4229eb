"""The small parts of the DAP hook: job and token parsing, error wording, names, gzip checks, the cache."""

from __future__ import annotations

import gzip
import logging
from types import SimpleNamespace

import pytest

from airflow_provider_canvas.canvas_data.hooks.auth import DapTokenCache
from airflow_provider_canvas.canvas_data.hooks.models import (
    DapAccessToken,
    DapJob,
    dap_api_error,
    dap_error_message,
    dap_error_type,
    object_file_name,
)
from airflow_provider_canvas.canvas_data.hooks.objects import unique_names, verify_gzip
from airflow_provider_canvas.canvas_data.hooks.pacing import JobCreationPacer
from airflow_provider_canvas.canvas_data.operators._tables import check_name, table_names
from airflow_provider_canvas.exceptions import (
    DapObjectError,
    DapSnapshotRequiredError,
    LmsAuthError,
    LmsConfigurationError,
)


def test_a_complete_incremental_job_round_trips_and_names_its_watermark():
    body = {
        "id": "j1",
        "status": "complete",
        "objects": [{"id": "j1/part-0.json.gz"}],
        "schema_version": 3,
        "since": "2026-01-01T00:00:00Z",
        "until": "2026-01-01T04:00:00Z",
        "expires_at": "2026-01-02T00:00:00Z",
    }
    job = DapJob.from_json(body)

    assert job.complete and job.terminal and job.watermark == "2026-01-01T04:00:00Z"
    assert DapJob.from_json(job.to_json()) == job
    assert DapJob.from_json({"id": "s", "status": "complete", "at": "A"}).watermark == "A"
    failed = DapJob.from_json({"id": "f", "status": "failed", "error": {"message": "no", "type": "X"}})
    assert failed.terminal and not failed.complete and failed.error == "no"
    with pytest.raises(ValueError):
        DapJob.from_json({"status": "complete"})


def test_login_answers_give_a_token_that_is_replaced_five_minutes_early():
    token = DapAccessToken.from_login({"access_token": "jwt", "expires_in": 3600}, now=1000.0)

    assert token.usable(now=1000.0 + 3600 - 301) and not token.usable(now=1000.0 + 3600 - 299)
    assert "jwt" not in repr(token)
    with pytest.raises(LmsAuthError):
        DapAccessToken.from_login({"expires_in": 3600})


def test_the_token_cache_logs_in_once_and_again_after_a_rejection():
    issued = iter(["t1", "t2"])
    cache = DapTokenCache(lambda: DapAccessToken(next(issued), expires_at=4e9))

    assert [cache.access_token(), cache.access_token()] == ["t1", "t1"]
    cache.reject("not-the-cached-one")
    assert cache.access_token() == "t1"
    cache.reject("t1")
    assert cache.access_token() == "t2" and cache.login_count == 2


def test_dap_error_bodies_give_their_message_type_and_uuid():
    answer = SimpleNamespace(
        json=lambda: {"error": {"type": "ValidationError", "uuid": "u-1", "message": "bad"}}
    )
    plain = SimpleNamespace(
        json=lambda: (_ for _ in ()).throw(ValueError()), text="Gateway Timeout ", reason=""
    )

    assert dap_error_message(answer) == "bad (ValidationError, u-1)"
    assert dap_error_message(plain) == "Gateway Timeout"


def test_object_names_stay_inside_the_batch_folder_and_do_not_clash():
    assert object_file_name("job/part-00000-x.json.gz", 0) == "part-00000-x.json.gz"
    assert object_file_name("../../etc/passwd", 1) == "passwd.gz"
    assert object_file_name("a/..", 2) == "part-00002.gz"
    assert unique_names(["a/part.gz", "b/part.gz"]) == ["part.gz", "00001-part.gz"]


def test_gzip_is_read_to_the_end_and_a_cut_or_corrupt_file_refused(tmp_path):
    good = tmp_path / "good.gz"
    good.write_bytes(gzip.compress(b'{"a":1}\n{"a":2}\n{"a":3}'))
    cut = tmp_path / "cut.gz"
    cut.write_bytes(good.read_bytes()[:-6])  # the CRC/length trailer is missing
    flipped = bytearray(good.read_bytes())
    flipped[-5] ^= 0xFF  # the stored length no longer matches
    corrupt = tmp_path / "corrupt.gz"
    corrupt.write_bytes(bytes(flipped))

    assert verify_gzip(good) == 3
    for bad in (cut, corrupt):
        with pytest.raises(DapObjectError, match="not intact gzip"):
            verify_gzip(bad)


def test_table_names_from_lists_and_rendered_templates_and_unsafe_names_refused():
    assert table_names(["users", "courses", "users"]) == ["users", "courses"]
    assert table_names("['users', 'courses']") == ["users", "courses"]
    assert table_names('["users"]') == ["users"] and table_names("users, courses") == ["users", "courses"]
    for bad in ([], "", ["../x"], [1]):
        with pytest.raises(LmsConfigurationError):
            table_names(bad)
    with pytest.raises(Exception, match="cannot name a folder"):
        check_name("DAP job id", "../../x")


@pytest.mark.parametrize(
    "body",
    [
        {"error": {"type": "SnapshotRequiredError", "uuid": "u1", "message": "reload"}},
        {"type": "SnapshotRequiredError", "uuid": "u1", "message": "reload"},  # the OpenAPI shape
    ],
)
def test_a_snapshot_required_answer_is_its_own_error_in_either_body_shape(body):
    answer = SimpleNamespace(status_code=400, json=lambda: body, text="", reason="Bad Request")
    error = dap_api_error(answer, "POST", "https://dap.example/dap/query/canvas/table/users/data")

    assert dap_error_type(answer) == "SnapshotRequiredError"
    assert isinstance(error, DapSnapshotRequiredError) and "reload (SnapshotRequiredError, u1)" in str(error)
    other = SimpleNamespace(status_code=400, json=lambda: {"type": "ValidationError"}, text="", reason="")
    assert not isinstance(dap_api_error(other, "POST", "https://dap.example/x"), DapSnapshotRequiredError)


def test_the_pacer_holds_the_sixth_creation_until_the_first_is_a_window_old_and_works_meanwhile():
    waits: list[float] = []
    idle: list[float] = []
    pacer = JobCreationPacer(5, 60.0, log=logging.getLogger("test"), sleep=waits.append)
    pacer.idle = idle.append
    for _ in range(5):
        pacer.wait_for_slot("t")
        pacer.answered()
    assert waits == [] and idle == []

    pacer.wait_for_slot("t")

    assert len(waits) == 1 and 59.0 < waits[0] <= 60.0  # the idle work took no time here
    assert len(idle) == 1 and idle[0] > 0  # given the monotonic time the slot frees
    with pytest.raises(ValueError, match="calls >= 1"):
        JobCreationPacer(0, 60.0, log=logging.getLogger("test"))
