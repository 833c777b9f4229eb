"""The emulator's HTTP listener: a threading server that turns sockets into Request/Response."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import socketserver
import tempfile
import threading
from collections.abc import Iterable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol
from urllib.parse import parse_qs, unquote, urlsplit

from airflow_provider_canvas.testing.primitives import Request, Response, redact_path, text_response

log = logging.getLogger("airflow_provider_canvas.testing")


class Dispatcher(Protocol):
    """Answers the requests a server receives (the :class:`LmsEmulator`)."""

    request_log_level: int

    def handle(self, request: Request) -> Response: ...


class EmulatorServer(ThreadingHTTPServer):
    daemon_threads = True
    # Keep-alive handler threads may sit idle; stop() must not wait for them.
    block_on_close = False

    def __init__(self, address: tuple[str, int], emulator: Dispatcher, role: str) -> None:
        self.emulator = emulator
        self.role = role
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._open_lock:
            self._open.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._open_lock:
            self._open.discard(request)
        super().shutdown_request(request)

    def close_open_connections(self) -> None:
        """Drop idle keep-alive connections so clients see a stopped server as gone."""
        with self._open_lock:
            open_sockets = list(self._open)
        for sock in open_sockets:
            with contextlib.suppress(OSError):  # already closed by its handler
                sock.shutdown(socket.SHUT_RDWR)

    def server_bind(self) -> None:
        # HTTPServer.server_bind calls socket.getfqdn(), a reverse DNS lookup that can hang offline.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)


#: Request bodies larger than this go to a temporary file (``Request.body_path``).
SPOOL_BODIES_OVER = 8 * 2**20


def _spool(source: Any, length: int) -> str:
    handle, path = tempfile.mkstemp(prefix="emulator-body-")
    with os.fdopen(handle, "wb") as out:
        left = length
        while left > 0:
            block = source.read(min(left, 2**20))
            if not block:
                break  # the client went away; the handler sees a short file
            out.write(block)
            left -= len(block)
    return path


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, so paging through 10k accounts is fast
    # Headers and body go out in separate writes; without TCP_NODELAY each response waits ~40 ms.
    disable_nagle_algorithm = True
    timeout = 60
    server: EmulatorServer

    def do_GET(self) -> None:
        self._dispatch()

    def do_HEAD(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_PUT(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    def do_PATCH(self) -> None:
        self._dispatch()

    def log_message(self, format: str, *args: Any) -> None:
        # The stdlib line includes the query string (codes, states); the emulator logs its own line.
        return

    def _dispatch(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body_path = None
        if length > SPOOL_BODIES_OVER:
            # A SIS upload may be gigabytes: to disk in blocks, never whole in memory.
            body, body_path = b"", _spool(self.rfile, length)
        else:
            body = self.rfile.read(length) if length > 0 else b""
        split = urlsplit(self.path)
        request = Request(
            method=self.command,
            path=unquote(split.path),
            query=parse_qs(split.query, keep_blank_values=True),
            headers={k.lower(): v for k, v in self.headers.items()},
            body=body,
            role=self.server.role,
            body_path=body_path,
        )
        emulator = self.server.emulator
        try:
            response = emulator.handle(request)
        except Exception:
            log.exception("emulator error on %s %s", request.method, redact_path(request.path))
            response = text_response(500, "emulator internal error")
        finally:
            if body_path is not None and os.path.exists(body_path):
                os.unlink(body_path)
        # Logged before the body goes out: a client that has the response can rely on the line.
        log.log(
            emulator.request_log_level, "%s %s %s", request.method, redact_path(request.path), response.status
        )
        self._write(request, response)

    def _write(self, request: Request, response: Response) -> None:
        self.send_response(response.status)
        for name, value in response.headers.items():
            self.send_header(name, value)
        length = response.length if response.stream is not None else len(response.body)
        self.send_header("Content-Length", str(length or 0))
        self.end_headers()
        if request.method == "HEAD":
            return
        chunks: Iterable[bytes] = response.stream if response.stream is not None else (response.body,)
        budget = response.truncate_after
        try:
            for chunk in chunks:
                if budget is not None and len(chunk) >= budget:
                    self.wfile.write(chunk[:budget])
                    self.wfile.flush()
                    # Dropping the connection mid-body is what a client sees when a download breaks.
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                self.wfile.write(chunk)
                if budget is not None:
                    budget -= len(chunk)
        except OSError:  # the client went away or stalled past the timeout
            self.close_connection = True
        finally:
            close = getattr(chunks, "close", None)
            if close is not None:
                close()


def reason_phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"
