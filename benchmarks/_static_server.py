"""A plain static file server (HTTP/1.1, sendfile) for the download benchmark's fairest comparison.

The emulator renders its extracts in Python, which can cap the transfer rate of every client alike.
This server hands files to the kernel with ``sendfile(2)``, so the clients are what is measured.
``python -m benchmarks._static_server DIR --ready-file F`` serves DIR on a free port of 127.0.0.1 and
writes ``{"url": ...}`` to F once it listens.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType
from urllib.parse import unquote, urlsplit


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    root: Path

    def do_GET(self) -> None:
        name = unquote(urlsplit(self.path).path).lstrip("/")
        target = (self.root / name).resolve()
        if target.parent != self.root or not target.is_file():
            self.send_error(404)
            return
        with open(target, "rb") as body:
            size = os.fstat(body.fileno()).st_size
            self.send_response(200)
            self.send_header("Content-Type", "application/zip")
            self.send_header("Content-Length", str(size))
            self.end_headers()
            self.connection.sendfile(body)

    def log_message(self, format: str, *args: object) -> None:
        return


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks._static_server", description=__doc__)
    parser.add_argument("directory")
    parser.add_argument("--ready-file", required=True)
    args = parser.parse_args(argv)
    _Handler.root = Path(args.directory).resolve()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True

    def stop(signum: int, frame: FrameType | None) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    ready = Path(args.ready_file)
    tmp = ready.with_suffix(".tmp")
    tmp.write_text(json.dumps({"url": f"http://127.0.0.1:{server.server_address[1]}"}))
    os.replace(tmp, ready)
    server.serve_forever(poll_interval=0.1)
    server.server_close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
