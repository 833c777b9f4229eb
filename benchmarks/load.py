"""Case 3: loading an extract into PostgreSQL. ``BrightspaceDataSetsToPostgresOperator`` on a
1M-row extract vs ``psql \\copy`` of the same CSV into an unindexed table (the limit) vs the
reference client's approach (whole ZIP in memory, COPY into a temp table, INSERT ... ON CONFLICT).

Also here: the peak memory of pulling (download) and loading a 500 MB extract in one process, the
provider's operators vs the reference approach; the same pull and load as two tasks of a DAG run by a
real local Airflow, each task process reporting its own memory (the figure the target is judged on);
and a per-statement breakdown of the provider's load (which step costs what), measured with a timing
cursor around the same loader.
"""

from __future__ import annotations

import argparse
import functools
import json
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
from typing import TYPE_CHECKING, Any

from benchmarks._harness import (
    CLIENT_ID,
    CLIENT_SECRET,
    TOKEN_ENV,
    BenchError,
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
    postgres_connection_fields,
    progress,
    psql,
    python_child,
    ratio,
    rss_mib,
    run_child,
    spread,
    stopwatch,
)
from benchmarks.download import COLUMNS, rows_for, size_label

if TYPE_CHECKING:
    from airflow_provider_canvas.testing.local_airflow import LocalAirflow

BS_CONN_ID = "bench_brightspace"  # the name benchmarks.download's ``links`` child reads
PG_CONN_ID = "bench_postgres"
DATA_SET = "Users"
KEY = ["UserId"]
FULL_ROWS, QUICK_ROWS = 1_000_000, 20_000
#: Two sizes a decade apart: memory that does not grow with the extract is the point.
FULL_MEMORY_SIZES, QUICK_MEMORY_SIZES = (50_000_000, 500_000_000), (5_000_000,)
VARIANTS = ("operator", "psql \\copy", "reference")


def memory_data_set(size_bytes: int) -> str:
    return f"Users {size_label(size_bytes)}"


def run(workspace: Workspace, *, quick: bool, reps: int) -> CaseReport:
    rows = QUICK_ROWS if quick else FULL_ROWS
    memory_sizes = QUICK_MEMORY_SIZES if quick else FULL_MEMORY_SIZES
    seed = lms_seed(
        brightspace={
            "rate_limit_capacity": 10**9,
            "data_sets": [
                {"name": DATA_SET, "columns": COLUMNS, "rows_count": rows},
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
    names += tuple(f"profile{i}" for i in range(reps))
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
            profile_args = ["profile", "--zip", str(zip_path), "--dsn", url, "--schema"]
            profiles = [
                python_child("load", *profile_args, schemas[f"profile{i}"], timeout=timeout).result
                for i in range(reps)
            ]
            report.raw["profile"] = profiles
            report.tables.append(_profile_table(profiles, rows))
            csv_path.unlink()
            shutil.rmtree(zip_path.parent)

            memory = _memory(emulator, url, schemas, location, memory_sizes)
            report.raw["memory"] = memory[1]
            report.tables.append(memory[0])
            in_tasks = _memory_in_tasks(workspace, emulator, schemas["memory_tasks"], location, memory_sizes)
            report.raw["memory_in_tasks"] = in_tasks
            one_process = {size: r["operators"] for size, r in memory[1].items()}
            report.tables.append(_tasks_table(in_tasks, one_process))
            report.targets += _targets(samples, rows, in_tasks, max(memory_sizes))
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


def _rows_sample(seconds: float, rows: int, peak: float, **extra: float) -> Sample:
    return {"seconds": seconds, "rows_s": rows / seconds, "peak_rss_mib": peak, **extra}


def _operator(url: str, schema: str, location: Path, rows: int, timeout: float) -> Sample:
    psql(url, f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    args = ["operator", "--data-set", DATA_SET, "--location", str(location), "--schema", schema]
    child = python_child("load", *args, timeout=timeout)
    if child.result["rows"] != rows:
        raise RuntimeError(f"operator upserted {child.result['rows']} rows, expected {rows}")
    return _rows_sample(child.result["seconds"], rows, child.peak_rss_mib)


def _copy(url: str, schema: str, csv_path: Path, header: list[str], rows: int, timeout: float) -> Sample:
    columns = ", ".join(f'"{c}" text' for c in header)
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
    return _rows_sample(child.result["seconds"], rows, child.peak_rss_mib)


def _load_table(samples: dict[str, list[Sample]], rows: int, reps: int) -> Table:
    table = Table(
        f"3. Load {rows:,} rows into PostgreSQL (median of {reps}, alternating)",
        ["loader", "s", "rows/s (min-max)", "vs psql \\copy", "peak RSS MiB"],
        notes=[
            "operator: `BrightspaceDataSetsToPostgresOperator.execute` on the pulled extract, a first load: "
            "the ZIP streamed, COPY into the new table, ADD PRIMARY KEY, ledger row, in one transaction. "
            "The connection lookup is timed, but not the ORM import that a lookup outside a task pays "
            "once per process (~0.7 s; a task uses the Task SDK). 3b shows a later load's path too.",
            "psql \\copy: the CSV (unzipped beforehand, untimed) into a table without any index or key; "
            "wall time including psql's start-up.",
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
        )
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
            "added afterwards. next full: the same extract again as a newer full, into the keyed table: "
            "COPY into a staging table, key checks, de-duplication, delete of the rows the full lacks, "
            "upsert (here nothing changed, so no row is rewritten).",
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
        "3c. Download and load an extract in one process (one run each)",
        [
            "extract",
            "client",
            "rows",
            "connection lookup s",
            "download s",
            "load s",
            "peak RSS MiB",
            "of which connection lookup MiB",
            "RSS growth MiB",
        ],
        notes=[
            "operators: `BrightspaceDataSetsPullOperator` then `BrightspaceDataSetsToPostgresOperator` "
            "in one process, as one worker runs them; reference: `requests.get(...).content`, the CSV "
            "read out of the in-memory ZIP, COPY + upsert.",
            "connection lookup: the operators' first step, timed apart. Outside a task (as here) the "
            "provider reads connections through the ORM, whose first use imports every Airflow model; "
            "a task run by Airflow gets them through the Task SDK, but on LocalExecutor it starts with "
            "those models loaded anyway (forked from the scheduler; see 3d). It is part of the peak.",
            "RSS growth = peak minus the RSS after imports and the connection lookup, before the first "
            "byte: the transfer and the load.",
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
        results[size] = {
            client: {
                **child.result,
                "peak_rss_mib": child.peak_rss_mib,
                "rss_growth_mib": child.peak_rss_mib - child.result["rss_before_mib"],
            }
            for client, child in (("operators", ours), ("reference", theirs))
        }
        for client, r in results[size].items():
            table.add(
                size_label(size),
                client,
                f"{r['rows']:,}",
                fmt(r.get("lookup_seconds", float("nan"))),
                fmt(r["download_seconds"]),
                fmt(r["load_seconds"]),
                fmt(r["peak_rss_mib"]),
                fmt(r.get("rss_lookup_mib", float("nan"))),
                fmt(r["rss_growth_mib"]),
            )
    return table, results


# The same pull and load as Airflow tasks ------------------------------------------------------------

TASK_IDS = ("pull", "load")
#: The benchmark-only DAG file: constants first (see :func:`_write_tasks_dag`), then this body. Each
#: task's callbacks run in the task process (the supervisor forks it) and write what ``/proc`` says
#: about that process and about its parent, the supervisor.
_TASKS_DAG_BODY = '''

def _status(pid):
    """VmHWM and VmRSS of a process, in KiB."""
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    fields = (line.partition(":") for line in lines)
    return {key: int(value.split()[0]) for key, _, value in fields if key in ("VmHWM", "VmRSS")}


def _private_kib():
    """What this process holds alone (not shared with the supervisor it was forked from), in KiB."""
    lines = Path("/proc/self/smaps_rollup").read_text().splitlines()
    return sum(int(line.split()[1]) for line in lines if line.startswith(("Private_Clean", "Private_Dirty")))


def _recorder(moment):
    def record(context):
        ti, parent = context["ti"], os.getppid()
        payload = {
            "time": time.time(),
            "orm_imported": "airflow.models.taskinstance" in sys.modules,
            "pid": os.getpid(),
            "sid": os.getsid(0),
            "task_kib": {**_status("self"), "Private": _private_kib()},
            "supervisor_pid": parent,
            "supervisor_kib": _status(parent),
            "supervisor_cmdline": Path(f"/proc/{parent}/cmdline").read_bytes().replace(b"\\0", b" ").decode(),
        }
        (Path(OUT) / f"{ti.dag_id}.{ti.task_id}.{moment}.json").write_text(json.dumps(payload))

    return record


for dag_id, data_set in DATA_SETS.items():
    with DAG(dag_id=dag_id, schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"), catchup=False):
        callbacks = {"on_execute_callback": _recorder("start"), "on_success_callback": _recorder("end")}
        pull = BrightspaceDataSetsPullOperator(
            task_id="pull",
            data_sets=[data_set],
            location=LOCATION,
            brightspace_conn_id=BRIGHTSPACE_CONN_ID,
            retries=0,
            **callbacks,
        )
        load = BrightspaceDataSetsToPostgresOperator(
            task_id="load",
            data_sets=[data_set],
            location=LOCATION,
            postgres_conn_id=POSTGRES_CONN_ID,
            schema=SCHEMA,
            key_columns={data_set: KEY},
            retries=0,
            **callbacks,
        )
        pull >> load
'''
_TASKS_DAG_IMPORTS = '''"""Benchmark-only DAGs, written by benchmarks/load.py: pull >> load of an extract."""
import json
import os
import sys
import time
from pathlib import Path

import pendulum
from airflow.sdk import DAG

from airflow_provider_canvas.operators.brightspace import (
    BrightspaceDataSetsPullOperator,
    BrightspaceDataSetsToPostgresOperator,
)

'''


def _write_tasks_dag(dags: Path, out: Path, location: Path, schema: str, data_sets: dict[str, str]) -> None:
    """The DAG file: one DAG per extract (``data_sets``: DAG id -> data set), its constants inlined."""
    constants = {
        "OUT": str(out),
        "LOCATION": str(location),
        "SCHEMA": schema,
        "BRIGHTSPACE_CONN_ID": BS_CONN_ID,
        "POSTGRES_CONN_ID": PG_CONN_ID,
        "KEY": KEY,
        "DATA_SETS": data_sets,
    }
    lines = "".join(f"{name} = {value!r}\n" for name, value in constants.items())
    (dags / "canvas_bench_memory.py").write_text(_TASKS_DAG_IMPORTS + lines + _TASKS_DAG_BODY)


def _tasks_dag_id(size: int) -> str:
    return "canvas_bench_memory_" + size_label(size).replace(" ", "").lower()


def _memory_in_tasks(
    workspace: Workspace, emulator: EmulatorProcess, schema: str, location: Path, sizes: tuple[int, ...]
) -> dict[int, dict[str, Sample]]:
    """Pull >> load of each extract as a DAG run on a real local Airflow (LocalExecutor), one run each.

    The task processes report their own memory from their callbacks (see ``_TASKS_DAG_BODY``).
    """
    from airflow_provider_canvas.testing.local_airflow import LocalAirflow  # not in the measured children

    root = workspace.path("tasks", "x").parent
    dags, out = root / "dags", root / "memory"
    dags.mkdir()
    out.mkdir()
    _write_tasks_dag(dags, out, location, schema, {_tasks_dag_id(s): memory_data_set(s) for s in sizes})
    progress("3d: starting a local Airflow (scheduler, dag-processor, triggerer, api-server)")
    with LocalAirflow(root / "airflow-home", dags) as airflow:
        airflow.add_connection(
            BS_CONN_ID,
            "brightspace",
            host=emulator.url,
            login=CLIENT_ID,
            password=CLIENT_SECRET,
            extra=emulator.connection_extra("brightspace"),
        )
        airflow.add_connection(PG_CONN_ID, "postgres", **postgres_connection_fields(workspace.postgres_url))
        results: dict[int, dict[str, Sample]] = {}
        for size in sizes:
            psql(workspace.postgres_url, f"DROP SCHEMA IF EXISTS {schema} CASCADE")
            try:
                results[size] = _run_tasks_dag(airflow, size, out)
            finally:
                shutil.rmtree(location, ignore_errors=True)
    return results


def _run_tasks_dag(airflow: LocalAirflow, size: int, out: Path) -> dict[str, Sample]:
    """Trigger the DAG of ``size``, wait for success, return each task's memory (MiB) and time (s)."""
    dag_id, timeout = _tasks_dag_id(size), 300 + 2 * size / 1e6
    airflow.wait_for_dag(dag_id)
    run_id = airflow.trigger(dag_id)
    progress(f"3d: {dag_id} triggered, waiting up to {timeout:.0f} s")
    state = airflow.wait_for_run(dag_id, run_id, timeout=timeout)
    instances = {ti["task_id"]: ti for ti in airflow.task_instances(dag_id, run_id)}
    if state != "success":
        failed = [ti for ti in instances.values() if ti["try_number"] and ti["state"] != "success"]
        tails = [_log_tail(airflow, ti) for ti in failed]
        raise BenchError(f"3d: run {run_id} of {dag_id} ended {state}\n" + "\n".join(tails))
    progress(f"3d: {dag_id} succeeded")
    samples: dict[str, Sample] = {}
    for task_id in TASK_IDS:
        try:
            start, end = (
                json.loads((out / f"{dag_id}.{task_id}.{m}.json").read_text()) for m in ("start", "end")
            )
        except OSError as err:
            raise BenchError(
                f"3d: a callback of {task_id} wrote nothing ({err})\n{_log_tail(airflow, instances[task_id])}"
            ) from None
        _check_task_process(airflow, dag_id, task_id, start, end)
        samples[task_id] = {
            "peak_rss_mib": end["task_kib"]["VmHWM"] / 1024,
            "rss_start_mib": start["task_kib"]["VmRSS"] / 1024,
            "rss_end_mib": end["task_kib"]["VmRSS"] / 1024,
            "private_end_mib": end["task_kib"]["Private"] / 1024,
            "supervisor_rss_mib": end["supervisor_kib"]["VmRSS"] / 1024,
            "supervisor_hwm_mib": end["supervisor_kib"]["VmHWM"] / 1024,
            "seconds": float(instances[task_id]["duration"]),
            "execute_seconds": end["time"] - start["time"],
            "orm_imported_at_start": start["orm_imported"],
            "pid": end["pid"],
            "supervisor_pid": end["supervisor_pid"],
        }
    loaded = airflow.xcom(dag_id, run_id, "load")[memory_data_set(size)][0]["rows_upserted"]
    if loaded != rows_for(size):
        raise BenchError(f"3d: the load task upserted {loaded} rows, expected {rows_for(size)}")
    samples["load"]["rows"] = loaded
    return samples


def _check_task_process(
    airflow: LocalAirflow, dag_id: str, task_id: str, start: dict[str, Any], end: dict[str, Any]
) -> None:
    """Fail unless both callbacks ran in one task process: forked in the scheduler's session (by the
    LocalExecutor worker that supervises it), neither a component nor the supervisor itself."""
    pid = end["pid"]
    others = {process.pid for process in airflow.processes.values()} | {end["supervisor_pid"]}
    if start["pid"] != pid or end["sid"] != airflow.processes["scheduler"].pid or pid in others:
        raise BenchError(
            f"3d: {dag_id}.{task_id}: the callbacks did not run in one task process: {start} {end}"
        )


def _log_tail(airflow: LocalAirflow, ti: dict[str, Any], lines: int = 40) -> str:
    text = airflow.task_log(ti["dag_id"], ti["dag_run_id"], ti["task_id"], ti["try_number"])
    return f"--- {ti['task_id']} ({ti['state']}), last {lines} log lines:\n" + "\n".join(
        text.splitlines()[-lines:]
    )


def _tasks_table(in_tasks: dict[int, dict[str, Sample]], one_process: dict[int, Sample]) -> Table:
    table = Table(
        "3d. Pull and load an extract as Airflow tasks (LocalExecutor, one run each)",
        [
            "extract",
            "process",
            "rows",
            "task s",
            "execute s",
            "peak RSS MiB",
            "RSS at start MiB",
            "private at end MiB",
            "supervisor RSS MiB",
        ],
        notes=[
            "A DAG of two tasks, `BrightspaceDataSetsPullOperator` >> "
            "`BrightspaceDataSetsToPostgresOperator` (unchanged), run by a local Airflow 3 (scheduler, "
            "dag-processor, triggerer, api-server; LocalExecutor, SQLite metadata); the tasks get their "
            "connections through the Task SDK.",
            "peak RSS: `VmHWM` of the task process, read by its `on_success_callback` (after `execute` "
            "and the XCom push); RSS at start: its `VmRSS` in `on_execute_callback`, before `execute`; "
            "private at end: its `Private_Clean` + `Private_Dirty` (smaps_rollup) in `on_success_callback`. "
            "Both callbacks are checked to run in one process forked in the scheduler's session, not the "
            "supervisor.",
            "The supervisor (the LocalExecutor worker, forked from the scheduler) forks each task process: "
            "the kernel starts the child's high-water mark at its RSS at fork, and that RSS includes the "
            "pages it shares with the supervisor (copy-on-write). That is what a worker holds for the task, "
            "reported as is; the supervisor's own RSS (at the task's end) is context, not part of the "
            "task's figure.",
            "task s: the task instance's duration as Airflow records it (process start-up, DAG file parse "
            "and callbacks included); execute s: from `on_execute_callback` to `on_success_callback`.",
            "The 3c row is a diagnostic, not the target: one process with both operators' imports, which two "
            "tasks never stack, and the ORM connection lookup outside a task (3c: `of which connection "
            "lookup`), which no task makes.",
        ],
    )
    if all(tasks[task_id]["orm_imported_at_start"] for tasks in in_tasks.values() for task_id in TASK_IDS):
        table.notes.append(
            "A task makes no ORM lookup, but each task process starts with Airflow's ORM models imported "
            "(`airflow.models.taskinstance` in `sys.modules` when `execute` starts): pages it inherits "
            "from the supervisor, which the scheduler forked after importing them."
        )
    for size, tasks in in_tasks.items():
        rows = f"{tasks['load']['rows']:,}"
        for task_id in TASK_IDS:
            t = tasks[task_id]
            table.add(
                size_label(size),
                f"{task_id} task",
                rows,
                fmt(t["seconds"]),
                fmt(t["execute_seconds"]),
                fmt(t["peak_rss_mib"]),
                fmt(t["rss_start_mib"]),
                fmt(t["private_end_mib"]),
                fmt(t["supervisor_rss_mib"]),
            )
        if size in one_process:
            p = one_process[size]
            table.add(
                size_label(size),
                "both in one process (3c, diagnostic)",
                f"{p['rows']:,}",
                fmt(p["lookup_seconds"] + p["download_seconds"] + p["load_seconds"]),
                fmt(p["download_seconds"] + p["load_seconds"]),
                fmt(p["peak_rss_mib"]),
                "n/a",
                "n/a",
                "n/a",
            )
    return table


def _targets(
    samples: dict[str, list[Sample]], rows: int, in_tasks: dict[int, dict[str, Sample]], size: int
) -> list[Target]:
    ours, limit = median(samples["operator"], "rows_s"), median(samples["psql \\copy"], "rows_s")
    tasks = in_tasks[size]
    peak = max(tasks[task]["peak_rss_mib"] for task in TASK_IDS)
    return [
        Target(
            f"load >= 0.7x psql \\copy ({rows:,} rows)",
            f"{ours / limit:.2f}x ({fmt(ours)} vs {fmt(limit)} rows/s)",
            ours >= 0.7 * limit,
        ),
        Target(
            f"download + load of a {size_label(size)} extract < 150 MB peak, as Airflow tasks",
            "peak of the task processes (3d) "
            + ", ".join(f"{task} {fmt(tasks[task]['peak_rss_mib'])} MiB" for task in TASK_IDS),
            peak < 150,
        ),
    ]


# Children -------------------------------------------------------------------------------------------


def _pull(name: str, location: str) -> dict[str, Any]:
    from airflow_provider_canvas.operators.brightspace import BrightspaceDataSetsPullOperator

    pull = BrightspaceDataSetsPullOperator(
        task_id="pull", data_sets=[name], location=location, brightspace_conn_id=BS_CONN_ID
    )
    pulled = pull.execute(context={})  # type: ignore[arg-type]
    return pulled[name][0]


def _load_operator(name: str, location: str, schema: str) -> Any:
    from airflow_provider_canvas.operators.brightspace import BrightspaceDataSetsToPostgresOperator

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
        from airflow_provider_canvas.tokens.metadata import get_connection

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

        import airflow_provider_canvas.loading.postgres  # noqa: F401
        from airflow_provider_canvas.tokens.metadata import get_connection

        imported = rss_mib()
        # The operators' first step, done here so that it is reported apart from the transfer: outside
        # a task the connections come from the ORM, whose first use imports every Airflow model. A
        # real task gets them through the Task SDK (the supervisor asks the API server) instead.
        with stopwatch() as lookup:
            get_connection(BS_CONN_ID)
            get_connection(PG_CONN_ID)
        before = rss_mib()
        with stopwatch() as download:
            _pull(args.data_set, args.location)
        with stopwatch() as load:
            loaded = operator.execute(context={})
        emit(
            {
                "download_seconds": download["seconds"],
                "load_seconds": load["seconds"],
                "rows": loaded[args.data_set][0]["rows_upserted"],
                "rss_before_mib": before,
                "lookup_seconds": lookup["seconds"],
                "rss_lookup_mib": before - imported,
            }
        )
    else:
        emit(_profile(Path(args.zip), args.dsn, args.schema))


def _slug(name: str) -> str:
    from airflow_provider_canvas.loading.pull_state import slug

    return slug(name)


def _profile(zip_path: Path, dsn: str, schema: str) -> dict[str, Any]:
    """The loader the operator uses, on a connection whose cursor times each statement."""
    import psycopg

    from airflow_provider_canvas.loading.postgres import PostgresExtractLoader

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
                loader.load(
                    zip_path, "users", KEY, extract_id=extract_id, bds_type="Full", created_at=created
                )
            loads.append({"name": name, "seconds": timing["seconds"], "steps": list(steps)})
    finally:
        connection.close()
    return {"loads": loads}


if __name__ == "__main__":
    if sys.argv[1:2] == ["child"]:
        _child(sys.argv[2:])
    else:
        sys.exit("run the benchmarks with: python -m benchmarks.run")
