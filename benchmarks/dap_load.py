"""Case dap_load: a Canvas Data 2 snapshot of 1M rows into PostgreSQL, typed from DAP's JSON schema.

``DapTableLoader.load`` on a pulled folder (4 gzip JSON Lines files, ``state.json``, the schema) vs
``psql \\copy`` of the same rows as TSV into the same typed table (the limit; the TSV is made
beforehand, untimed) vs PostgreSQL doing the JSON work (each line COPYed into a jsonb staging
table, then ``INSERT ... SELECT`` through ``jsonb_populate_record``): the alternative the loader
was measured against. Then the loader's memory growth at a tenth of the rows: flat means the same.
"""

from __future__ import annotations

import argparse
import functools
import gzip
import shutil
import sys
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from benchmarks._harness import (
    CaseReport,
    Sample,
    Table,
    Target,
    Workspace,
    alternate,
    emit,
    fmt,
    median,
    progress,
    psql,
    python_child,
    ratio,
    rss_mib,
    run_child,
    spread,
    stopwatch,
)

NAMESPACE, TABLE = "canvas", "bench_users"
FULL_ROWS, QUICK_ROWS = 1_000_000, 20_000
FILES = 4
VARIANTS = ("loader", "psql \\copy", "postgres json")
T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
STATES = ("active", "deleted", "unpublished", "completed")
VALUE = {
    "name": {"type": "string"},
    "sortable_name": {"type": "string"},
    "short_name": {"type": "string"},
    "workflow_state": {"type": "string", "enum": list(STATES)},
    "created_at": {"type": "string", "format": "date-time"},
    "updated_at": {"type": "string", "format": "date-time"},
    "account_id": {"type": "integer", "format": "int64"},
    "score": {"type": "number", "format": "float64"},
    "is_admin": {"type": "boolean"},
    "lti_id": {"type": "string"},
    "settings": {"type": "object"},
}


def run(workspace: Workspace, *, quick: bool, reps: int) -> CaseReport:
    rows = QUICK_ROWS if quick else FULL_ROWS
    url = workspace.postgres_url
    prefix = f"bench_dap_{workspace.root.name.rsplit('-', 1)[-1]}"
    schemas = {name: f"{prefix}_{i}" for i, name in enumerate((*VARIANTS, "small"))}
    report = CaseReport()
    big, small = workspace.path("dap", "big"), workspace.path("dap", "small")
    try:
        progress(f"dap_load: writing {rows:,} and {rows // 10:,} rows")
        python_child("dap_load", "generate", "--rows", str(rows), "--location", str(big), timeout=600)
        python_child("dap_load", "generate", "--rows", str(rows // 10), "--location", str(small), timeout=600)
        timeout = 120 + rows / 2_000
        variants: list[tuple[str, Callable[[], Sample]]] = [
            ("loader", functools.partial(_loader, url, schemas["loader"], big, rows, timeout)),
            ("psql \\copy", functools.partial(_copy, url, schemas["psql \\copy"], big, rows, timeout)),
            ("postgres json", functools.partial(_pgjson, url, schemas["postgres json"], big, rows, timeout)),
        ]
        samples = alternate(variants, reps)
        small_run = _loader(url, schemas["small"], small, rows // 10, timeout)
        report.raw = {"samples": samples, "small": small_run}
        report.tables.append(_table(samples, rows, reps, small_run))
        report.targets += _targets(samples, rows, small_run)
    finally:
        psql(url, *(f"DROP SCHEMA IF EXISTS {s} CASCADE" for s in schemas.values()))
        shutil.rmtree(big.parent, ignore_errors=True)
    return report


def _sample(seconds: float, rows: int, peak: float, **extra: float) -> Sample:
    return {"seconds": seconds, "rows_s": rows / seconds, "peak_rss_mib": peak, **extra}


def _loader(url: str, schema: str, location: Path, rows: int, timeout: float) -> Sample:
    psql(url, f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    child = python_child("dap_load", "loader", "--location", str(location), "--dsn", url, "--schema", schema,
                         timeout=timeout)  # fmt: skip
    if child.result["rows"] != rows:
        raise RuntimeError(f"the loader stored {child.result['rows']} rows, expected {rows}")
    growth = child.peak_rss_mib - child.result["rss_before_mib"]
    return _sample(child.result["seconds"], rows, child.peak_rss_mib, rss_growth_mib=growth)


def _copy(url: str, schema: str, location: Path, rows: int, timeout: float) -> Sample:
    psql(url, f"DROP SCHEMA IF EXISTS {schema} CASCADE", f"CREATE SCHEMA {schema}",
         f"CREATE TABLE {schema}.{TABLE} ({_ddl()})")  # fmt: skip
    command = f"\\copy {schema}.{TABLE} FROM '{location / 'rows.tsv'}'"
    run = run_child(["psql", url, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-c", command], timeout=timeout)
    key = run_child(["psql", url, "-X", "-q", "-c", f"ALTER TABLE {schema}.{TABLE} ADD PRIMARY KEY (id)"],
                    timeout=timeout)  # fmt: skip
    counted = int(psql(url, f"SELECT count(*) FROM {schema}.{TABLE}").strip())
    if counted != rows:
        raise RuntimeError(f"psql \\copy loaded {counted} rows, expected {rows}")
    return _sample(run.wall_seconds, rows, run.peak_rss_mib, key_seconds=key.wall_seconds)


def _pgjson(url: str, schema: str, location: Path, rows: int, timeout: float) -> Sample:
    psql(url, f"DROP SCHEMA IF EXISTS {schema} CASCADE", f"CREATE SCHEMA {schema}")
    child = python_child("dap_load", "pgjson", "--location", str(location), "--dsn", url, "--schema", schema,
                         timeout=timeout)  # fmt: skip
    if child.result["rows"] != rows:
        raise RuntimeError(f"postgres json stored {child.result['rows']} rows, expected {rows}")
    return _sample(child.result["seconds"], rows, child.peak_rss_mib, **child.result["steps"])


def _table(samples: dict[str, list[Sample]], rows: int, reps: int, small: Sample) -> Table:
    table = Table(
        f"6. Canvas Data 2 snapshot of {rows:,} rows into a typed table (median of {reps}, alternating)",
        [
            "loader",
            "s",
            "rows/s (min-max)",
            "vs psql \\copy",
            "vs psql \\copy + key",
            "peak RSS MiB",
            "RSS growth MiB",
        ],
        notes=[
            "loader: `DapTableLoader.load` of the pulled folder (4 gzip JSON Lines files): msgspec decodes "
            "and type-checks each line and encodes a block of rows as COPY CSV; a thread encodes ahead "
            "while the COPY (FREEZE) into the new table takes the last chunk; ADD PRIMARY KEY, ledger "
            "rows, one transaction. Python and the server work at once (2 cores).",
            "psql \\copy: the same rows as an uncompressed TSV (written beforehand, untimed) into the "
            "same typed table without a key; wall time with psql's start-up. `+ key`: adding the "
            "primary key afterwards, as the loader does, timed apart and added.",
            "postgres json: each line COPYed as is into a jsonb staging table, then INSERT ... SELECT "
            "through jsonb_populate_record and ADD PRIMARY KEY: the server does all the work on one core.",
            f"RSS growth: the peak minus the RSS after imports and connecting. The loader on "
            f"{rows // 10:,} rows (one run): {fmt(small['rss_growth_mib'])} MiB, {fmt(small['seconds'])} s.",
        ],
    )
    copy = median(samples["psql \\copy"], "rows_s")
    copy_key = rows / (
        median(samples["psql \\copy"], "seconds") + median(samples["psql \\copy"], "key_seconds")
    )
    for variant in VARIANTS:
        s = samples[variant]
        rate = median(s, "rows_s")
        table.add(
            variant,
            fmt(median(s, "seconds")),
            fmt(rate) + (f" ({spread(s, 'rows_s')})" if reps > 1 else ""),
            ratio(rate, copy),
            ratio(rate, copy_key),
            fmt(median(s, "peak_rss_mib")),
            fmt(median(s, "rss_growth_mib")) if variant == "loader" else "",
        )
    steps = samples["postgres json"]
    table.notes.append(
        "postgres json steps (median s): "
        + ", ".join(f"{step} {fmt(median(steps, step))}" for step in ("copy", "insert", "key"))
    )
    return table


def _targets(samples: dict[str, list[Sample]], rows: int, small: Sample) -> list[Target]:
    ours, limit = median(samples["loader"], "rows_s"), median(samples["psql \\copy"], "rows_s")
    growth_big, growth_small = median(samples["loader"], "rss_growth_mib"), small["rss_growth_mib"]
    return [
        Target(
            f"Canvas Data 2 snapshot >= 0.8x psql \\copy ({rows:,} rows)",
            f"{ours / limit:.2f}x ({fmt(ours)} vs {fmt(limit)} rows/s)",
            ours >= 0.8 * limit,
        ),
        Target(
            "Canvas Data 2 load memory flat in size",
            f"RSS growth {fmt(growth_small)} MiB at {rows // 10:,} rows, {fmt(growth_big)} MiB at {rows:,}",
            growth_big <= growth_small + 10,
        ),
    ]


# Children -------------------------------------------------------------------------------------------


def _schema_document() -> dict[str, Any]:
    from airflow_provider_canvas.testing.dap_files import table_schema

    return table_schema({"id": {"type": "integer", "format": "int64"}}, VALUE, required=["name"])


def _ddl() -> str:
    from airflow_provider_canvas.canvas_data.loading.schema import parse_schema

    columns = parse_schema(_schema_document()).columns
    return ", ".join(f'"{c.name}" {c.pg_type}{" NOT NULL" if c.role == "key" else ""}' for c in columns)


def _generate(rows: int, location: Path) -> None:
    """The pulled folder and, for psql, the same rows as TSV (written independently of the loader)."""
    import msgspec

    from airflow_provider_canvas.canvas_data.loading.state import DapBatch, DapTableFolder
    from airflow_provider_canvas.testing.dap_files import PulledTable

    pulled = PulledTable(location, NAMESPACE, TABLE)
    pulled.write_schema(_schema_document())
    encode = msgspec.json.Encoder().encode
    per_file = -(-rows // FILES)
    names = []
    with open(location / "rows.tsv", "w", encoding="utf-8") as tsv:
        for part in range(FILES):
            name = f"job-1/part-{part:05d}.json.gz"
            path = pulled.folder.path / name
            path.parent.mkdir(parents=True, exist_ok=True)
            with gzip.open(path, "wb", compresslevel=6) as out:
                for i in range(part * per_file + 1, min(rows, (part + 1) * per_file) + 1):
                    value, ts = _value(i), _iso(T0 + timedelta(seconds=3 * i))
                    out.write(encode({"key": {"id": i}, "value": value, "meta": {"ts": ts}}) + b"\n")
                    tsv.write(_tsv_row(i, value, ts, encode))
            names.append(name)
    batch = DapBatch("job-1", "snapshot", 1, _iso(T0 + timedelta(days=1)), tuple(names))
    DapTableFolder(location, NAMESPACE, TABLE).write_state(pulled.folder.read_state().with_batch(batch))


def _value(i: int) -> dict[str, Any]:
    value: dict[str, Any] = {
        # One name in ten has a quote and a backslash: its line takes the loader's escaping path.
        "name": f'User name {i} "q" \\ back' if i % 10 == 0 else f"User name {i}",
        "sortable_name": f"name{i}, User",
        "workflow_state": STATES[i % 4],
        "created_at": _iso(T0 + timedelta(seconds=i)),
        "updated_at": _iso(T0 + timedelta(seconds=2 * i)),
        "account_id": 10_000_000_000_000 + i % 100,
        "score": i / 7,
        "is_admin": i % 3 == 0,
        "lti_id": f"{i:032x}",
        "settings": {"a": i, "b": [1, 2]},
    }
    if i % 5:
        value["short_name"] = f"u{i}"
    return value


def _tsv_row(i: int, value: dict[str, Any], ts: str, encode: Callable[[Any], bytes]) -> str:
    def text(v: Any) -> str:
        if v is None:
            return "\\N"
        if isinstance(v, bool):
            return "t" if v else "f"
        if isinstance(v, dict):
            v = encode(v).decode()
        return str(v).replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n")

    return "\t".join([str(i), *(text(value.get(c)) for c in VALUE), ts]) + "\n"


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _child(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.dap_load child")
    parser.add_argument("variant", choices=["generate", "loader", "pgjson"])
    parser.add_argument("--rows", type=int)
    parser.add_argument("--location", type=Path)
    parser.add_argument("--dsn")
    parser.add_argument("--schema")
    args = parser.parse_args(argv)
    if args.variant == "generate":
        _generate(args.rows, args.location)
        return

    import psycopg

    from airflow_provider_canvas.canvas_data.loading.load import DapTableLoader
    from airflow_provider_canvas.canvas_data.loading.state import DapTableFolder

    db = psycopg.connect(args.dsn)
    before = rss_mib()  # imports done and connected: what follows is the load's own
    if args.variant == "loader":
        with stopwatch() as timing:
            DapTableLoader(db, args.schema).load(DapTableFolder(args.location, NAMESPACE, TABLE))
        steps: dict[str, float] = {}
    else:
        timing, steps = _postgres_json(db, args.schema, args.location)
    count = db.execute(f"SELECT count(*) FROM {args.schema}.{TABLE}").fetchone()[0]
    db.close()
    emit({"seconds": timing["seconds"], "rows": count, "rss_before_mib": before, "steps": steps})


def _postgres_json(db: Any, schema: str, location: Path) -> tuple[dict[str, float], dict[str, float]]:
    """COPY each line into jsonb, then let PostgreSQL type it (the alternative to parsing in Python)."""
    from airflow_provider_canvas.canvas_data.loading.state import DapTableFolder

    folder = DapTableFolder(location, NAMESPACE, TABLE)
    files = [p for b in folder.read_state().batches for p in folder.files_of(b)]
    target = f"{schema}.{TABLE}"
    steps: dict[str, float] = {}
    with stopwatch() as total:
        with stopwatch() as copy:
            db.execute("CREATE TEMP TABLE dap_lines (doc jsonb) ON COMMIT DROP")
            # CSV with a quote and a delimiter JSON never holds raw: each line goes through untouched.
            with db.cursor().copy(
                "COPY dap_lines FROM STDIN (FORMAT csv, QUOTE e'\\x01', DELIMITER e'\\x02')"
            ) as cp:
                for path in files:
                    with gzip.open(path, "rb") as source:
                        while block := source.read(2**20):
                            cp.write(block)
        with stopwatch() as insert:
            db.execute(f"CREATE TABLE {target} ({_ddl()})")
            db.execute(
                f"INSERT INTO {target} SELECT r.* FROM dap_lines, jsonb_populate_record(NULL::{target}, "
                "(doc->'key') || (doc->'value') || jsonb_build_object('meta_ts', doc->'meta'->'ts')) AS r"
            )
        with stopwatch() as key:
            db.execute(f"ALTER TABLE {target} ADD PRIMARY KEY (id)")
            db.commit()
    steps = {"copy": copy["seconds"], "insert": insert["seconds"], "key": key["seconds"]}
    return total, steps


if __name__ == "__main__":
    if sys.argv[1:2] == ["child"]:
        _child(sys.argv[2:])
    else:
        sys.exit("run the benchmarks with: python -m benchmarks.run --cases dap_load")
