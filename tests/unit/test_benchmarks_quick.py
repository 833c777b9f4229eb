"""The benchmark command works: ``python -m benchmarks.run --quick`` on its smallest cases.

Only the output's shape is checked (medians, ratios, targets), never a speed: CI machines vary.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


# A minute of benchmark runs (37 s of the 74 s unit tests took on the idle 2-core machine).
@pytest.mark.slow
def test_quick_benchmark_prints_medians_and_ratios() -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "benchmarks.run", "--quick", "--cases", "download,pagination"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    output = completed.stdout
    assert completed.returncode == 0, output + completed.stderr[-3000:]
    assert "### 1. Extract download (median of 1, alternating)" in output
    assert "### 2. Canvas pagination, 100 per page (median of 1, alternating)" in output
    for client in ("hook", "curl", "curl + fsync", "buffered", "canvasapi", "requests"):
        assert f"| {client} |" in output
    assert "| vs curl |" in output and "| vs canvasapi |" in output
    assert "1.00x" in output  # each baseline against itself
    assert "### Targets" in output
    assert "download >= 0.9x curl" in output and "pagination >= canvasapi items/s" in output
