"""What checking a deflated extract costs: inflated and CRC-ed as it streams vs read again afterwards.

``python -m benchmarks.zip_check [--mb 1000] [--reps 2]``. Builds a deflated ZIP of a Users-like CSV
of about ``--mb`` MB (as Brightspace serves extracts), then, each in a fresh process, alternating:
- stream: the bytes fed to ``ZipStreamCheck`` in the download's 1 MiB chunks, then ``verify`` (what
  the download adds to its own work; no second read of the file);
- re-read: ``zipfile`` inflating the member from the file afterwards (the alternative: a second pass);
- quick: ``quick_check`` (size and central directory: what each pull spends per file in its manifest).
The file is read from the page cache in every variant, so the figures are CPU, not disk.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import zipfile
from datetime import datetime, timezone
from pathlib import Path

CHUNK = 2**20


def _rss_mib(field: str = "VmRSS") -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


def build(path: Path, megabytes: int) -> int:
    from airflow_provider_canvas.testing.bds_files import GeneratedZip

    columns = ["UserId", "UserName", "OrgDefinedId", "FirstName", "LastName", "ExternalEmail", "OrgRoleId"]
    rows = max(1, megabytes * 10**6 // 130)
    source = GeneratedZip("Users.csv", columns, rows, 1, datetime.now(timezone.utc))
    csv_start, csv_len = source._local_len, source._csv_len
    info = zipfile.ZipInfo("Users.csv", (2026, 11, 1, 0, 0, 0))
    info.compress_type = zipfile.ZIP_DEFLATED
    with zipfile.ZipFile(path, "w") as archive, archive.open(info, "w", force_zip64=True) as member:
        for chunk in source.iter_range(csv_start, csv_start + csv_len):
            member.write(chunk)
    return csv_len


def child(variant: str, path: str) -> None:
    from airflow_provider_canvas.common.zip_check import ZipStreamCheck, quick_check

    before = _rss_mib()
    started = time.perf_counter()
    if variant == "stream":
        check = ZipStreamCheck("bench.zip")
        with open(path, "rb") as data:
            while chunk := data.read(CHUNK):
                check.feed(chunk)
        check.verify(path)
    elif variant == "re-read":
        with zipfile.ZipFile(path) as archive, archive.open(archive.infolist()[0]) as member:
            while member.read(CHUNK):
                pass
    else:
        quick_check(path, os.path.getsize(path), "bench.zip")
    seconds = time.perf_counter() - started
    print(json.dumps({"seconds": seconds, "growth_mib": _rss_mib("VmHWM") - before}))


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.zip_check", description=__doc__)
    parser.add_argument("--mb", type=int, default=1000, help="CSV size in MB")
    parser.add_argument("--reps", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="zip-check-") as scratch:
        path = Path(scratch) / "users.zip"
        csv_bytes = build(path, args.mb)
        zipped = path.stat().st_size
        print(f"extract: {zipped / 1e6:.0f} MB deflated, {csv_bytes / 1e6:.0f} MB of CSV")
        samples: dict[str, list[dict]] = {"stream": [], "re-read": [], "quick": []}
        for _ in range(args.reps):
            for variant in samples:
                done = subprocess.run(
                    [sys.executable, "-m", "benchmarks.zip_check", "--child", variant, str(path)],
                    capture_output=True,
                    text=True,
                    check=True,
                )
                samples[variant].append(json.loads(done.stdout.splitlines()[-1]))
        print("| check | s per run | MB/s of ZIP | RSS growth MiB |")
        print("|---|---|---|---|")
        for variant, runs in samples.items():
            seconds = [r["seconds"] for r in runs]
            growth = max(r["growth_mib"] for r in runs)
            shown = ", ".join(f"{s:.3f}" for s in seconds)
            rate = ", ".join(f"{zipped / 1e6 / s:.0f}" for s in seconds)
            print(f"| {variant} | {shown} | {rate} | {growth:.1f} |")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        child(sys.argv[2], sys.argv[3])
    else:
        main()
