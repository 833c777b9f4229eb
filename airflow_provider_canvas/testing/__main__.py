"""Command line: run the LMS emulator from a seed file until SIGTERM/SIGINT."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from types import FrameType
from typing import Any

from airflow_provider_canvas.common.files import write_atomically
from airflow_provider_canvas.testing.emulator import LmsEmulator
from airflow_provider_canvas.testing.primitives import (
    BRIGHTSPACE,
    BRIGHTSPACE_TOKEN_PATH,
    CANVAS,
    CANVAS_TOKEN_PATH,
    IssuedTokens,
)

log = logging.getLogger("airflow_provider_canvas.testing")

SEED_HELP = """\
Seed document (every key optional):

    {
      "access_token_ttl": 3600,
      "canvas": {
        "clients": [{"client_id": "10000000000001", "client_secret": "s3cret",
                     "scopes": null, "enabled": true}],
        "tokens": [{"name": "demo", "client_id": "10000000000001", "user_id": 1, "scopes": null}],
        "account_tree": {"count": 1000, "root_id": 1, "fanout": 10},
        "accounts": [{"id": 5000, "name": "Other root"}],
        "sso_settings": {"1": {"auth_discovery_url": "https://idp.example/discover"}},
        "per_page_clamp": 50, "include_last_link": false, "throttle_status": 403
      },
      "brightspace": {
        "clients": [{"client_id": "bs-client", "client_secret": "s3cret",
                     "scopes": ["datahub:dataexports:*"]}],
        "tokens": [{"name": "demo", "client_id": "bs-client"}],
        "data_sets": [{"name": "Users", "columns": ["UserId", "UserName"], "rows_count": 1000,
                       "extracts": [{"bds_type": "Differential", "days_ago": 1, "rows_count": 10}]}],
        "ads_data_sets": [{"name": "Learner Usage", "columns": ["OrgUnitId", "Logins"], "rows_count": 100,
                           "filters": [{"Name": "startDate"}]}],
        "revoke_family_on_reuse": true, "ads_job_seconds": 3
      },
      "canvas_data": {
        "clients": [{"client_id": "us-east-1#dap-client", "client_secret": "s3cret"}],
        "seed": 7, "rows": {"users": 500}, "job_polls": 2, "job_min_seconds": 0,
        "catalogue": true, "rate_window": 60
      }
    }

With "canvas_data" (or --dap-port) the Canvas Data 2 (DAP) emulator runs too, on its own port
(--dap-port, default 0: a free one) with its own presigned-URL host; its URLs go to the tokens file.

`--issued-tokens-out` receives (mode 0600, replaced atomically) the URLs and every pre-issued token,
keyed by platform and token name, so a demo can put them into Airflow connections.
"""


def write_private_json(path: str, payload: dict[str, Any]) -> None:
    """Write JSON readable only by the owner, atomically: readers never see a partial token file."""
    write_atomically(path, json.dumps(payload, indent=2))


def _client_ids(seed: dict[str, Any], platform: str) -> dict[str, str]:
    tokens = (seed.get(platform) or {}).get("tokens", [])
    return {t.get("name") or t["client_id"]: t["client_id"] for t in tokens}


def _tokens_json(tokens: IssuedTokens, client_id: str, token_url: str) -> dict[str, Any]:
    return {
        "client_id": client_id,
        "token_url": token_url,
        "access_token": tokens.access_token,
        "refresh_token": tokens.refresh_token,
        "expires_at": tokens.expires_at.isoformat(),
        "expires_in": tokens.expires_in,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m airflow_provider_canvas.testing",
        description=__doc__,
        epilog=SEED_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765, help="0 picks a free port (see the tokens file)")
    parser.add_argument(
        "--signed-host",
        help="host name of the signed-download storage, another host than --host so clients must not "
        "send it the bearer token (default: 127.0.0.2 with --host 127.0.0.1, else --host); it must "
        "resolve to an address of this machine",
    )
    parser.add_argument("--seed", help="seed JSON file")
    parser.add_argument("--dap-port", type=int, default=None, help="also serve the DAP emulator here")
    parser.add_argument("--issued-tokens-out", help="write URLs and pre-issued tokens here (mode 0600)")
    parser.add_argument("--access-token-ttl", type=int, default=None)
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr
    )

    seed: dict[str, Any] = {}
    if args.seed:
        with open(args.seed, encoding="utf-8") as handle:
            seed = json.load(handle)
    if args.access_token_ttl is not None:
        seed["access_token_ttl"] = args.access_token_ttl  # before seeding: pre-issued tokens use it too
    emulator = LmsEmulator(host=args.host, port=args.port, signed_host=args.signed_host)
    emulator.request_log_level = logging.INFO
    issued = emulator.apply_seed(seed)

    stop = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)

    dap = _start_dap(args, seed)
    emulator.start()
    try:
        if args.issued_tokens_out:
            token_urls = {
                CANVAS: f"{emulator.url}{CANVAS_TOKEN_PATH}",
                BRIGHTSPACE: f"{emulator.url}{BRIGHTSPACE_TOKEN_PATH}",
            }
            payload: dict[str, Any] = {"url": emulator.url, "signed_url": emulator.signed_url}
            for platform, by_name in issued.items():
                client_ids = _client_ids(seed, platform)
                payload[platform] = {
                    name: _tokens_json(tokens, client_ids[name], token_urls[platform])
                    for name, tokens in by_name.items()
                }
            if dap is not None:
                payload["canvas_data"] = {"url": dap.url, "signed_url": dap.signed_url}
            write_private_json(args.issued_tokens_out, payload)
        log.info("LMS emulator listening on %s (signed downloads on %s)", emulator.url, emulator.signed_url)
        if dap is not None:
            log.info("DAP emulator listening on %s (presigned objects on %s)", dap.url, dap.signed_url)
        while not stop.wait(0.5):  # a timed wait keeps the main thread responsive to signals
            pass
    finally:
        emulator.stop()
        if dap is not None:
            dap.stop()
        log.info("LMS emulator stopped")
    return 0


def _start_dap(args: argparse.Namespace, seed: dict[str, Any]) -> Any:
    """The Canvas Data 2 emulator of the seed's ``canvas_data`` part, started; None without one."""
    if "canvas_data" not in seed and args.dap_port is None:
        return None
    from airflow_provider_canvas.testing.dap import DapEmulator

    part = seed.get("canvas_data") or {}
    dap = DapEmulator(
        args.host,
        args.dap_port or 0,
        seed=int(part.get("seed", 7)),
        rows=part.get("rows"),
        catalogue=bool(part.get("catalogue", True)),
        rate_window=float(part.get("rate_window", 60.0)),
    )
    dap.request_log_level = logging.INFO
    dap.job_polls = int(part.get("job_polls", dap.job_polls))
    dap.job_min_seconds = float(part.get("job_min_seconds", 0))
    for client in part.get("clients", []):
        dap.register_client(client["client_id"], client["client_secret"])
    return dap.start()


if __name__ == "__main__":
    sys.exit(main())
