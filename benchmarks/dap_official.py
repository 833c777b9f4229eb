"""Case dap_official: the provider against Instructure's own client on the same data and PostgreSQL.

One DAP emulator over HTTP, one PostgreSQL. The provider: ``CanvasDataPullOperator`` (pull) then
``DapTableLoader`` (load), in a child process. Instructure's client (``instructure-dap-client``,
its own virtualenv): ``dap initdb`` for the snapshot, ``dap syncdb`` for the incremental. Tables:
``users`` (9 columns, 1M rows; the incremental changes 5%, adds 1%, deletes 0.5%) and ``wide``
(60 columns of every type). DAP's own work is left out for both: each side's query job is made
beforehand and its identical query hands it back, as DAP does, so each clock runs from the
process start to the last row committed. Both tables must end with equal md5.
"""

from __future__ import annotations

import argparse
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests

from benchmarks._harness import (
    BenchError,
    CaseReport,
    Sample,
    Table,
    Target,
    Workspace,
    emit,
    fmt,
    median,
    progress,
    psql,
    python_child,
    rss_mib,
    run_child,
    stopwatch,
)

FULL = {"users": 1_000_000, "wide": 100_000}
QUICK = {"users": 20_000, "wide": 2_000}
PROVIDER_ID, PROVIDER_SECRET = "us-east-1#bench-provider", "bench-provider-secret"
OFFICIAL_ID, OFFICIAL_SECRET = "us-east-1#bench-official", "bench-official-secret"
CONN_ID = "dap_bench"
#: The bodies each client sends for its jobs (the provider: jsonl; the official client: tsv, condensed).
PROVIDER_QUERY: dict[str, Any] = {"format": "jsonl"}
OFFICIAL_QUERY: dict[str, Any] = {"format": "tsv", "mode": "condensed"}


def run(workspace: Workspace, *, quick: bool, reps: int) -> CaseReport:
    from airflow_provider_canvas.testing.dap import DapEmulator
    from airflow_provider_canvas.testing.dap_jobs import CallLimit
    from airflow_provider_canvas.testing.dap_official_client import official_client_venv

    sizes = QUICK if quick else FULL
    progress("dap_official: the official client's virtualenv (scripts/dap_client_venv.sh)")
    venv = official_client_venv()
    report = CaseReport()
    samples: dict[str, list[Sample]] = {}
    with DapEmulator(rows={"accounts": 1, "users": 1, "courses": 1, "enrollments": 1}) as dap:
        for client, secret in ((PROVIDER_ID, PROVIDER_SECRET), (OFFICIAL_ID, OFFICIAL_SECRET)):
            dap.register_client(client, secret)
        dap.job_seconds = 0.0
        dap.rows_per_object = 100_000  # DAP's objects are large; the official client asks a URL per object
        dap.job_creation = CallLimit(1000, 60.0)
        workspace.connection(CONN_ID, "canvas_data", dap.url, {"namespace": "canvas"},
                             login=PROVIDER_ID, password=PROVIDER_SECRET)  # fmt: skip
        for name, rows in sizes.items():
            progress(f"dap_official: {name}, {rows:,} rows in the emulator")
            dap.namespaces["canvas"][name] = _table(name, rows)
        baseline = _official(venv, dap.url, ["list", "--namespace", "canvas"], timeout=120)
        for rep in range(reps):
            for name, rows in sizes.items():
                progress(f"dap_official: {name} rep {rep + 1}/{reps}")
                for key, sample in _one_round(workspace, dap, venv, name, rows, rep, baseline):
                    samples.setdefault(f"{name} {key}", []).append(sample)
    report.raw = {
        "samples": samples,
        "sizes": sizes,
        "official_idle": {"seconds": baseline.wall_seconds, "peak_rss_mib": baseline.peak_rss_mib},
    }
    report.tables.append(_report_table(samples, sizes, reps))
    report.targets += _targets(samples, sizes)
    return report


def _one_round(
    workspace: Workspace, dap: Any, venv: Path, name: str, rows: int, rep: int, idle: Any
) -> list[tuple[str, Sample]]:
    """Snapshot then incremental of one table by both sides, each into an empty target."""
    url = workspace.postgres_url
    schema = f"bench_dapo_{uuid.uuid4().hex[:8]}"
    database = f"bench_dapo_{uuid.uuid4().hex[:8]}"
    official_url = url.rsplit("/", 1)[0] + f"/{database}"
    location = workspace.path("dap_official", f"{name}-{rep}")
    timeout = 300 + rows / 1000
    psql(url, f'CREATE DATABASE "{database}"')
    try:
        at = _premade_jobs(dap, name, None)
        snap = {
            "provider": _provider(location, url, schema, name, timeout),
            "official": _official_sample(venv, dap.url, official_url, "initdb", name, timeout, idle),
        }
        _check_same(url, schema, official_url, name, len(dap.table(name).rows))
        dap.publish(name, inserts=rows // 100, updates=rows // 20, deletes=rows // 200)
        _premade_jobs(dap, name, at)
        incr = {
            "provider": _provider(location, url, schema, name, timeout),
            "official": _official_sample(venv, dap.url, official_url, "syncdb", name, timeout, idle),
        }
        digest = _check_same(url, schema, official_url, name, len(dap.table(name).rows))
    finally:
        psql(url, f"DROP SCHEMA IF EXISTS {schema} CASCADE", f'DROP DATABASE IF EXISTS "{database}"')
    for sample in (*snap.values(), *incr.values()):
        sample["md5_equal"] = 1.0
    progress(f"dap_official: {name} md5 {digest} on both sides")
    return [(f"snapshot {side}", s) for side, s in snap.items()] + [
        (f"incremental {side}", s) for side, s in incr.items()
    ]


def _premade_jobs(dap: Any, table: str, since: float | None) -> float:
    """Each side's job made now (untimed); returns the snapshot's ``at`` (or ``since`` back)."""
    from airflow_provider_canvas.testing.dap_tables import iso

    at = since
    for client, secret, body in (
        (PROVIDER_ID, PROVIDER_SECRET, PROVIDER_QUERY),
        (OFFICIAL_ID, OFFICIAL_SECRET, OFFICIAL_QUERY),
    ):
        login = requests.post(f"{dap.url}/ids/auth/login", auth=(client, secret),
                              data={"grant_type": "client_credentials"}, timeout=60)  # fmt: skip
        login.raise_for_status()
        query = {**body, **({"since": iso(since)} if since is not None else {})}
        answer = requests.post(
            f"{dap.url}/dap/query/canvas/table/{table}/data",
            json=query,
            headers={"Authorization": f"Bearer {login.json()['access_token']}"},
            timeout=900,
        )
        if answer.status_code != 200:
            raise BenchError(
                f"the pre-made job for {table} answered {answer.status_code}: {answer.text[:300]}"
            )
        at = dap.jobs[answer.json()["id"]].at if since is None else since
    return float(at or 0.0)


def _provider(location: Path, url: str, schema: str, table: str, timeout: float) -> Sample:
    child = python_child("dap_official", "provider", "--location", str(location), "--dsn", url,
                         "--schema", schema, "--table", table, timeout=timeout)  # fmt: skip
    result = child.result
    return {
        "seconds": child.wall_seconds,
        "work_seconds": result["pull_seconds"] + result["load_seconds"],
        "pull_seconds": result["pull_seconds"],
        "load_seconds": result["load_seconds"],
        "peak_rss_mib": child.peak_rss_mib,
        "rss_growth_mib": child.peak_rss_mib - result["rss_before_mib"],
    }


def _official(venv: Path, base_url: str, args: list[str], timeout: float) -> Any:
    argv = [str(venv / "bin" / "dap"), "--base-url", base_url, "--client-id", OFFICIAL_ID, "--no-tracking",
            "--non-interactive", "--loglevel", "warning", *args]  # fmt: skip
    env = {"DAP_CLIENT_SECRET": OFFICIAL_SECRET, "DAP_TRACKING": "false", "NO_COLOR": "1"}
    return run_child(argv, timeout=timeout, env=env, label=f"dap {args[0]}")


def _official_sample(
    venv: Path, base_url: str, official_url: str, command: str, table: str, timeout: float, idle: Any
) -> Sample:
    args = [command, "--namespace", "canvas", "--table", table, "--connection-string", official_url]
    child = _official(venv, base_url, args, timeout)
    return {
        "seconds": child.wall_seconds,
        # Its start-up, login and a first request: what `dap list` takes.
        "work_seconds": child.wall_seconds - idle.wall_seconds,
        "peak_rss_mib": child.peak_rss_mib,
        "rss_growth_mib": child.peak_rss_mib - idle.peak_rss_mib,
    }


def _check_same(url: str, schema: str, official_url: str, table: str, rows: int) -> str:
    ours = _md5(url, schema, table, official_url)
    theirs = _md5(official_url, "canvas", table, official_url)
    if ours != theirs or ours[1] != rows:
        raise BenchError(f"{table}: provider {ours} vs official {theirs} (expected {rows} rows)")
    return ours[0]


def _md5(url: str, schema: str, table: str, official_url: str) -> tuple[str, int]:
    """md5 of the rows as text in one form (UTC timestamps to the millisecond, enums as text), by id."""
    columns = psql(
        official_url,
        "SELECT string_agg(column_name || ':' || data_type, ',' ORDER BY ordinal_position) "
        f"FROM information_schema.columns WHERE table_schema = 'canvas' AND table_name = '{table}'",
    ).strip()
    kinds = dict(item.split(":", 1) for item in columns.split(","))
    # The official client's timestamps are UTC without a zone; the provider's are timestamptz.
    ours = psql(url, f"SELECT data_type FROM information_schema.columns WHERE table_schema = '{schema}' "
                f"AND table_name = '{table}' AND column_name = 'created_at'").strip()  # fmt: skip
    exprs = []
    for column, kind in kinds.items():
        ref = f'"{column}"'
        if kind.startswith("timestamp"):
            zoned = ours.startswith("timestamp with") if schema != "canvas" else False
            ref = f"{ref} AT TIME ZONE 'UTC'" if zoned else ref
            exprs.append(f"""coalesce(to_char({ref}, 'YYYY-MM-DD"T"HH24:MI:SS.MS'), '~')""")
        else:
            exprs.append(f"coalesce({ref}::text, '~')")
    text = psql(
        url,
        f"SELECT md5(string_agg(concat_ws('|', {', '.join(exprs)}), E'\\n' ORDER BY id)) || ' ' || count(*) "
        f'FROM "{schema}"."{table}"',
    ).strip()
    digest, count = text.split()
    return digest, int(count)


def _report_table(samples: dict[str, list[Sample]], sizes: dict[str, int], reps: int) -> Table:
    table = Table(
        f"11. Canvas Data 2: the provider vs Instructure's client on the same data (median of {reps})",
        [
            "table",
            "rows",
            "step",
            "provider work s (wall)",
            "official work s (wall)",
            "speed-up work (wall)",
            "provider RSS growth MiB",
            "official RSS growth MiB",
        ],
        notes=[
            "provider: a child process that pulls (CanvasDataPullOperator, not deferrable) and loads "
            "(DapTableLoader); work = pull + load, wall = with Python start-up and Airflow's imports.",
            "official: `dap initdb` (snapshot) or `dap syncdb` (incremental) of instructure-dap-client "
            "2.3.1 in its own virtualenv; work = wall minus the wall of `dap list` (its start-up, a "
            "login and one request).",
            "DAP's side is left out for both: each client's job was made beforehand and handed back to "
            "its identical query, complete. Same emulator, same PostgreSQL; md5 of both tables equal.",
            "RSS growth: provider, peak minus RSS after imports; official, peak minus the peak of "
            "`dap list`.",
        ],
    )
    for name, rows in sizes.items():
        for step in ("snapshot", "incremental"):
            ours, theirs = samples[f"{name} {step} provider"], samples[f"{name} {step} official"]
            work = [median(x, "work_seconds") for x in (ours, theirs)]
            wall = [median(x, "seconds") for x in (ours, theirs)]
            table.add(
                name,
                f"{rows:,}",
                step,
                f"{fmt(work[0])} ({fmt(wall[0])})",
                f"{fmt(work[1])} ({fmt(wall[1])})",
                f"{work[1] / work[0]:.1f}x ({wall[1] / wall[0]:.1f}x)",
                fmt(median(ours, "rss_growth_mib")),
                fmt(median(theirs, "rss_growth_mib")),
            )
    return table


def _targets(samples: dict[str, list[Sample]], sizes: dict[str, int]) -> list[Target]:
    targets = []
    for step, wanted in (("snapshot", 10.0), ("incremental", 5.0)):
        ours = median(samples[f"users {step} provider"], "work_seconds")
        theirs = median(samples[f"users {step} official"], "work_seconds")
        targets.append(
            Target(
                f"Canvas Data 2 {step} >= {wanted:.0f}x the official client ({sizes['users']:,} users)",
                f"{theirs / ours:.1f}x ({fmt(ours)} s vs {fmt(theirs)} s of work, md5 equal)",
                theirs / ours >= wanted,
            )
        )
    return targets


# The emulated tables --------------------------------------------------------------------------------


def _table(name: str, rows: int) -> Any:
    """An emulated table of ``rows`` rows, filled fast (one generator, not one per row)."""
    import random

    from airflow_provider_canvas.testing.dap_tables import EmulatedTable

    columns = _users_columns() if name == "users" else _wide_columns()
    table = EmulatedTable(name, f"Benchmark table {name}", columns, seed=11)
    rng, at = random.Random(11), time.time() - 3600
    for key in range(1, rows + 1):
        row = {c.name: c.value(rng, key) for c in columns}
        row = {k: v for k, v in row.items() if v is not None}
        table.rows[key], table.row_ts[key] = row, at
        table.changes.append((at, key, row))
    table.next_id, table.last_commit = rows + 1, at
    return table


def _users_columns() -> list[Any]:
    from airflow_provider_canvas.testing.dap_tables import BOOL, TEXT, TIME, Column, iso

    states = ("registered", "pre_registered", "creation_pending", "deleted")
    return [
        Column(
            "name", TEXT, lambda rng, key: f'User {key} "q" \\ b' if key % 10 == 0 else f"User {key}", True
        ),
        Column("sortable_name", TEXT, lambda rng, key: f"{key}, User"),
        Column(
            "workflow_state", {"type": "string", "enum": list(states)}, lambda rng, key: states[key % 4], True
        ),
        Column("time_zone", TEXT, lambda rng, key: None if key % 3 else "Europe/Berlin"),
        Column("uuid", TEXT, lambda rng, key: f"{key:032x}", True),
        Column("locale", TEXT, lambda rng, key: None if key % 5 else "de"),
        Column("public", BOOL, lambda rng, key: key % 2 == 0),
        Column("created_at", TIME, lambda rng, key: iso(1.7e9 + key * 7.001), True),
        Column("updated_at", TIME, lambda rng, key: iso(1.71e9 + rng.randrange(10**7)), True),
    ]


def _wide_columns() -> list[Any]:
    from airflow_provider_canvas.testing.dap_tables import BOOL, INT64, TEXT, TIME, Column, iso

    enum = {"type": "string", "enum": ["red", "green", "blue"]}
    number = {"type": "number", "format": "float64"}
    kinds: list[tuple[str, dict[str, Any], Callable[[Any, int, int], Any]]] = [
        ("n", INT64, lambda rng, key, i: key * 31 + i),
        ("t", TEXT, lambda rng, key, i: f"text {i}:{key}\twith tab" if key % 50 == 0 else f"t{i}-{key}"),
        ("at", TIME, lambda rng, key, i: iso(1.6e9 + key * 11 + i)),
        ("b", BOOL, lambda rng, key, i: (key + i) % 3 == 0),
        ("e", enum, lambda rng, key, i: ("red", "green", "blue")[(key + i) % 3]),
        ("f", number, lambda rng, key, i: (key % 1000) / 8 + i),
    ]
    columns = []
    for index in range(60):
        prefix, schema, make = kinds[index % len(kinds)]

        def value(rng: Any, key: int, make: Any = make, index: int = index) -> Any:
            return None if (key + index) % 17 == 0 else make(rng, key, index)

        columns.append(Column(f"{prefix}_{index:02d}", schema, value))
    return columns


# The provider's child -------------------------------------------------------------------------------


def _child(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.dap_official child")
    parser.add_argument("variant", choices=["provider"])
    parser.add_argument("--location", type=Path, required=True)
    parser.add_argument("--dsn", required=True)
    parser.add_argument("--schema", required=True)
    parser.add_argument("--table", required=True)
    args = parser.parse_args(argv)

    import psycopg

    from airflow_provider_canvas.canvas_data.loading.load import DapTableLoader
    from airflow_provider_canvas.canvas_data.loading.state import DapTableFolder
    from airflow_provider_canvas.canvas_data.operators.pull import CanvasDataPullOperator

    op = CanvasDataPullOperator(
        task_id="pull", tables=[args.table], location=args.location, namespace="canvas",
        canvas_data_conn_id=CONN_ID, deferrable=False, poll_interval=0.2,
    )  # fmt: skip
    db = psycopg.connect(args.dsn)
    before = rss_mib()  # imports done and connected: what follows is the work's own
    with stopwatch() as pull:
        op.execute({})
    with stopwatch() as load:
        DapTableLoader(db, args.schema).load(DapTableFolder(args.location, "canvas", args.table))
    db.close()
    emit({"pull_seconds": pull["seconds"], "load_seconds": load["seconds"], "rss_before_mib": before})


if __name__ == "__main__":
    if sys.argv[1:2] == ["child"]:
        _child(sys.argv[2:])
    else:
        sys.exit("run the benchmarks with: python -m benchmarks.run --cases dap_official")
