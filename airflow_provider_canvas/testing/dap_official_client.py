"""Instructure's own DAP client (``instructure-dap-client``) run as a program against a DAP emulator.

It lives in a virtualenv of its own (``scripts/dap_client_venv.sh`` makes it): it pins exact versions
of aiohttp, PyJWT, jsonschema, rich and others that Airflow's constraints pin differently, so it
cannot be installed beside Airflow. Analytics tracking is always off: nothing leaves this machine.
"""

from __future__ import annotations

import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

#: The script that makes the client's virtualenv (in a checkout of this project).
VENV_SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "dap_client_venv.sh"


def official_client_venv(script: Path = VENV_SCRIPT, timeout: float = 900) -> Path:
    """The client's virtualenv, made by ``script`` the first time (cached by a stamp afterwards)."""
    done = subprocess.run(
        ["bash", "-c", 'source "$0" >&2 && printf %s "$DAP_CLIENT_VENV"', str(script)],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{script} failed (exit {done.returncode}): {done.stderr[-2000:]}")
    return Path(done.stdout)


@dataclass
class DapRun:
    """One run of the ``dap`` command: its arguments (no secret), exit code, output and seconds."""

    args: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str
    seconds: float


@dataclass
class OfficialDapClient:
    """The ``dap`` command of the client's virtualenv, pointed at ``base_url`` with these credentials.

    The secret goes in the environment (``DAP_CLIENT_SECRET``), not on the command line.
    """

    venv: Path
    base_url: str
    client_id: str
    client_secret: str
    workdir: Path

    def python(self, code: str, timeout: float = 120) -> str:
        """Run ``code`` with the client's Python (its library API: ``from dap.api import DAPClient``);
        ``DAP_API_URL``, ``DAP_CLIENT_ID`` and ``DAP_CLIENT_SECRET`` point it here. Returns stdout."""
        env = {**self._env(), "DAP_API_URL": self.base_url, "DAP_CLIENT_ID": self.client_id}
        done = subprocess.run(
            [str(self.venv / "bin" / "python"), "-c", code],
            env=env, capture_output=True, text=True, timeout=timeout, check=False,
        )  # fmt: skip
        if done.returncode != 0:
            raise RuntimeError(f"the client's Python failed (exit {done.returncode}):\n{done.stderr[-4000:]}")
        return done.stdout

    def _env(self) -> dict[str, str]:
        return {
            **os.environ,
            "DAP_CLIENT_SECRET": self.client_secret,
            "DAP_TRACKING": "false",
            "NO_COLOR": "1",
            "COLUMNS": "200",
        }

    def run(self, *args: str, timeout: float = 600, check: bool = True) -> DapRun:
        command = [
            str(self.venv / "bin" / "dap"),
            "--base-url", self.base_url,
            "--client-id", self.client_id,
            "--no-tracking",
            "--non-interactive",
            "--loglevel", "info",
            *args,
        ]  # fmt: skip
        env = self._env()
        self.workdir.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        done = subprocess.run(
            command, cwd=self.workdir, env=env, capture_output=True, text=True, timeout=timeout, check=False
        )
        result = DapRun(tuple(args), done.returncode, done.stdout, done.stderr, time.monotonic() - started)
        if check and done.returncode != 0:
            said = f"{done.stdout[-1500:]}\n{done.stderr[-4000:]}"
            raise RuntimeError(f"dap {' '.join(args)} failed (exit {done.returncode}):\n{said}")
        return result
