"""Case 1: extract download. ``BrightspaceHook.download`` (streamed to disk) vs ``curl -o`` of the same
URL (the practical limit) vs the reference client's buffered ``requests.get(...).content``.

Each size is measured twice: through the emulator (the hook's real path: API call, 302 to the signed
storage host, body rendered by the emulator in Python) and from a plain static file server
(sendfile), where the server is not the bottleneck and the clients are what is compared.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from benchmarks._harness import (
    TOKEN_ENV,
    CaseReport,
    EmulatorProcess,
    Sample,
    StaticFileServer,
    Table,
    Target,
    Workspace,
    alternate,
    emit,
    fmt,
    lms_seed,
    median,
    python_child,
    ratio,
    rss_mib,
    run_child,
    spread,
    stopwatch,
)

#: A Users-like extract: 229 bytes per generated row.
COLUMNS = [
    "UserId",
    "UserName",
    "OrgDefinedId",
    "FirstName",
    "LastName",
    "ExternalEmail",
    "OrgRoleId",
    "IsActive",
    "SignupDate",
    "LastAccessed",
]
FULL_SIZES = (100_000_000, 1_000_000_000)
QUICK_SIZES = (5_000_000,)
CONN_ID = "bench_brightspace"
NO_FSYNC = "hook, fsync skipped (diagnostic)"
NO_CHECK = "hook, no ZIP check (as in 0.1.0)"
VARIANTS = ("hook", NO_CHECK, "curl", "curl + fsync", "buffered", NO_FSYNC)


def rows_for(size_bytes: int, columns: list[str] = COLUMNS) -> int:
    """How many generated rows make an extract of about ``size_bytes``."""
    from datetime import datetime, timezone

    from airflow_provider_canvas.testing.bds_files import GeneratedZip

    now = datetime.now(timezone.utc)
    one, two = (GeneratedZip("x.csv", columns, n, 1, now).size for n in (1, 2))
    return max(1, (size_bytes - one) // (two - one) + 1)


def size_label(size_bytes: int) -> str:
    return f"{size_bytes / 1e9:g} GB" if size_bytes >= 1e9 else f"{size_bytes / 1e6:g} MB"


def data_set_name(size_bytes: int) -> str:
    return f"Download {size_label(size_bytes)}"


# Parent ---------------------------------------------------------------------------------------------


def _curl(url: str, dest: Path, header_file: Path | None, timeout: float) -> tuple[Sample, int]:
    argv = ["curl", "-sS", "--fail", "-L", "-o", str(dest), "-w", "%{time_total} %{size_download}"]
    if header_file is not None:
        argv += ["-H", f"@{header_file}"]  # the token stays out of the process list
    run = run_child([*argv, url], timeout=timeout, label="curl")
    seconds, size = run.stdout.split()
    return {"seconds": float(seconds), "peak_rss_mib": run.peak_rss_mib}, int(float(size))


def run(workspace: Workspace, *, quick: bool, reps: int) -> CaseReport:
    sizes = QUICK_SIZES if quick else FULL_SIZES
    seed = lms_seed(
        brightspace={
            "rate_limit_capacity": 10**9,
            "data_sets": [
                {"name": data_set_name(s), "columns": COLUMNS, "rows_count": rows_for(s)} for s in sizes
            ],
        }
    )
    report = CaseReport()
    table = Table(
        f"1. Extract download (median of {reps}, alternating)",
        [
            "size",
            "server",
            "client",
            "s",
            "MB/s (min-max)",
            "vs curl",
            "vs curl + fsync",
            "peak RSS MiB",
            "RSS growth MiB",
        ],
        notes=[
            "hook: `BrightspaceHook.download_extract` (emulator: API call, 302 to the signed host) or "
            "`BrightspaceHook.download` (static); it writes a hidden `.part` file, handing it to the disk "
            "every 16 MiB, checks the ZIP as it arrives (member CRC, central directory), fsyncs it and "
            "renames it. hook, no ZIP check: the same without the check (`check_zip=False`), as before. "
            "The generated extracts are stored ZIPs: the check CRCs them; deflated ones are inflated too "
            "(benchmarks/zip_check.py measures that).",
            "curl: `curl -L -o` of the same URL; time from curl's own `time_total`; no fsync. "
            "curl + fsync: the same run plus the time to fsync curl's file afterwards (like for like).",
            "buffered: `requests.get(url).content` then one write to disk, as D2L's example client does.",
            "hook, fsync skipped: a diagnostic, not a configuration: the same hook with `os.fsync` made a "
            "no-op in its process, to show how much of the gap to curl is the fsync.",
            "peak RSS: the process's own high-water mark (VmHWM); growth = peak minus the RSS right before "
            "the download (imports done). The hook's process has Airflow imported: ~140 MiB before any byte.",
        ],
    )
    served_dir = workspace.path("served", "x").parent
    with (
        EmulatorProcess(workspace, "download", seed) as emulator,
        StaticFileServer(workspace, served_dir) as static,
    ):
        workspace.lms_connection(CONN_ID, "brightspace", emulator)
        token = emulator.tokens["brightspace"]["bench"]["access_token"]
        auth_header = workspace.path("curl-auth-header")
        auth_header.touch(mode=0o600)
        auth_header.write_text(f"Authorization: Bearer {token}\n")
        listing = python_child("download", "links", timeout=120).result
        for size in sizes:
            name = data_set_name(size)
            link, announced = listing[name]["link"], int(listing[name]["size"])
            timeout = 60 + size / 5e6  # >= 5 MB/s or it is a failure, not a measurement
            served = served_dir / f"{name.replace(' ', '_')}.zip"
            # Untimed warm-up: the emulator computes the ZIP's CRC on the first download; the copy
            # becomes the static server's file.
            _, got = _curl(link, served, auth_header, timeout)
            if got != announced:
                raise RuntimeError(f"{name}: warm-up got {got} bytes, DownloadSize says {announced}")
            for server, url, auth in (
                ("emulator", link, token),
                ("static", f"{static.url}/{served.name}", None),
            ):
                transfer = _Transfer(
                    url=url,
                    data_set=name if server == "emulator" else None,
                    token=auth,
                    auth_header=auth_header if auth else None,
                    dest=workspace.path("downloads", "extract.zip"),
                    expected=announced,
                    timeout=timeout,
                )
                samples = alternate(
                    [
                        ("hook", transfer.hook),
                        (NO_CHECK, transfer.hook_without_check),
                        ("curl", transfer.curl),
                        ("buffered", transfer.buffered),
                        (NO_FSYNC, transfer.hook_without_fsync),
                    ],
                    reps,
                )
                samples["curl + fsync"] = [
                    {
                        **c,
                        "seconds": c["seconds"] + c["fsync_seconds"],
                        "mb_s": announced / 1e6 / (c["seconds"] + c["fsync_seconds"]),
                    }
                    for c in samples["curl"]
                ]
                curl_rate = median(samples["curl"], "mb_s")
                synced_rate = median(samples["curl + fsync"], "mb_s")
                for variant in VARIANTS:
                    s = samples[variant]
                    rate = median(s, "mb_s")
                    table.add(
                        size_label(size),
                        server,
                        variant,
                        fmt(median(s, "seconds")),
                        fmt(rate) + (f" ({spread(s, 'mb_s')})" if reps > 1 else ""),
                        ratio(rate, curl_rate),
                        ratio(rate, synced_rate),
                        fmt(median(s, "peak_rss_mib")),
                        fmt(median(s, "rss_growth_mib")) if "rss_growth_mib" in s[0] else "—",
                    )
                report.raw[f"{size}/{server}"] = samples
            served.unlink(missing_ok=True)
    report.tables.append(table)
    report.targets += _targets(report.raw, max(sizes))
    return report


@dataclass(frozen=True)
class _Transfer:
    """One URL downloaded by each client in turn; every run's file is deleted right after it."""

    url: str
    data_set: str | None  # set: the hook lists the extract and downloads it through the API
    token: str | None  # the bearer token the emulator's API wants (None for the static server)
    auth_header: Path | None  # the same token as a curl header file (kept out of the process list)
    dest: Path
    expected: int
    timeout: float

    def hook(self) -> Sample:
        args = ["hook", "--url", self.url, "--dest", str(self.dest)]
        args += ["--data-set", self.data_set] if self.data_set else []
        child = python_child("download", *args, timeout=self.timeout)
        return _finish(child.result, child.peak_rss_mib, self.dest, self.expected)

    def hook_without_check(self) -> Sample:
        args = ["hook", "--url", self.url, "--dest", str(self.dest), "--no-check"]
        args += ["--data-set", self.data_set] if self.data_set else []
        child = python_child("download", *args, timeout=self.timeout)
        return _finish(child.result, child.peak_rss_mib, self.dest, self.expected)

    def hook_without_fsync(self) -> Sample:
        """Diagnostic: the same hook with ``os.fsync`` made a no-op, to show what durability costs."""
        args = ["hook", "--url", self.url, "--dest", str(self.dest), "--skip-fsync"]
        args += ["--data-set", self.data_set] if self.data_set else []
        child = python_child("download", *args, timeout=self.timeout)
        return _finish(child.result, child.peak_rss_mib, self.dest, self.expected)

    def curl(self) -> Sample:
        sample, got = _curl(self.url, self.dest, self.auth_header, self.timeout)
        # The hook fsyncs before it renames; curl does not. Timing an fsync of curl's file right
        # after gives the like-for-like figure too ("curl + fsync").
        with stopwatch() as flush:
            descriptor = os.open(self.dest, os.O_RDONLY)
            try:
                os.fsync(descriptor)
            finally:
                os.close(descriptor)
        result = {**sample, "bytes": got, "fsync_seconds": flush["seconds"]}
        return _finish(result, sample["peak_rss_mib"], self.dest, self.expected)

    def buffered(self) -> Sample:
        args = ["buffered", "--url", self.url, "--dest", str(self.dest)]
        env = {TOKEN_ENV: self.token} if self.token else {}
        child = python_child("download", *args, timeout=self.timeout, label="buffered", env=env)
        return _finish(child.result, child.peak_rss_mib, self.dest, self.expected)


def _finish(result: dict, peak_rss_mib: float, dest: Path, expected: int) -> Sample:
    got = int(result["bytes"])
    if got != expected:
        raise RuntimeError(f"downloaded {got} bytes, expected {expected}")
    dest.unlink(missing_ok=True)
    seconds = float(result["seconds"])
    sample: Sample = {"seconds": seconds, "mb_s": got / 1e6 / seconds, "peak_rss_mib": peak_rss_mib}
    if "fsync_seconds" in result:
        sample["fsync_seconds"] = float(result["fsync_seconds"])
    if "rss_before_mib" in result:
        sample["rss_growth_mib"] = max(0.0, peak_rss_mib - float(result["rss_before_mib"]))
    return sample


def _targets(raw: dict, largest: int) -> list[Target]:
    targets = []
    for server in ("emulator", "static"):
        samples = raw.get(f"{largest}/{server}")
        if not samples:
            continue
        hook, curl = median(samples["hook"], "mb_s"), median(samples["curl"], "mb_s")
        synced = median(samples["curl + fsync"], "mb_s")
        targets.append(
            Target(
                f"download >= 0.9x curl ({size_label(largest)}, {server})",
                f"{hook / curl:.2f}x ({fmt(hook)} vs {fmt(curl)} MB/s); "
                f"{hook / synced:.2f}x curl + fsync ({fmt(synced)} MB/s)",
                hook >= 0.9 * curl,
            )
        )
    samples = raw.get(f"{largest}/static") or raw.get(f"{largest}/emulator")
    if samples:
        peak = max(s["peak_rss_mib"] for s in samples["hook"])
        growth = max(s["rss_growth_mib"] for s in samples["hook"])
        # Judged as growth over the process's own baseline: the absolute peak is mostly the interpreter
        # and Airflow's imports (an Airflow task process holds ~144 MiB before any download).
        targets.append(
            Target(
                f"download memory growth <= 8 MiB ({size_label(largest)})",
                f"growth {fmt(growth)} MiB over the process's baseline (process peak {fmt(peak)} MiB)",
                growth <= 8,
            )
        )
    return targets


# Child ----------------------------------------------------------------------------------------------


def _child(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.download child")
    parser.add_argument("variant", choices=["links", "hook", "buffered"])
    parser.add_argument("--url")
    parser.add_argument("--dest")
    parser.add_argument("--data-set")
    parser.add_argument("--skip-fsync", action="store_true")
    parser.add_argument("--no-check", action="store_true")
    args = parser.parse_args(argv)
    if args.variant == "buffered":
        # Only what the reference client imports: requests, no Airflow.
        from benchmarks.reference_client import download_buffered

        before = rss_mib()
        with stopwatch() as timing:
            body = download_buffered(args.url, os.environ.get(TOKEN_ENV))
            Path(args.dest).write_bytes(body)
        emit({"seconds": timing["seconds"], "bytes": len(body), "rss_before_mib": before})
        return

    from airflow_provider_canvas.brightspace.hooks.brightspace import BrightspaceHook

    if args.skip_fsync:
        os.fsync = lambda fd: None  # diagnostic only: what the file's durability costs
    hook = BrightspaceHook(CONN_ID)
    if args.variant == "links":
        found = {}
        for data_set in hook.list_data_sets():
            extract = hook.list_extracts(data_set, "Full")[0]
            found[data_set.name] = {"link": extract.download_link, "size": extract.download_size}
        emit(found)
        return
    extract = hook.list_extracts(args.data_set, "Full")[0] if args.data_set else None
    hook.tokens.access_token()  # the token lookup is not part of the transfer
    before = rss_mib()
    with stopwatch() as timing:
        if extract is not None:
            done = hook.download_extract(extract, args.dest, check_zip=not args.no_check)
        else:
            done = hook.download(args.url, args.dest, check_zip=not args.no_check)
    hook.close()
    emit({"seconds": timing["seconds"], "bytes": done.size, "rss_before_mib": before})


if __name__ == "__main__":
    if sys.argv[1:2] == ["child"]:
        _child(sys.argv[2:])
    else:
        sys.exit("run the benchmarks with: python -m benchmarks.run")
