"""The one benchmark command: ``python -m benchmarks.run [--quick] [--cases download,pagination,...]``.

Runs each case against the emulator on 127.0.0.1 (and a static file server, PostgreSQL, curl and psql
where those are the limit), each variant alternately with its baselines, and prints Markdown tables
of medians and ratios, then the issue's targets with a verdict. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
from pathlib import Path
from typing import Any

from airflow_provider_canvas.testing.postgres import TEST_DATABASE, configured_server
from benchmarks._harness import BenchError, CaseReport, Target, Workspace, machine_description, psql

CASES = ("download", "pagination", "load", "dap_load", "tokens", "custody", "parse", "sis_upload")
# The tests' server: CANVAS_PROVIDER_POSTGRES_URL, by default postgresql://postgres@127.0.0.1:5432.
DEFAULT_POSTGRES = configured_server().url(TEST_DATABASE)


def _postgres_version(url: str) -> str:
    try:
        return psql(url, "SHOW server_version", timeout=30).strip()
    except (BenchError, OSError) as err:
        return f"unavailable ({err})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes, 1 repetition (a smoke run)")
    parser.add_argument("--cases", default=",".join(CASES), help=f"comma-separated subset of {CASES}")
    parser.add_argument("--reps", type=int, help="repetitions per variant (default 3, --quick 1)")
    parser.add_argument("--postgres", default=DEFAULT_POSTGRES, help="PostgreSQL URL for the load case")
    parser.add_argument("--json", type=Path, help="also write every sample as JSON here")
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory under /tmp")
    args = parser.parse_args(argv)
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    unknown = sorted(set(cases) - set(CASES))
    if unknown:
        parser.error(f"unknown case(s) {unknown}; choose from {CASES}")
    reps = args.reps or (1 if args.quick else 3)

    started = time.monotonic()
    print("# airflow-provider-canvas benchmarks\n")
    print(f"- machine: {machine_description()}")
    if "load" in cases or "dap_load" in cases:
        print(f"- PostgreSQL: {_postgres_version(args.postgres)} at {args.postgres}")
    print(f"- mode: {'quick' if args.quick else 'full'}, {reps} repetition(s) per variant, alternating\n")
    sys.stdout.flush()

    reports: dict[str, CaseReport] = {}
    failures: dict[str, str] = {}
    with Workspace(postgres_url=args.postgres, keep=args.keep) as workspace:
        for case in cases:
            case_started = time.monotonic()
            module = importlib.import_module(f"benchmarks.{case}")
            try:
                report = module.run(workspace, quick=args.quick, reps=reps)
            except (BenchError, RuntimeError, OSError) as err:
                failures[case] = str(err)
                print(f"### {case}: FAILED\n\n```\n{err}\n```\n", flush=True)
                continue
            reports[case] = report
            for table in report.tables:
                print(table.render(), flush=True)
            print(f"_{case}: {time.monotonic() - case_started:.0f} s_\n", flush=True)
        if args.keep:
            print(f"Scratch directory kept: {workspace.root}\n")

    targets: list[Target] = [t for r in reports.values() for t in r.targets]
    if targets:
        print("### Targets\n")
        print("| target | measured | verdict |\n|---|---|---|")
        for target in targets:
            print(f"| {target.name} | {target.measured} | {target.verdict()} |")
        print()
    print(f"Total: {time.monotonic() - started:.0f} s")
    if args.json:
        payload: dict[str, Any] = {
            "machine": machine_description(),
            "quick": args.quick,
            "reps": reps,
            "cases": {name: r.raw for name, r in reports.items()},
            "targets": [t.__dict__ for t in targets],
            "failures": failures,
        }
        args.json.write_text(json.dumps(payload, indent=2, default=str))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
