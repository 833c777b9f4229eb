"""docker-compose.yaml, Dockerfile and deploy/, checked without a Docker engine.

(a) The compose file is valid against the Compose Specification JSON schema, before and after
    interpolation of its ``${...}`` variables (the schema comes from a pinned PyPI wheel, cached).
(b) It agrees with the local stack (``LocalAirflow``): every AIRFLOW__* setting the local stack makes
    is either in the compose file with a compatible value or listed below as deployment-specific; the
    services run the same ``airflow`` sub-commands (plus ``celery worker``); the provider options exist;
    the connections airflow-init creates are the ones the example DAGs use, made from the token file of
    the emulator run exactly as the compose file runs it.
(c) The Dockerfile's base image is the Airflow version pinned in constraints.txt.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import json
import os
import re
import shlex
import signal
import stat
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path, PurePosixPath
from types import ModuleType
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import pytest
import yaml
from cryptography.fernet import Fernet

from airflow_provider_canvas.get_provider_info import get_provider_info
from airflow_provider_canvas.testing.celery_hosts import NO_METADATA_DB
from airflow_provider_canvas.testing.local_airflow import COMPONENTS, LocalAirflow

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yaml"

# The Compose Specification schema as check-jsonschema vendors it (``--builtin-schema vendor.compose-spec``).
# That package refreshes its vendored copy of compose-spec/compose-spec's schema with each release; the
# schema in docker-compose 1.29.2 (Compose v1, last released 2021) predates keys such as ``develop`` or
# healthcheck ``start_interval``. The wheel's sha256 is pinned: PyPI files never change.
SCHEMA_WHEEL = ("check-jsonschema", "0.39.0")
SCHEMA_WHEEL_SHA256 = "14ce5c94871c551268ea948ffe21e9f1464dc48fb20bf9a4c13deeaaf756cf9b"
SCHEMA_MEMBER = "check_jsonschema/builtin_schemas/vendor/compose-spec.json"
SCHEMA_MEMBER_SHA256 = "check_jsonschema/builtin_schemas/vendor/sha256/compose-spec.sha256"

AIRFLOW_SERVICE_COMMANDS = {(c,) for c in COMPONENTS} | {("celery", "worker")}
INIT_SERVICE = "airflow-init"
EMULATOR_SERVICE = "lms-emulator"
API_SERVICE = "airflow-apiserver"
# Settings the compose file must not leave to chance: ${VAR:?message} makes compose refuse to start.
REQUIRED_VARIABLES = {"FERNET_KEY", "AIRFLOW_JWT_SECRET", "AIRFLOW_API_SECRET_KEY"}

# --- how each AIRFLOW__* setting of LocalAirflow must appear in the compose stack ---------------------
SAME_VALUE = {
    "AIRFLOW__CORE__AUTH_MANAGER",
    "AIRFLOW__CORE__LOAD_EXAMPLES",
    "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION",
    "AIRFLOW__CORE__TEST_CONNECTION",
}
# Random per LocalAirflow; here one required variable, the same in every Airflow service.
SHARED_SECRETS = {"AIRFLOW__API_AUTH__JWT_SECRET", "AIRFLOW__API__SECRET_KEY", "AIRFLOW__CORE__FERNET_KEY"}
CHECKED_SEPARATELY = {
    "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": "same shape, pointing at the api-server service",
    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": "SQLite or PostgreSQL locally; the postgres service here",
    "AIRFLOW__CORE__DAGS_FOLDER": "the image's default, where ./dags is mounted",
    "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "no logins locally; users with passwords here",
}
DEPLOYMENT_SPECIFIC = {
    "AIRFLOW__CORE__EXECUTOR": "LocalExecutor locally; CeleryExecutor is what this stack is for",
    "AIRFLOW__CORE__PARALLELISM": "sized for a test machine",
    "AIRFLOW__API__HOST": "loopback locally; a container listens on all interfaces (the default)",
    "AIRFLOW__API__PORT": "a free port locally; the default 8080 here",
    "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": "a free port locally (instances share a host); 8793 here",
    "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": "a free port locally (instances share a host); 8794 here",
    "AIRFLOW__API__BASE_URL": "the local URL; behind Docker the default (relative URLs) serves any host name",
    # Short loops so that tests see a new DAG file or a triggered run within seconds.
    "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "test speed",
    "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "test speed",
    "AIRFLOW__DAG_PROCESSOR__BUNDLE_REFRESH_CHECK_INTERVAL": "test speed",
    "AIRFLOW__CORE__MIN_SERIALIZED_DAG_UPDATE_INTERVAL": "test speed",
    "AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME": "test speed",
    "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "test speed",
    "AIRFLOW__SCHEDULER__JOB_HEARTBEAT_SEC": "test speed",
    "AIRFLOW__TRIGGERER__JOB_HEARTBEAT_SEC": "test speed",
}

# --- how each setting the Celery topology adds (LocalAirflow(executor="CeleryExecutor")) must appear ------
# The harness sets these for every component and worker; tests/e2e/test_celery_topology.py runs them.
CELERY_SAME_VALUE = {"AIRFLOW__CORE__EXECUTOR"}
CELERY_CHECKED_SEPARATELY = {
    "AIRFLOW__CELERY__BROKER_URL": "Redis at the redis service, as the local Redis here",
    "AIRFLOW__CELERY__RESULT_BACKEND": "db+postgresql:// on the metadata database, in both",
}
CELERY_DEPLOYMENT_SPECIFIC = {
    # Test runs on one machine share one Redis; the compose stack has a Redis of its own.
    "AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__GLOBAL_KEYPREFIX": "a test instance's keys in a shared Redis",
    "AIRFLOW__OPERATORS__DEFAULT_QUEUE": "a queue per test instance; the default queue in the stack",
}
# What each worker sets on top, to be a host of its own on a machine it shares with the other worker.
WORKER_CHECKED_SEPARATELY = {
    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": "none locally (proves workers need none); the official "
    "file's one environment for all services here",
    "AIRFLOW__CANVAS_PROVIDER__STATE_DIR": "its own per worker locally; per container here (a volume)",
    "AIRFLOW__LOGGING__BASE_LOG_FOLDER": "one folder the api-server reads, as the airflow-logs volume here",
}
WORKER_DEPLOYMENT_SPECIFIC = {
    "AIRFLOW__CORE__HOSTNAME_CALLABLE": "workers share a machine locally; each container has a host name",
    "AIRFLOW__CELERY__WORKER_CONCURRENCY": "sized for a test machine; Airflow's default (16) here",
    "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": "a free port per worker locally; 8793 in each container",
}


# --- loading --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    """The compose file as Compose sees it before interpolation (anchors and ``<<`` merges resolved)."""
    return yaml.safe_load(COMPOSE_FILE.read_text())


@pytest.fixture(scope="module")
def dotenv(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The .env that ``deploy/make-env.sh`` writes (the README's way to make one)."""
    target = tmp_path_factory.mktemp("env") / ".env"
    subprocess.run(
        ["bash", str(ROOT / "deploy" / "make-env.sh"), str(target)], check=True, capture_output=True
    )
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    return dict(line.split("=", 1) for line in target.read_text().splitlines() if line)


@pytest.fixture(scope="module")
def interpolated(compose: dict[str, Any], dotenv: dict[str, str]) -> dict[str, Any]:
    return interpolate(compose, dotenv)


@pytest.fixture(scope="module")
def compose_schema(request: pytest.FixtureRequest) -> dict[str, Any]:
    """The Compose Specification schema from the pinned wheel: downloaded once, then cached on disk."""
    name, version = SCHEMA_WHEEL
    cache_config = getattr(request.config, "cache", None)
    key = f"compose-spec-{name}-{version}"
    cache_dir = Path(cache_config.mkdir(key)) if cache_config else Path(tempfile.gettempdir()) / key
    cached = cache_dir / "compose-spec.json"
    if not cached.exists():
        with tempfile.TemporaryDirectory() as download:
            pip = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--quiet"]
            result = subprocess.run(
                [*pip, "--dest", download, f"{name}=={version}"],
                capture_output=True,
                text=True,
                timeout=180,
                env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"},
            )
            assert result.returncode == 0, f"pip download {name}=={version} failed:\n{result.stderr}"
            [wheel] = Path(download).glob("*.whl")
            assert hashlib.sha256(wheel.read_bytes()).hexdigest() == SCHEMA_WHEEL_SHA256, wheel.name
            with zipfile.ZipFile(wheel) as archive:
                raw = archive.read(SCHEMA_MEMBER)
                expected = archive.read(SCHEMA_MEMBER_SHA256).decode().split()[0]
            assert hashlib.sha256(raw).hexdigest() == expected
            cache_dir.mkdir(parents=True, exist_ok=True)
            partial = cache_dir / f".compose-spec.{os.getpid()}.tmp"
            partial.write_bytes(raw)
            partial.replace(cached)  # a concurrent run never reads half a file
    schema = json.loads(cached.read_text())
    jsonschema.validators.validator_for(schema).check_schema(schema)
    return schema


# --- Compose variable interpolation, as the Compose Specification describes it ---------------------------
_INTERPOLATION = re.compile(
    r"\$(?:(?P<escaped>\$)"
    r"|\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}"
    r"|(?P<named>[A-Za-z_][A-Za-z0-9_]*)"
    r"|(?P<invalid>))"
)


class MissingVariable(Exception):
    pass


def variable_uses(value: str) -> list[tuple[str, str | None, str | None]]:
    """(name, operator, argument) of each ``$`` reference; an invalid one fails as Compose would."""
    uses = []
    for match in _INTERPOLATION.finditer(value):
        if match["invalid"] is not None:
            raise AssertionError(f"invalid interpolation (a lone $; write $$ for a literal $): {value!r}")
        if match["escaped"] is None:
            uses.append((match["braced"] or match["named"], match["op"], match["arg"]))
    return uses


def interpolate(node: Any, environment: dict[str, str]) -> Any:
    """Resolve ``$VAR``, ``${VAR}``, ``${VAR:-default}``, ``${VAR:?error}``, ... and ``$$`` in strings."""
    if isinstance(node, dict):
        return {key: interpolate(value, environment) for key, value in node.items()}
    if isinstance(node, list):
        return [interpolate(item, environment) for item in node]
    if not isinstance(node, str):
        return node

    def resolve(match: re.Match[str]) -> str:
        if match["escaped"] is not None:
            return "$"
        name, op, arg = match["braced"] or match["named"], match["op"], match["arg"] or ""
        value = environment.get(name)
        unset_or_empty = not value if op and op.startswith(":") else value is None
        if op in (":-", "-"):
            return arg if unset_or_empty else value or ""
        if op in (":?", "?") and unset_or_empty:
            raise MissingVariable(f"{name}: {arg}")
        if op in (":+", "+"):
            return "" if unset_or_empty else arg
        return value or ""

    return _INTERPOLATION.sub(resolve, node)


def all_strings(node: Any) -> list[str]:
    if isinstance(node, dict):
        return [s for key, value in node.items() for s in (*all_strings(key), *all_strings(value))]
    if isinstance(node, list):
        return [s for item in node for s in all_strings(item)]
    return [node] if isinstance(node, str) else []


# --- helpers over the compose document ------------------------------------------------------------------
def airflow_services(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The services built from x-airflow-common: those that carry the Airflow environment."""
    return {
        name: svc
        for name, svc in doc["services"].items()
        if "AIRFLOW__CORE__EXECUTOR" in (svc.get("environment") or {})
    }


def command_of(service: dict[str, Any]) -> tuple[str, ...]:
    command = service.get("command", ())
    return tuple(shlex.split(command) if isinstance(command, str) else command)


def mounts(service: dict[str, Any]) -> dict[str, str]:
    """{container path: source} of a service's short-syntax volumes."""
    result = {}
    for entry in service.get("volumes", []):
        source, target = entry.split(":")[:2]
        result[target] = source
    return result


def mount_source(service: dict[str, Any], path: str) -> str | None:
    """The volume or host directory that holds ``path`` inside the service's container."""
    for target, source in sorted(mounts(service).items(), key=lambda item: -len(item[0])):
        if PurePosixPath(path).is_relative_to(target):
            return source
    return None


def emulator_args(doc: dict[str, Any]) -> dict[str, str]:
    command = command_of(doc["services"][EMULATOR_SERVICE])
    assert command[:3] == ("python", "-m", "airflow_provider_canvas.testing"), command
    flags = command[3:]
    assert len(flags) % 2 == 0 and all(flag.startswith("--") for flag in flags[::2]), flags
    return dict(zip(flags[::2], flags[1::2], strict=True))


def load_init_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "deploy_init_connections", ROOT / "deploy" / "init_connections.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --- (a) the Compose Specification ----------------------------------------------------------------------
def _schema_errors(schema: dict[str, Any], document: dict[str, Any]) -> list[str]:
    validator = jsonschema.validators.validator_for(schema)(schema)
    errors = sorted(validator.iter_errors(document), key=lambda e: list(map(str, e.absolute_path)))
    return [f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in errors]


def test_compose_file_matches_the_compose_specification(
    compose_schema: dict[str, Any], compose: dict[str, Any], interpolated: dict[str, Any]
) -> None:
    assert _schema_errors(compose_schema, compose) == []
    # Compose validates the file after interpolation: the values it then sees must fit too.
    assert _schema_errors(compose_schema, interpolated) == []


def test_the_schema_check_is_not_vacuous(compose_schema: dict[str, Any], compose: dict[str, Any]) -> None:
    broken = json.loads(json.dumps(compose))
    broken["services"]["airflow-scheduler"]["helthcheck"] = {"test": ["CMD", "true"]}
    broken["services"]["postgres"]["depends_on"] = {"redis": {"condition": "when_ready"}}
    errors = _schema_errors(compose_schema, broken)
    assert any("helthcheck" in e for e in errors) and any("when_ready" in e for e in errors), errors


def test_variables_have_defaults_or_stop_compose(compose: dict[str, Any], dotenv: dict[str, str]) -> None:
    uses = [use for value in all_strings(compose) for use in variable_uses(value)]
    # Silently empty is never right: each variable has a default (:-) or stops compose with a message (:?).
    assert all(op in (":-", ":?") for _, op, _ in uses), [u for u in uses if u[1] not in (":-", ":?")]
    required = {name for name, op, _ in uses if op == ":?"}
    assert required == REQUIRED_VARIABLES
    assert all(arg and "make-env.sh" in arg for _, op, arg in uses if op == ":?")
    # What deploy/make-env.sh writes is enough, and its FERNET_KEY is a real Fernet key.
    assert set(dotenv) >= REQUIRED_VARIABLES
    Fernet(dotenv["FERNET_KEY"].encode())
    for name in REQUIRED_VARIABLES:
        with pytest.raises(MissingVariable, match=name):
            interpolate(compose, {k: v for k, v in dotenv.items() if k != name})
    # The variables the header comment documents are the ones the file uses.
    header = COMPOSE_FILE.read_text().split("\n---", 1)[0]
    assert {name for name, _, _ in uses} <= set(re.findall(r"\b_?[A-Z][A-Z0-9_]{2,}\b", header))


# --- (b) the same Airflow as the local stack -------------------------------------------------------------
@pytest.fixture(scope="module")
def local_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    home = tmp_path_factory.mktemp("local-airflow")
    airflow = LocalAirflow(home / "home", home / "dags", api_port=8080)  # builds the env, starts nothing
    airflow.http.close()
    return {k: v for k, v in airflow.env.items() if k.startswith("AIRFLOW__")}


def test_every_local_setting_is_accounted_for(local_env: dict[str, str]) -> None:
    categories = [SAME_VALUE, SHARED_SECRETS, set(CHECKED_SEPARATELY), set(DEPLOYMENT_SPECIFIC)]
    unclassified = set(local_env) - set().union(*categories)
    assert not unclassified, (
        f"LocalAirflow now sets {sorted(unclassified)}: set it in docker-compose.yaml (and add it to "
        "SAME_VALUE here) or add it to DEPLOYMENT_SPECIFIC with the reason"
    )
    assert sum(len(c) for c in categories) == len(set().union(*categories)), "a setting in two categories"


def test_settings_match_the_local_stack(interpolated: dict[str, Any], local_env: dict[str, str]) -> None:
    services = airflow_services(interpolated)
    assert set(services) >= {API_SERVICE, INIT_SERVICE, "airflow-worker"}
    common = interpolated["x-airflow-common"]["environment"]
    for name, service in services.items():
        environment = service["environment"]
        # Each service has the whole common environment, unchanged (extras such as DUMB_INIT_SETSID aside).
        assert {k: environment.get(k) for k in common} == common, name
        for key in SAME_VALUE & set(local_env):
            assert str(environment[key]).lower() == local_env[key].lower(), (name, key)
        for key in SHARED_SECRETS:
            assert environment[key], (name, key)
    # Secrets reach only Airflow: the emulator and the databases get none of them.
    for name in set(interpolated["services"]) - set(services):
        assert not SHARED_SECRETS & set(interpolated["services"][name].get("environment") or {}), name
    assert common["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    broker = urlsplit(common["AIRFLOW__CELERY__BROKER_URL"])
    assert (broker.scheme, broker.hostname) == ("redis", "redis")
    assert common["AIRFLOW__CELERY__RESULT_BACKEND"].startswith("db+postgresql://")
    assert urlsplit(common["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]).hostname == "postgres"
    assert "postgres" in interpolated["services"] and "redis" in interpolated["services"]


@pytest.fixture(scope="module")
def celery_airflow(tmp_path_factory: pytest.TempPathFactory) -> LocalAirflow:
    """The CeleryExecutor topology of the e2e test, built but not started (the database need not exist)."""
    home = tmp_path_factory.mktemp("local-celery")
    airflow = LocalAirflow(
        home / "home",
        home / "dags",
        database_url="postgresql+psycopg2://postgres@127.0.0.1:5432/airflow_e2e_unit",
        executor="CeleryExecutor",
        celery_workers=2,
    )
    airflow.http.close()
    return airflow


def test_every_celery_setting_is_accounted_for(
    celery_airflow: LocalAirflow, local_env: dict[str, str]
) -> None:
    # New settings, and the one whose value changes (both stacks' other settings are compared above).
    added = {k for k in celery_airflow.env if k.startswith("AIRFLOW__") and k not in local_env}
    changed = {k for k in local_env if celery_airflow.env[k] != local_env[k]} & CELERY_SAME_VALUE
    celery = [CELERY_SAME_VALUE, set(CELERY_CHECKED_SEPARATELY), set(CELERY_DEPLOYMENT_SPECIFIC)]
    assert added | changed == set().union(*celery), "classify each setting the Celery topology adds"
    assert len(celery_airflow.workers) == 2
    worker_settings = set(WORKER_CHECKED_SEPARATELY) | set(WORKER_DEPLOYMENT_SPECIFIC)
    for worker in celery_airflow.workers.values():
        own = {
            k for k, v in worker.env.items() if k.startswith("AIRFLOW__") and celery_airflow.env.get(k) != v
        }
        assert own == worker_settings, worker.hostname


def test_celery_settings_match_the_local_celery_topology(
    interpolated: dict[str, Any], celery_airflow: LocalAirflow
) -> None:
    common = interpolated["x-airflow-common"]["environment"]
    local = celery_airflow.env
    for key in CELERY_SAME_VALUE:
        assert common[key] == local[key], key
    # Broker: Redis, on its service here and the local one there (a prefix, not a database, per instance).
    broker, local_broker = (
        urlsplit(common["AIRFLOW__CELERY__BROKER_URL"]),
        urlsplit(local["AIRFLOW__CELERY__BROKER_URL"]),
    )
    assert (broker.scheme, broker.hostname, broker.port) == ("redis", "redis", 6379)
    assert (local_broker.scheme, local_broker.port) == (broker.scheme, broker.port)
    assert "redis" in interpolated["services"]
    # Result backend: Celery's database backend on the metadata database itself, in both.
    for env in (common, local):
        backend = urlsplit(env["AIRFLOW__CELERY__RESULT_BACKEND"])
        metadata = urlsplit(env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"])
        assert backend.scheme == "db+postgresql", env["AIRFLOW__CELERY__RESULT_BACKEND"]
        assert (backend.hostname, backend.port, backend.path) == (
            metadata.hostname,
            metadata.port,
            metadata.path,
        )


def test_worker_runs_as_the_local_workers_do(
    interpolated: dict[str, Any], celery_airflow: LocalAirflow
) -> None:
    worker_service = interpolated["services"]["airflow-worker"]
    common = interpolated["x-airflow-common"]["environment"]
    for name, worker in celery_airflow.workers.items():
        command, env, cwd = celery_airflow.launch(name)
        # `airflow celery worker`; only the host name is added, since both workers share a machine.
        assert tuple(command[1:]) == (*command_of(worker_service), "--celery-hostname", worker.hostname)
        assert cwd == worker.home == Path(env["AIRFLOW_HOME"]) != celery_airflow.home
        assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] == NO_METADATA_DB
        # What a worker needs besides the broker: the Execution API, the same secrets and executor.
        for key in ("AIRFLOW__CORE__EXECUTION_API_SERVER_URL", *SHARED_SECRETS, "AIRFLOW__CORE__EXECUTOR"):
            assert env[key] == celery_airflow.env[key], key
            assert worker_service["environment"][key] == common[key], key
        # Its own state_dir locally; the compose worker's is on the canvas-state volume.
        assert Path(env["AIRFLOW__CANVAS_PROVIDER__STATE_DIR"]).is_relative_to(worker.home)
        assert Path(env["AIRFLOW__LOGGING__BASE_LOG_FOLDER"]) == celery_airflow.home / "logs"
    homes = [w.home for w in celery_airflow.workers.values()]
    assert len(set(homes)) == len(homes)
    assert mount_source(worker_service, common["AIRFLOW__CANVAS_PROVIDER__STATE_DIR"]) == "canvas-state"
    # Task logs: one place the api-server reads, in both (the logs volume here).
    logs = airflow_default("logging", "base_log_folder").replace("{AIRFLOW_HOME}", "/opt/airflow")
    assert mount_source(worker_service, logs) == mount_source(interpolated["services"][API_SERVICE], logs)
    # Ready means an answer to a ping through the broker, by node name, in both.
    assert 'inspect ping -d "celery@${HOSTNAME}"' in " ".join(worker_service["healthcheck"]["test"])


def test_secrets_come_from_the_environment(compose: dict[str, Any]) -> None:
    """The same ``${VAR:?...}`` in every Airflow service: one value, never written into the file."""
    for key in SHARED_SECRETS:
        values = {svc["environment"][key] for svc in airflow_services(compose).values()}
        assert len(values) == 1, key
        [(_, op, _)] = variable_uses(values.pop())
        assert op == ":?", key


def airflow_default(section: str, key: str) -> str:
    """Airflow's documented default of a setting, unexpanded (``{AIRFLOW_HOME}/dags``)."""
    from airflow.configuration import retrieve_configuration_description

    return retrieve_configuration_description(include_providers=False)[section]["options"][key]["default"]


def test_execution_api_url_has_the_local_shape(
    interpolated: dict[str, Any], local_env: dict[str, str]
) -> None:
    common = interpolated["x-airflow-common"]["environment"]
    api_port = int(common.get("AIRFLOW__API__PORT") or airflow_default("api", "port"))
    local = urlsplit(local_env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"])
    execution = urlsplit(common["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"])
    assert (execution.scheme, execution.path) == (local.scheme, local.path) == ("http", "/execution/")
    assert (execution.hostname, execution.port) == (API_SERVICE, api_port)
    # What the provider derives from the execution API URL is what the compose file sets explicitly.
    base = common["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"].rstrip("/").removesuffix("/execution")
    assert common["AIRFLOW__CANVAS_PROVIDER__AIRFLOW_API_URL"] == base
    api = interpolated["services"][API_SERVICE]
    assert any(port.endswith(f":{api_port}") for port in api["ports"])
    assert f"localhost:{api_port}/" in " ".join(api["healthcheck"]["test"])


def test_auth_manager_has_a_user_that_may_edit_connections(interpolated: dict[str, Any]) -> None:
    init = load_init_module()
    common = interpolated["x-airflow-common"]["environment"]
    assert common["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS"] == "False"
    users = init.configured_users(common["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS"])
    init_env = interpolated["services"][INIT_SERVICE]["environment"]
    assert users[init_env["_AIRFLOW_WWW_USER_USERNAME"]] == "admin"
    assert users[init_env["CANVAS_DEPLOY_API_USER"]] in init.ROLES_THAT_EDIT_CONNECTIONS
    # The passwords file sits on a volume that airflow-init writes and only the api-server reads.
    passwords = common["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"]
    holders = {n for n, s in airflow_services(interpolated).items() if mount_source(s, passwords)}
    assert holders == {API_SERVICE, INIT_SERVICE}
    assert len({mount_source(interpolated["services"][n], passwords) for n in holders}) == 1


def test_services_run_the_local_stacks_commands(interpolated: dict[str, Any]) -> None:
    commands = {n: command_of(s) for n, s in airflow_services(interpolated).items() if n != INIT_SERVICE}
    assert set(commands.values()) <= AIRFLOW_SERVICE_COMMANDS, commands
    assert sorted(commands.values()) == sorted(AIRFLOW_SERVICE_COMMANDS), "one service per component"
    script = " ".join(command_of(interpolated["services"][INIT_SERVICE]))
    assert "airflow db migrate" in script  # as LocalAirflow.start()
    init = interpolated["services"][INIT_SERVICE]
    [runs] = re.findall(r"python (\S+init_connections\.py)", script)
    assert mount_source(init, runs) == "./deploy"


def test_healthchecks_and_start_order(interpolated: dict[str, Any]) -> None:
    services = interpolated["services"]
    for name, service in services.items():
        for dependency, spec in (service.get("depends_on") or {}).items():
            assert dependency in services, (name, dependency)
            if spec["condition"] == "service_healthy":
                assert "healthcheck" in services[dependency], (name, dependency)
            else:
                assert spec["condition"] == "service_completed_successfully" and dependency == INIT_SERVICE
        if name != INIT_SERVICE:
            assert "healthcheck" in service and service.get("restart") == "always", name
    for name in set(airflow_services(interpolated)) - {INIT_SERVICE}:
        assert services[name]["depends_on"][INIT_SERVICE]["condition"] == "service_completed_successfully"
    assert services[INIT_SERVICE]["depends_on"][EMULATOR_SERVICE]["condition"] == "service_healthy"


def test_volumes_dags_and_provider_state(interpolated: dict[str, Any]) -> None:
    common = interpolated["x-airflow-common"]["environment"]
    # The official image's AIRFLOW_HOME is /opt/airflow.
    dags_folder = airflow_default("core", "dags_folder").replace("{AIRFLOW_HOME}", "/opt/airflow")
    declared = set(interpolated["volumes"])
    for name, service in airflow_services(interpolated).items():
        assert mount_source(service, dags_folder) == "./dags", name
        assert mount_source(service, common["AIRFLOW__CANVAS_PROVIDER__STATE_DIR"]) in declared, name
        assert mount_source(service, common["BRIGHTSPACE_BDS_LOCATION"]) in declared, name
    for name, service in interpolated["services"].items():
        for source in mounts(service).values():
            assert (source.startswith("./") and (ROOT / source).is_dir()) or source in declared, (
                name,
                source,
            )


def test_provider_options_exist(interpolated: dict[str, Any]) -> None:
    options = get_provider_info()["config"]["canvas_provider"]["options"]
    prefix = "AIRFLOW__CANVAS_PROVIDER__"
    used = {k for s in interpolated["services"].values() for k in (s.get("environment") or {})}
    keys = {k.removeprefix(prefix).lower() for k in used if k.startswith(prefix)}
    assert keys == set(options), f"unknown: {keys - set(options)}; not set: {set(options) - keys}"
    for key in keys:
        if options[key]["type"] == "integer":
            int(interpolated["x-airflow-common"]["environment"][prefix + key.upper()])


# --- the emulator and the connections airflow-init creates ----------------------------------------------
def _literal_strings(node: ast.AST) -> set[str]:
    if isinstance(node, ast.Constant) and isinstance(node.value, str) and "{{" not in node.value:
        return {node.value}
    if isinstance(node, (ast.List, ast.Tuple)):
        return {s for item in node.elts for s in _literal_strings(item)}
    return set()


def _platform_of(argument: str) -> str | None:
    prefix = argument.lower().split("_conn_id")[0]
    return prefix if prefix in ("canvas", "brightspace", "postgres") else None


def dag_connections() -> dict[str, set[str | None]]:
    """{connection id: connection types it is used as} from the example DAGs' literal defaults.

    Found in: ``*_CONN_ID = "..."`` constants (typed by the ``*_conn_id=`` argument they are passed
    to), ``*_conn_id=`` / ``*_conn_ids=`` literals, params entries ``"*_conn_id": Param("...")`` or
    ``"*_conn_ids": [...]``, and the keys of ``*INSTANCES`` dicts ({Canvas connection id: ...}).
    """
    found: dict[str, set[str | None]] = {}
    for path in sorted((ROOT / "dags").glob("*.py")):
        tree = ast.parse(path.read_text())
        constants: dict[str, set[str]] = {}
        for node in ast.walk(tree):
            targets = node.targets if isinstance(node, ast.Assign) else [getattr(node, "target", None)]
            if (
                isinstance(node, (ast.Assign, ast.AnnAssign))
                and node.value
                and isinstance(targets[0], ast.Name)
            ):
                target = targets[0].id
                if re.search(r"_CONN_IDS?$", target):
                    constants[target] = _literal_strings(node.value)
                elif target.endswith("INSTANCES") and isinstance(node.value, ast.Dict):
                    for key in node.value.keys:
                        for conn_id in _literal_strings(key) if key is not None else ():
                            found.setdefault(conn_id, set()).add("canvas")
        for node in ast.walk(tree):
            pairs: list[tuple[str, ast.AST]] = []
            if isinstance(node, ast.keyword) and node.arg:
                pairs.append((node.arg, node.value))
            elif isinstance(node, ast.Dict):
                pairs += [
                    (k.value, v)
                    for k, v in zip(node.keys, node.values, strict=True)
                    if isinstance(k, ast.Constant)
                ]
            for argument, value in pairs:
                if not re.search(r"_conn_ids?$", str(argument)):
                    continue
                if isinstance(value, ast.Call) and value.args:  # Param(default, ...)
                    value = value.args[0]
                ids = (
                    constants.get(value.id, set()) if isinstance(value, ast.Name) else _literal_strings(value)
                )
                for conn_id in ids:
                    found.setdefault(conn_id, set()).add(_platform_of(argument))
        for ids in constants.values():
            for conn_id in ids:
                found.setdefault(conn_id, set())
    return found


@pytest.fixture(scope="module")
def issued_tokens(compose: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Run the emulator with the compose file's own arguments (on loopback and a free port here)."""
    args = emulator_args(compose)
    out = tmp_path_factory.mktemp("emulator") / "issued-tokens.json"
    seed = ROOT / "deploy" / PurePosixPath(args["--seed"]).name
    command = [sys.executable, "-m", "airflow_provider_canvas.testing"]
    for flag, value in args.items():
        value = {
            "--host": "127.0.0.1",
            "--port": "0",
            "--dap-port": "0",
            "--seed": str(seed),
            "--issued-tokens-out": str(out),
        }.get(flag, value)
        command += [flag, value]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while not out.exists():
            assert process.poll() is None, process.communicate()[1].decode()
            assert time.monotonic() < deadline, "the emulator wrote no token file"
            time.sleep(0.05)
        issued = json.loads(out.read_text())
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=15)
    assert process.returncode == 0
    # In compose the emulator binds to its service name, which is then the host of every URL it writes.
    url = f"http://{args['--host']}:{args['--port']}"
    return json.loads(json.dumps(issued).replace(issued["url"], url))


def test_emulator_service_is_reachable_under_the_urls_it_advertises(
    interpolated: dict[str, Any], issued_tokens: dict[str, Any]
) -> None:
    args = emulator_args(interpolated)
    emulator = interpolated["services"][EMULATOR_SERVICE]
    # Bound to 0.0.0.0 it would write http://127.0.0.1:... into links and tokens: each container's own.
    assert args["--host"] == EMULATOR_SERVICE
    assert emulator["image"] == interpolated["x-airflow-common"]["image"]
    assert "build" in emulator
    assert any(port.endswith(f":{args['--port']}") for port in emulator["ports"])
    assert f"('{EMULATOR_SERVICE}', {args['--port']})" in " ".join(emulator["healthcheck"]["test"])
    assert args["--issued-tokens-out"] in " ".join(emulator["healthcheck"]["test"])
    init = interpolated["services"][INIT_SERVICE]
    env = init["environment"]
    assert env["CANVAS_DEPLOY_EMULATOR_SEED"] == args["--seed"]
    assert env["CANVAS_DEPLOY_ISSUED_TOKENS"] == args["--issued-tokens-out"]
    # Seed and token file: the same directory or volume in the emulator and in airflow-init.
    for path in (args["--seed"], args["--issued-tokens-out"]):
        assert mount_source(emulator, path) == mount_source(init, path) is not None, path
    assert (ROOT / "deploy" / PurePosixPath(args["--seed"]).name).is_file()
    assert emulator.get("user") == init.get("user")  # the token file is mode 0600
    assert urlsplit(issued_tokens["url"]).hostname == EMULATOR_SERVICE


def test_init_creates_the_connections_the_dags_use(
    interpolated: dict[str, Any], issued_tokens: dict[str, Any]
) -> None:
    init = load_init_module()
    seed = json.loads((ROOT / "deploy" / "emulator-seed.json").read_text())
    common = interpolated["x-airflow-common"]["environment"]
    env = interpolated["services"][INIT_SERVICE]["environment"]
    lms = init.lms_connections(seed, issued_tokens)
    specs = {
        spec["conn_id"]: spec
        for spec in [
            *lms,
            *init.canvas_data_connections(seed, issued_tokens),
            *init.postgres_connections(
                common["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"],
                env["CANVAS_DEPLOY_LOCK_DATABASE"],
                env["CANVAS_DEPLOY_WAREHOUSE_DATABASE"],
            ),
            init.api_connection(
                common["AIRFLOW__CANVAS_PROVIDER__AIRFLOW_API_CONN_ID"],
                common["AIRFLOW__CANVAS_PROVIDER__AIRFLOW_API_URL"],
                env["CANVAS_DEPLOY_API_USER"],
                "not-a-real-password",
            ),
        ]
    }
    used = dag_connections()
    # The parser found what the DAGs are known to use (so the check below is not vacuous).
    assert {
        "canvas_default",
        "canvas_test",
        "canvas_beta",
        "brightspace_default",
        "brightspace_warehouse",
        "canvas_data_warehouse",
    } <= set(used)
    missing = set(used) - set(specs)
    assert not missing, f"the example DAGs use connections airflow-init does not create: {missing}"
    for conn_id, types in used.items():
        assert types - {None} <= {specs[conn_id]["conn_type"]}, (conn_id, types)
    # Every LMS connection takes the cross-host lock, which is a postgres connection airflow-init creates.
    for spec in lms:
        assert spec["host"] == issued_tokens["url"] and spec["password"]
        assert specs[spec["extra"]["lock_conn_id"]]["conn_type"] == "postgres"
    assert specs["brightspace_default"]["extra"]["oauth_url"] == f"{issued_tokens['url']}/core/connect/token"
    assert specs["canvas_data_default"]["host"] == issued_tokens["canvas_data"]["url"]
    assert (
        specs["token_lock_pg"]["schema"] != urlsplit(common["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]).path[1:]
    )
    assert specs["token_lock_pg"]["host"] == specs["brightspace_warehouse"]["host"] == "postgres"
    # The provider's default credentials connection, unless the compose file names another.
    default_api_conn = get_provider_info()["config"]["canvas_provider"]["options"]["airflow_api_conn_id"]
    assert common["AIRFLOW__CANVAS_PROVIDER__AIRFLOW_API_CONN_ID"] == default_api_conn["default"]


def test_init_refuses_loopback_emulator_urls(issued_tokens: dict[str, Any]) -> None:
    init = load_init_module()
    seed = json.loads((ROOT / "deploy" / "emulator-seed.json").read_text())
    local = json.loads(json.dumps(issued_tokens).replace(issued_tokens["url"], "http://127.0.0.1:8765"))
    with pytest.raises(init.DeployError, match="--host"):
        init.lms_connections(seed, local)


def test_init_stores_connections_encrypted_and_keeps_rotated_tokens(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, issued_tokens: dict[str, Any]
) -> None:
    """upsert_connections against a private SQLite table (the test session's database stays untouched)."""
    from airflow.models import Connection
    from airflow.models.crypto import get_fernet
    from sqlalchemy import create_engine, select
    from sqlalchemy.orm import Session

    init = load_init_module()
    seed = json.loads((ROOT / "deploy" / "emulator-seed.json").read_text())
    specs = init.lms_connections(seed, issued_tokens)
    engine = create_engine(f"sqlite:///{tmp_path / 'connections.db'}")
    Connection.__table__.create(engine)
    try:
        monkeypatch.setenv("AIRFLOW__CORE__FERNET_KEY", "")
        get_fernet.cache_clear()
        with Session(engine) as session, pytest.raises(init.DeployError, match="FERNET_KEY"):
            init.upsert_connections(session, specs, keep_existing=set())
        monkeypatch.setenv("AIRFLOW__CORE__FERNET_KEY", Fernet.generate_key().decode())
        get_fernet.cache_clear()
        with Session(engine) as session:
            assert len(init.upsert_connections(session, specs, keep_existing=set())) == len(specs)
            session.commit()
        with Session(engine) as session:
            row = session.scalar(select(Connection).filter_by(conn_id="brightspace_default"))
            assert row.is_encrypted and row.is_extra_encrypted
            assert issued_tokens["brightspace"]["brightspace_default"]["refresh_token"] not in row._extra
            assert row.extra_dejson["lock_conn_id"] == "token_lock_pg"
            row.extra = json.dumps({**row.extra_dejson, "refresh_token": "rotated-by-a-task"})
            session.commit()
        ids = {spec["conn_id"] for spec in specs}
        with Session(engine) as session:  # the same token file again: rotated tokens stay
            assert init.upsert_connections(session, specs, keep_existing=ids) == []
            session.commit()
            row = session.scalar(select(Connection).filter_by(conn_id="brightspace_default"))
            assert row.extra_dejson["refresh_token"] == "rotated-by-a-task"
    finally:
        get_fernet.cache_clear()
        engine.dispose()


def test_init_passwords_file(tmp_path: Path) -> None:
    init = load_init_module()
    users = init.configured_users("airflow:admin, canvas_token_writer:op,viewer:VIEWER")
    assert users == {"airflow": "admin", "canvas_token_writer": "op", "viewer": "viewer"}
    path = tmp_path / "auth" / "passwords.json"
    first = init.ensure_passwords_file(path, users, "airflow", "airflow")
    assert first["airflow"] == "airflow" and len(first["canvas_token_writer"]) >= 24
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again = init.ensure_passwords_file(path, users, "airflow", "changed")
    assert again == {**first, "airflow": "changed"} == json.loads(path.read_text())


# --- (c) the image ---------------------------------------------------------------------------------------
def test_dockerfile_base_image_is_the_pinned_airflow() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    instructions = [
        line.strip() for line in dockerfile.splitlines() if line.strip() and not line.startswith("#")
    ]
    [pinned] = re.findall(r"^apache-airflow==(\S+)$", (ROOT / "constraints.txt").read_text(), re.M)
    assert instructions[0] == f"FROM apache/airflow:{pinned}"
    # The provider is installed by the airflow user (as the image's docs say), with the postgres extra,
    # without growing the image by pip's cache, and with Airflow pinned so pip cannot replace it.
    [install] = [line for line in instructions if line.startswith("RUN pip install")]
    users = [
        line.split()[1] for line in instructions[: instructions.index(install)] if line.startswith("USER ")
    ]
    assert users[-1] == "airflow"
    assert "--no-cache-dir" in install and "[postgres]" in install
    assert '"apache-airflow==${AIRFLOW_VERSION}"' in install
    # The build context is an allowlist: .env, .venv and .git never reach the image.
    ignore = [line for line in (ROOT / ".dockerignore").read_text().splitlines() if not line.startswith("#")]
    assert ignore[0] == "*" and "!airflow_provider_canvas/" in ignore


def test_compose_image_is_built_from_the_dockerfile(interpolated: dict[str, Any]) -> None:
    common = interpolated["x-airflow-common"]
    assert common["build"] in (".", {"context": "."})
    [pinned] = re.findall(r"^apache-airflow==(\S+)$", (ROOT / "constraints.txt").read_text(), re.M)
    assert common["image"].endswith(f":{pinned}")
