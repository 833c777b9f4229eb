"""The DAP jobs trigger on the emulator: round trip, every job's end, the deadline, cancellation."""

from __future__ import annotations

import asyncio
import time

import pytest

from airflow_provider_canvas.canvas_data.hooks.canvas_data import CanvasDataHook
from airflow_provider_canvas.canvas_data.triggers.jobs import CanvasDataJobsTrigger
from airflow_provider_canvas.common import airflow_access as metadata
from airflow_provider_canvas.common.airflow_access import ConnectionFields
from airflow_provider_canvas.testing.dap import DapEmulator

CLIENT_ID, CLIENT_SECRET = "dap-client", "dap-secret-123"


@pytest.fixture
def dap(monkeypatch):
    with DapEmulator(rows={"accounts": 3, "users": 10, "courses": 2, "enrollments": 5}) as emulator:
        emulator.register_client(CLIENT_ID, CLIENT_SECRET)
        fields = ConnectionFields("dap", "canvas_data", emulator.url, CLIENT_ID, CLIENT_SECRET, {})

        async def aget_connection(conn_id: str) -> ConnectionFields:
            return fields

        monkeypatch.setattr(metadata, "aget_connection", aget_connection)
        emulator.hook = CanvasDataHook.for_connection(fields, mask=False)
        yield emulator


async def first_event(trigger: CanvasDataJobsTrigger) -> dict:
    async for event in trigger.run():
        return event.payload
    raise AssertionError("no event")


def test_serialisation_round_trip_keeps_every_argument():
    trigger = CanvasDataJobsTrigger(
        "dap", ["a", "b"], poll_interval=2.0, timeout_at=123.0, max_transient_errors=3
    )
    classpath, kwargs = trigger.serialize()

    assert classpath == "airflow_provider_canvas.canvas_data.triggers.jobs.CanvasDataJobsTrigger"
    assert CanvasDataJobsTrigger(**kwargs).serialize() == (classpath, kwargs)
    assert "secret" not in repr(kwargs).lower()


def test_reports_every_job_once_all_ended_a_failed_one_included(dap):
    dap.fail_next_jobs(1, "boom")
    failing = dap.hook.start_job("users").id
    fine = dap.hook.start_job("accounts").id

    event = asyncio.run(first_event(CanvasDataJobsTrigger("dap", [failing, fine], poll_interval=0.05)))

    assert event["status"] == "done" and "1 complete, 1 failed" in event["message"]
    assert event["jobs"][failing]["error"]["message"] == "boom"
    assert event["jobs"][fine]["status"] == "complete" and event["jobs"][fine]["objects"]


def test_the_deadline_ends_the_wait_with_a_timeout_event(dap):
    dap.job_polls = 10_000
    job = dap.hook.start_job("users").id
    started = time.monotonic()

    event = asyncio.run(
        first_event(CanvasDataJobsTrigger("dap", [job], poll_interval=0.1, timeout_at=time.time() + 0.6))
    )

    assert event["status"] == "timeout" and job in event["message"]
    assert event["jobs"][job]["status"] == "running"
    assert time.monotonic() - started < 5


def test_a_cancelled_trigger_stops_at_once(dap):
    dap.job_polls = 10_000
    job = dap.hook.start_job("users").id

    async def cancel_after_first_polls() -> float:
        task = asyncio.create_task(first_event(CanvasDataJobsTrigger("dap", [job], poll_interval=30)))
        await asyncio.sleep(0.5)  # it waits one interval before its first look
        cancelled = time.monotonic()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return time.monotonic() - cancelled

    assert asyncio.run(cancel_after_first_polls()) < 1.0
    assert dap.jobs[job].polls == 0  # and it never looked afterwards
