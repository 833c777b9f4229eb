"""Reading and writing connections and variables from wherever a hook runs.

Inside a task under a real scheduler the ORM is blocked (Airflow 3): reads go through the Task
SDK (Execution API) and connection writes through the public REST API. Everywhere else (a
script, the CLI, ``airflow dags test``, the test suite) the metadata database is used directly.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import requests
from airflow.configuration import conf

from airflow_provider_canvas.exceptions import MetadataWriteError

log = logging.getLogger(__name__)

_SECTION = "canvas_provider"
_REST_TIMEOUT = (5, 30)


def in_task() -> bool:
    """True inside a task or trigger process supervised by Airflow (also under ``dags test``)."""
    from airflow.sdk.execution_time import task_runner

    return getattr(task_runner, "SUPERVISOR_COMMS", None) is not None


def orm_blocked() -> bool:
    """True where Airflow replaced the ORM session with one that raises (real supervised tasks)."""
    if not in_task():
        return False
    from airflow import settings
    from airflow.sdk.execution_time.supervisor import BlockedDBSession

    return getattr(settings, "Session", None) is BlockedDBSession


def get_connection(conn_id: str) -> Any:
    """The connection as every other reader sees it: secrets backends, env vars, then the DB."""
    if in_task():
        from airflow.sdk import Connection

        return Connection.get(conn_id)
    from airflow.models import Connection as ConnectionModel

    return ConnectionModel.get_connection_from_secrets(conn_id)


@dataclass(frozen=True)
class ConnectionFields:
    """The fields of a connection a hook reads, taken in one go (the async path's copy)."""

    conn_id: str
    conn_type: str | None
    host: str | None
    login: str | None
    password: str | None = field(repr=False)
    extra_dejson: dict[str, Any] = field(repr=False)


async def aget_connection(conn_id: str) -> ConnectionFields:
    """:func:`get_connection` for triggers: Airflow's async connection API, secrets masked there.

    The sync API would block the event loop on the supervisor (or deadlock beside an async call);
    outside a supervised process the metadata database is read in a thread.
    """
    if in_task():
        from airflow.sdk import BaseHook

        conn = await BaseHook.aget_connection(conn_id)
        extra = await conn.aextra_dejson()
    else:
        conn, extra = await asyncio.to_thread(_connection_and_extra, conn_id)
    return ConnectionFields(conn.conn_id, conn.conn_type, conn.host, conn.login, conn.password, extra)


def _connection_and_extra(conn_id: str) -> tuple[Any, dict[str, Any]]:
    conn = get_connection(conn_id)
    return conn, conn.extra_dejson


def shadowing_source(conn_id: str) -> str | None:
    """Name what would hide a write to the database copy of this connection, if anything."""
    env_name = f"AIRFLOW_CONN_{conn_id.upper()}"
    if env_name in os.environ:
        return f"the environment variable {env_name}"
    from airflow.configuration import get_custom_secret_backend

    backend = get_custom_secret_backend(worker_mode=in_task())
    if backend is not None and backend.get_connection(conn_id) is not None:
        return f"the secrets backend {type(backend).__name__}"
    return None


def write_connection_extra(conn_id: str, conn_type: str, extra: dict[str, Any]) -> None:
    """Replace the extra of a connection stored in the metadata database."""
    if orm_blocked():
        _patch_connection_via_api(conn_id, conn_type, extra)
        return
    from airflow.models import Connection as ConnectionModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        row = session.scalar(select(ConnectionModel).filter_by(conn_id=conn_id).limit(1))
        if row is None:
            raise MetadataWriteError(
                f"connection {conn_id!r} is not in the metadata database", retryable=False
            )
        row.set_extra(json.dumps(extra))


def upsert_connection(
    conn_id: str,
    conn_type: str,
    *,
    host: str,
    login: str,
    password: str,
    extra: dict[str, Any],
    keep: Callable[[str], bool],
) -> None:
    """Create or update a connection in the metadata database (outside tasks: the CLI).

    The extra keys already stored for which ``keep(key)`` is true stay (the CLI keeps the token
    keys: only the token store writes tokens).
    """
    from airflow.models import Connection as ConnectionModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        row = session.scalar(select(ConnectionModel).filter_by(conn_id=conn_id).limit(1))
        if row is None:
            row = ConnectionModel(conn_id=conn_id, conn_type=conn_type)
            session.add(row)
        kept = {k: v for k, v in row.extra_dejson.items() if keep(k)} if row.extra else {}
        row.host = host
        row.login = login
        row.password = password
        row.set_extra(json.dumps({**extra, **kept}))


def get_variable(key: str) -> str | None:
    if in_task():
        from airflow.sdk import Variable

        return Variable.get(key, default=None)
    from airflow.models import Variable as VariableModel

    return VariableModel.get(key, default_var=None)


def set_variable(key: str, value: str) -> None:
    if in_task():
        from airflow.sdk import Variable

        Variable.set(key, value)
        return
    from airflow.models import Variable as VariableModel

    VariableModel.set(key, value)


def state_dir() -> str:
    """``[canvas_provider] state_dir``, by default ``$AIRFLOW_HOME/canvas_provider``: one per install."""
    from airflow.configuration import get_airflow_home

    configured = conf.get(_SECTION, "state_dir", fallback="")
    return os.path.expanduser(configured) if configured else os.path.join(get_airflow_home(), _SECTION)


def lock_timeout_seconds() -> float:
    return conf.getfloat(_SECTION, "lock_timeout_seconds", fallback=120.0)


def _api_base_url() -> str:
    configured = conf.get(_SECTION, "airflow_api_url", fallback="")
    if configured:
        return configured.rstrip("/")
    execution_url = conf.get("core", "execution_api_server_url", fallback="") or ""
    if execution_url:
        return execution_url.rstrip("/").removesuffix("/execution")
    return (conf.get("api", "base_url", fallback="") or "http://localhost:8080").rstrip("/")


def api_conn_id() -> str:
    """The connection whose credentials task code uses to write connections through the REST API."""
    return conf.get(_SECTION, "airflow_api_conn_id", fallback="airflow_api")


def _api_headers(session: requests.Session, base_url: str) -> tuple[dict[str, str], str]:
    """The Authorization header from the ``airflow_api`` connection, and how it was obtained.

    Login and password: a user, exchanged at ``/auth/token`` for a JWT (SimpleAuthManager, FAB).
    Password with an empty login: an API token (as managed Airflow services issue), sent as it is.
    No such connection: no credentials ("none"), enough where every user is an admin.
    """
    from airflow.exceptions import AirflowNotFoundException

    conn_id = api_conn_id()
    try:
        credentials = get_connection(conn_id)
    except AirflowNotFoundException:
        return {}, "none"
    if not credentials.password:
        raise MetadataWriteError(
            f"connection {conn_id!r} has no password: set login and password of an Airflow user, "
            "or leave login empty and put an Airflow API token in password",
            retryable=False,
        )
    if not credentials.login:
        return {"Authorization": f"Bearer {credentials.password}"}, "token"
    response = session.post(
        f"{base_url}/auth/token",
        json={"username": credentials.login, "password": credentials.password},
        timeout=_REST_TIMEOUT,
    )
    if not response.ok:
        raise MetadataWriteError(
            f"the Airflow API refused the login of connection {conn_id!r} "
            f"(HTTP {response.status_code}) at {base_url}/auth/token; check its login and password "
            "(for an API token instead, leave login empty)",
            retryable=response.status_code >= 500,
        )
    return {"Authorization": f"Bearer {response.json()['access_token']}"}, "login"


def _refusal_hint(status: int, auth: str) -> str:
    """What to do about a refused connection update, by how the request was authenticated."""
    conn_id = api_conn_id()
    if status == 401 and auth == "token":
        return (
            f"the API token in the password of connection {conn_id!r} was refused: it is wrong or has "
            "expired; issue a new token and store it as that connection's password (login empty)"
        )
    if status == 401 and auth == "none":
        return (
            f"the API needs credentials: create connection {conn_id!r} with login/password of an "
            "Airflow user, or an API token as password and no login"
        )
    who = "the user" if auth == "login" else "the token"
    return (
        f"{who} of connection {conn_id!r} must be allowed to edit connections (FAB: can_edit on Connections)"
    )


def _patch_connection_via_api(conn_id: str, conn_type: str, extra: dict[str, Any]) -> None:
    base_url = _api_base_url()
    with requests.Session() as session:
        try:
            headers, auth = _api_headers(session, base_url)
            response = session.patch(
                f"{base_url}/api/v2/connections/{conn_id}",
                params={"update_mask": "extra"},
                json={"connection_id": conn_id, "conn_type": conn_type, "extra": json.dumps(extra)},
                headers=headers,
                timeout=_REST_TIMEOUT,
            )
        except requests.RequestException as err:
            raise MetadataWriteError(
                f"the Airflow API at {base_url} is unreachable ({type(err).__name__})"
            ) from None
    # The body of an error may echo the request, which holds tokens: report the status only.
    if not response.ok:
        raise MetadataWriteError(
            f"the Airflow API at {base_url} answered HTTP {response.status_code} to the update of "
            f"connection {conn_id!r}; {_refusal_hint(response.status_code, auth)}",
            retryable=response.status_code not in (401, 403, 404),
        )
