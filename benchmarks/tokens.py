"""Case 4: what token handling costs. API calls per second with the hook's cached token vs a fresh
connection lookup per call (and a bare ``requests`` loop with a fixed token, the limit); then the
refreshes 8 parallel workers make over 10 minutes of simulated time, the provider's hooks vs workers
that each refresh on their own (what hand-made scripts do).

Simulated time: the emulator issues access tokens valid 120 simulated seconds and the hooks refresh
20 simulated seconds before expiry, with time compressed 20x (6 s tokens, 1 s margin, 30 s of wall
clock for 10 simulated minutes). Ideally the 8 workers together refresh once per token lifetime.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable
from typing import Any

from benchmarks._harness import (
    CLIENT_ID,
    CLIENT_SECRET,
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
    spread,
)

CONN_ID = "bench_canvas_calls"
CALL_VARIANTS = (
    "hook, cached token",
    "new hook per call",
    "requests, lookup per call",
    "requests, fixed token",
)
WORKERS = 8
SPEEDUP = 20
TOKEN_TTL_SIM, MARGIN_SIM = 120, 20
FULL_SIM_MINUTES, QUICK_SIM_MINUTES = 10, 1
FULL_CALL_SECONDS, QUICK_CALL_SECONDS = 3.0, 1.0
#: Between two API calls a worker pauses this long (tasks do some work between calls).
WORKER_PAUSE_SECONDS = 0.01


def run(workspace: Workspace, *, quick: bool, reps: int) -> CaseReport:
    report = CaseReport()
    report.tables.append(_calls(workspace, quick, reps, report))
    report.tables.append(_refreshes(workspace, quick, report))
    return report


# API calls per second ------------------------------------------------------------------------------


def _calls(workspace: Workspace, quick: bool, reps: int, report: CaseReport) -> Table:
    seconds = QUICK_CALL_SECONDS if quick else FULL_CALL_SECONDS
    seed = lms_seed(canvas={"bucket_capacity": 1e12, "bucket_drain_per_second": 1e9, "account_tree": 10})
    with EmulatorProcess(workspace, "tokens-calls", seed) as emulator:
        workspace.lms_connection(CONN_ID, "canvas", emulator)
        env = {TOKEN_ENV: emulator.tokens["canvas"]["bench"]["access_token"]}

        def measure(variant: str) -> Sample:
            args = ["calls", "--variant", variant, "--url", emulator.url, "--seconds", str(seconds)]
            result = python_child("tokens", *args, timeout=seconds + 120, env=env).result
            return {"calls_s": result["calls"] / result["seconds"], "calls": result["calls"]}

        samples = alternate([(v, functools.partial(measure, v)) for v in CALL_VARIANTS], reps)
    report.raw["calls"] = samples
    table = Table(
        f"4. Token cost: GET /api/v1/accounts/1 calls per second, one worker (median of {reps}, "
        f"{seconds:g} s each, alternating)",
        ["client", "calls/s (min-max)", "vs fixed token"],
        notes=[
            "hook, cached token: one `CanvasHook`, `get_account(1)` in a loop (token checked in memory).",
            "new hook per call: a new `CanvasHook` per call: connection lookup, token read from the "
            "metadata database, new HTTP session (and TCP connection).",
            "requests, lookup per call: one `requests.Session`; before each call the connection is "
            "looked up (`Connection.get_connection_from_secrets`) and its token read.",
            "requests, fixed token: one `requests.Session`, a constant bearer token (the limit).",
        ],
    )
    limit = median(samples["requests, fixed token"], "calls_s")
    for variant in CALL_VARIANTS:
        s = samples[variant]
        rate = median(s, "calls_s")
        table.add(variant, fmt(rate) + (f" ({spread(s, 'calls_s')})" if reps > 1 else ""), ratio(rate, limit))
    cached, lookup = (
        median(samples["hook, cached token"], "calls_s"),
        median(samples["new hook per call"], "calls_s"),
    )
    report.targets.append(
        Target(
            "token: cached token beats a fresh lookup per call",
            f"{cached / lookup:.1f}x ({fmt(cached)} vs {fmt(lookup)} calls/s); {cached / limit:.2f}x of a "
            "fixed token",
            cached > lookup,
        )
    )
    return table


# Refreshes by parallel workers ---------------------------------------------------------------------


def _refreshes(workspace: Workspace, quick: bool, report: CaseReport) -> Table:
    minutes = QUICK_SIM_MINUTES if quick else FULL_SIM_MINUTES
    wall = minutes * 60 / SPEEDUP
    ttl, margin = TOKEN_TTL_SIM // SPEEDUP, MARGIN_SIM // SPEEDUP
    ideal = int(wall // (ttl - margin))
    table = Table(
        f"4b. Refreshes by {WORKERS} parallel workers over {minutes} simulated minutes "
        f"(tokens live {TOKEN_TTL_SIM} s, refreshed {MARGIN_SIM} s early; time compressed {SPEEDUP}x; "
        "one run each)",
        ["platform", "workers", "refreshes", "ideal", "token requests", "consumed tokens presented",
         "API calls ok", "API calls failed", "401s"],
        notes=[
            "provider: each worker thread has its own hook (its own in-memory token), as separate tasks "
            "do; refreshes go through the per-connection lock and the stored tokens.",
            "each on its own: every worker keeps its own copy of the tokens and refreshes when its copy "
            "is due or rejected, with no lock and no shared store.",
            "ideal: one refresh per token lifetime minus the margin, for all workers together.",
        ],
    )  # fmt: skip
    for platform in ("canvas", "brightspace"):
        for variant in ("provider", "each on its own"):
            seed = lms_seed(
                canvas={"bucket_capacity": 1e12, "bucket_drain_per_second": 1e9, "account_tree": 10},
                brightspace={"rate_limit_capacity": 10**9},
            )
            name = f"tokens-{platform}-{variant.replace(' ', '-')}"
            with EmulatorProcess(workspace, name, seed, access_token_ttl=ttl) as emulator:
                conn_id = f"bench_{platform}_refresh"
                workspace.lms_connection(conn_id, platform, emulator, expiry_buffer_seconds=margin)
                tokens = emulator.tokens[platform]["bench"]
                args = ["refresh", "--platform", platform, "--url", emulator.url, "--conn-id", conn_id]
                args += ["--seconds", str(wall), "--margin", str(margin)]
                args += ["--naive"] if variant != "provider" else []
                env = {TOKEN_ENV: json.dumps(tokens)}
                result = python_child("tokens", *args, timeout=wall + 120, env=env).result
            summary = result["summary"]
            by_status = summary["api_requests_by_status"][platform]
            table.add(
                platform,
                variant,
                summary["refresh_count"][platform],
                ideal,
                summary["token_requests"][platform],
                summary["consumed_presentations"][platform],
                f"{result['ok']:,}",
                f"{result['failed']:,}",
                f"{by_status.get('401', 0):,}",
            )
            report.raw[f"refresh/{platform}/{variant}"] = result
            if variant == "provider":
                refreshes = summary["refresh_count"][platform]
                report.targets.append(
                    Target(
                        f"token: {WORKERS} workers, {minutes} simulated min, {platform}: refreshes near "
                        "ideal, no failed call, no consumed token presented",
                        f"{refreshes} refreshes (ideal {ideal}), {result['failed']} failed calls, "
                        f"{summary['consumed_presentations'][platform]} consumed presented",
                        refreshes <= ideal + 1
                        and result["failed"] == 0
                        and summary["consumed_presentations"][platform] == 0,
                    )
                )
    return table


# Children -------------------------------------------------------------------------------------------


def _child(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.tokens child")
    parser.add_argument("kind", choices=["calls", "refresh"])
    parser.add_argument("--variant", choices=CALL_VARIANTS)
    parser.add_argument("--platform", choices=["canvas", "brightspace"])
    parser.add_argument("--url", required=True)
    parser.add_argument("--conn-id", default=CONN_ID)
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--margin", type=float, default=0)
    parser.add_argument("--naive", action="store_true")
    args = parser.parse_args(argv)
    if args.kind == "calls":
        emit(_count_calls(_call_for(args.variant, args.url), args.seconds))
    elif args.naive:
        emit(_refresh_naive(args.platform, args.url, args.seconds, args.margin))
    else:
        emit(_refresh_provider(args.platform, args.url, args.conn_id, args.seconds))


def _call_for(variant: str, url: str) -> Callable[[], None]:
    import requests

    from airflow_provider_canvas.canvas.hooks.canvas import CanvasHook

    if variant == "hook, cached token":
        hook = CanvasHook(CONN_ID)
        return functools.partial(hook.get_account, 1)
    if variant == "new hook per call":

        def new_hook() -> None:
            hook = CanvasHook(CONN_ID)
            try:
                hook.get_account(1)
            finally:
                hook.close()

        return new_hook
    session = requests.Session()
    if variant == "requests, lookup per call":
        from airflow_provider_canvas.common.airflow_access import get_connection

        def lookup() -> None:
            token = get_connection(CONN_ID).extra_dejson["access_token"]
            session.get(f"{url}/api/v1/accounts/1", headers={"Authorization": f"Bearer {token}"}, timeout=10)

        return lookup
    headers = {"Authorization": f"Bearer {os.environ[TOKEN_ENV]}"}
    return lambda: session.get(f"{url}/api/v1/accounts/1", headers=headers, timeout=10).raise_for_status()


def _count_calls(call: Callable[[], Any], seconds: float) -> dict[str, float]:
    for _ in range(10):  # warm up: imports, first connection, first token read
        call()
    calls, started = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - started) < seconds:
        call()
        calls += 1
    return {"calls": calls, "seconds": elapsed}


def _summary(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"{url}/_emulator/summary", timeout=30) as response:
        return json.loads(response.read())


def _run_workers(work: Callable[[float], Counter[str]], seconds: float) -> Counter[str]:
    totals: Counter[str] = Counter()
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def worker() -> None:
        counts = work(deadline)
        with lock:
            totals.update(counts)

    threads = [threading.Thread(target=worker) for _ in range(WORKERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return totals


def _refresh_provider(platform: str, url: str, conn_id: str, seconds: float) -> dict[str, Any]:
    from airflow_provider_canvas.brightspace.hooks.brightspace import BrightspaceHook
    from airflow_provider_canvas.canvas.hooks.canvas import CanvasHook
    from airflow_provider_canvas.exceptions import LmsError

    def work(deadline: float) -> Counter[str]:
        counts: Counter[str] = Counter()
        if platform == "canvas":
            hook: Any = CanvasHook(conn_id)
            call = functools.partial(hook.get_account, 1)
        else:
            hook = BrightspaceHook(conn_id)
            call = hook.whoami
        while time.monotonic() < deadline:
            try:
                call()
                counts["ok"] += 1
            except LmsError:
                counts["failed"] += 1
                time.sleep(0.1)
            time.sleep(WORKER_PAUSE_SECONDS)
        hook.close()
        return counts

    totals = _run_workers(work, seconds)
    return {"ok": totals["ok"], "failed": totals["failed"], "summary": _summary(url)}


def _refresh_naive(platform: str, url: str, seconds: float, margin: float) -> dict[str, Any]:
    """Workers as hand-made scripts behave: each its own token copy, refresh when due or refused."""
    import requests

    initial = json.loads(os.environ[TOKEN_ENV])
    api = f"{url}/api/v1/accounts/1" if platform == "canvas" else f"{url}/d2l/api/lp/1.49/users/whoami"

    def work(deadline: float) -> Counter[str]:
        counts: Counter[str] = Counter()
        session = requests.Session()
        mine = {"access": initial["access_token"], "refresh": initial["refresh_token"], "expires": 0.0}
        mine["expires"] = time.time() + float(initial["expires_in"]) - 2  # issued just before the run

        def refresh() -> bool:
            form = {"grant_type": "refresh_token", "refresh_token": mine["refresh"]}
            if platform == "canvas":
                form |= {"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET}
                auth = None
            else:
                form["scope"] = "datahub:dataexports:*"
                auth = (CLIENT_ID, CLIENT_SECRET)
            reply = session.post(initial["token_url"], data=form, auth=auth, timeout=10)
            if reply.status_code != 200:
                return False
            body = reply.json()
            mine["access"] = body["access_token"]
            mine["refresh"] = body.get("refresh_token") or mine["refresh"]
            mine["expires"] = time.time() + float(body["expires_in"])
            return True

        while time.monotonic() < deadline:
            if mine["expires"] - time.time() <= margin and not refresh():
                counts["failed"] += 1
                time.sleep(0.1)
                continue
            reply = session.get(api, headers={"Authorization": f"Bearer {mine['access']}"}, timeout=10)
            if reply.status_code == 401 and refresh():
                reply = session.get(api, headers={"Authorization": f"Bearer {mine['access']}"}, timeout=10)
            if reply.ok:
                counts["ok"] += 1
            else:
                counts["failed"] += 1
                time.sleep(0.1)
            time.sleep(WORKER_PAUSE_SECONDS)
        return counts

    totals = _run_workers(work, seconds)
    return {"ok": totals["ok"], "failed": totals["failed"], "summary": _summary(url)}


if __name__ == "__main__":
    if sys.argv[1:2] == ["child"]:
        _child(sys.argv[2:])
    else:
        sys.exit("run the benchmarks with: python -m benchmarks.run")
