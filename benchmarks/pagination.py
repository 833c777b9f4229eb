"""Case 2: Canvas pagination. ``CanvasHook.paginate`` vs canvasapi's ``PaginatedList`` vs a bare
``requests`` loop following ``Link: rel="next"``, over the same emulator and the same page size (100).

The list is ``/api/v1/accounts/1/sub_accounts?recursive=true`` of a generated account tree; the
emulator's rate-limit bucket is raised so that throttling does not dominate. Each size gets its own
emulator process (the tree is generated at start-up).
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import time
import warnings
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

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
    python_child,
    ratio,
    rss_mib,
    spread,
    stopwatch,
)

if TYPE_CHECKING:
    import requests

FULL_SIZES = (10_000, 100_000)
QUICK_SIZES = (1_000,)
PAGE_SIZE = 100
CONN_ID = "bench_canvas"
VARIANTS = ("hook", "canvasapi", "requests")
ROOT_ACCOUNT = 1
#: A run stops reading after this long (canvasapi reads ~1,000 items/s: 100k would take minutes);
#: items/s is then over the items read, and the table says how many that was.
MAX_SECONDS = 30.0
QUICK_MAX_SECONDS = 5.0


def run(workspace: Workspace, *, quick: bool, reps: int) -> CaseReport:
    sizes = QUICK_SIZES if quick else FULL_SIZES
    cap = QUICK_MAX_SECONDS if quick else MAX_SECONDS
    report = CaseReport()
    table = Table(
        f"2. Canvas pagination, {PAGE_SIZE} per page (median of {reps}, alternating)",
        [
            "items",
            "client",
            "read",
            "s",
            "items/s (min-max)",
            "vs canvasapi",
            "peak RSS MiB",
            "RSS growth MiB",
        ],
        notes=[
            "hook: `CanvasHook.list_sub_accounts(1)` (`paginate`: token check, retries, Link parsing); "
            "canvasapi: `Canvas(url, token).get_account(1).get_subaccounts(recursive=True)`; "
            "requests: one Session, `response.links['next']` until there is none.",
            "Every client iterates the items and reads each id. RSS growth = peak minus the RSS right "
            "before the first request; flat memory means the same growth at 10k and 100k items.",
            f"Each run stops after {cap:g} s (`read` < items): canvasapi parses every string attribute "
            "of every object as a date with arrow (~1 ms per attribute), so it lists ~1,000 items/s.",
        ],
    )
    for size in sizes:
        seed = lms_seed(
            canvas={
                "per_page_clamp": PAGE_SIZE,
                "bucket_capacity": 1e12,
                "bucket_drain_per_second": 1e9,
                "account_tree": {"count": size + 1, "root_id": ROOT_ACCOUNT, "fanout": 10},
            }
        )
        with EmulatorProcess(workspace, f"pagination-{size}", seed) as emulator:
            workspace.lms_connection(CONN_ID, "canvas", emulator)
            env = {TOKEN_ENV: emulator.tokens["canvas"]["bench"]["access_token"]}
            run_one = functools.partial(_measure, url=emulator.url, size=size, env=env, cap=cap)
            samples = alternate([(v, functools.partial(run_one, v)) for v in VARIANTS], reps)
        baseline = median(samples["canvasapi"], "items_s")
        for variant in VARIANTS:
            s = samples[variant]
            rate = median(s, "items_s")
            table.add(
                f"{size:,}",
                variant,
                f"{median(s, 'items'):,.0f}",
                fmt(median(s, "seconds")),
                fmt(rate) + (f" ({spread(s, 'items_s')})" if reps > 1 else ""),
                ratio(rate, baseline),
                fmt(median(s, "peak_rss_mib")),
                fmt(median(s, "rss_growth_mib")),
            )
        report.raw[str(size)] = samples
    report.tables.append(table)
    report.targets += _targets(report.raw, sizes)
    return report


def _measure(variant: str, *, url: str, size: int, env: dict[str, str], cap: float) -> Sample:
    args = [variant, "--url", url, "--expect", str(size), "--max-seconds", str(cap)]
    child = python_child("pagination", *args, timeout=cap + 120, env=env)
    result = child.result
    return {
        "seconds": result["seconds"],
        "items": result["items"],
        "items_s": result["items"] / result["seconds"],
        "peak_rss_mib": child.peak_rss_mib,
        "rss_growth_mib": max(0.0, child.peak_rss_mib - result["rss_before_mib"]),
    }


def _targets(raw: dict, sizes: tuple[int, ...]) -> list[Target]:
    largest, smallest = raw[str(max(sizes))], raw[str(min(sizes))]
    hook, canvasapi = median(largest["hook"], "items_s"), median(largest["canvasapi"], "items_s")
    targets = [
        Target(
            f"pagination >= canvasapi items/s ({max(sizes):,} items)",
            f"{hook / canvasapi:.2f}x ({fmt(hook)} vs {fmt(canvasapi)} items/s)",
            hook >= canvasapi,
        )
    ]
    if len(sizes) > 1:
        small, big = median(smallest["hook"], "rss_growth_mib"), median(largest["hook"], "rss_growth_mib")
        others = ", ".join(
            f"{v} {fmt(median(smallest[v], 'rss_growth_mib'))} -> {fmt(median(largest[v], 'rss_growth_mib'))}"
            for v in ("canvasapi", "requests")
        )
        targets.append(
            Target(
                "pagination memory flat",
                f"hook RSS growth {fmt(small)} MiB at {min(sizes):,} items, {fmt(big)} MiB at "
                f"{max(sizes):,} ({others} MiB)",
                big - small < 5.0,
            )
        )
    return targets


# Child ----------------------------------------------------------------------------------------------


def _child(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.pagination child")
    parser.add_argument("variant", choices=VARIANTS)
    parser.add_argument("--url", required=True)
    parser.add_argument("--expect", type=int, required=True)
    parser.add_argument("--max-seconds", type=float, required=True)
    args = parser.parse_args(argv)
    token = os.environ[TOKEN_ENV]
    if args.variant == "hook":
        from airflow_provider_canvas.canvas.hooks.canvas import CanvasHook

        hook = CanvasHook(CONN_ID)
        hook.tokens.access_token()  # the connection lookup is not part of the listing
        items = hook.list_sub_accounts(ROOT_ACCOUNT)
        read_id = dict.__getitem__
    elif args.variant == "canvasapi":
        from canvasapi import Canvas

        warnings.simplefilter("ignore")  # canvasapi warns about http:// base URLs
        canvas = Canvas(args.url, token)
        account = canvas.get_account(ROOT_ACCOUNT)
        items = account.get_subaccounts(recursive=True, per_page=PAGE_SIZE)

        def read_id(item: object, key: str) -> object:
            return getattr(item, key)

    else:
        import requests

        items = _requests_loop(requests.Session(), args.url, token)
        read_id = dict.__getitem__
    before = rss_mib()
    count = 0
    deadline = time.perf_counter() + args.max_seconds
    with stopwatch() as timing:
        for item in items:
            read_id(item, "id")
            count += 1
            if count % PAGE_SIZE == 0 and time.perf_counter() > deadline:
                break
    if count != args.expect and time.perf_counter() <= deadline:
        raise SystemExit(f"{args.variant}: read {count} items, expected {args.expect}")
    emit({"seconds": timing["seconds"], "items": count, "rss_before_mib": before})


def _requests_loop(session: requests.Session, base_url: str, token: str) -> Iterator[dict[str, Any]]:
    """The loop a script would write: GET, yield the page, follow rel="next" until it is missing."""
    url: str | None = f"{base_url}/api/v1/accounts/{ROOT_ACCOUNT}/sub_accounts"
    params: dict | None = {"recursive": "true", "per_page": PAGE_SIZE}
    headers = {"Authorization": f"Bearer {token}"}
    while url:
        response = session.get(url, params=params, headers=headers, timeout=(10, 60))
        response.raise_for_status()
        yield from response.json()
        url = response.links.get("next", {}).get("url")
        params = None


if __name__ == "__main__":
    if sys.argv[1:2] == ["child"]:
        _child(sys.argv[2:])
    else:
        sys.exit("run the benchmarks with: python -m benchmarks.run")
