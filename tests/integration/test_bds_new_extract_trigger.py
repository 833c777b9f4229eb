"""The new-extract trigger and sensor against the emulator over HTTP: one event per new extract, state that
survives a restart, throttling waited out, and the sensor in both modes."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import timedelta
from typing import Any

import pytest
from airflow.sdk import PokeReturnValue
from airflow.sdk.exceptions import TaskDeferred

from airflow_provider_canvas.brightspace.sensors.new_extract import BrightspaceNewExtractSensor
from airflow_provider_canvas.brightspace.triggers.new_extract import BrightspaceNewExtractTrigger
from airflow_provider_canvas.testing.primitives import utcnow

COLUMNS = ["UserId", "UserName"]


class FakeAssetStateStore:
    """What the triggerer injects into an AssetWatcher's trigger (the metadata database there)."""

    def __init__(self) -> None:
        self.values: dict[str, Any] = {}

    async def aget(self, key: str, default: Any = None) -> Any:
        return self.values.get(key, default)

    async def aset(self, key: str, value: Any) -> None:
        self.values[key] = value


@pytest.fixture
def users(emulator):
    bs = emulator.brightspace
    bs.add_data_set("Users", COLUMNS, rows_count=10, created=utcnow() - timedelta(days=2))
    bs.add_extract("Users", "Differential", utcnow() - timedelta(days=1), rows_count=2)
    return bs


class Watch:
    """A trigger's run() driven as the triggerer drives it: in a task of its own, events to a queue."""

    def __init__(self, trigger: BrightspaceNewExtractTrigger) -> None:
        self.trigger = trigger
        self._events: asyncio.Queue[dict] = asyncio.Queue()
        self._task: asyncio.Task | None = None

    async def _drive(self) -> None:
        async for event in self.trigger.run():
            await self._events.put(event.payload)

    async def next_event(self, timeout: float) -> dict | None:
        if self._task is None:
            self._task = asyncio.create_task(self._drive())
        try:
            return await asyncio.wait_for(self._events.get(), timeout)
        except asyncio.TimeoutError:
            return None

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


def run_steps(steps):
    """Run one coroutine function in a fresh loop (the tests interleave emulator changes with polls)."""
    return asyncio.run(steps())


def trigger(conn_id: str, **kwargs: Any) -> BrightspaceNewExtractTrigger:
    return BrightspaceNewExtractTrigger(conn_id, "Users", poll_interval=0.1, **kwargs)


def test_serialisation_round_trip():
    original = BrightspaceNewExtractTrigger(
        "bs", "Users", bds_type="Differential", newer_than="2026-11-01T00:00:00Z", poll_interval=60
    )
    path, kwargs = original.serialize()
    assert path == "airflow_provider_canvas.brightspace.triggers.new_extract.BrightspaceNewExtractTrigger"
    assert BrightspaceNewExtractTrigger(**kwargs).serialize() == (path, kwargs)
    assert kwargs["newer_than"] == "2026-11-01T00:00:00Z"


def test_one_event_per_new_extract_and_the_state_survives_a_restart(emulator, lms_connection, users):
    conn_id = lms_connection("brightspace", expired=False)
    store = FakeAssetStateStore()

    async def steps() -> None:
        watch = Watch(trigger(conn_id))
        watch.trigger.asset_state_store = store
        assert await watch.next_event(1.0) is None  # what existed before the watch is no news
        new = users.add_extract("Users", "Differential", utcnow(), rows_count=3)
        event = await watch.next_event(10)
        assert event["newest"]["created"][:23] == new.created.isoformat()[:23]  # Brightspace keeps ms
        assert [e["bds_type"] for e in event["new_extracts"]] == ["Differential"]
        assert await watch.next_event(0.5) is None  # announced once
        await watch.close()

        restarted = Watch(trigger(conn_id))  # a new triggerer: same kwargs, same asset state
        restarted.trigger.asset_state_store = store
        assert await restarted.next_event(0.5) is None
        users.add_extract("Users", "Full", utcnow(), rows_count=12)
        users.add_extract("Users", "Differential", utcnow() + timedelta(seconds=1), rows_count=1)
        event = await restarted.next_event(10)
        assert [e["bds_type"] for e in event["new_extracts"]] == ["Full", "Differential"]
        await restarted.close()

    run_steps(steps)
    assert list(store.values) == [f"brightspace_newest_announced:{conn_id}:Users:any"]


def test_newer_than_announces_what_is_already_there_and_throttling_is_polled_through(
    emulator, lms_connection, users
):
    conn_id = lms_connection("brightspace", expired=False)
    emulator.throttle_next("brightspace", 2, status=403)  # "Rate Limit Exceeded": the next poll goes on

    async def steps() -> dict | None:
        watch = Watch(
            trigger(conn_id, bds_type="Differential", newer_than=(utcnow() - timedelta(days=3)).isoformat())
        )
        event = await watch.next_event(10)
        await watch.close()
        return event

    event = run_steps(steps)
    assert [e["bds_type"] for e in event["new_extracts"]] == ["Differential"]
    assert [r.status for r in emulator.api_requests][:2] == [403, 403]


def test_a_missing_connection_is_logged_and_polled_again(emulator, lms_connection, users, capsys):
    async def steps() -> dict | None:
        watch = Watch(trigger("bs_not_made_yet"))
        try:
            return await watch.next_event(0.5)
        finally:
            await watch.close()

    assert run_steps(steps) is None
    assert "bs_not_made_yet" in capsys.readouterr().out


@pytest.mark.parametrize("bds_api", ["datasets", "dataExport"])
def test_the_sensor_pokes_or_defers_on_the_same_condition(emulator, lms_connection, users, bds_api):
    conn_id = lms_connection("brightspace", expired=False, bds_api=bds_api)
    since = (utcnow() - timedelta(hours=36)).isoformat()
    sensor = BrightspaceNewExtractSensor(
        task_id="wait", data_set="Users", newer_than=since, brightspace_conn_id=conn_id, timeout=600
    )

    done = sensor.poke({})
    assert isinstance(done, PokeReturnValue) and [e["bds_type"] for e in done.xcom_value] == ["Differential"]
    sensor.newer_than = utcnow().isoformat()
    assert sensor.poke({}) is False

    sensor.deferrable = True
    with pytest.raises(TaskDeferred) as deferred:
        sensor.execute({})
    assert deferred.value.trigger.serialize()[1]["newer_than"] == sensor.newer_than.replace("+00:00", "Z")

    async def wait(timeout: float) -> dict | None:
        watch = Watch(deferred.value.trigger)
        try:
            return await watch.next_event(timeout)
        finally:
            await watch.close()

    assert asyncio.run(wait(0.5)) is None  # nothing newer yet
    users.add_extract("Users", "Differential", utcnow() + timedelta(seconds=1), rows_count=1)
    event = asyncio.run(wait(10))
    assert sensor.execute_complete({}, event)[0]["bds_type"] == "Differential"
