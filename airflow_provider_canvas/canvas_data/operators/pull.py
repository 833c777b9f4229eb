"""Canvas Data 2 pull: snapshot or incremental DAP jobs for named tables, waited for in the triggerer."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow.sdk import Asset, BaseOperator
from airflow.sdk.configuration import conf

from airflow_provider_canvas.canvas_data.hooks.canvas_data import CanvasDataHook
from airflow_provider_canvas.canvas_data.hooks.models import DapJob
from airflow_provider_canvas.canvas_data.loading.state import DapTableFolder
from airflow_provider_canvas.canvas_data.operators._tables import (
    batch_summary,
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
from airflow_provider_canvas.exceptions import DapJobError, LmsError

if TYPE_CHECKING:
    from airflow.sdk import Context


def canvas_data_asset(location: str | os.PathLike[str], namespace: str, table: str) -> Asset:
    """The asset a pull updates for ``namespace.table`` under ``location``; schedule loads on it."""
    return Asset(uri=location_uri(DapTableFolder(location, namespace, table).path))


class CanvasDataPullOperator(BaseOperator):
    """Pull new data of Canvas Data 2 tables from DAP into ``location/<namespace>/<table>/``.

    For each table: a snapshot job the first time, afterwards an incremental job from the last
    recorded watermark (DAP's ``at`` / ``until``). The jobs of all tables are started first (DAP
    allows about 5 job creations a minute; throttled ones wait for ``Retry-After``), then waited
    for together: in the triggerer with ``deferrable`` (default ``[operators] default_deferrable``),
    freeing the worker slot, or in the task. Each complete job's gzip JSON Lines files are streamed
    to ``<job id>/``, verified, and only then recorded in ``state.json`` with the schema version,
    whose DAP schema is kept as ``schema-v<N>.json``
    (see :mod:`~airflow_provider_canvas.canvas_data.loading.state`).

    A failed job, an unrecoverable download or a throttled job creation fails the task after every
    other table is done, naming each table and why; nothing partial is recorded, so the next run
    goes on from the last good watermark. Each table is an Asset (:func:`canvas_data_asset`) whose
    event says what arrived. Returns (XCom) ``{table: {kind, job_id, schema_version, since, until,
    files, records, bytes}}``.

    :param tables: DAP table names, a list or a template rendering to one (templated).
    :param location: a local folder, shared with the load task (templated).
    :param namespace: DAP namespace; default the connection's (``canvas``) (templated).
    :param canvas_data_conn_id: the ``canvas_data`` connection (templated).
    :param deferrable: wait for the jobs in the triggerer.
    :param poll_interval: seconds between two looks at the jobs.
    :param job_timeout: how long the jobs may take, from their start.
    :param download_attempts: tries of each file before new URLs are asked for.
    """

    template_fields: Sequence[str] = ("canvas_data_conn_id", "tables", "location", "namespace")

    def __init__(
        self,
        *,
        tables: Sequence[str] | str,
        location: str | os.PathLike[str],
        namespace: str | None = None,
        canvas_data_conn_id: str = CanvasDataHook.default_conn_name,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        poll_interval: float = 30.0,
        job_timeout: timedelta = timedelta(hours=3),
        download_attempts: int = 5,
        lock_timeout: float = 600.0,
        **kwargs: Any,
    ) -> None:
        # Without a namespace the assets are known once the connection is read, at run time.
        self.alias = default_outlets(
            kwargs,
            templated=namespace is None or any(is_template(v) for v in (tables, location, namespace)),
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

    # Starting the jobs ------------------------------------------------------------------------

    def execute(self, context: Context) -> dict[str, Any]:
        names = table_names(self.tables)
        hook = CanvasDataHook(self.canvas_data_conn_id)
        namespace = check_name("namespace", self.namespace or hook.namespace)
        started: dict[str, dict[str, Any]] = {}
        failed: dict[str, str] = {}
        try:
            for table in names:
                try:
                    started[table] = self._start(hook, namespace, table)
                except LmsError as err:
                    self.log.error("%s.%s: %s", namespace, table, err)
                    failed[table] = str(err)
            deadline = time.time() + self.job_timeout.total_seconds()
            pending = [s["job"]["id"] for s in started.values() if not DapJob.from_json(s["job"]).terminal]
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
                    kwargs={"started": started, "namespace": namespace, "failed": failed},
                )
            if pending:
                self._wait_in_task(hook, started, deadline)
        finally:
            hook.close()
        return self._finish(context, namespace, started, failed)

    def _start(self, hook: CanvasDataHook, namespace: str, table: str) -> dict[str, Any]:
        folder = DapTableFolder(self.location, namespace, check_name("table", table))
        since = folder.read_state().watermark
        version = save_schema(folder, hook.get_schema(table, namespace))
        job = hook.start_job(table, namespace=namespace, since=since)
        check_name("DAP job id", job.id)
        kind = f"incremental job since {since}" if since else "snapshot job"
        self.log.info("%s.%s: %s %s started (schema version %d)", namespace, table, kind, job.id, version)
        return {"since": since, "job": job.to_json()}

    def _wait_in_task(
        self, hook: CanvasDataHook, started: dict[str, dict[str, Any]], deadline: float
    ) -> None:

        def look() -> bool | None:
            for entry in [s for s in started.values() if not DapJob.from_json(s["job"]).terminal]:
                entry["job"] = hook.get_job(entry["job"]["id"]).to_json()
                self.log.info("DAP job %s is %s", entry["job"]["id"], entry["job"]["status"])
            return all(DapJob.from_json(s["job"]).terminal for s in started.values()) or None

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
    ) -> dict[str, Any]:
        jobs = event.get("jobs") or {}
        for entry in started.values():
            entry["job"] = jobs.get(entry["job"]["id"], entry["job"])
        if event.get("status") != "done":
            self.log.error("Waiting for the DAP jobs ended early: %s", event.get("message"))
        return self._finish(context, namespace, started, failed, why_not_done=str(event.get("message") or ""))

    # Downloading what the jobs produced -------------------------------------------------------

    def _finish(
        self,
        context: Context,
        namespace: str,
        started: dict[str, dict[str, Any]],
        failed: dict[str, str],
        why_not_done: str = "",
    ) -> dict[str, Any]:
        results: dict[str, Any] = {}
        hook = CanvasDataHook(self.canvas_data_conn_id)
        try:
            for table, entry in started.items():
                job = DapJob.from_json(entry["job"])
                if not job.complete:
                    failed[table] = self._not_complete(job, why_not_done)
                    self.log.error("%s.%s: %s", namespace, table, failed[table])
                    continue
                try:
                    results[table] = self._pull_batch(hook, namespace, table, job, entry["since"])
                except LmsError as err:
                    self.log.error("%s.%s: %s", namespace, table, err)
                    failed[table] = str(err)
                    continue
                if results[table] is not None:
                    self._emit_asset_event(context, namespace, table, results[table])
        finally:
            hook.close()
        if failed:
            done = f"; pulled: {', '.join(sorted(results))}" if results else ""
            details = "; ".join(f"{namespace}.{t}: {why}" for t, why in sorted(failed.items()))
            raise DapJobError(f"Canvas Data 2 pull failed for {len(failed)} table(s): {details}{done}")
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
        self, hook: CanvasDataHook, namespace: str, table: str, job: DapJob, since: str | None
    ) -> dict[str, Any] | None:
        folder = DapTableFolder(self.location, namespace, table)
        pulled = hook.download_objects(job, folder.batch_dir(job.id), attempts=self.download_attempts)
        if job.schema_version is not None and not folder.schema_file(job.schema_version).exists():
            body = hook.get_schema(table, namespace)
            if int(body["version"]) != job.schema_version:
                raise LmsError(
                    f"job {job.id} wrote schema version {job.schema_version} but DAP now serves version "
                    f"{body['version']}; run the pull again for a new job"
                )
            save_schema(folder, body)
        with table_lock(folder, self.lock_timeout):
            batch = record_batch(folder, job, since, pulled, self.log)
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
