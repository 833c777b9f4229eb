"""SIS import upload: ``CanvasHook.start_sis_import`` (the ZIP as the raw body, streamed by requests)
vs ``curl -T zip -X POST`` (curl's streaming upload of the same raw body) to the same emulator.

curl ``--data-binary @file``, the form the SIS Imports API's own example uses, reads the whole file
into memory first, and ``-F attachment=@file`` is multipart: neither is the streaming raw upload the
hook makes, so the like-for-like baseline is ``-T`` (which streams) with ``-X POST``. The emulator
spools each body to disk in 1 MiB blocks and, for this case, drops it after counting its bytes.
"""

from __future__ import annotations

import argparse
import sys
import zipfile
from pathlib import Path

from benchmarks._harness import (
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
    python_child,
    ratio,
    rss_mib,
    run_child,
    spread,
    stopwatch,
)

FULL_SIZES = (100_000_000, 1_000_000_000)
QUICK_SIZES = (20_000_000,)
CONN_ID = "bench_canvas"
ROW = "C{course:05d},u{user:08d},student,active\n"


def make_zip(path: Path, size: int) -> int:
    """A stored (uncompressed) ZIP of one enrollments.csv of about ``size`` bytes; its real size."""
    block_rows = 20_000
    with (
        zipfile.ZipFile(path, "w", zipfile.ZIP_STORED, allowZip64=True) as archive,
        archive.open("enrollments.csv", "w", force_zip64=True) as member,
    ):
        member.write(b"course_id,user_id,role,status\n")
        written, user = 0, 0
        while written < size:
            block = "".join(ROW.format(course=u % 1000, user=u) for u in range(user, user + block_rows))
            member.write(block.encode())
            written += len(block)
            user += block_rows
    return path.stat().st_size


def run(workspace: Workspace, *, quick: bool, reps: int) -> CaseReport:
    sizes = QUICK_SIZES if quick else FULL_SIZES
    seed = lms_seed(
        canvas={
            "accounts": [{"id": 1, "name": "Bench University"}],
            "bucket_capacity": 10**9,
            "sis_imports": {"keep_uploads": False},
        }
    )
    report = CaseReport()
    table = Table(
        f"SIS import upload (median of {reps}, alternating)",
        ["size", "client", "s", "MB/s (min-max)", "vs curl -T", "peak RSS MiB", "RSS growth MiB"],
        notes=[
            "hook: `CanvasHook.start_sis_import(account, zip, options)`: one POST of the ZIP as the raw "
            "body (`Content-Type: application/zip`, `extension=zip`), streamed from the file by requests; "
            "the time includes Canvas's (the emulator's) JSON answer.",
            "curl -T: `curl -T zip -X POST` of the same URL, body and headers (streams the file); time from "
            "curl's `time_total`. curl `--data-binary @zip` would read the whole file into memory first.",
            "RSS growth: the hook process's peak (VmHWM) minus its RSS right before the upload (Airflow "
            "and the hook imported, the token read).",
        ],
    )
    with EmulatorProcess(workspace, "sis-upload", seed) as emulator:
        workspace.lms_connection(CONN_ID, "canvas", emulator)
        token = emulator.tokens["canvas"]["bench"]["access_token"]
        auth_header = workspace.path("curl-auth-header")
        auth_header.touch(mode=0o600)
        auth_header.write_text(f"Authorization: Bearer {token}\n")
        url = f"{emulator.url}/api/v1/accounts/1/sis_imports?import_type=instructure_csv&extension=zip"
        for size in sizes:
            archive = workspace.path("sis", f"sis-{size}.zip")
            actual = make_zip(archive, size)
            timeout = 60 + actual / 5e6

            def hook(archive: Path = archive, actual: int = actual, timeout: float = timeout) -> Sample:
                child = python_child("sis_upload", "hook", str(archive), timeout=timeout)
                result = child.result
                return {
                    "seconds": result["seconds"],
                    "mb_s": actual / 1e6 / result["seconds"],
                    "peak_rss_mib": child.peak_rss_mib,
                    "rss_growth_mib": child.peak_rss_mib - result["rss_before_mib"],
                }

            def curl(archive: Path = archive, actual: int = actual, timeout: float = timeout) -> Sample:
                argv = [
                    "curl",
                    "-sS",
                    "--fail",
                    "-o",
                    "/dev/null",
                    "-w",
                    "%{time_total}",
                    "-X",
                    "POST",
                    "-H",
                    f"@{auth_header}",
                    "-H",
                    "Content-Type: application/zip",
                    "-T",
                    str(archive),
                    url,
                ]
                child = run_child(argv, timeout=timeout, label="curl -T")
                seconds = float(child.stdout.strip())
                return {
                    "seconds": seconds,
                    "mb_s": actual / 1e6 / seconds,
                    "peak_rss_mib": child.peak_rss_mib,
                }

            samples = alternate([("hook", hook), ("curl -T", curl)], reps)
            curl_rate = median(samples["curl -T"], "mb_s")
            for variant, s in samples.items():
                rate = median(s, "mb_s")
                table.add(
                    f"{actual / 1e6:,.0f} MB",
                    variant,
                    fmt(median(s, "seconds")),
                    fmt(rate) + (f" ({spread(s, 'mb_s')})" if reps > 1 else ""),
                    ratio(rate, curl_rate),
                    fmt(median(s, "peak_rss_mib")),
                    fmt(median(s, "rss_growth_mib")) if "rss_growth_mib" in s[0] else "—",
                )
            report.raw[str(size)] = samples
            archive.unlink()
        largest = str(sizes[-1])
        hook_rate = median(report.raw[largest]["hook"], "mb_s")
        curl_rate = median(report.raw[largest]["curl -T"], "mb_s")
        growth = median(report.raw[largest]["hook"], "rss_growth_mib")
        label = f"{sizes[-1] / 1e6:,.0f} MB"
        report.targets += [
            Target(
                f"SIS upload >= 0.9x curl -T ({label})",
                f"{hook_rate / curl_rate:.2f}x ({fmt(hook_rate)} vs {fmt(curl_rate)} MB/s)",
                hook_rate >= 0.9 * curl_rate,
            ),
            Target(f"SIS upload memory growth <= 8 MiB ({label})", f"{fmt(growth)} MiB", growth <= 8),
        ]
    report.tables.append(table)
    return report


def _child(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.sis_upload child")
    parser.add_argument("variant", choices=["hook"])
    parser.add_argument("archive")
    args = parser.parse_args(argv)
    from airflow_provider_canvas.canvas.hooks.canvas import CanvasHook

    hook = CanvasHook(CONN_ID)
    hook.tokens.access_token()  # the token lookup is not part of the transfer
    before = rss_mib()
    with stopwatch() as timing:
        created = hook.start_sis_import(1, args.archive, {})
    hook.close()
    emit({"seconds": timing["seconds"], "import_id": created["id"], "rss_before_mib": before})


if __name__ == "__main__":
    if sys.argv[1:2] == ["child"]:
        _child(sys.argv[2:])
    else:
        sys.exit("run the benchmarks with: python -m benchmarks.run")
