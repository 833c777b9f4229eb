"""The Test-button fix: only this provider's connection types lose the UI's hidden ``"port": 0``."""

from __future__ import annotations

import json

from fastapi import FastAPI, Request
from fastapi.testclient import TestClient

from airflow_provider_canvas.ui_plugin import (
    CONN_TYPES,
    CanvasProviderPlugin,
    HiddenPortTestFix,
    without_hidden_port,
)


def echo_app() -> TestClient:
    app = FastAPI()

    @app.post("/{path:path}")
    async def echo(request: Request) -> dict:
        return {"body": await request.json(), "length": request.headers["content-length"]}

    app.add_middleware(HiddenPortTestFix)
    return TestClient(app)


def test_the_hidden_port_of_each_connection_type_of_the_provider_becomes_null():
    client = echo_app()
    # canvas_data hides its port too: its Test button was refused with HTTP 400 before it was listed.
    assert {"canvas", "brightspace", "canvas_data"} == CONN_TYPES
    for conn_type in ("canvas", "brightspace", "canvas_data"):
        sent = {"connection_id": "c", "conn_type": conn_type, "host": "https://h", "port": 0}
        answer = client.post("/api/v2/connections/test", json=sent).json()
        assert answer["body"] == {**sent, "port": None}
        assert int(answer["length"]) == len(json.dumps(answer["body"]).encode())


def test_everything_else_passes_untouched():
    client = echo_app()
    other_type = {"conn_type": "postgres", "port": 0}
    assert client.post("/api/v2/connections/test", json=other_type).json()["body"] == other_type
    real_port = {"conn_type": "canvas", "port": 8443}
    assert client.post("/api/v2/connections/test", json=real_port).json()["body"] == real_port
    elsewhere = {"conn_type": "canvas", "port": 0}
    assert client.post("/api/v2/connections", json=elsewhere).json()["body"] == elsewhere
    assert without_hidden_port(b"not json") == b"not json"


def test_the_plugin_declares_the_middleware():
    [entry] = CanvasProviderPlugin.fastapi_root_middlewares
    assert entry["middleware"] is HiddenPortTestFix
