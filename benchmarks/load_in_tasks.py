"""Case 3d: the pull and load of an extract as a two-task DAG on a real local Airflow (LocalExecutor).

The unchanged ``BrightspaceDataSetsPullOperator`` >> ``BrightspaceDataSetsToPostgresOperator`` in a
benchmark-only DAG file; each task's callbacks record what ``/proc`` says about the task process and
its supervisor, so the peak is the one a worker really holds. Called by :mod:`benchmarks.load`.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchmarks._harness import (
    CLIENT_ID,
    CLIENT_SECRET,
    BenchError,
    EmulatorProcess,
    Sample,
    Table,
    Workspace,
    fmt,
    postgres_connection_fields,
    progress,
    psql,
)
from benchmarks.download import rows_for, size_label

if TYPE_CHECKING:
    from airflow_provider_canvas.testing.local_airflow import LocalAirflow


# The DAG file ------------------------------------------------------------

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

from airflow_provider_canvas.brightspace.operators.data_sets import (
    BrightspaceDataSetsPullOperator,
    BrightspaceDataSetsToPostgresOperator,
)

'''


def _write_tasks_dag(dags: Path, out: Path, constants: dict[str, Any]) -> None:
    """The DAG file: one DAG per extract (``DATA_SETS``: DAG id -> data set), its constants inlined."""
    constants = {"OUT": str(out), **constants}
    lines = "".join(f"{name} = {value!r}\n" for name, value in constants.items())
    (dags / "canvas_bench_memory.py").write_text(_TASKS_DAG_IMPORTS + lines + _TASKS_DAG_BODY)


def _tasks_dag_id(size: int) -> str:
    return "canvas_bench_memory_" + size_label(size).replace(" ", "").lower()


def measure(
    workspace: Workspace,
    emulator: EmulatorProcess,
    *,
    schema: str,
    location: Path,
    data_sets: Mapping[int, str],
    conn_ids: tuple[str, str],
    key: list[str],
) -> dict[int, dict[str, Sample]]:
    """Pull >> load of each extract (``data_sets``: size -> data set name) as a DAG run on a real
    local Airflow (LocalExecutor), one run each; ``conn_ids`` are the Brightspace and postgres ones.

    The task processes report their own memory from their callbacks (see ``_TASKS_DAG_BODY``).
    """
    from airflow_provider_canvas.testing.local_airflow import LocalAirflow  # not in the measured children

    brightspace_conn_id, postgres_conn_id = conn_ids
    root = workspace.path("tasks", "x").parent
    dags, out = root / "dags", root / "memory"
    dags.mkdir()
    out.mkdir()
    constants = {
        "LOCATION": str(location),
        "SCHEMA": schema,
        "BRIGHTSPACE_CONN_ID": brightspace_conn_id,
        "POSTGRES_CONN_ID": postgres_conn_id,
        "KEY": key,
        "DATA_SETS": {_tasks_dag_id(size): name for size, name in data_sets.items()},
    }
    _write_tasks_dag(dags, out, constants)
    progress("3d: starting a local Airflow (scheduler, dag-processor, triggerer, api-server)")
    with LocalAirflow(root / "airflow-home", dags) as airflow:
        airflow.add_connection(
            brightspace_conn_id,
            "brightspace",
            host=emulator.url,
            login=CLIENT_ID,
            password=CLIENT_SECRET,
            extra=emulator.connection_extra("brightspace"),
        )
        airflow.add_connection(
            postgres_conn_id, "postgres", **postgres_connection_fields(workspace.postgres_url)
        )
        results: dict[int, dict[str, Sample]] = {}
        for size, name in data_sets.items():
            psql(workspace.postgres_url, f"DROP SCHEMA IF EXISTS {schema} CASCADE")
            try:
                results[size] = _run_tasks_dag(airflow, size, name, out)
            finally:
                shutil.rmtree(location, ignore_errors=True)
    return results


def _run_tasks_dag(airflow: LocalAirflow, size: int, data_set: str, out: Path) -> dict[str, Sample]:
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
    loaded = airflow.xcom(dag_id, run_id, "load")[data_set][0]["rows_upserted"]
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


def table(in_tasks: dict[int, dict[str, Sample]], one_process: dict[int, Sample]) -> Table:
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
            "growth MiB",
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
            "supervisor. growth: peak minus RSS at start, what the task's own code added (the load task's "
            "includes importing `PostgresHook`, psycopg 3 and psycopg2: ~12-17 MiB, the same at any size).",
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
                fmt(t["peak_rss_mib"] - t["rss_start_mib"]),
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
                fmt(max(p["download_growth_mib"], p["load_growth_mib"])),
                "n/a",
                "n/a",
            )
    return table
