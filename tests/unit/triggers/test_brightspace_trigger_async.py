"""The trigger on a real (local) server: polls are async, cancellation and the deadline cut a hanging poll."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable

import pendulum
import pytest

from airflow_provider_canvas.brightspace.triggers.ads import BrightspaceExportJobTrigger
from airflow_provider_canvas.common import async_hook
from airflow_provider_canvas.common.airflow_access import ConnectionFields


class _Server:
    """Answers every request with a running job, or never answers (``hang``); counts what it sees."""

    def __init__(self, hang: bool) -> None:
        self.hang = hang
        self.requests = 0
        self.open = 0
        self.url = ""
        self._server: asyncio.AbstractServer | None = None

    async def __aenter__(self) -> _Server:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.open += 1
        try:
            while await reader.readuntil(b"\r\n\r\n"):
                self.requests += 1
                if self.hang:
                    await reader.read()  # until the client goes away
                    return
                body = b'{"ExportJobId": "job-1", "Status": 1}'
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    + f"Content-Length: {len(body)}\r\n\r\n".encode()
                    + body
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self.open -= 1
            writer.close()


@pytest.fixture
def connection(monkeypatch) -> Callable[[str], None]:
    """The async connection read answers a brightspace connection to ``url`` holding a live token."""

    def point_at(url: str) -> None:
        async def aget_connection(conn_id: str) -> ConnectionFields:
            extra = {
                "access_token": "live-token",
                "refresh_token": "rt",
                "expires_at": pendulum.now("UTC").add(hours=1).to_iso8601_string(),
            }
            return ConnectionFields(conn_id, "brightspace", url, "client", "secret", extra)

        monkeypatch.setattr(async_hook.airflow_access, "aget_connection", aget_connection)

    return point_at


async def _events(trigger: BrightspaceExportJobTrigger) -> AsyncIterator[dict]:
    async for event in trigger.run():
        yield event.payload


def test_a_cancelled_trigger_stops_polling_at_once(connection):
    async def scenario() -> tuple[int, int, float]:
        async with _Server(hang=False) as server:
            connection(server.url)
            trigger = BrightspaceExportJobTrigger("bs", "job-1", poll_interval=0.02)
            task = asyncio.create_task(_events(trigger).__anext__())
            while server.requests < 3:
                await asyncio.sleep(0.01)
            started = time.monotonic()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            stopped_in = time.monotonic() - started
            polls = server.requests
            await asyncio.sleep(0.2)
            return polls, server.requests, stopped_in

    polls, later, stopped_in = asyncio.run(scenario())
    assert later == polls and stopped_in < 0.5


def test_cancelling_during_a_hanging_poll_closes_the_connection(connection):
    async def scenario() -> tuple[float, int]:
        async with _Server(hang=True) as server:
            connection(server.url)
            trigger = BrightspaceExportJobTrigger("bs", "job-1", poll_interval=0.02)
            task = asyncio.create_task(_events(trigger).__anext__())
            while server.requests < 1:
                await asyncio.sleep(0.01)
            started = time.monotonic()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            stopped_in = time.monotonic() - started
            for _ in range(50):  # the client closed its socket: the server's read ends
                if server.open == 0:
                    break
                await asyncio.sleep(0.01)
            return stopped_in, server.open

    stopped_in, still_open = asyncio.run(scenario())
    assert stopped_in < 0.5 and still_open == 0


def test_the_deadline_fires_while_the_server_hangs(connection):
    async def scenario() -> tuple[dict, float]:
        async with _Server(hang=True) as server:
            connection(server.url)
            trigger = BrightspaceExportJobTrigger(
                "bs", "job-1", poll_interval=30, timeout_at=time.time() + 0.5
            )
            started = time.monotonic()
            payload = await _events(trigger).__anext__()
            return payload, time.monotonic() - started

    payload, took = asyncio.run(scenario())
    assert payload["status"] == "timeout" and "deadline" in payload["message"]
    assert 0.4 < took < 2.0  # the read timeout is 60 s: only the deadline can have ended the poll
