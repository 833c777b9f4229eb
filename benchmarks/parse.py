"""Case 5: DAG-file parse time of each example DAG, and import time of the provider's modules.

Airflow parses DAG files over and over: a DAG file and what it imports must be cheap at top level.
Each measurement is a fresh process that first imports what the DAG processor already has loaded
(``airflow``, ``airflow.sdk``, the DagBag), then times the one thing measured: ``DagBag`` parsing one
file, or importing one provider module. The baselines are a minimal DAG file (one ``@task``) and a
module of an official provider (``airflow.providers.standard.operators.python``).
"""

from __future__ import annotations

import argparse
import functools
import gc
import importlib
import pkgutil
import re
import sys
import time
from pathlib import Path

from benchmarks._harness import (
    REPO,
    CaseReport,
    Sample,
    Table,
    Target,
    Workspace,
    alternate,
    emit,
    fmt,
    median,
    python_child,
    ratio,
    spread,
)

BASELINE_DAG = '''"""The smallest useful DAG: the parse-time baseline."""
import pendulum
from airflow.sdk import dag, task


@dag(schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"), catchup=False)
def baseline():
    @task
    def hello():
        return 1

    hello()


baseline()
'''
BASELINE_MODULE = "airflow.providers.standard.operators.python"
#: Where DAG authors and Airflow itself import the provider from; each pulls in what it needs.
ENTRY_PACKAGES = ("hooks", "operators", "sensors", "triggers")
_MARK = "@@canvas-bench-import@@"
_IMPORTTIME = re.compile(r"import time:\s+(\d+) \|\s+(\d+) \|(\s+)(\S+)")


def provider_modules() -> list[str]:
    """The modules a DAG or Airflow's provider discovery imports: entry packages and top-level ones."""
    import airflow_provider_canvas

    names = ["airflow_provider_canvas.get_provider_info", "airflow_provider_canvas.exceptions"]
    for package in ENTRY_PACKAGES:
        path = Path(airflow_provider_canvas.__file__).parent / package
        names += [
            f"airflow_provider_canvas.{package}.{m.name}"
            for m in pkgutil.iter_modules([str(path)])
            if not m.name.startswith("_")
        ]
    return [*names, "airflow_provider_canvas.testing"]


def run(workspace: Workspace, *, quick: bool, reps: int) -> CaseReport:
    report = CaseReport()
    baseline = workspace.path("baseline_dags", "baseline_dag.py")
    baseline.write_text(BASELINE_DAG)
    dags = [baseline, *sorted((REPO / "dags").glob("*.py"))]

    def parse(dag_file: Path) -> Sample:
        result = python_child("parse", "dag", str(dag_file), timeout=120).result
        if result["errors"] or not result["dags"]:
            raise RuntimeError(f"{dag_file.name}: {result['errors']} import errors, {result['dags']} DAGs")
        return {"seconds": result["seconds"]}

    dag_samples = alternate([(f.name, functools.partial(parse, f)) for f in dags], reps)
    report.raw["dags"] = dag_samples
    dag_table = Table(
        f"5. DAG-file parse time (median of {reps}, alternating, each in a fresh process)",
        ["DAG file", "parse s (min-max)", "vs minimal DAG"],
        notes=[
            "`DagBag(dag_folder=<file>)` timed in a process that has `airflow`, `airflow.sdk` and the "
            "DagBag imported already, as the DAG processor has; the provider's imports are inside.",
        ],
    )
    reference = median(dag_samples[baseline.name], "seconds")
    for dag_file in dags:
        s = dag_samples[dag_file.name]
        label = "minimal DAG (baseline)" if dag_file == baseline else f"dags/{dag_file.name}"
        dag_table.add(
            label,
            fmt(median(s, "seconds")) + (f" ({spread(s, 'seconds')})" if reps > 1 else ""),
            ratio(median(s, "seconds"), reference),
        )
        if dag_file != baseline:
            parsed = median(s, "seconds")
            report.targets.append(
                Target(f"parse dags/{dag_file.name} < 0.5 s", f"{fmt(parsed)} s", parsed < 0.5)
            )
    report.tables.append(dag_table)

    modules = [BASELINE_MODULE, *provider_modules()]
    heavy: dict[str, list[tuple[float, str]]] = {m: [] for m in modules}

    def load(module: str) -> Sample:
        child = python_child("parse", "import", module, timeout=120, env={"PYTHONPROFILEIMPORTTIME": "1"})
        heavy[module].append((child.result["seconds"], _heaviest_imports(child.stderr)))
        return {"seconds": child.result["seconds"]}

    import_samples = alternate([(m, functools.partial(load, m)) for m in modules], reps)
    report.raw["imports"] = import_samples
    import_table = Table(
        f"5b. Import time of the provider's modules (median of {reps}, alternating, fresh process each)",
        ["module", "import ms (min-max)", "heaviest imports it brings (cumulative ms)"],
        notes=[
            "Timed after `import airflow.sdk` (already loaded wherever DAGs are parsed or tasks run) and "
            "a `gc.collect()`: otherwise a full garbage collection of Airflow's objects (~60 ms) lands in "
            "whichever import crosses the threshold. The heaviest imports come from `-X importtime` of "
            "the same run (the provider's own modules excluded).",
        ],
    )
    for module in modules:
        s = import_samples[module]
        label = f"{module} (baseline)" if module == BASELINE_MODULE else module
        ms = [{"ms": x["seconds"] * 1000} for x in s]
        # The breakdown of the repetition whose time is the median, not of an outlier.
        typical = sorted(heavy[module])[(len(heavy[module]) - 1) // 2][1]
        import_table.add(
            label, fmt(median(ms, "ms")) + (f" ({spread(ms, 'ms')})" if reps > 1 else ""), typical
        )
    report.tables.append(import_table)
    return report


def _heaviest_imports(stderr: str, top: int = 3) -> str:
    """The top-level packages with the largest cumulative import time after the marker."""
    _, _, after = stderr.partition(_MARK)
    costs: dict[str, int] = {}
    for line in after.splitlines():
        match = _IMPORTTIME.match(line)
        if not match:
            continue
        package = match.group(4).split(".")[0]
        if package == "airflow_provider_canvas":
            continue
        costs[package] = max(costs.get(package, 0), int(match.group(2)))
    ranked = sorted(costs.items(), key=lambda item: item[1], reverse=True)[:top]
    return ", ".join(f"{name} {us / 1000:.0f}" for name, us in ranked) or "—"


# Child ----------------------------------------------------------------------------------------------


def _child(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.parse child")
    parser.add_argument("kind", choices=["dag", "import"])
    parser.add_argument("target")
    args = parser.parse_args(argv)
    # What the DAG processor (and every task runner) has imported before it looks at a file.
    import airflow.sdk  # noqa: F401
    from airflow.dag_processing.dagbag import DagBag

    if args.kind == "dag":
        dag_file = Path(args.target)
        started = time.perf_counter()
        bag = DagBag(dag_folder=dag_file, bundle_path=dag_file.parent, safe_mode=False)
        seconds = time.perf_counter() - started
        emit({"seconds": seconds, "dags": len(bag.dags), "errors": len(bag.import_errors)})
        return
    # A full garbage collection over Airflow's ~1M objects takes ~60 ms and fires at whichever
    # allocation crosses the threshold: collect now so that the import is timed on its own.
    gc.collect()
    print(_MARK, file=sys.stderr, flush=True)
    started = time.perf_counter()
    importlib.import_module(args.target)
    emit({"seconds": time.perf_counter() - started})


if __name__ == "__main__":
    if sys.argv[1:2] == ["child"]:
        _child(sys.argv[2:])
    else:
        sys.exit("run the benchmarks with: python -m benchmarks.run")
