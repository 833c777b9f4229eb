"""BrightspaceExportJobTrigger on scripted job states (the real HTTP path: integration tests)."""

from __future__ import annotations

import asyncio
import time

import pytest

from airflow_provider_canvas.brightspace.hooks.brightspace_async import BrightspaceAsyncHook
from airflow_provider_canvas.brightspace.triggers.ads import BrightspaceExportJobTrigger
from airflow_provider_canvas.exceptions import LmsNotFoundError, LmsThrottledError


def run_trigger(trigger: BrightspaceExportJobTrigger) -> dict:
    async def first():
        async for event in trigger.run():
            return event.payload

    return asyncio.run(first())


@pytest.fixture
def script(monkeypatch):
    """Make the async hook's get_export_job answer from a list: dicts are jobs, exceptions are raised."""
    answers: list = []

    async def fake(self, job_id):
        answer = answers.pop(0)
        if isinstance(answer, BaseException):
            raise answer
        return {"ExportJobId": job_id, **answer}

    monkeypatch.setattr(BrightspaceAsyncHook, "get_export_job", fake)
    return answers


def test_polls_through_queued_processing_and_transient_errors_to_complete(script):
    script += [
        {"Status": 0},
        LmsThrottledError("throttled", status=429, url="u"),
        {"Status": 1},
        {"Status": 2, "Name": "Final Grades"},
    ]

    payload = run_trigger(BrightspaceExportJobTrigger("bs", "job-1", poll_interval=0))

    assert payload["status"] == "complete" and payload["job"]["Name"] == "Final Grades"
    assert script == []


@pytest.mark.parametrize(("status", "name"), [(3, "ERROR"), (4, "DELETED")])
def test_error_and_deleted_jobs_end_as_failed(script, status, name):
    script.append({"Status": status})
    payload = run_trigger(BrightspaceExportJobTrigger("bs", "job-1", poll_interval=0))
    assert payload["status"] == "failed" and name in payload["message"]


def test_final_api_errors_and_too_many_transient_ones_end_as_error(script):
    script.append(LmsNotFoundError("GET /jobs/job-1: not found", status=404, url="u"))
    assert run_trigger(BrightspaceExportJobTrigger("bs", "job-1", poll_interval=0))["status"] == "error"

    script += [LmsThrottledError("throttled", status=429, url="u")] * 3
    payload = run_trigger(BrightspaceExportJobTrigger("bs", "job-1", poll_interval=0, max_transient_errors=2))
    assert payload["status"] == "error" and "throttled" in payload["message"]


def test_deadline_gives_a_timeout_event(script):
    script += [{"Status": 1}]
    payload = run_trigger(
        BrightspaceExportJobTrigger("bs", "job-1", poll_interval=0, timeout_at=time.time() - 1)
    )
    assert payload["status"] == "timeout" and payload["job"]["Status"] == 1


def test_serialize_round_trip_holds_no_secret():
    trigger = BrightspaceExportJobTrigger("bs_conn", "job-9", poll_interval=5, timeout_at=123.0)
    classpath, kwargs = trigger.serialize()

    assert classpath == "airflow_provider_canvas.brightspace.triggers.ads.BrightspaceExportJobTrigger"
    assert kwargs == {
        "conn_id": "bs_conn",
        "job_id": "job-9",
        "poll_interval": 5,
        "timeout_at": 123.0,
        "max_transient_errors": 10,
    }
    assert BrightspaceExportJobTrigger(**kwargs).serialize() == (classpath, kwargs)
