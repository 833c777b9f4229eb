"""Prepare the Docker Compose stack's metadata: users, databases and connections against the emulator.

Run by the ``airflow-init`` service after ``airflow db migrate`` (it may touch the metadata database;
tasks may not). Every step is idempotent, so it runs again on each ``docker compose up``:

1. the SimpleAuthManager passwords file: the admin's password from ``_AIRFLOW_WWW_USER_PASSWORD``, a
   random one (made once, then kept) for every other user in ``[core] simple_auth_manager_users``;
2. the PostgreSQL databases of the token lock and of the Brightspace warehouse;
3. the connections the example DAGs use (``canvas_default``, ``canvas_test``, ``canvas_beta``,
   ``brightspace_default``) with the client secrets of the emulator seed and the tokens the emulator
   wrote to its ``--issued-tokens-out`` file, each with ``lock_conn_id`` = ``token_lock_pg``; the
   ``token_lock_pg``, ``brightspace_warehouse``, ``canvas_data_warehouse`` and ``sis_source``
   PostgreSQL connections;
   and the connection named by ``[canvas_provider] airflow_api_conn_id``, whose user task code logs in
   as to save rotated tokens.

The tokens of a connection that exists already are replaced only when the token file changed since the
last run (a restarted emulator forgot the old ones). Otherwise they stay: the hooks have rotated them,
and a Brightspace refresh token presented twice revokes the whole token family.

No secret is printed. Connection passwords and extras are stored Fernet-encrypted; without a
``[core] fernet_key`` this script refuses to run.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

LMS_PLATFORMS = ("canvas", "brightspace")
LOCK_CONN_ID = "token_lock_pg"
WAREHOUSE_CONN_ID = "brightspace_warehouse"
# The Canvas Data 2 tables go into the same warehouse database (schema canvas_data).
CANVAS_DATA_WAREHOUSE_CONN_ID = "canvas_data_warehouse"
SIS_SOURCE_CONN_ID = "sis_source"
# A user that may edit connections: SimpleAuthManager's "op" role or above.
ROLES_THAT_EDIT_CONNECTIONS = ("op", "admin")
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1", "0.0.0.0", "")


class DeployError(Exception):
    """The stack is misconfigured; the message says what to fix."""


def env(name: str, default: str) -> str:
    return os.environ.get(name) or default


# --- inputs -------------------------------------------------------------------------------------------
def wait_for_issued_tokens(path: Path, timeout: float) -> tuple[dict[str, Any], str]:
    """The emulator's token file and the sha256 of its bytes (written atomically, so never partial)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            raw = path.read_bytes()
            return json.loads(raw), hashlib.sha256(raw).hexdigest()
        except FileNotFoundError:
            if time.monotonic() > deadline:
                raise DeployError(
                    f"{path} did not appear within {timeout:.0f}s: is the lms-emulator service running "
                    "with --issued-tokens-out on the shared volume?"
                ) from None
            time.sleep(1)


def client_secrets(seed: dict[str, Any], platform: str) -> dict[str, str]:
    return {c["client_id"]: c["client_secret"] for c in (seed.get(platform) or {}).get("clients", [])}


# --- what to create -----------------------------------------------------------------------------------
def lms_connections(
    seed: dict[str, Any], issued: dict[str, Any], *, lock_conn_id: str = LOCK_CONN_ID
) -> list[dict[str, Any]]:
    """One connection per pre-issued token, named by the token's name in the seed."""
    host = issued["url"]
    if (urlsplit(host).hostname or "") in LOOPBACK_HOSTS:
        raise DeployError(
            f"the emulator advertises {host}, which other containers cannot reach: start it with "
            "--host <its service name> so its URLs (token endpoint, page links, download links) "
            "resolve on the compose network"
        )
    # Already expired: the first task refreshes and saves the rotated tokens through the REST API.
    expired = (datetime.now(timezone.utc) - timedelta(minutes=1)).isoformat()
    specs = []
    for platform in LMS_PLATFORMS:
        known_secrets = client_secrets(seed, platform)
        for name, tokens in sorted((issued.get(platform) or {}).items()):
            if tokens["client_id"] not in known_secrets:
                raise DeployError(f"{platform} token {name!r}: client {tokens['client_id']!r} is not seeded")
            extra = {
                "access_token": tokens["access_token"],
                "refresh_token": tokens["refresh_token"],
                "expires_at": expired,
                "lock_conn_id": lock_conn_id,
            }
            if platform == "brightspace":
                extra["oauth_url"] = tokens["token_url"]
            specs.append(
                {
                    "conn_id": name,
                    "conn_type": platform,
                    "host": host,
                    "login": tokens["client_id"],
                    "password": known_secrets[tokens["client_id"]],
                    "extra": extra,
                }
            )
    return specs


def canvas_data_connections(seed: dict[str, Any], issued: dict[str, Any]) -> list[dict[str, Any]]:
    """``canvas_data_default`` on the DAP emulator: client credentials only, no tokens to pre-issue."""
    dap = issued.get("canvas_data")
    clients = (seed.get("canvas_data") or {}).get("clients") or []
    if not dap or not clients:
        return []
    spec = {"conn_id": "canvas_data_default", "conn_type": "canvas_data", "host": dap["url"]}
    spec |= {"login": clients[0]["client_id"], "password": clients[0]["client_secret"]}
    return [{**spec, "extra": {"namespace": "canvas"}}]


def postgres_connections(
    metadata_url: str, lock_database: str, warehouse_database: str
) -> list[dict[str, Any]]:
    """The lock and the warehouse: databases of their own on the metadata database's server."""
    from sqlalchemy.engine import make_url

    url = make_url(metadata_url)
    server = {"conn_type": "postgres", "host": url.host, "port": url.port or 5432}
    server |= {"login": url.username, "password": url.password}
    return [
        # Advisory locks are per database: one of its own never meets Airflow's own advisory locks.
        {"conn_id": LOCK_CONN_ID, "schema": lock_database, **server},
        {"conn_id": WAREHOUSE_CONN_ID, "schema": warehouse_database, **server},
        {"conn_id": CANVAS_DATA_WAREHOUSE_CONN_ID, "schema": warehouse_database, **server},
        # canvas_sis_nightly reads the SIS extract (views sis_export.*) from here: create them in
        # the warehouse database, or point this connection at the SIS database.
        {"conn_id": SIS_SOURCE_CONN_ID, "schema": warehouse_database, **server},
    ]


def api_connection(conn_id: str, api_url: str, username: str, password: str) -> dict[str, Any]:
    """The Airflow user task code logs in as (``POST /auth/token``) to PATCH connections."""
    return {"conn_id": conn_id, "conn_type": "http", "host": api_url, "login": username, "password": password}


# --- SimpleAuthManager users --------------------------------------------------------------------------
def configured_users(users_setting: str) -> dict[str, str]:
    """``[core] simple_auth_manager_users`` ("name:role,...") as {name: role}."""
    users = {}
    for entry in filter(None, (part.strip() for part in users_setting.split(","))):
        name, _, role = entry.partition(":")
        users[name] = role.split(":")[0].lower()
    return users


def ensure_passwords_file(
    path: Path, users: dict[str, str], admin: str, admin_password: str
) -> dict[str, str]:
    """Write SimpleAuthManager's passwords file; return {user: password}. Keeps passwords made earlier."""
    try:
        passwords = json.loads(path.read_text() or "{}")
    except FileNotFoundError:
        passwords = {}
    for user in users:
        if user == admin:
            passwords[user] = admin_password
        elif not passwords.get(user):
            passwords[user] = secrets.token_urlsafe(24)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(passwords, handle)
        handle.write("\n")
    os.replace(tmp, path)
    return passwords


# --- writing ------------------------------------------------------------------------------------------
def ensure_databases(metadata_url: str, names: list[str]) -> None:
    import psycopg
    from psycopg import sql
    from sqlalchemy.engine import make_url

    url = make_url(metadata_url).set(drivername="postgresql")
    with psycopg.connect(url.render_as_string(hide_password=False), autocommit=True) as db:
        for name in names:
            if db.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone() is None:
                db.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
                print(f"created database {name}")


def upsert_connections(session: Any, specs: list[dict[str, Any]], *, keep_existing: set[str]) -> list[str]:
    """Create or replace each connection (ids in ``keep_existing`` are only created); return what changed."""
    from airflow.models import Connection
    from sqlalchemy import select

    changed = []
    for spec in specs:
        row = session.scalar(select(Connection).filter_by(conn_id=spec["conn_id"]).limit(1))
        if row is not None and spec["conn_id"] in keep_existing:
            continue
        if row is None:
            row = Connection(conn_id=spec["conn_id"], conn_type=spec["conn_type"])
            session.add(row)
        row.conn_type = spec["conn_type"]
        row.host, row.schema, row.port = spec.get("host"), spec.get("schema"), spec.get("port")
        row.login, row.password = spec.get("login"), spec.get("password")
        row.extra = None if spec.get("extra") is None else json.dumps(spec["extra"])
        if (row.password and not row.is_encrypted) or (row.extra and not row.is_extra_encrypted):
            raise DeployError(f"connection {spec['conn_id']!r} would be stored unencrypted: set FERNET_KEY")
        changed.append(spec["conn_id"])
    session.flush()
    return changed


def main() -> int:
    from airflow.configuration import conf
    from airflow.utils.session import create_session

    if not conf.get("core", "fernet_key", fallback=""):
        raise DeployError("[core] fernet_key is empty: set FERNET_KEY in .env (see README)")
    metadata_url = conf.get("database", "sql_alchemy_conn")
    seed = json.loads(Path(env("CANVAS_DEPLOY_EMULATOR_SEED", "/opt/deploy/emulator-seed.json")).read_text())
    tokens_path = Path(env("CANVAS_DEPLOY_ISSUED_TOKENS", "/shared/issued-tokens.json"))
    issued, digest = wait_for_issued_tokens(tokens_path, float(env("CANVAS_DEPLOY_WAIT_SECONDS", "120")))

    users = configured_users(conf.get("core", "simple_auth_manager_users", fallback=""))
    admin = env("_AIRFLOW_WWW_USER_USERNAME", "airflow")
    api_user = env("CANVAS_DEPLOY_API_USER", "canvas_token_writer")
    if users.get(api_user) not in ROLES_THAT_EDIT_CONNECTIONS:
        raise DeployError(
            f"{api_user!r} must be in [core] simple_auth_manager_users with role op or admin "
            f"(it edits connections); configured: {sorted(users)}"
        )
    passwords_file = Path(conf.get("core", "simple_auth_manager_passwords_file"))
    passwords = ensure_passwords_file(
        passwords_file, users, admin, env("_AIRFLOW_WWW_USER_PASSWORD", "airflow")
    )
    print(f"SimpleAuthManager users {sorted(users)}: passwords in {passwords_file}")

    lock_db = env("CANVAS_DEPLOY_LOCK_DATABASE", "canvas_locks")
    warehouse_db = env("CANVAS_DEPLOY_WAREHOUSE_DATABASE", "brightspace_warehouse")
    ensure_databases(metadata_url, [lock_db, warehouse_db])

    lms = lms_connections(seed, issued)
    api_url = conf.get("canvas_provider", "airflow_api_url", fallback="") or "http://airflow-apiserver:8080"
    api_conn_id = conf.get("canvas_provider", "airflow_api_conn_id", fallback="airflow_api")
    specs = [
        *lms,
        *canvas_data_connections(seed, issued),
        *postgres_connections(metadata_url, lock_db, warehouse_db),
        api_connection(api_conn_id, api_url, api_user, passwords[api_user]),
    ]
    applied_marker = tokens_path.with_name(f".{tokens_path.name}.applied")
    applied = applied_marker.read_text().strip() if applied_marker.exists() else ""
    keep = {spec["conn_id"] for spec in lms} if applied == digest else set()
    with create_session() as session:
        changed = upsert_connections(session, specs, keep_existing=keep)
    applied_marker.write_text(digest + "\n")
    kept = sorted({spec["conn_id"] for spec in specs} - set(changed))
    print(
        f"connections written: {', '.join(changed) or 'none'}; kept as they are: {', '.join(kept) or 'none'}"
    )
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except DeployError as err:
        print(f"airflow-init: {err}", file=sys.stderr)
        sys.exit(1)
