"""Case dap_namespace: a whole-namespace Canvas Data 2 sync (60 tables) vs the bound DAP's job limit sets.

DAP allows about 5 job creations a minute per client, so N tables cannot all have their jobs
before ``(ceil(N / 5) - 1)`` windows have passed: that is the bound, and the pull's pacing should
come close to it without a 429. Time is scaled down: the emulator's limit window (and the pull's
``job_creation_rate``) is ``--window`` seconds (default 6: 5 per 6 s, 10x faster than DAP), so 60
tables are bound by 11 windows = 66 s rather than 660 s. What the sync adds beyond the bound (job
run time, downloads, loads) does not scale with the window, so the real-scale ratio is
``(11 x 60 + overhead) / (11 x 60)``, printed beside the measured one.

``python -m benchmarks.dap_namespace [--window 6] [--rows 40]``: the pull (``tables="all"``, waiting
in the task) then every table's load into PostgreSQL, one process, the DAP emulator over HTTP.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

CLIENT_ID, CLIENT_SECRET = "us-east-1#bench-dap-client", "bench-dap-secret"
DAP_LIMIT = 5  # job creations per window (DAP: per minute)
REAL_WINDOW = 60.0
TARGET = 1.2


def _connection_env(url: str) -> None:
    """The ``canvas_data`` connection as Airflow reads it from the environment (no metadata DB)."""
    connection = {"conn_type": "canvas_data", "host": url, "login": CLIENT_ID, "password": CLIENT_SECRET}
    os.environ["AIRFLOW_CONN_CANVAS_DATA_BENCH"] = json.dumps(connection)


def run(window: float, rows: int) -> dict[str, Any]:
    import psycopg

    from airflow_provider_canvas.canvas_data.loading.load import DapTableLoader
    from airflow_provider_canvas.canvas_data.loading.state import DapTableFolder
    from airflow_provider_canvas.canvas_data.operators.pull import CanvasDataPullOperator
    from airflow_provider_canvas.testing.dap import DapEmulator
    from airflow_provider_canvas.testing.postgres import TEST_DATABASE, configured_server
    from benchmarks._harness import progress

    sizes = {"accounts": rows, "users": rows, "courses": rows, "enrollments": rows}
    schema = f"bench_ns_{uuid.uuid4().hex[:8]}"
    with tempfile.TemporaryDirectory() as location, DapEmulator(rows=sizes, rate_window=window) as dap:
        dap.register_client(CLIENT_ID, CLIENT_SECRET)
        dap.rows_per_object = 1000
        _connection_env(dap.url)
        tables = len(dap.namespaces["canvas"])
        bound = (math.ceil(tables / DAP_LIMIT) - 1) * window
        progress(f"{tables} tables, DAP limit {DAP_LIMIT} per {window:g} s: bound {bound:.0f} s")
        op = CanvasDataPullOperator(
            task_id="pull",
            tables="all",
            namespace="canvas",
            location=location,
            canvas_data_conn_id="canvas_data_bench",
            deferrable=False,
            poll_interval=min(2.0, window / 3),
            job_creation_rate=(DAP_LIMIT, window),
            throttle_window_seconds=window,
        )
        started = time.monotonic()
        pulled = op.execute({})
        pull_seconds = time.monotonic() - started
        progress(f"pull: {len(pulled)} tables in {pull_seconds:.1f} s; loading")
        with psycopg.connect(configured_server().url(TEST_DATABASE)) as db:
            loader = DapTableLoader(db, schema)
            try:
                loaded = sum(
                    loader.load(DapTableFolder(location, "canvas", table)).rows_upserted for table in pulled
                )
            finally:
                db.rollback()
                db.autocommit = True
                db.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        total = time.monotonic() - started
        summary = dap.summary()
    overhead = total - bound
    real_bound = (math.ceil(tables / DAP_LIMIT) - 1) * REAL_WINDOW
    return {
        "tables": tables,
        "pulled": len(pulled),
        "rows_loaded": loaded,
        "window": window,
        "bound": bound,
        "pull": pull_seconds,
        "total": total,
        "ratio": total / bound,
        "throttled": summary["throttled_job_creations"],
        "real_bound": real_bound,
        "real_ratio": (real_bound + overhead) / real_bound,
    }


def report(result: dict[str, Any]) -> str:
    r = result
    lines = [
        f"### 7. Whole-namespace sync: {r['tables']} tables, DAP's job limit scaled to "
        f"{DAP_LIMIT} per {r['window']:g} s (one run)",
        "",
        "| tables | rows loaded | bound | pull | pull + loads | vs bound | 429s | real scale (5/min) |",
        "|---|---|---|---|---|---|---|---|",
        f"| {r['pulled']} | {r['rows_loaded']} | {r['bound']:.0f} s | {r['pull']:.1f} s | {r['total']:.1f} s "
        f"| {r['ratio']:.3f}x | {r['throttled']} | {r['real_bound']:.0f} s bound, "
        f"{r['real_ratio']:.3f}x (extrapolated) |",
        "",
        f"Target: within {TARGET}x of the bound: {'met' if r['ratio'] <= TARGET else 'MISSED'} "
        f"({r['ratio']:.3f}x measured at the scaled window; at DAP's 60 s window the same "
        f"{r['total'] - r['bound']:.1f} s beyond the bound make {r['real_ratio']:.3f}x).",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--window", type=float, default=6.0, help="seconds of DAP's limit window (60 real)")
    parser.add_argument("--rows", type=int, default=40, help="rows of the four hand-written tables")
    args = parser.parse_args(argv)
    result = run(args.window, args.rows)
    print(report(result))
    return 0 if result["ratio"] <= TARGET and result["throttled"] == 0 else 1


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    raise SystemExit(main())
