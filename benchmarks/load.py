"""Case 3: loading an extract into PostgreSQL. ``BrightspaceDataSetsToPostgresOperator`` on a
1M-row extract into a typed table vs ``psql \\copy`` of the same CSV into the same typed table without
index or key (the limit) vs the reference client's approach (whole ZIP in memory, COPY into a temp
table, INSERT ... ON CONFLICT).

Also here: a per-statement breakdown of a first load and of a newer full into the keyed table, at
1M and 10M rows (how time grows with rows), measured with a timing cursor around the same loader;
the memory growth of pulling (download) and loading 100 MB and 1 GB extracts in one process, the
provider's operators vs the reference approach; the same pull and load as two tasks of a DAG run by a
real local Airflow, each task process reporting its own memory.
"""

from __future__ import annotations

import argparse
import functools
import os
import shutil
import statistics
import sys
import time
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from benchmarks import load_in_tasks
from benchmarks._harness import (
    TOKEN_ENV,
    CaseReport,
    EmulatorProcess,
    Sample,
    Table,
    Target,
    Workspace,
    alternate,
    emit,
    fmt,
    lms_seed,
    median,
    peak_mib,
    psql,
    python_child,
    ratio,
    reset_peak,
    rss_mib,
    run_child,
    spread,
    stopwatch,
)
from benchmarks.download import COLUMNS, rows_for, size_label

BS_CONN_ID = "bench_brightspace"  # the name benchmarks.download's ``links`` child reads
PG_CONN_ID = "bench_postgres"
DATA_SET = "Users"
KEY = ["UserId"]
FULL_ROWS, QUICK_ROWS = 1_000_000, 20_000
#: A newer full vs a first load at these sizes (how time grows with rows), twice each.
FULL_SCALE_ROWS, QUICK_SCALE_ROWS = (1_000_000, 10_000_000), (20_000,)
#: Two sizes a decade apart: memory that does not grow with the extract is the point.
FULL_MEMORY_SIZES, QUICK_MEMORY_SIZES = (100_000_000, 1_000_000_000), (5_000_000,)
MEMORY_GROWTH_MIB = 8  # target: growth over the process's own baseline at 1 GB
VARIANTS = ("operator", "psql \\copy", "reference")


def memory_data_set(size_bytes: int) -> str:
    return f"Users {size_label(size_bytes)}"


def scale_data_set(rows: int) -> str:
    return DATA_SET if rows in (FULL_ROWS, QUICK_ROWS) else f"Users {rows:,} rows"


def typed_columns(header: list[str]) -> str:
    """The typed table the operator creates for the catalogue's Users (without its key)."""
    from airflow_provider_canvas.brightspace.loading.catalogue import column_types_for

    types = column_types_for(DATA_SET)
    return ", ".join(f'"{c}" {types.get(c, "text")}' for c in header)


def run(workspace: Workspace, *, quick: bool, reps: int) -> CaseReport:
    rows = QUICK_ROWS if quick else FULL_ROWS
    memory_sizes = QUICK_MEMORY_SIZES if quick else FULL_MEMORY_SIZES
    scale_rows = QUICK_SCALE_ROWS if quick else FULL_SCALE_ROWS
    scale_reps = 1 if quick else max(2, reps)
    seed = lms_seed(
        brightspace={
            "rate_limit_capacity": 10**9,
            "data_sets": [
                {"name": DATA_SET, "columns": COLUMNS, "rows_count": rows},
                *(
                    {"name": scale_data_set(n), "columns": COLUMNS, "rows_count": n}
                    for n in scale_rows
                    if scale_data_set(n) != DATA_SET
                ),
                *(
                    {"name": memory_data_set(size), "columns": COLUMNS, "rows_count": rows_for(size)}
                    for size in memory_sizes
                ),
            ],
        }
    )
    url = workspace.postgres_url
    prefix = f"bench_{os.getpid()}"
    names = (*VARIANTS, "memory", "memory_reference", "memory_tasks")
    names += tuple(f"profile{i}" for i in range(max(reps, scale_reps)))
    schemas = {v: f"{prefix}_{i}" for i, v in enumerate(names)}
    report = CaseReport()
    with EmulatorProcess(workspace, "load", seed) as emulator:
        workspace.lms_connection(BS_CONN_ID, "brightspace", emulator)
        workspace.postgres_connection(PG_CONN_ID)
        location = workspace.path("bds", "x").parent
        try:
            pulled = python_child(
                "load", "pull", "--data-set", DATA_SET, "--location", str(location), timeout=600
            )
            zip_path = location / pulled.result["file"]
            csv_path = workspace.path("users.csv")
            _unzip(zip_path, csv_path)
            header = _header(csv_path)
            timeout = 120 + rows / 2_000  # at least 2,000 rows/s, or it is a failure
            variants: list[tuple[str, Callable[[], Sample]]] = [
                ("operator", functools.partial(_operator, url, schemas["operator"], location, rows, timeout)),
                (
                    "psql \\copy",
                    functools.partial(_copy, url, schemas["psql \\copy"], csv_path, header, rows, timeout),
                ),
                (
                    "reference",
                    functools.partial(_reference, url, schemas["reference"], zip_path, rows, timeout),
                ),
            ]
            samples = alternate(variants, reps)
            report.raw["load"] = samples
            report.tables.append(_load_table(samples, rows, reps))
            csv_path.unlink()
            scale = _scale(url, schemas, location, zip_path, rows, scale_rows, scale_reps)
            report.raw["scale"] = {str(n): runs for n, runs in scale.items()}
            report.tables.append(_profile_table(scale[rows], rows))
            report.tables.append(_scale_table(scale))
            shutil.rmtree(location, ignore_errors=True)

            memory = _memory(emulator, url, schemas, location, memory_sizes)
            report.raw["memory"] = memory[1]
            report.tables.append(memory[0])
            in_tasks = load_in_tasks.measure(
                workspace,
                emulator,
                schema=schemas["memory_tasks"],
                location=location,
                data_sets={size: memory_data_set(size) for size in memory_sizes},
                conn_ids=(BS_CONN_ID, PG_CONN_ID),
                key=KEY,
            )
            report.raw["memory_in_tasks"] = in_tasks
            one_process = {size: r["operators"] for size, r in memory[1].items()}
            report.tables.append(load_in_tasks.table(in_tasks, one_process))
            report.targets += _targets(samples, rows, scale, memory[1])
        finally:
            psql(url, *(f"DROP SCHEMA IF EXISTS {s} CASCADE" for s in schemas.values()))
            shutil.rmtree(location, ignore_errors=True)
    return report


def _unzip(zip_path: Path, csv_path: Path) -> None:
    with zipfile.ZipFile(zip_path) as archive:
        member = archive.namelist()[0]
        with archive.open(member) as source, open(csv_path, "wb") as out:
            shutil.copyfileobj(source, out, 2**20)


def _header(csv_path: Path) -> list[str]:
    with open(csv_path, encoding="utf-8-sig") as handle:
        return handle.readline().strip().split(",")


def _rows_sample(seconds: float, rows: int, peak: float, before: float | None = None) -> Sample:
    sample = {"seconds": seconds, "rows_s": rows / seconds, "peak_rss_mib": peak}
    return sample if before is None else {**sample, "rss_growth_mib": peak - before}


def _operator(url: str, schema: str, location: Path, rows: int, timeout: float) -> Sample:
    psql(url, f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    args = ["operator", "--data-set", DATA_SET, "--location", str(location), "--schema", schema]
    child = python_child("load", *args, timeout=timeout)
    if child.result["rows"] != rows:
        raise RuntimeError(f"operator upserted {child.result['rows']} rows, expected {rows}")
    return _rows_sample(child.result["seconds"], rows, child.peak_rss_mib, child.result["rss_before_mib"])


def _copy(url: str, schema: str, csv_path: Path, header: list[str], rows: int, timeout: float) -> Sample:
    columns = typed_columns(header)
    psql(url, f"DROP SCHEMA IF EXISTS {schema} CASCADE", f"CREATE SCHEMA {schema}",
         f"CREATE TABLE {schema}.users ({columns})")  # fmt: skip
    command = f"\\copy {schema}.users FROM '{csv_path}' WITH (FORMAT csv, HEADER true)"
    run = run_child(["psql", url, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-c", command], timeout=timeout)
    counted = int(psql(url, f"SELECT count(*) FROM {schema}.users").strip())
    if counted != rows:
        raise RuntimeError(f"psql \\copy loaded {counted} rows, expected {rows}")
    return _rows_sample(run.wall_seconds, rows, run.peak_rss_mib)


def _reference(url: str, schema: str, zip_path: Path, rows: int, timeout: float) -> Sample:
    psql(url, f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    args = ["reference", "--zip", str(zip_path), "--dsn", url, "--schema", schema]
    child = python_child("load", *args, timeout=timeout)
    if child.result["rows"] != rows:
        raise RuntimeError(f"reference upserted {child.result['rows']} rows, expected {rows}")
    return _rows_sample(child.result["seconds"], rows, child.peak_rss_mib, child.result["rss_before_mib"])


def _load_table(samples: dict[str, list[Sample]], rows: int, reps: int) -> Table:
    table = Table(
        f"3. Load {rows:,} rows into PostgreSQL (median of {reps}, alternating)",
        ["loader", "s", "rows/s (min-max)", "vs psql \\copy", "peak RSS MiB", "RSS growth MiB"],
        notes=[
            "operator: `BrightspaceDataSetsToPostgresOperator.execute` on the pulled extract, a first load: "
            "the ZIP streamed, COPY into the new typed table, ADD PRIMARY KEY, ledger row, in one "
            "transaction. "
            "The connection lookup is timed, but not the ORM import that a lookup outside a task pays "
            "once per process (~0.7 s; a task uses the Task SDK). 3b shows a later load's path too.",
            "psql \\copy: the CSV (unzipped beforehand, untimed) into the same typed table (the catalogue's "
            "Users types) without any index or key; wall time including psql's start-up.",
            "reference: the bds-headless-client-example approach re-implemented in "
            "`benchmarks/reference_client.py`: ZIP read whole into memory, COPY into a temp table, "
            "INSERT ... ON CONFLICT DO UPDATE into a table with the key.",
        ],
    )
    baseline = median(samples["psql \\copy"], "rows_s")
    for variant in VARIANTS:
        s = samples[variant]
        rate = median(s, "rows_s")
        table.add(
            variant,
            fmt(median(s, "seconds")),
            fmt(rate) + (f" ({spread(s, 'rows_s')})" if reps > 1 else ""),
            ratio(rate, baseline),
            fmt(median(s, "peak_rss_mib")),
            fmt(median(s, "rss_growth_mib")) if "rss_growth_mib" in s[0] else "n/a",
        )
    return table


def _scale(
    url: str,
    schemas: dict[str, str],
    location: Path,
    zip_path: Path,
    rows: int,
    sizes: tuple[int, ...],
    reps: int,
) -> dict[int, list[dict[str, Any]]]:
    """A first load then a newer full of the same extract, at each size, ``reps`` times (fresh schema)."""
    results: dict[int, list[dict[str, Any]]] = {}
    for size in sizes:
        path = zip_path
        if size != rows:
            pulled = python_child(
                "load", "pull", "--data-set", scale_data_set(size), "--location", str(location), timeout=900
            )
            path = location / pulled.result["file"]
        timeout = 300 + size / 10_000  # at least 10,000 rows/s for both loads
        runs = []
        for i in range(reps):
            schema = schemas[f"profile{i}"]
            psql(url, f"DROP SCHEMA IF EXISTS {schema} CASCADE")
            args = ["profile", "--zip", str(path), "--dsn", url, "--schema", schema]
            runs.append(python_child("load", *args, timeout=timeout).result)
            psql(url, f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        results[size] = runs
        if path != zip_path:
            path.unlink()
    return results


def _scale_table(scale: dict[int, list[dict[str, Any]]]) -> Table:
    table = Table(
        "3e. A newer full vs a first load of the same size, into a typed keyed table (each run)",
        [
            "rows",
            "run",
            "first load s",
            "newer full s",
            "newer full / first load",
            "first load rows/s",
            "newer full rows/s",
        ],
        notes=[
            "Each run in a fresh schema and process: `PostgresExtractLoader.load` of the extract as a "
            "first load (CREATE TABLE, COPY FREEZE, ADD PRIMARY KEY), then of the same extract as a newer "
            "full (method `replace`: snapshot of the keys, TRUNCATE, COPY FREEZE, primary key rebuilt, "
            "count of vanished keys), each one transaction with its ledger row. Users columns typed from "
            "the catalogue (integer key).",
        ],
    )
    for size, runs in scale.items():
        for i, run in enumerate(runs, 1):
            first, newer = (load["seconds"] for load in run["loads"])
            table.add(f"{size:,}", i, fmt(first), fmt(newer), f"{newer / first:.2f}x", fmt(size / first),
                      fmt(size / newer))  # fmt: skip
    return table


def _profile_table(profiles: list[dict[str, Any]], rows: int) -> Table:
    """Median time of each statement over the profiled runs (they run the same statements in order)."""
    table = Table(
        f"3b. Where the loader spends its time on {rows:,} rows (median of {len(profiles)} runs)",
        ["load", "step (SQL statement)", "s", "share"],
        notes=[
            "The same `PostgresExtractLoader.load` the operator calls, on a psycopg 3 connection whose "
            "cursor times every statement; `other` is commit and Python outside statements.",
            "first load: the table does not exist yet, so the CSV is COPYed straight into it and the key "
            "added afterwards. next full: the same extract again as a newer full into the keyed table "
            "(method `replace`): the keys copied aside, TRUNCATE, the key dropped, COPY FREEZE, the key "
            "rebuilt, the keys no longer present counted (rows_deleted).",
        ],
    )
    for index, load in enumerate(profiles[0]["loads"]):
        runs = [p["loads"][index] for p in profiles]
        total = statistics.median(r["seconds"] for r in runs)
        steps = [
            (label, statistics.median(r["steps"][i][1] for r in runs))
            for i, (label, _) in enumerate(load["steps"])
        ]
        for label, seconds in steps:
            table.add(load["name"], label, fmt(seconds), f"{100 * seconds / total:.0f}%")
        other = max(0.0, total - sum(seconds for _, seconds in steps))
        table.add(load["name"], "other (commit, Python)", fmt(other), f"{100 * other / total:.0f}%")
        table.add(load["name"], "**total**", fmt(total), "100%")
    return table


def _memory(
    emulator: EmulatorProcess,
    url: str,
    schemas: dict[str, str],
    location: Path,
    sizes: tuple[int, ...],
) -> tuple[Table, dict[int, dict[str, Sample]]]:
    """Pull + load of a big extract in one process: the provider's operators, then the reference."""
    token = emulator.tokens["brightspace"]["bench"]["access_token"]
    links = python_child("download", "links", timeout=120).result
    table = Table(
        "3c. Download and load an extract in one process: memory growth over its baseline (one run each)",
        [
            "extract",
            "client",
            "rows",
            "download s",
            "load s",
            "baseline RSS MiB",
            "download growth MiB",
            "load growth MiB",
            "peak RSS MiB",
        ],
        notes=[
            "operators: `BrightspaceDataSetsPullOperator` then `BrightspaceDataSetsToPostgresOperator` "
            "in one process, as one worker runs them; reference: `requests.get(...).content`, the CSV "
            "read out of the in-memory ZIP, COPY + upsert.",
            "connection lookup: the operators' first step, timed apart. Outside a task (as here) the "
            "provider reads connections through the ORM, whose first use imports every Airflow model; "
            "a task run by Airflow gets them through the Task SDK, but on LocalExecutor it starts with "
            "those models loaded anyway (forked from the scheduler; see 3d). It is part of the peak.",
            "baseline: the process's RSS after imports and the connection lookup, before the first byte "
            "(a task process starts near 144 MiB before our code runs, 3d). download growth: `VmHWM` after "
            "the pull minus the baseline; the high-water mark is then restarted (`/proc/self/clear_refs` 5) "
            "and load growth is `VmHWM` after the load minus the RSS before it. The reference client does "
            "both in one step: its growth is shown under download and load alike.",
        ],
    )
    results: dict[int, dict[str, Sample]] = {}
    for size in sizes:
        name = memory_data_set(size)
        timeout = 300 + size / 1e6
        psql(url, *(f"DROP SCHEMA IF EXISTS {schemas[s]} CASCADE" for s in ("memory", "memory_reference")))
        args = [
            "pull-and-load",
            "--data-set",
            name,
            "--location",
            str(location),
            "--schema",
            schemas["memory"],
        ]
        ours = python_child("load", *args, timeout=timeout)
        shutil.rmtree(location, ignore_errors=True)
        args = ["reference-pull-and-load", "--url", links[name]["link"], "--dsn", url]
        args += ["--schema", schemas["memory_reference"]]
        theirs = python_child("load", *args, timeout=timeout, env={TOKEN_ENV: token})
        growth = theirs.peak_rss_mib - theirs.result["rss_before_mib"]
        results[size] = {
            "operators": {**ours.result, "peak_rss_mib": ours.peak_rss_mib},
            "reference": {
                **theirs.result,
                "peak_rss_mib": theirs.peak_rss_mib,
                "download_growth_mib": growth,
                "load_growth_mib": growth,
            },
        }
        for client, r in results[size].items():
            table.add(
                size_label(size),
                client,
                f"{r['rows']:,}",
                fmt(r["download_seconds"]),
                fmt(r["load_seconds"]),
                fmt(r["rss_before_mib"]),
                fmt(r["download_growth_mib"]),
                fmt(r["load_growth_mib"]),
                fmt(r["peak_rss_mib"]),
            )
    return table, results


def _targets(
    samples: dict[str, list[Sample]],
    rows: int,
    scale: dict[int, list[dict[str, Any]]],
    memory: dict[int, dict[str, Sample]],
) -> list[Target]:
    ours, limit = median(samples["operator"], "rows_s"), median(samples["psql \\copy"], "rows_s")
    targets = [
        Target(
            f"typed load >= 0.8x psql \\copy into the same typed table ({rows:,} rows)",
            f"{ours / limit:.2f}x ({fmt(ours)} vs {fmt(limit)} rows/s)",
            ours >= 0.8 * limit,
        )
    ]
    for size, runs in scale.items():
        ratios = [run["loads"][1]["seconds"] / run["loads"][0]["seconds"] for run in runs]
        targets.append(
            Target(
                f"newer full <= 1.3x first load ({size:,} rows)",
                ", ".join(f"{r:.2f}x" for r in ratios) + f" ({len(ratios)} runs)",
                max(ratios) <= 1.3,
            )
        )
    small, large = min(memory), max(memory)
    for step in ("download", "load"):
        at_small, at_large = (memory[size]["operators"][f"{step}_growth_mib"] for size in (small, large))
        at, big = size_label(small), size_label(large)
        targets.append(
            Target(
                f"{step} memory growth flat in extract size, <= {MEMORY_GROWTH_MIB} MiB at {big}",
                f"{fmt(at_small)} MiB at {at}, {fmt(at_large)} MiB at {big} (3c)",
                at_large <= MEMORY_GROWTH_MIB and at_large <= at_small + 2,
            )
        )
    return targets


# Children -------------------------------------------------------------------------------------------


def _pull(name: str, location: str) -> dict[str, Any]:
    from airflow_provider_canvas.brightspace.operators.data_sets import BrightspaceDataSetsPullOperator

    pull = BrightspaceDataSetsPullOperator(
        task_id="pull", data_sets=[name], location=location, brightspace_conn_id=BS_CONN_ID
    )
    pulled = pull.execute(context={})  # type: ignore[arg-type]
    return pulled[name][0]


def _load_operator(name: str, location: str, schema: str) -> Any:
    from airflow_provider_canvas.brightspace.operators.data_sets import BrightspaceDataSetsToPostgresOperator

    return BrightspaceDataSetsToPostgresOperator(
        task_id="load",
        data_sets=[name],
        location=location,
        postgres_conn_id=PG_CONN_ID,
        schema=schema,
        key_columns={name: KEY},
    )


def _child(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.load child")
    parser.add_argument(
        "variant",
        choices=["pull", "operator", "reference", "profile", "pull-and-load", "reference-pull-and-load"],
    )
    parser.add_argument("--data-set", default=DATA_SET)
    parser.add_argument("--location")
    parser.add_argument("--schema")
    parser.add_argument("--zip")
    parser.add_argument("--dsn")
    parser.add_argument("--url")
    args = parser.parse_args(argv)
    variant = args.variant

    if variant == "reference":
        from benchmarks.reference_client import load_zip_bytes

        before = rss_mib()
        with stopwatch() as timing:
            rows = load_zip_bytes(Path(args.zip).read_bytes(), args.dsn, args.schema, "users", KEY)
        emit({"seconds": timing["seconds"], "rows": rows, "rss_before_mib": before})
    elif variant == "reference-pull-and-load":
        from benchmarks.reference_client import download_buffered, load_zip_bytes

        before = rss_mib()
        with stopwatch() as download:
            body = download_buffered(args.url, os.environ[TOKEN_ENV])
        with stopwatch() as load:
            rows = load_zip_bytes(body, args.dsn, args.schema, "users", KEY)
        emit(
            {
                "download_seconds": download["seconds"],
                "load_seconds": load["seconds"],
                "rows": rows,
                "rss_before_mib": before,
            }
        )
    elif variant == "pull":
        entry = _pull(args.data_set, args.location)
        emit({"file": str(Path(_slug(args.data_set)) / entry["file"])})
    elif variant == "operator":
        from airflow_provider_canvas.common.airflow_access import get_connection

        operator = _load_operator(args.data_set, args.location, args.schema)
        # Outside a task the first connection lookup imports every Airflow model through the ORM
        # (~0.7 s, once per process); a task gets connections through the Task SDK instead. Pay that
        # import before the clock starts: the operator's own lookup, timed, is then a plain query.
        get_connection(PG_CONN_ID)
        before = rss_mib()
        with stopwatch() as timing:
            loaded = operator.execute(context={})
        emit(
            {
                "seconds": timing["seconds"],
                "rows": loaded[args.data_set][0]["rows_upserted"],
                "rss_before_mib": before,
            }
        )
    elif variant == "pull-and-load":
        operator = _load_operator(args.data_set, args.location, args.schema)
        # What execute imports on first use: import costs are not the transfer's memory.
        import airflow.providers.postgres.hooks.postgres  # noqa: F401

        import airflow_provider_canvas.brightspace.loading.postgres  # noqa: F401
        from airflow_provider_canvas.common.airflow_access import get_connection

        imported = rss_mib()
        # The operators' first step, done here so that it is reported apart from the transfer: outside
        # a task the connections come from the ORM, whose first use imports every Airflow model. A
        # real task gets them through the Task SDK (the supervisor asks the API server) instead.
        with stopwatch() as lookup:
            get_connection(BS_CONN_ID)
            get_connection(PG_CONN_ID)
        before = rss_mib()
        reset_peak()
        with stopwatch() as download:
            _pull(args.data_set, args.location)
        download_growth = peak_mib() - before
        before_load = rss_mib()
        reset_peak()  # the load's own high-water mark, not the download's
        with stopwatch() as load:
            loaded = operator.execute(context={})
        emit(
            {
                "download_seconds": download["seconds"],
                "load_seconds": load["seconds"],
                "rows": loaded[args.data_set][0]["rows_upserted"],
                "rss_before_mib": before,
                "download_growth_mib": download_growth,
                "load_growth_mib": peak_mib() - before_load,
                "lookup_seconds": lookup["seconds"],
                "rss_lookup_mib": before - imported,
            }
        )
    else:
        emit(_profile(Path(args.zip), args.dsn, args.schema))


def _slug(name: str) -> str:
    from airflow_provider_canvas.brightspace.loading.pull_state import slug

    return slug(name)


def _profile(zip_path: Path, dsn: str, schema: str) -> dict[str, Any]:
    """The loader the operator uses, on a connection whose cursor times each statement."""
    import psycopg

    from airflow_provider_canvas.brightspace.loading.catalogue import column_types_for
    from airflow_provider_canvas.brightspace.loading.postgres import PostgresExtractLoader

    steps: list[tuple[str, float]] = []

    def label(query: Any, cursor: psycopg.Cursor) -> str:
        text = query.as_string(cursor) if hasattr(query, "as_string") else str(query)
        text = " ".join(text.split()).replace(f'"{schema}".', "")
        return text if len(text) <= 90 else text[:87] + "..."

    class TimingCursor(psycopg.Cursor):
        def execute(self, query: Any, params: Any = None, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return super().execute(query, params, **kwargs)
            finally:
                steps.append((label(query, self), time.perf_counter() - started))

        @contextmanager
        def copy(self, statement: Any, *args: Any, **kwargs: Any) -> Iterator[Any]:
            started = time.perf_counter()
            with super().copy(statement, *args, **kwargs) as copy:
                yield copy
            steps.append((label(statement, self) + " (streaming the CSV)", time.perf_counter() - started))

    first = datetime(2026, 11, 1, tzinfo=timezone.utc)
    loads = []
    connection = psycopg.connect(dsn, cursor_factory=TimingCursor)
    try:
        loader = PostgresExtractLoader(connection, schema)
        loader.ensure_ledger()
        for name, extract_id, created in (
            ("first load", "1", first),
            ("next full", "2", first + timedelta(7)),
        ):
            steps.clear()
            with stopwatch() as timing:
                result = loader.load(
                    zip_path, "users", KEY, extract_id=extract_id, bds_type="Full", created_at=created,
                    column_types=column_types_for(DATA_SET),
                )  # fmt: skip
            if result.method != ("create" if extract_id == "1" else "replace"):
                raise RuntimeError(f"the {name} took the {result.method} path")
            loads.append({"name": name, "seconds": timing["seconds"], "steps": list(steps)})
    finally:
        connection.close()
    return {"loads": loads}


if __name__ == "__main__":
    if sys.argv[1:2] == ["child"]:
        _child(sys.argv[2:])
    else:
        sys.exit("run the benchmarks with: python -m benchmarks.run")
