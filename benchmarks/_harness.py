"""Shared machinery of the benchmarks: a private Airflow home, servers in their own processes, measured
child runs (time, peak RSS), alternation of a case with its baselines, medians and result tables.

Every measurement runs in a fresh child process so that no case inherits another's memory, imports or
caches. Its peak RSS is the kernel's high-water mark of that process (``VmHWM``): a Python child reads
its own when it reports, other programs (curl, psql) are sampled every few milliseconds. Not
``ru_maxrss`` from ``wait4``/``RUSAGE_CHILDREN``: Linux carries the launching process's high-water mark
across ``exec`` into it, so every child would look at least as big as the benchmark runner. The
emulator and the static file server run in processes of their own, so on a 2-core machine the client
and the server each get a core and do not share a GIL.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self

REPO = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
CLIENT_ID = "10000000000077"
CLIENT_SECRET = "bench-client-secret"
#: Where a child writes its JSON result (stdout is left to whatever the child's libraries print).
RESULT_ENV = "CANVAS_BENCH_RESULT"
#: A bearer token for a child that talks HTTP without a connection (kept out of the process list).
TOKEN_ENV = "CANVAS_BENCH_TOKEN"
_KIB_PER_MIB = 1024


class BenchError(RuntimeError):
    """A child failed, timed out, or a server did not come up."""


# Child processes ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ChildRun:
    """One finished child: what it reported, its own peak RSS and how long it ran (wall clock)."""

    result: dict[str, Any]
    peak_rss_mib: float
    wall_seconds: float
    stdout: str
    stderr: str


def run_child(
    argv: Sequence[str],
    *,
    timeout: float,
    env: Mapping[str, str] | None = None,
    label: str | None = None,
) -> ChildRun:
    """Run ``argv`` to completion (killed after ``timeout`` s) and measure that one process.

    A Python child reports through :func:`emit`; other programs (curl, psql) leave ``result`` empty.
    """
    label = label or " ".join(argv[:4])
    with tempfile.TemporaryDirectory(prefix="canvas-bench-child-") as scratch:
        result_path = Path(scratch) / "result.json"
        out_path, err_path = Path(scratch) / "stdout", Path(scratch) / "stderr"
        child_env = {**os.environ, **(env or {}), RESULT_ENV: str(result_path)}
        with open(out_path, "wb") as out, open(err_path, "wb") as err:
            started = time.perf_counter()
            process = subprocess.Popen(list(argv), stdout=out, stderr=err, env=child_env, cwd=REPO)
            sampled = _HighWaterSampler(process.pid)
            sampled.start()
            try:
                process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
                raise BenchError(f"{label}: killed after the {timeout:.0f} s time limit") from None
            finally:
                wall = time.perf_counter() - started
                sampled.stop()
        stdout, stderr = out_path.read_text(errors="replace"), err_path.read_text(errors="replace")
        if process.returncode != 0:
            raise BenchError(f"{label}: exit status {process.returncode}\n{stdout[-1000:]}\n{stderr[-3000:]}")
        result = json.loads(result_path.read_text()) if result_path.exists() else {}
    # A program that ends within one sampling interval has no reading: NaN, shown as n/a.
    peak = float(result.pop("_peak_rss_mib", 0.0)) or sampled.peak_mib or float("nan")
    return ChildRun(result, peak, wall, stdout, stderr)


class _HighWaterSampler(threading.Thread):
    """Polls ``/proc/<pid>/status`` for VmHWM (monotonic, so the last reading is nearly the peak)."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self._status = Path(f"/proc/{pid}/status")
        self._done = threading.Event()
        self.peak_mib = 0.0

    def run(self) -> None:
        while not self._done.wait(0.005):
            self.peak_mib = max(self.peak_mib, _high_water_mib(self._status))

    def stop(self) -> None:
        self._done.set()
        self.join()


def _high_water_mib(status: Path) -> float:
    try:
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / _KIB_PER_MIB
    except (OSError, ValueError, IndexError):
        pass
    return 0.0


def python_child(
    module: str,
    *args: str,
    timeout: float,
    label: str | None = None,
    env: Mapping[str, str] | None = None,
) -> ChildRun:
    """``python -m benchmarks.<module> child <args>`` as a measured child."""
    return run_child(
        [PYTHON, "-m", f"benchmarks.{module}", "child", *args],
        timeout=timeout,
        env=env,
        label=label or f"{module} {' '.join(args[:2])}",
    )


def emit(result: Mapping[str, Any]) -> None:
    """Report a child's result, and its own peak RSS so far, to the parent (once, at the end)."""
    payload = {**result, "_peak_rss_mib": _high_water_mib(Path("/proc/self/status"))}
    path = os.environ.get(RESULT_ENV)
    if not path:
        print(json.dumps(payload))
        return
    Path(path).write_text(json.dumps(payload))


def progress(message: str) -> None:
    """A progress line on stderr (stdout carries the Markdown report)."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def peak_mib() -> float:
    """This process's RSS high-water mark (``VmHWM``) so far, in MiB."""
    return _high_water_mib(Path("/proc/self/status"))


def reset_peak() -> None:
    """Restart this process's ``VmHWM`` at its current RSS (``clear_refs`` 5, Linux 4.0+): one step's peak."""
    Path("/proc/self/clear_refs").write_text("5")


def rss_mib() -> float:
    """This process's resident set size now, in MiB (Linux ``/proc``; 0 elsewhere)."""
    try:
        resident_pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return 0.0
    return resident_pages * os.sysconf("SC_PAGE_SIZE") / 2**20


# Alternation and statistics ----------------------------------------------------------------------

Sample = dict[str, float]


def alternate(variants: Sequence[tuple[str, Callable[[], Sample]]], reps: int) -> dict[str, list[Sample]]:
    """Run every variant once per repetition, interleaved, so load from other work hits all of them.

    The order rotates each repetition: no variant always runs first (cold caches) or last.
    """
    samples: dict[str, list[Sample]] = {name: [] for name, _ in variants}
    for rep in range(reps):
        shift = rep % len(variants)
        for name, measure in [*variants[shift:], *variants[:shift]]:
            samples[name].append(measure())
    return samples


def median(samples: Sequence[Sample], key: str) -> float:
    values = [s[key] for s in samples if key in s and s[key] is not None]
    return statistics.median(values) if values else float("nan")


def spread(samples: Sequence[Sample], key: str) -> str:
    """min-max of a metric over the repetitions, for the reader to judge the noise."""
    values = [s[key] for s in samples if key in s]
    if len(values) < 2:
        return ""
    return f"{fmt(min(values))}-{fmt(max(values))}"


# Reporting ------------------------------------------------------------------------------------------


@dataclass
class Table:
    """One result table, rendered as Markdown."""

    title: str
    columns: list[str]
    rows: list[list[str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, *cells: Any) -> None:
        self.rows.append([str(c) for c in cells])

    def render(self) -> str:
        lines = [f"### {self.title}", ""]
        lines.append("| " + " | ".join(self.columns) + " |")
        lines.append("|" + "|".join("---" for _ in self.columns) + "|")
        lines += ["| " + " | ".join(row) + " |" for row in self.rows]
        lines += [""] + [f"- {note}" for note in self.notes] if self.notes else []
        return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class Target:
    """A target of the issue and what was measured against it."""

    name: str
    measured: str
    met: bool | None  # None: not measured in this run

    def verdict(self) -> str:
        return {True: "met", False: "MISSED", None: "not measured"}[self.met]


@dataclass
class CaseReport:
    tables: list[Table] = field(default_factory=list)
    targets: list[Target] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict)


def fmt(value: float, digits: int = 3) -> str:
    if value != value:  # NaN
        return "n/a"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.{digits}g}"


def ratio(value: float, baseline: float) -> str:
    if baseline != baseline or value != value or baseline == 0:
        return "n/a"
    return f"{value / baseline:.2f}x"


def machine_description() -> str:
    """CPU, cores, memory, OS, Python: the line the README's results carry."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = ""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                memory = f", {int(line.split()[1]) / 2**20:.0f} GiB RAM"
                break
    except OSError:
        pass
    return (
        f"{cpu}, {os.cpu_count()} cores{memory}, {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}"
    )


# The Airflow home, connections -------------------------------------------------------------------


class Workspace:
    """A scratch directory under /tmp holding a private AIRFLOW_HOME with a migrated SQLite database.

    Its environment is set on this process, so every child inherits it. Everything large (extracts,
    downloads, CSV files) lives here and is deleted by :meth:`close`.
    """

    def __init__(self, *, postgres_url: str, keep: bool = False) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="canvas-bench-", dir="/tmp"))
        self.postgres_url = postgres_url
        self.keep = keep
        home = self.root / "airflow-home"
        home.mkdir()
        self.airflow_home = home
        os.environ.update(
            {
                "AIRFLOW_HOME": str(home),
                "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/airflow.db",
                "AIRFLOW__CANVAS_PROVIDER__STATE_DIR": str(home / "canvas_provider"),
                "AIRFLOW__CANVAS_PROVIDER__LOCK_TIMEOUT_SECONDS": "60",
                "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
                "PYTHONWARNINGS": "ignore",
            }
        )
        airflow = str(Path(PYTHON).parent / "airflow")
        completed = subprocess.run(
            [airflow, "db", "migrate"], capture_output=True, text=True, timeout=300, check=False
        )
        if completed.returncode != 0:
            raise BenchError(f"airflow db migrate failed:\n{completed.stderr[-3000:]}")

    def path(self, *parts: str) -> Path:
        target = self.root.joinpath(*parts)
        target.parent.mkdir(parents=True, exist_ok=True)
        return target

    def connection(
        self,
        conn_id: str,
        conn_type: str,
        host: str,
        extra: Mapping[str, Any] | None = None,
        **fields: Any,
    ) -> None:
        """Create (or replace) a connection in the private metadata database, through the ORM."""
        from airflow.models import Connection
        from airflow.utils.session import create_session

        with create_session() as session:
            session.query(Connection).filter(Connection.conn_id == conn_id).delete()
            session.add(
                Connection(
                    conn_id=conn_id, conn_type=conn_type, host=host, extra=json.dumps(extra or {}), **fields
                )
            )

    def lms_connection(
        self, conn_id: str, platform_name: str, emulator: EmulatorProcess, **extra: Any
    ) -> None:
        """A canvas/brightspace connection holding the emulator's pre-issued ``bench`` tokens."""
        fields = {**emulator.connection_extra(platform_name), **extra}
        self.connection(conn_id, platform_name, emulator.url, fields, login=CLIENT_ID, password=CLIENT_SECRET)

    def postgres_connection(self, conn_id: str) -> None:
        self.connection(conn_id, "postgres", **postgres_connection_fields(self.postgres_url))

    def close(self) -> None:
        if not self.keep:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> Workspace:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def postgres_connection_fields(postgres_url: str) -> dict[str, Any]:
    """The fields of an Airflow ``postgres`` connection to ``postgres_url`` (host, login, port, ...)."""
    from urllib.parse import urlsplit

    parts = urlsplit(postgres_url)
    return {
        "host": parts.hostname or "127.0.0.1",
        "login": parts.username or "postgres",
        "password": parts.password,
        "port": parts.port or 5432,
        "schema": parts.path.lstrip("/") or "test",
    }


# Servers --------------------------------------------------------------------------------------------


def lms_seed(canvas: Mapping[str, Any] | None = None, brightspace: Mapping[str, Any] | None = None) -> dict:
    """An emulator seed with one client and one pre-issued token (``bench``) per platform given."""
    seed: dict[str, Any] = {}
    for name, extra in (("canvas", canvas), ("brightspace", brightspace)):
        if extra is None:
            continue
        seed[name] = {
            "clients": [{"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET, "scopes": None}],
            "tokens": [{"name": "bench", "client_id": CLIENT_ID}],
            **extra,
        }
    return seed


class _ServerProcess:
    """A server child that writes a JSON file once it listens; stopped with SIGTERM."""

    ready_timeout = 120.0

    def __init__(self, argv: list[str], ready_file: Path, log_file: Path) -> None:
        self._argv = argv
        self._ready_file = ready_file
        self._log_file = log_file
        self._process: subprocess.Popen[bytes] | None = None
        self.info: dict[str, Any] = {}

    def start(self) -> None:
        self._ready_file.unlink(missing_ok=True)
        with open(self._log_file, "ab") as log:
            self._process = subprocess.Popen(self._argv, stdout=log, stderr=log, cwd=REPO)
        deadline = time.monotonic() + self.ready_timeout
        while not self._ready_file.exists():
            if self._process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                tail = self._log_file.read_text(errors="replace")[-2000:]
                raise BenchError(f"{' '.join(self._argv[:3])} did not start:\n{tail}")
            time.sleep(0.05)
        self.info = json.loads(self._ready_file.read_text())

    def stop(self) -> None:
        if self._process is None:
            return
        if self._process.poll() is None:
            self._process.send_signal(signal.SIGTERM)
            try:
                self._process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._process = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


class EmulatorProcess(_ServerProcess):
    """``python -m airflow_provider_canvas.testing`` with a seed, in its own process."""

    def __init__(self, workspace: Workspace, name: str, seed: Mapping[str, Any], **options: Any) -> None:
        seed_file = workspace.path("emulators", f"{name}.seed.json")
        seed_file.write_text(json.dumps(seed))
        tokens_file = workspace.path("emulators", f"{name}.tokens.json")
        argv = [
            PYTHON,
            "-m",
            "airflow_provider_canvas.testing",
            "--port",
            "0",
            "--seed",
            str(seed_file),
            "--issued-tokens-out",
            str(tokens_file),
            "--log-level",
            "WARNING",
        ]
        if options.get("access_token_ttl") is not None:
            argv += ["--access-token-ttl", str(options["access_token_ttl"])]
        super().__init__(argv, tokens_file, workspace.path("emulators", f"{name}.log"))

    @property
    def url(self) -> str:
        return str(self.info["url"])

    @property
    def tokens(self) -> dict[str, dict[str, dict[str, Any]]]:
        return {p: self.info[p] for p in ("canvas", "brightspace") if p in self.info}

    def connection_extra(self, platform_name: str) -> dict[str, Any]:
        """The extra of a canvas/brightspace connection holding the pre-issued ``bench`` tokens."""
        tokens = self.tokens[platform_name]["bench"]
        extra = {key: tokens[key] for key in ("access_token", "refresh_token", "expires_at")}
        if platform_name == "brightspace":
            extra["oauth_url"] = tokens["token_url"]
        return extra

    def admin(self, action: str, payload: Mapping[str, Any] | None = None) -> Any:
        """The emulator's ``/_emulator/<action>`` (GET without payload, POST with one)."""
        data = None if payload is None else json.dumps(payload).encode()
        request = urllib.request.Request(
            f"{self.url}/_emulator/{action}", data=data, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())


class StaticFileServer(_ServerProcess):
    """``benchmarks._static_server`` serving one directory with sendfile(2)."""

    def __init__(self, workspace: Workspace, directory: Path) -> None:
        ready = workspace.path("static-server.json")
        argv = [PYTHON, "-m", "benchmarks._static_server", str(directory), "--ready-file", str(ready)]
        super().__init__(argv, ready, workspace.path("static-server.log"))

    @property
    def url(self) -> str:
        return str(self.info["url"])


# PostgreSQL from the parent (psql: keeps the parent free of drivers) -------------------------------


def psql(postgres_url: str, *commands: str, timeout: float = 600) -> str:
    """Run SQL or psql meta-commands (each its own ``-c``), stop at the first error, return stdout."""
    argv = ["psql", postgres_url, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-A", "-t"]
    for command in commands:
        argv += ["-c", command]
    completed = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    if completed.returncode != 0:
        raise BenchError(f"psql failed: {completed.stderr.strip()[:2000]}")
    return completed.stdout


@contextmanager
def stopwatch() -> Iterator[dict[str, float]]:
    """``with stopwatch() as t: ...`` then ``t["seconds"]``."""
    timing: dict[str, float] = {}
    started = time.perf_counter()
    try:
        yield timing
    finally:
        timing["seconds"] = time.perf_counter() - started
