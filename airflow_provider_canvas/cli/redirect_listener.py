"""The one-shot listener on 127.0.0.1 that receives the OAuth redirect for ``canvas-oauth authorize``."""

from __future__ import annotations

import http.server
import socketserver
import time
from typing import Any
from urllib.parse import urlsplit

from airflow_provider_canvas.exceptions import AuthorizeError, LmsConfigurationError


class RedirectListener:
    """Receives the one redirect on 127.0.0.1 at the redirect URI's port and path, then closes."""

    def __init__(self, redirect_uri: str) -> None:
        parts = urlsplit(redirect_uri)
        self.path = parts.path or "/"
        port = parts.port or 80
        self.received: str | None = None
        try:
            self._server = _OneShotServer(("127.0.0.1", port), _RedirectHandler)
        except OSError as err:
            raise LmsConfigurationError(
                f"cannot listen on 127.0.0.1:{port} for the redirect ({err.strerror}): free the port, or "
                "register a redirect URI with a free port above 1024, e.g. http://127.0.0.1:8765/canvas-oauth"
            ) from None
        self._server.listener = self

    def wait(self, timeout: float) -> str:
        """The redirect URL (path and query); requests to other paths (favicon) are answered 404."""
        deadline = time.monotonic() + timeout
        while self.received is None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AuthorizeError(
                    f"no redirect arrived within {timeout:.0f}s. Was the URL opened and approved? Does "
                    "the developer key's redirect URI equal the connection's?"
                )
            self._server.timeout = left
            self._server.handle_request()
        return self.received

    def close(self) -> None:
        self._server.server_close()


class _OneShotServer(http.server.HTTPServer):
    listener: RedirectListener  # set right after construction; the handler reports to it

    def server_bind(self) -> None:
        # HTTPServer.server_bind looks its own name up (reverse DNS), which can hang offline.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = "127.0.0.1", int(self.server_address[1])


class _RedirectHandler(http.server.BaseHTTPRequestHandler):
    server: Any

    def do_GET(self) -> None:
        listener: RedirectListener = self.server.listener
        if urlsplit(self.path).path != listener.path:
            self._reply(404, "Not the redirect URI.")
            return
        listener.received = self.path
        self._reply(200, "canvas-oauth received the authorization. You can close this tab.")

    def _reply(self, status: int, text: str) -> None:
        body = text.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        # The request line holds the authorization code.
        return
