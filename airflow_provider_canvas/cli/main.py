"""The ``canvas-oauth`` command line: argument parsing and the exit status of each subcommand."""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from collections.abc import Sequence

from airflow_provider_canvas.exceptions import LmsError

EPILOG = """\
examples:
  canvas-oauth scopes --dags-folder dags/
  CANVAS_OAUTH_CLIENT_SECRET=... canvas-oauth authorize canvas_default --platform canvas \\
      --host https://myschool.instructure.com --client-id 10000000000123 \\
      --redirect-uri http://127.0.0.1:8765/canvas-oauth --scopes-from-dags dags/
  canvas-oauth check canvas_default --dags-folder dags/
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="canvas-oauth",
        description="First OAuth tokens for Canvas and Brightspace connections, the scopes your DAGs "
        "need, and a check that never spends a refresh token.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)

    auth = commands.add_parser(
        "authorize",
        help="consent in the browser, then create or update the connection with tokens",
        description="Opens the authorization URL, receives the redirect (on 127.0.0.1 when the "
        "redirect URI is local, else you paste the URL), exchanges the code and saves the "
        "connection. Values not given are taken from the existing connection. Tokens are never "
        "printed. The client secret comes from the environment variable named by "
        "--client-secret-env, else the existing connection, else a prompt.",
    )
    auth.add_argument("conn_id", help="Airflow connection id, e.g. canvas_default")
    auth.add_argument("--platform", choices=("canvas", "brightspace"), help="needed for a new connection")
    auth.add_argument("--host", help="base URL, e.g. https://myschool.instructure.com")
    auth.add_argument("--client-id", help="developer key ID (Canvas) / OAuth 2.0 client ID (Brightspace)")
    auth.add_argument(
        "--client-secret-env",
        default="CANVAS_OAUTH_CLIENT_SECRET",
        metavar="NAME",
        help="environment variable holding the client secret (default: %(default)s)",
    )
    auth.add_argument("--redirect-uri", help="a redirect URI registered on the developer key / app")
    scopes = auth.add_mutually_exclusive_group()
    scopes.add_argument(
        "--scope",
        action="append",
        default=[],
        help="a scope to request (repeat, or separate with spaces); default: the connection's scopes",
    )
    scopes.add_argument("--scopes-from-dags", metavar="DIR", help="request what the DAGs in DIR need")
    scopes.add_argument(
        "--all-scopes", action="store_true", help="request every scope the provider's operators can use"
    )
    auth.add_argument("--token-url", help="Brightspace token endpoint (default: D2L's)")
    auth.add_argument(
        "--replace-tokens",
        action="store_true",
        help="Canvas: destroy the user's other tokens of this developer key",
    )
    auth.add_argument("--no-browser", action="store_true", help="print the URL only")
    auth.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for the redirect")

    scope_cmd = commands.add_parser(
        "scopes",
        help="list the scopes the provider's operators in your DAGs need",
        description="Imports the DAG files as Airflow does and reads each provider task's "
        "required_scopes. Canvas scopes come in the url:VERB|/path form of the developer key form, "
        "grouped as Canvas groups them.",
    )
    where = scope_cmd.add_mutually_exclusive_group()
    where.add_argument("--dags-folder", metavar="DIR", help="default: [core] dags_folder")
    where.add_argument("--all", action="store_true", help="every scope of every operator")
    scope_cmd.add_argument("--platform", choices=("canvas", "brightspace"))
    scope_cmd.add_argument("--format", choices=("text", "list", "json"), default="text")

    check = commands.add_parser(
        "check",
        help="does the stored access token work, until when, with which scopes (never refreshes)",
    )
    check.add_argument("conn_id")
    required = check.add_mutually_exclusive_group()
    required.add_argument(
        "--dags-folder", metavar="DIR", help="check the scopes these DAGs need (default: [core] dags_folder)"
    )
    required.add_argument("--all", action="store_true", help="check every scope of every operator")
    required.add_argument("--scope", action="append", default=[], help="check this scope (repeat)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _logs_to_stderr()
    try:
        if args.command == "authorize":
            return _authorize(args)
        if args.command == "scopes":
            return _scopes(args)
        return _check(args)
    except LmsError as err:
        print(f"canvas-oauth {args.command}: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"canvas-oauth {args.command}: interrupted", file=sys.stderr)
        return 130


def _authorize(args: argparse.Namespace) -> int:
    from airflow_provider_canvas.cli.authorize import authorize
    from airflow_provider_canvas.cli.authorize_settings import resolve_settings

    settings = resolve_settings(
        args.conn_id,
        platform=args.platform,
        host=args.host,
        client_id=args.client_id,
        redirect_uri=args.redirect_uri,
        scopes=args.scope,
        scopes_from_dags=args.scopes_from_dags,
        all_operator_scopes=args.all_scopes,
        token_url=args.token_url,
        secret_env=args.client_secret_env,
    )
    authorize(
        settings, replace_tokens=args.replace_tokens, open_browser=not args.no_browser, timeout=args.timeout
    )
    return 0


def _scopes(args: argparse.Namespace) -> int:
    from airflow_provider_canvas.cli.scopes import format_report, report_for

    folder = _dag_folder(args)
    # DAG files may print while they are imported: stdout carries the scopes only.
    with contextlib.redirect_stdout(sys.stderr):
        report = report_for(args.platform, folder)
    print(format_report(report, args.format))
    # A DAG file that does not import hides its operators: the list may be short.
    return 1 if report.import_errors else 0


def _check(args: argparse.Namespace) -> int:
    from airflow_provider_canvas.cli.check import check_connection

    with contextlib.redirect_stdout(sys.stderr):
        lines = check_connection(args.conn_id, scopes=args.scope, dag_folder=_dag_folder(args))
    for line in lines:
        print(line)
    return 0 if all(line.ok is not False for line in lines) else 1


def _dag_folder(args: argparse.Namespace) -> str | None:
    """The DAG folder whose operators' scopes count; None: every operator's."""
    if args.all:
        return None
    from airflow.configuration import conf

    return args.dags_folder or conf.get("core", "dags_folder")


def _logs_to_stderr() -> None:
    # Airflow logs to stdout; the command's own output (a scope list, JSON) must be alone there.
    for name in ("", "airflow"):
        for handler in logging.getLogger(name).handlers:
            if isinstance(handler, logging.StreamHandler) and handler.stream in (sys.stdout, sys.__stdout__):
                handler.setStream(sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
