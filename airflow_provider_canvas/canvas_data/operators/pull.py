"""Canvas Data 2 pull: snapshot or incremental DAP jobs for named tables, waited for in the triggerer."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from airflow.sdk import Asset, BaseOperator
from airflow.sdk.configuration import conf
from airflow.sdk.exceptions import AirflowFailException

from airflow_provider_canvas.canvas_data.hooks.canvas_data import CanvasDataHook
from airflow_provider_canvas.canvas_data.hooks.models import (
    JOB_CREATION_RATE,
    THROTTLE_WINDOW_SECONDS,
    DapJob,
)
from airflow_provider_canvas.canvas_data.loading.retention import DEFAULT_KEEP, apply_retention
from airflow_provider_canvas.canvas_data.loading.state import DapBatch, DapTableFolder
from airflow_provider_canvas.canvas_data.operators._tables import (
    ALL_TABLES,
    batch_summary,
    batches_to_repull,
    check_name,
    record_batch,
    save_schema,
    table_lock,
    table_names,
)
from airflow_provider_canvas.common.assets import alias_location, default_outlets, emit_asset_event
from airflow_provider_canvas.common.locations import location_uri
from airflow_provider_canvas.common.polling import Poll
from airflow_provider_canvas.common.templating import is_template
from airflow_provider_canvas.exceptions import (
    DapJobError,
    DapSnapshotRequiredError,
    LmsConfigurationError,
    LmsError,
    LmsPermissionError,
)

if TYPE_CHECKING:
    from airflow.sdk import Context, ObjectStoragePath


def canvas_data_asset(
    location: str | os.PathLike[str] | ObjectStoragePath, namespace: str, table: str
) -> Asset:
    """The asset a pull updates for ``namespace.table`` under ``location``; schedule loads on it.

    Named by the data's place only: an object store's connection id (``s3://conn_id@bucket``) is left
    out, and no connection is read (DAG files call this while they are parsed).
    """
    parts = urlsplit(f"{location_uri(location).rstrip('/')}/{namespace}/{table}")
    return Asset(uri=parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl())


def _is_final(err: LmsError) -> bool:
    """An error no retry can fix: credentials, configuration, names, permission."""
    return isinstance(err, AirflowFailException | LmsPermissionError)


class CanvasDataPullOperator(BaseOperator):
    """Pull new data of Canvas Data 2 tables from DAP into ``location/<namespace>/<table>/``.

    For each table: a snapshot job the first time, afterwards an incremental job from the last
    recorded watermark (DAP's ``at`` / ``until``). When DAP answers an incremental with
    SnapshotRequiredError (Instructure reloaded the table), a snapshot is started instead and
    logged; its load replaces the table's rows. The jobs of all tables are started first, paced
    under DAP's limit of about 5 job creations a minute (``job_creation_rate``; a 429 waits for
    ``Retry-After`` or, without one, ``throttle_window_seconds``), then waited for together: in
    the triggerer with ``deferrable`` (default ``[operators] default_deferrable``), freeing the
    worker slot, or in the task. Each complete job's gzip JSON Lines files are streamed to
    ``<job id>/``, verified, and only then recorded in ``state.json`` with the schema version,
    whose DAP schema is kept as ``schema-v<N>.json`` (see
    :mod:`~airflow_provider_canvas.canvas_data.loading.state`).

    A failed job, an unrecoverable download or a throttled job creation fails the task after every
    other table is done, naming each table and why; nothing partial is recorded, so the next run
    goes on from the last good watermark. Refused credentials, an https refusal, an unknown
    namespace or table and a refused permission fail without retries (``AirflowFailException``):
    a person must fix them. Each table is an Asset (:func:`canvas_data_asset`) whose event says
    what arrived. Returns (XCom) ``{table: {kind, job_id, schema_version, since, until, files,
    records, bytes}}``: its keys are what ``tables="all"`` resolved to, for loads mapped over them.

    Before each table's job, batches every registered load has applied and that are older than
    ``keep_applied`` are removed (:mod:`~airflow_provider_canvas.canvas_data.loading.retention`).

    :param tables: DAP table names, a list or a template rendering to one, or ``"all"``: every table
        DAP lists in the namespace at run time (templated).
    :param location: where the batches go: a local folder, or an ObjectStoragePath / URL such as
        ``s3://aws_conn_id@bucket/prefix`` that every worker host reaches (templated). On object
        storage run one pull of a location at a time (``max_active_runs=1``): it is the single
        writer of each table's ``state.json``.
    :param namespace: DAP namespace; default the connection's (``canvas``) (templated).
    :param canvas_data_conn_id: the ``canvas_data`` connection (templated).
    :param deferrable: wait for the jobs in the triggerer.
    :param poll_interval: seconds between two looks at the jobs.
    :param job_timeout: how long the jobs may take, from their start.
    :param download_attempts: tries of each file before new URLs are asked for.
    :param force_snapshot: tables (or ``"all"``) to pull a new snapshot of, whatever their watermark;
        their load replaces the rows (templated). For a table whose load says "force_snapshot".
    :param repull_batches: job ids of pulled batches to pull again (the same window from DAP, a new
        job) and put in their place, for a batch whose files the load could not read (templated).
        Only for batches the load has not applied: it names them in its error.
    :param throttle_window_seconds: the wait after a 429 without ``Retry-After`` (default 60).
    :param job_creation_rate: (calls, seconds) the job creations are paced under (default (5, 60)).
    :param keep_applied: how long batches every load has applied are kept (default 7 days);
        None keeps everything.
    """

    template_fields: Sequence[str] = (
        "canvas_data_conn_id",
        "tables",
        "location",
        "namespace",
        "force_snapshot",
        "repull_batches",
    )

    def __init__(
        self,
        *,
        tables: Sequence[str] | str,
        location: str | os.PathLike[str] | ObjectStoragePath,
        namespace: str | None = None,
        canvas_data_conn_id: str = CanvasDataHook.default_conn_name,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        poll_interval: float = 30.0,
        job_timeout: timedelta = timedelta(hours=3),
        download_attempts: int = 5,
        lock_timeout: float = 600.0,
        force_snapshot: Sequence[str] | str = (),
        repull_batches: Sequence[str] | str = (),
        throttle_window_seconds: float = THROTTLE_WINDOW_SECONDS,
        job_creation_rate: tuple[int, float] = JOB_CREATION_RATE,
        keep_applied: timedelta | None = DEFAULT_KEEP,
        **kwargs: Any,
    ) -> None:
        # Without a namespace the assets are known once the connection is read, at run time.
        self.alias = default_outlets(
            kwargs,
            templated=namespace is None
            or tables == ALL_TABLES
            or any(is_template(v) for v in (tables, location, namespace)),
            alias=f"canvas-data:{alias_location(location)}",
            assets=lambda: [canvas_data_asset(location, namespace or "", t) for t in table_names(tables)],
        )
        super().__init__(**kwargs)
        self.tables = tables
        self.location = location
        self.namespace = namespace
        self.canvas_data_conn_id = canvas_data_conn_id
        self.deferrable = deferrable
        self.poll_interval = poll_interval
        self.job_timeout = job_timeout
        self.download_attempts = download_attempts
        self.lock_timeout = lock_timeout
        self.force_snapshot = force_snapshot
        self.repull_batches = repull_batches
        self.throttle_window_seconds = throttle_window_seconds
        self.job_creation_rate = job_creation_rate
        self.keep_applied = keep_applied

    def _hook(self) -> CanvasDataHook:
        return CanvasDataHook(
            self.canvas_data_conn_id,
            throttle_window_seconds=self.throttle_window_seconds,
            job_creation_rate=self.job_creation_rate,
        )

    # Starting the jobs ------------------------------------------------------------------------

    def execute(self, context: Context) -> dict[str, Any]:
        hook = self._hook()
        started: dict[str, dict[str, Any]] = {}
        failed: dict[str, str] = {}
        final: list[str] = []  # tables whose error no retry can fix
        try:
            # The connection is checked and the credentials tried once, before any table: a wrong
            # secret or an http URL fails the task here, without retries (AirflowFailException).
            hook.tokens.access_token()
            namespace = check_name("namespace", self.namespace or hook.namespace)
            names = self._table_names(hook, namespace)
            forced = self.force_snapshot
            snapshots = set(names if forced == ALL_TABLES else table_names(forced, empty=True))
            repulls = batches_to_repull(self.location, namespace, names, self.repull_batches)
            # While pacing holds the next job back, the jobs already complete are downloaded.
            hook.pacer.idle = lambda until: self._collect_ready(
                hook, namespace, started, failed, final, until
            )
            for table in names:
                try:
                    started[table] = self._start(
                        hook, namespace, table, force=table in snapshots, repull=repulls.get(table)
                    )
                except LmsError as err:
                    self.log.error("%s.%s: %s", namespace, table, err)
                    failed[table] = str(err)
                    if _is_final(err):
                        final.append(table)
            deadline = time.time() + self.job_timeout.total_seconds()
            pending = [
                s["job"]["id"]
                for s in started.values()
                if not s.get("done") and not DapJob.from_json(s["job"]).terminal
            ]
            if pending and self.deferrable:
                from airflow_provider_canvas.canvas_data.triggers.jobs import CanvasDataJobsTrigger

                self.log.info("Waiting in the triggerer for %d DAP job(s)", len(pending))
                self.defer(
                    trigger=CanvasDataJobsTrigger(
                        self.canvas_data_conn_id,
                        pending,
                        poll_interval=self.poll_interval,
                        timeout_at=deadline,
                    ),
                    method_name="execute_complete",
                    kwargs={"started": started, "namespace": namespace, "failed": failed, "final": final},
                )
            if pending:
                self._wait_in_task(hook, started, deadline)
        finally:
            hook.close()
        return self._finish(context, namespace, started, failed, final)

    def _table_names(self, hook: CanvasDataHook, namespace: str) -> list[str]:
        if self.tables != ALL_TABLES:
            return table_names(self.tables)
        names = table_names(hook.list_tables(namespace))
        self.log.info("tables='all': DAP lists %d table(s) in %s", len(names), namespace)
        return [check_name("table", name) for name in names]

    def _start(
        self,
        hook: CanvasDataHook,
        namespace: str,
        table: str,
        *,
        force: bool = False,
        repull: DapBatch | None = None,
    ) -> dict[str, Any]:
        folder = DapTableFolder(self.location, namespace, check_name("table", table))
        if self.keep_applied is not None:
            with table_lock(folder, self.lock_timeout):
                apply_retention(folder, self.keep_applied, logger=self.log)
        since = folder.read_state().watermark
        until = None
        if force:
            self.log.info("%s.%s: force_snapshot: a new snapshot, whatever the watermark", namespace, table)
            since = None
        elif repull is not None and repull.kind == "snapshot":
            # A snapshot cannot be asked for at its past time again: a new one replaces it (and all after).
            self.log.info("%s.%s: re-pulling snapshot %s as a new snapshot", namespace, table, repull.job_id)
            since, repull = None, None
        elif repull is not None:
            self.log.info("%s.%s: re-pulling batch %s", namespace, table, repull.job_id)
            since, until = repull.since, repull.until
        version = save_schema(folder, hook.get_schema(table, namespace))
        try:
            job = hook.start_job(table, namespace=namespace, since=since, until=until)
        except DapSnapshotRequiredError as err:
            # Instructure reloaded the table: no incremental can continue from our watermark.
            self.log.warning(
                "%s.%s: DAP requires a new snapshot (%s); starting one, whose load replaces the table's rows",
                namespace,
                table,
                err,
            )
            since, until, repull = None, None, None
            job = hook.start_job(table, namespace=namespace)
        check_name("DAP job id", job.id)
        kind = f"incremental job since {since}" if since else "snapshot job"
        self.log.info("%s.%s: %s %s started (schema version %d)", namespace, table, kind, job.id, version)
        return {"since": since, "job": job.to_json(), "replaces": repull.job_id if repull else None}

    def _collect_ready(
        self,
        hook: CanvasDataHook,
        namespace: str,
        started: dict[str, dict[str, Any]],
        failed: dict[str, str],
        final: list[str],
        until: float,
    ) -> None:
        """Download and record the jobs that are complete, until the monotonic time ``until``."""
        for table, entry in list(started.items()):
            if time.monotonic() >= until:
                return
            if entry.get("done"):
                continue
            if not DapJob.from_json(entry["job"]).terminal:
                try:
                    entry["job"] = hook.get_job(entry["job"]["id"]).to_json()
                except LmsError as err:  # looked at again after the jobs are all started
                    self.log.warning("DAP job %s: %s", entry["job"]["id"], err)
                    continue
            if DapJob.from_json(entry["job"]).complete:
                self._collect(hook, namespace, table, entry, failed, final)

    def _collect(
        self,
        hook: CanvasDataHook,
        namespace: str,
        table: str,
        entry: dict[str, Any],
        failed: dict[str, str],
        final: list[str],
    ) -> None:
        """Download a complete job's files and record its batch; ``entry`` keeps the summary."""
        entry["done"] = True
        try:
            entry["pulled"] = self._pull_batch(
                hook, namespace, table, DapJob.from_json(entry["job"]), entry["since"], entry.get("replaces")
            )
        except LmsError as err:
            self.log.error("%s.%s: %s", namespace, table, err)
            failed[table] = str(err)
            if _is_final(err):
                final.append(table)

    def _wait_in_task(
        self, hook: CanvasDataHook, started: dict[str, dict[str, Any]], deadline: float
    ) -> None:

        def look() -> bool | None:
            waiting = [
                s for s in started.values() if not s.get("done") and not DapJob.from_json(s["job"]).terminal
            ]
            for entry in waiting:
                entry["job"] = hook.get_job(entry["job"]["id"]).to_json()
                self.log.info("DAP job %s is %s", entry["job"]["id"], entry["job"]["status"])
            return all(s.get("done") or DapJob.from_json(s["job"]).terminal for s in started.values()) or None

        # A timeout leaves the jobs unfinished: _finish reports each of them.
        waited = Poll(self.poll_interval, deadline).until_in_task(look, what="DAP jobs", log=self.log)
        if waited.status == "error":
            raise DapJobError(waited.message)

    def execute_complete(
        self,
        context: Context,
        event: dict[str, Any],
        started: dict[str, dict[str, Any]],
        namespace: str,
        failed: dict[str, str],
        final: list[str] | None = None,
    ) -> dict[str, Any]:
        jobs = event.get("jobs") or {}
        for entry in started.values():
            entry["job"] = jobs.get(entry["job"]["id"], entry["job"])
        if event.get("status") != "done":
            self.log.error("Waiting for the DAP jobs ended early: %s", event.get("message"))
        why_not_done = str(event.get("message") or "")
        return self._finish(context, namespace, started, failed, final or [], why_not_done=why_not_done)

    # Downloading what the jobs produced -------------------------------------------------------

    def _finish(
        self,
        context: Context,
        namespace: str,
        started: dict[str, dict[str, Any]],
        failed: dict[str, str],
        final: list[str],
        why_not_done: str = "",
    ) -> dict[str, Any]:
        results: dict[str, Any] = {}
        hook = self._hook()
        try:
            for table, entry in started.items():
                if not entry.get("done"):
                    job = DapJob.from_json(entry["job"])
                    if not job.complete:
                        failed[table] = self._not_complete(job, why_not_done)
                        self.log.error("%s.%s: %s", namespace, table, failed[table])
                        continue
                    self._collect(hook, namespace, table, entry, failed, final)
                if table in failed:
                    continue
                results[table] = entry.get("pulled")
                if results[table] is not None:
                    self._emit_asset_event(context, namespace, table, results[table])
        finally:
            hook.close()
        if failed:
            done = f"; pulled: {', '.join(sorted(results))}" if results else ""
            details = "; ".join(f"{namespace}.{t}: {why}" for t, why in sorted(failed.items()))
            message = f"Canvas Data 2 pull failed for {len(failed)} table(s): {details}{done}"
            if final:
                # A retry would fail the same way: a person must fix the name, credentials or permission.
                fix = ", ".join(sorted(set(final)))
                raise LmsConfigurationError(f"{message}. Not retried: {fix} need a fix first")
            raise DapJobError(message)
        return results

    def _not_complete(self, job: DapJob, why_not_done: str) -> str:
        if job.status == "failed":
            return (
                f"DAP job {job.id} failed ({job.error or 'no reason given'}); nothing was recorded, "
                "the next run starts a new job from the same watermark"
            )
        return (
            f"DAP job {job.id} was still {job.status} when the wait ended "
            f"({why_not_done or f'job_timeout {self.job_timeout}'}); nothing was recorded"
        )

    def _pull_batch(
        self,
        hook: CanvasDataHook,
        namespace: str,
        table: str,
        job: DapJob,
        since: str | None,
        replaces: str | None = None,
    ) -> dict[str, Any] | None:
        folder = DapTableFolder(self.location, namespace, table)
        pulled = hook.download_objects(job, folder.batch_dir(job.id), attempts=self.download_attempts)
        if job.schema_version is not None and not folder.schema_file(job.schema_version).exists():
            body = hook.get_schema(table, namespace)
            if int(body["version"]) != job.schema_version:
                raise LmsError(
                    f"job {job.id} wrote schema version {job.schema_version} but DAP now serves version "
                    f"{body['version']}; run the pull again: it starts a new job"
                )
            save_schema(folder, body)
        with table_lock(folder, self.lock_timeout):
            batch = record_batch(folder, job, since, pulled, self.log, replaces=replaces)
        if batch is None:
            return None
        summary = batch_summary(batch, pulled)
        self.log.info(
            "%s.%s: %s batch %s recorded: %d file(s), %d records, schema v%d, watermark %s",
            namespace,
            table,
            batch.kind,
            job.id,
            len(batch.files),
            summary["records"],
            batch.schema_version,
            batch.until,
        )
        return summary

    def _emit_asset_event(
        self, context: Context, namespace: str, table: str, summary: dict[str, Any]
    ) -> None:
        extra = {"namespace": namespace, "table": table, **summary}
        emit_asset_event(context, canvas_data_asset(self.location, namespace, table), extra, self.alias)
