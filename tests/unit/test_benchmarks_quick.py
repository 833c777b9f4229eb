"""The benchmark command works: ``python -m benchmarks.run --quick`` on its smallest cases.

Only the output's shape is checked (medians, ratios, targets), never a speed: CI machines vary.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


# A minute of benchmark runs (37 s of the 74 s unit tests took on the idle 2-core machine).
@pytest.mark.slow
def test_quick_benchmark_prints_medians_and_ratios() -> None:
    # A session of its own: on a timeout or an interrupt, its servers (emulator, static files) go with it.
    process = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.run", "--quick", "--cases", "download,pagination"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        output, errors = process.communicate(timeout=180)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
    assert process.returncode == 0, output + errors[-3000:]
    assert "### 1. Extract download (median of 1, alternating)" in output
    assert "### 2. Canvas pagination, 100 per page (median of 1, alternating)" in output
    for client in ("hook", "curl", "curl + fsync", "buffered", "canvasapi", "requests"):
        assert f"| {client} |" in output
    assert "| vs curl |" in output and "| vs canvasapi |" in output
    assert "1.00x" in output  # each baseline against itself
    assert "### Targets" in output
    assert "download >= 0.9x curl" in output and "pagination >= canvasapi items/s" in output
