"""Talk to a running Airflow 3 as its users do: the ``airflow`` CLI and the public REST API."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import requests

AIRFLOW_BIN = Path(sys.executable).parent / "airflow"
# Fields every task log event repeats; task_log() shows only the rest beside the message.
LOG_CONTEXT_KEYS = {"timestamp", "level", "event", "logger", "filename", "lineno", "dag_id", "task_id"}
LOG_CONTEXT_KEYS |= {"run_id", "ti_id", "try_number", "map_index"}


class AirflowClient:
    """The ``airflow`` CLI (run with ``env`` in ``home``) and the REST API at ``api_url``."""

    def __init__(self, api_url: str, home: Path, env: dict[str, str]) -> None:
        self.api_url = api_url
        self.home = home
        self.env = env
        self.airflow_bin = AIRFLOW_BIN
        self.http = requests.Session()

    # --- CLI and REST -------------------------------------------------------------------------------
    def cli(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """Run ``airflow <args>`` against this installation; raise with its stderr if it fails."""
        cmd = [str(self.airflow_bin), *args]
        result = subprocess.run(
            cmd, env=self.env, cwd=self.home, capture_output=True, text=True, timeout=timeout
        )
        if check and result.returncode != 0:
            raise RuntimeError(f"airflow {args[0]} exited {result.returncode}:\n{result.stderr[-4000:]}")
        return result

    def add_fab_user(
        self, username: str, password: str, role: str, permissions: list[tuple[str, str]] | None = None
    ) -> None:
        """Create a FAB user with ``role`` through FAB's REST API; with ``permissions`` ((action, resource)
        pairs such as ``("can_edit", "Connections")``), create that role first, with exactly those."""
        if permissions is not None:
            actions = [{"action": {"name": a}, "resource": {"name": r}} for a, r in permissions]
            self._fab_api("POST", "/roles", {"name": role, "actions": actions})
        body = {"username": username, "password": password, "roles": [{"name": role}]}
        body |= {"first_name": username, "last_name": "user", "email": f"{username}@example.invalid"}
        self._fab_api("POST", "/users", body)

    def _fab_api(self, method: str, path: str, body: dict[str, Any]) -> None:
        response = self.http.request(method, f"{self.api_url}/auth/fab/v1{path}", json=body, timeout=30)
        if not response.ok:  # the body may echo a password: the status only
            raise RuntimeError(f"{method} /auth/fab/v1{path} -> {response.status_code}")

    def login(self, username: str, password: str) -> str:
        """A JWT for this user from ``POST /auth/token`` (what the provider does with ``airflow_api``)."""
        # Generous: under FAB the first login builds FAB's Flask app inside the api-server.
        body = {"username": username, "password": password}
        response = requests.post(f"{self.api_url}/auth/token", json=body, timeout=90)
        if not response.ok:
            raise RuntimeError(f"login of {username!r} -> {response.status_code}")
        return str(response.json()["access_token"])

    def api(
        self, method: str, path: str, *, ok: tuple[int, ...] = (200,), **kwargs: Any
    ) -> requests.Response:
        """Call the public REST API at ``/api/v2<path>`` as admin; raise unless status in ``ok``.

        ``headers={"Authorization": ...}`` calls it as someone else."""
        response = self.http.request(method, f"{self.api_url}/api/v2{path}", timeout=30, **kwargs)
        if response.status_code not in ok:
            raise RuntimeError(f"{method} {path} -> {response.status_code}: {response.text[:2000]}")
        return response

    def add_connection(
        self,
        conn_id: str,
        conn_type: str,
        *,
        host: str | None = None,
        login: str | None = None,
        password: str | None = None,
        extra: dict[str, Any] | None = None,
        port: int | None = None,
        schema: str | None = None,
    ) -> None:
        """Create or replace a connection (over REST, so no password shows on a command line)."""
        body: dict[str, Any] = {"connection_id": conn_id, "conn_type": conn_type, "host": host}
        body |= {"login": login, "password": password, "extra": None if extra is None else json.dumps(extra)}
        body |= {"port": port, "schema": schema}
        if self.api("POST", "/connections", json=body, ok=(201, 409)).status_code == 409:
            self.api("PATCH", f"/connections/{conn_id}", json=body)

    def get_connection(self, conn_id: str) -> dict[str, Any]:
        """The connection as ``airflow connections get <id> -o json`` shows it to a user.

        That output turns each value inside ``extra_dejson`` into a string (2 -> "2", True -> "True"),
        so ``extra_dejson`` is rebuilt from ``get_uri``, which carries the extra losslessly.
        """
        [conn] = json.loads(self.cli("connections", "get", conn_id, "-o", "json").stdout)
        query = parse_qs(urlsplit(conn["get_uri"]).query, keep_blank_values=True)
        if "__extra__" in query:  # get_uri's form when some extra value is not a string
            conn["extra_dejson"] = json.loads(query["__extra__"][0])
        else:
            conn["extra_dejson"] = {key: values[0] for key, values in query.items()}
        return conn

    def set_variable(self, key: str, value: Any) -> None:
        """Create or update a Variable; a value that is not a string is stored as JSON."""
        body = {"key": key, "value": value if isinstance(value, str) else json.dumps(value)}
        if self.api("PATCH", f"/variables/{key}", json=body, ok=(200, 404)).status_code == 404:
            self.api("POST", "/variables", json=body, ok=(201,))

    def get_variable(self, key: str) -> str | None:
        response = self.api("GET", f"/variables/{key}", ok=(200, 404))
        return response.json()["value"] if response.status_code == 200 else None

    # --- DAGs and runs ------------------------------------------------------------------------------
    def wait_for_dag(self, dag_id: str, timeout: float = 120) -> None:
        """Wait until the dag-processor has parsed ``dag_id``; on timeout, raise with the import errors."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.api("GET", f"/dags/{dag_id}", ok=(200, 404)).status_code == 200:
                return
            time.sleep(1)
        errors = self.api("GET", "/importErrors").json()["import_errors"]
        details = "\n".join(f"{e['filename']}:\n{e['stack_trace']}" for e in errors) or "none"
        raise TimeoutError(f"DAG {dag_id!r} not parsed in {timeout}s. Import errors: {details}")

    def trigger(
        self, dag_id: str, conf: dict[str, Any] | None = None, *, logical_date: datetime | str | None = None
    ) -> str:
        """Unpause ``dag_id``, start a run (``logical_date``: aware datetime or ISO string); return run_id."""
        if isinstance(logical_date, datetime):
            logical_date = logical_date.isoformat()
        self.api("PATCH", f"/dags/{dag_id}", json={"is_paused": False})
        body = {"logical_date": logical_date, "conf": conf or {}}
        return self.api("POST", f"/dags/{dag_id}/dagRuns", json=body).json()["dag_run_id"]

    def wait_for_run(self, dag_id: str, run_id: str, timeout: float = 300) -> str:
        """Poll until the run has finished; return its final state ("success" or "failed")."""
        deadline, state = time.monotonic() + timeout, None
        while time.monotonic() < deadline:
            state = self.api("GET", f"/dags/{dag_id}/dagRuns/{run_id}").json()["state"]
            if state in ("success", "failed"):
                return state
            time.sleep(0.5)
        raise TimeoutError(f"run {run_id} of {dag_id} still {state} after {timeout}s")

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        """All task instances of a run, paging past the API's 100-row limit."""
        rows: list[dict[str, Any]] = []
        while True:
            params = {"limit": 100, "offset": len(rows)}
            page = self.api("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances", params=params).json()
            rows += page["task_instances"]
            if len(rows) >= page["total_entries"] or not page["task_instances"]:
                return rows

    def task_log(
        self, dag_id: str, run_id: str, task_id: str, try_number: int = 1, map_index: int = -1
    ) -> str:
        """A task's log as text: one line per event, with the fields that are not repeated context."""
        path = f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/logs/{try_number}"
        params = {"map_index": map_index, "full_content": True}
        response = self.api("GET", path, params=params, headers={"Accept": "application/json"})
        lines = []
        for entry in response.json()["content"]:
            if isinstance(entry, str):
                lines.append(entry)
                continue
            fields = " ".join(f"{k}={v}" for k, v in entry.items() if k not in LOG_CONTEXT_KEYS)
            lines.append(
                f"[{entry.get('timestamp')}] {entry.get('level')}: {entry.get('event')} {fields}".rstrip()
            )
        return "\n".join(lines)

    def xcom(
        self, dag_id: str, run_id: str, task_id: str, key: str = "return_value", map_index: int = -1
    ) -> Any:
        """An XCom value as the task pushed it (the stored JSON, not the UI's string form)."""
        path = f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/{key}"
        return self.api("GET", path, params={"map_index": map_index}).json()["value"]
