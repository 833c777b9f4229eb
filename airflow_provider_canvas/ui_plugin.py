"""An Airflow plugin that makes the connection form's Test button work for this provider's connection types.

Airflow 3.3's UI sends ``"port": 0`` when a connection type hides its port (the Test button sends
``Number(null)``), and ``POST /api/v2/connections/test`` then refuses the test with HTTP 400 ("The
host or port to test differs from the stored connection"), since the stored port is empty. All three
types (``canvas``, ``brightspace``, ``canvas_data``) hide the port and never use one, so for them a
port of 0 is turned back into null before
Airflow reads the request. Nothing else is touched. Loaded through the ``airflow.plugins`` entry
point, so it is active wherever the provider is installed on the api-server.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from airflow.plugins_manager import AirflowPlugin

from airflow_provider_canvas.get_provider_info import get_provider_info

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: The connection types whose form hides the port: the Test button of each sends ``"port": 0``.
CONN_TYPES = frozenset(
    kind["connection-type"]
    for kind in get_provider_info()["connection-types"]
    if "port" in kind["ui-field-behaviour"]["hidden-fields"]
)
TEST_PATH = "/api/v2/connections/test"


def without_hidden_port(body: bytes) -> bytes:
    """The test request's body with ``"port": 0`` made null for this provider's connection types."""
    try:
        payload = json.loads(body)
    except ValueError:
        return body  # Airflow answers 422 itself
    if (
        not isinstance(payload, dict)
        or payload.get("conn_type") not in CONN_TYPES
        or payload.get("port") != 0
    ):
        return body
    return json.dumps({**payload, "port": None}).encode()


class HiddenPortTestFix:
    """ASGI middleware: rewrites only ``POST .../api/v2/connections/test`` bodies (see the module)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or not scope["path"].endswith(TEST_PATH):
            await self.app(scope, receive, send)
            return
        chunks = []
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        body = without_hidden_port(b"".join(chunks))
        headers = [(name, value) for name, value in scope["headers"] if name.lower() != b"content-length"]
        scope = {**scope, "headers": [*headers, (b"content-length", str(len(body)).encode())]}
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)


class CanvasProviderPlugin(AirflowPlugin):
    name = "canvas_provider"
    fastapi_root_middlewares = [
        {"middleware": HiddenPortTestFix, "args": [], "kwargs": {}, "name": "Canvas/Brightspace Test button"}
    ]
