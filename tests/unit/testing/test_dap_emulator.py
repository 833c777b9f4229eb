"""The DAP emulator against DAP's published API document (Data Access Platform Query API 1.0.0).

Each test sends what a client sends over real HTTP and checks what the document publishes: status
codes, error bodies and their fields, formats, refusals, limits and presigned URLs.
"""

from __future__ import annotations

import gzip
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from urllib.parse import urlsplit

import pytest
import requests

from airflow_provider_canvas.testing.dap import DapEmulator
from airflow_provider_canvas.testing.dap_jobs import CallLimit

CLIENT, SECRET = "us-east-1#conformance", "conformance-secret"
USERS = "/dap/query/canvas/table/users"


@pytest.fixture
def dap() -> Iterator[DapEmulator]:
    with DapEmulator(rows={"accounts": 2, "users": 12, "courses": 3, "enrollments": 4}) as emulator:
        emulator.register_client(CLIENT, SECRET)
        emulator.job_creation = CallLimit(100, 60.0)
        yield emulator


@pytest.fixture
def api(dap) -> requests.Session:
    session = requests.Session()
    token = login(dap).json()["access_token"]
    session.headers["Authorization"] = f"Bearer {token}"
    return session


def login(dap: DapEmulator, **kwargs) -> requests.Response:
    kwargs.setdefault("auth", (CLIENT, SECRET))
    kwargs.setdefault("data", {"grant_type": "client_credentials"})
    return requests.post(f"{dap.url}/ids/auth/login", timeout=10, **kwargs)


def post(api: requests.Session, dap: DapEmulator, path: str, body) -> requests.Response:
    return api.post(f"{dap.url}{path}", json=body, timeout=10)


def wait_for(api: requests.Session, dap: DapEmulator, job_id: str) -> dict:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        answer = api.get(f"{dap.url}/dap/job/{job_id}", timeout=10)
        if answer.status_code == 200:
            return answer.json()
        assert answer.status_code == 202 and answer.json()["status"] in ("waiting", "running")
        time.sleep(0.05)  # get job is limited to 500 a minute
    raise AssertionError(f"job {job_id} never ended")


def download(api: requests.Session, dap: DapEmulator, job: dict) -> tuple[list[str], list[str]]:
    """(file names in the URL paths, text lines of every file)."""
    urls = post(api, dap, "/dap/object/url", job["objects"]).json()["urls"]
    names, lines = [], []
    for item in job["objects"]:
        url = urls[item["id"]]["url"]
        names.append(urlsplit(url).path.rsplit("/", 1)[-1])
        lines += gzip.decompress(requests.get(url, timeout=10).content).decode().splitlines()
    return names, lines


def test_login_takes_http_basic_and_a_form_only(dap):
    assert login(dap).status_code == 200
    assert login(dap, auth=None, data={"grant_type": "client_credentials", "client_id": CLIENT,
                                       "client_secret": SECRET}).status_code == 401  # fmt: skip
    as_json = login(dap, data=None, json={"grant_type": "client_credentials"})
    assert as_json.status_code == 400 and as_json.json()["error"]["type"] == "ValidationError"
    assert login(dap, auth=(CLIENT, "wrong")).status_code == 401


def test_jobs_answer_202_in_progress_and_end_by_the_clock_not_by_polls(dap, api):
    dap.job_seconds = 0.6
    created = post(api, dap, f"{USERS}/data", {"format": "jsonl"})
    assert created.status_code == 202 and created.json()["status"] == "waiting"
    time.sleep(0.7)  # no poll meanwhile: the job ran all the same
    done = api.get(f"{dap.url}/dap/job/{created.json()['id']}", timeout=10)
    assert done.status_code == 200 and done.json()["status"] == "complete"
    assert dap.jobs[created.json()["id"]].polls == 1


def test_error_bodies_carry_the_fields_of_their_type(dap, api):
    missing = api.get(f"{dap.url}{USERS}x/schema", timeout=10).json()["error"]
    assert (
        missing["type"] == "NotFoundError" and missing["kind"] == "table" and missing["id"] == "canvas.usersx"
    )
    assert missing["uuid"] and missing["message"]
    job = api.get(f"{dap.url}/dap/job/no-such-job", timeout=10)
    assert job.status_code == 404 and job.json()["error"]["kind"] == "job"

    extra = post(api, dap, f"{USERS}/data", {"format": "jsonl", "filter": "x"})
    error = extra.json()["error"]
    assert extra.status_code == 400 and error["type"] == "ValidationError" and "filter" in error["message"]
    assert set(error["location"]) == {"line", "column", "character"} and error["location"]["character"] > 1
    assert post(api, dap, f"{USERS}/data", {"format": "xml"}).json()["error"]["type"] == "ValidationError"
    bad_ref = post(api, dap, "/dap/object/url", [{"id": "x", "url": "y"}])
    assert bad_ref.status_code == 400 and "url" in bad_ref.json()["error"]["message"]


@pytest.mark.parametrize("fmt", ["jsonl", "tsv", "csv"])
def test_every_format_names_its_files_in_the_url_and_holds_every_row(dap, api, fmt):
    job = wait_for(api, dap, post(api, dap, f"{USERS}/data", {"format": fmt}).json()["id"])
    names, lines = download(api, dap, job)
    suffix = {"jsonl": ".json.gz", "tsv": ".tsv.gz", "csv": ".csv.gz"}[fmt]
    assert names and all(name.startswith("part-") and name.endswith(suffix) for name in names)
    header = 1 if fmt != "jsonl" else 0
    assert len(lines) == 12 + header
    if fmt == "tsv":
        assert lines[0].split("\t")[:3] == ["meta.ts", "key.id", "value.name"]
        assert "\\N" in "\n".join(lines)  # optional columns left empty are NULL
    if fmt == "csv":
        assert lines[0].startswith("meta.ts,key.id,value.name,")


def test_tsv_escapes_and_condensed_mode_keep_nested_objects_as_json(dap, api):
    dap.table("courses").rows[1]["name"] = "tab\there\nand a \\ backslash"
    body = {"format": "tsv", "mode": "condensed"}
    job = wait_for(api, dap, post(api, dap, "/dap/query/canvas/table/courses/data", body).json()["id"])
    _, lines = download(api, dap, job)
    header = lines[0].split("\t")
    first = dict(zip(header, lines[1].split("\t"), strict=True))
    assert first["value.name"] == "tab\\there\\nand a \\\\ backslash"
    assert first["value.settings"].startswith('{"hide_final_grades":')
    expanded = wait_for(
        api, dap, post(api, dap, "/dap/query/canvas/table/courses/data", {"format": "tsv"}).json()["id"]
    )
    assert "value.settings.hide_final_grades" in download(api, dap, expanded)[1][0].split("\t")


def test_an_identical_query_hands_back_the_existing_job_until_the_data_changes(dap, api):
    first = post(api, dap, f"{USERS}/data", {"format": "jsonl"}).json()["id"]
    assert post(api, dap, f"{USERS}/data", {"format": "jsonl"}).json()["id"] == first
    assert post(api, dap, f"{USERS}/data", {"format": "tsv"}).json()["id"] != first
    dap.publish("users", inserts=1)
    assert post(api, dap, f"{USERS}/data", {"format": "jsonl"}).json()["id"] != first


def test_a_since_in_the_future_is_out_of_range(dap, api):
    future = (datetime.now(timezone.utc) + timedelta(hours=1)).isoformat()
    answer = post(api, dap, f"{USERS}/data", {"format": "jsonl", "since": future})
    error = answer.json()["error"]
    assert answer.status_code == 400 and error["type"] == "OutOfRangeError" and error["until"]


def test_after_a_reload_an_incremental_needs_a_new_snapshot(dap, api):
    snapshot = wait_for(api, dap, post(api, dap, f"{USERS}/data", {"format": "jsonl"}).json()["id"])
    reloaded = dap.reload_table("users")
    refused = post(api, dap, f"{USERS}/data", {"format": "jsonl", "since": snapshot["at"]})
    error = refused.json()["error"]
    assert (
        refused.status_code == 400 and error["type"] == "SnapshotRequiredError" and error["since"] == reloaded
    )
    again = wait_for(api, dap, post(api, dap, f"{USERS}/data", {"format": "jsonl"}).json()["id"])
    incremental = post(api, dap, f"{USERS}/data", {"format": "jsonl", "since": again["at"]})
    assert incremental.status_code in (200, 202)


@pytest.mark.parametrize(
    ("limit", "call"),
    [
        ("table_listing", lambda api, dap: api.get(f"{dap.url}/dap/query/canvas/table", timeout=10)),
        ("schema_reads", lambda api, dap: api.get(f"{dap.url}{USERS}/schema", timeout=10)),
        ("job_status", lambda api, dap: api.get(f"{dap.url}/dap/job/none", timeout=10)),
        ("object_urls", lambda api, dap: post(api, dap, "/dap/object/url", [])),
        ("job_creation", lambda api, dap: post(api, dap, f"{USERS}/data", {"format": "jsonl"})),
    ],
)
def test_every_published_limit_answers_429_with_or_without_retry_after(dap, api, limit, call):
    published = {
        "table_listing": 5,
        "schema_reads": 500,
        "job_status": 500,
        "object_urls": 200,
        "job_creation": 5,
    }
    fresh = DapEmulator()
    assert getattr(fresh, limit).limit == published[limit] and getattr(fresh, limit).window == 60.0
    setattr(dap, limit, CallLimit(2, 60.0))
    assert all(call(api, dap).status_code != 429 for _ in range(2))
    throttled = call(api, dap)
    assert throttled.status_code == 429 and 0 < int(throttled.headers["Retry-After"]) <= 60
    dap.send_retry_after = False
    bare = call(api, dap)
    assert bare.status_code == 429 and "Retry-After" not in bare.headers
