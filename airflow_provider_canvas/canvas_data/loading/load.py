"""Loading a pulled Canvas Data 2 table into PostgreSQL: typed columns, one transaction per table.

Reads the pull's ``state.json`` (:mod:`~airflow_provider_canvas.canvas_data.loading.state`) and applies
every batch the ledger (:mod:`~airflow_provider_canvas.canvas_data.loading.ledger`) does not list, oldest
first, in ONE transaction with the ledger rows, under a per-table advisory lock:

- the first snapshot creates the table, COPYs (FREEZE) the rows straight in, then adds the
  primary key (one sort instead of an index insertion per row);
- a later snapshot replaces the contents: staged, then rows it lacks are deleted and the others
  upserted (only those that differ are written). Readers see the old rows until the commit;
- incrementals (all pending ones together) are staged in file order; the last record of a key
  wins; keys whose last record is ``meta.action = D`` are deleted, the others upserted.

A newer schema version that only adds columns adds them (``ALTER TABLE ... ADD COLUMN``) in the
same transaction; a removed column, a type change or a new key fails with what changed and what
to do. On any error nothing is changed. Loading again with nothing new does nothing.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from airflow_provider_canvas.canvas_data.loading.ledger import (
    BatchCounts,
    DapLedger,
    LoadedTable,
    advisory_key,
)
from airflow_provider_canvas.canvas_data.loading.records import RecordDecoder
from airflow_provider_canvas.canvas_data.loading.schema import (
    DapTableSchema,
    compare,
    read_schema_file,
)
from airflow_provider_canvas.canvas_data.loading.sql import DapSql
from airflow_provider_canvas.canvas_data.loading.state import (
    DapBatch,
    DapTableFolder,
    DapTableState,
    force_snapshot_remedy,
    job_of,
    repull_remedy,
)
from airflow_provider_canvas.canvas_data.loading.stream import RecordStream
from airflow_provider_canvas.common.sql import sqlstate
from airflow_provider_canvas.common.times import parse_utc
from airflow_provider_canvas.exceptions import (
    DapDataError,
    DapSchemaChangeError,
    LmsConfigurationError,
    LmsError,
)

log = logging.getLogger(__name__)

_QUOTED = re.compile(r'\s*"[^"]*"')
_CONTEXT = re.compile(r"line (\d+)(?:, column (.+?)(?::|$))?")


@dataclass(frozen=True)
class DapLoadResult:
    """What one load did to one table. Never holds row data."""

    namespace: str
    table: str
    target: str
    schema_version: int | None = None
    batches: list[str] = field(default_factory=list)  # job ids loaded, oldest first
    snapshot: bool = False
    records: int = 0
    rows_upserted: int = 0
    rows_deleted: int = 0
    added_columns: list[str] = field(default_factory=list)
    skipped: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class DapTableLoader:
    """Loads pulled Canvas Data 2 tables into one PostgreSQL schema through a psycopg (3, or 2) connection."""

    def __init__(self, connection: Any, schema: str) -> None:
        self.conn = connection
        self.schema = schema
        self.db = DapSql(connection, schema)
        self.ledger = DapLedger(self.db.sql, schema)
        self._stream: RecordStream | None = None  # the COPY under way, to name a bad row

    def ensure_ledger(self) -> None:
        """Create the schema and ledger tables if missing (own short transaction, serialised)."""
        self.conn.autocommit = False
        try:
            with self.conn.cursor() as cur:
                cur.execute("SELECT pg_advisory_xact_lock(%s)", (advisory_key(self.schema),))
                self.ledger.create(cur)
            self.conn.commit()
        except BaseException:
            self.conn.rollback()
            raise

    def applied_jobs(self, target: str) -> frozenset[str]:
        """The DAP job ids the ledger lists as loaded into ``schema.target`` (none if the table is gone)."""
        self.ensure_ledger()
        try:
            with self.conn.cursor() as cur:
                loaded = self.ledger.read(cur, target) if self.db.table_exists(cur, target) else None
        finally:
            self.conn.rollback()
        return loaded.job_ids if loaded is not None else frozenset()

    def load(self, folder: DapTableFolder, target: str | None = None) -> DapLoadResult:
        """Apply the batches of ``folder`` not loaded yet to ``schema.target`` (default: DAP's name)."""
        target = target or folder.table
        state = folder.read_state()
        if not state.batches:
            raise LmsError(
                f"{folder.namespace}.{folder.table}: nothing pulled yet under {folder.path}; run the pull"
            )
        self.ensure_ledger()
        self.conn.autocommit = False
        try:
            with self.conn.cursor() as cur:
                cur.execute("SELECT pg_advisory_xact_lock(%s)", (advisory_key(self.schema, target),))
                result = self._load(cur, folder, state, target)
            if result.skipped:
                self.conn.rollback()
            else:
                self.conn.commit()
        except BaseException as err:
            self.conn.rollback()
            stream, self._stream = self._stream, None
            if stream is not None and stream.error is not None and err is not stream.error:
                raise stream.error from None  # psycopg2 replaces an error of the reader with its own
            if stream is not None and sqlstate(err).startswith("22"):
                raise _data_error(err, stream) from None
            raise
        log.info(
            "%s.%s -> %s: %s; %d records, %d rows upserted, %d deleted%s",
            folder.namespace,
            folder.table,
            result.target,
            result.skipped or f"{len(result.batches)} batch(es) loaded",
            result.records,
            result.rows_upserted,
            result.rows_deleted,
            f", columns added {result.added_columns}" if result.added_columns else "",
        )
        return result

    def _load(self, cur: Any, folder: DapTableFolder, state: DapTableState, target: str) -> DapLoadResult:
        name = f"{folder.namespace}.{folder.table}"
        qualified = f"{self.schema}.{target}"
        exists = self.db.table_exists(cur, target)
        loaded = self.ledger.read(cur, target)
        if loaded is not None and not exists:
            log.warning(
                "%s is gone but the ledger lists it: loading it again from the pulled snapshot", qualified
            )
            self.ledger.forget(cur, target)
            loaded = None
        if exists and loaded is None:
            raise LmsConfigurationError(
                f"{qualified} exists but this loader did not make it (no row in {self.schema}._dap_tables): "
                "load into another target_table, or drop it"
            )
        done = loaded.job_ids if loaded else frozenset()
        pending = [b for b in state.batches if b.job_id not in done]
        base = DapLoadResult(folder.namespace, folder.table, qualified)
        if not pending:
            version = loaded.schema_version if loaded else None
            return DapLoadResult(**{**base.to_dict(), "schema_version": version, "skipped": "up to date"})
        snapshot = pending[0] if pending[0].kind == "snapshot" else None
        incrementals = pending[1:] if snapshot else pending
        self._check_order(name, qualified, loaded, snapshot, incrementals)

        schema = read_schema_file(folder.schema_file(max(b.schema_version for b in pending)))
        added: list[str] = []
        if loaded is not None:
            added = self._apply_schema_change(cur, name, qualified, folder, loaded, schema, target, snapshot)
        records = upserted = deleted = 0
        counts: list[tuple[DapBatch, BatchCounts]] = []
        if snapshot is not None:
            stream = self._stream_of(folder, [snapshot], schema, staged=exists, label=f"{name} snapshot")
            if exists:
                upserted, deleted = self._copy_and_apply(cur, stream, schema, target, replace=True)
            else:
                log.info(
                    "%s: new table %s, %d columns (schema version %d)",
                    name,
                    qualified,
                    len(schema.columns),
                    schema.version,
                )
                self.db.create_table(cur, target, schema)
                upserted = self._copy(
                    cur, stream, self.db.copy_statement(target, stream.decoder, freeze=True)
                )
                upserted -= self.db.add_primary_key(cur, target, schema)
            records += stream.rows + stream.skipped
            counts.append((snapshot, _counts(folder, snapshot, stream)))
        if incrementals:
            stream = self._stream_of(folder, incrementals, schema, staged=True, label=f"{name} incrementals")
            more_upserted, more_deleted = self._copy_and_apply(cur, stream, schema, target, replace=False)
            upserted, deleted, records = (
                upserted + more_upserted,
                deleted + more_deleted,
                records + stream.rows,
            )
            counts += [(batch, _counts(folder, batch, stream)) for batch in incrementals]
        self.ledger.record(
            cur, target, namespace=folder.namespace, source_table=folder.table, schema=schema, batches=counts
        )
        return DapLoadResult(
            **{
                **base.to_dict(),
                "schema_version": schema.version,
                "batches": [b.job_id for b in pending],
                "snapshot": snapshot is not None,
                "records": records,
                "rows_upserted": upserted,
                "rows_deleted": deleted,
                "added_columns": added,
            }
        )

    @staticmethod
    def _check_order(
        name: str,
        qualified: str,
        loaded: LoadedTable | None,
        snapshot: DapBatch | None,
        incrementals: Sequence[DapBatch],
    ) -> None:
        table = name.split(".", 1)[1]
        if any(b.kind == "snapshot" for b in incrementals):
            raise DapDataError(
                f"{name}: the pull state lists a snapshot after other batches; {force_snapshot_remedy(table)}"
            )
        if snapshot is not None:
            return
        first = incrementals[0]
        if loaded is None:
            raise DapDataError(
                f"{name}: {qualified} does not exist and the first batch to load ({first.job_id}) is an "
                f"incremental: there is nothing to apply it to. To start over: "
                f"{force_snapshot_remedy(table)}"
            )
        since = parse_utc(first.since) if first.since else None
        if loaded.watermark is not None and (since is None or since > loaded.watermark):
            raise DapDataError(
                f"{name}: incremental {first.job_id} starts at {first.since}, after {qualified}'s watermark "
                f"{loaded.watermark.isoformat()}: the changes in between were never pulled. To start over: "
                f"{force_snapshot_remedy(table)}"
            )

    def _apply_schema_change(
        self,
        cur: Any,
        name: str,
        qualified: str,
        folder: DapTableFolder,
        loaded: LoadedTable,
        schema: DapTableSchema,
        target: str,
        snapshot: DapBatch | None,
    ) -> list[str]:
        change = compare(loaded.columns, schema)
        if change.breaking:
            if snapshot is not None:  # the rows to make it again from are pulled already
                remedy = f"and load again: snapshot {snapshot.job_id} makes it again"
            else:
                remedy = f"{force_snapshot_remedy(folder.table)}: the table is made again"
            raise DapSchemaChangeError(
                f"{name}: schema version {schema.version} cannot be applied to {qualified} (made from "
                f"version {loaded.schema_version}) by adding columns: {'; '.join(change.problems)}. "
                f"To go on: drop the table (DROP TABLE {qualified}), {remedy} from version {schema.version}"
            )
        for column in change.added:
            self.db.add_column(cur, target, column)
        if change.added:
            log.info(
                "%s: schema version %d -> %d adds columns %s",
                qualified,
                loaded.schema_version,
                schema.version,
                [c.name for c in change.added],
            )
        return [c.name for c in change.added]

    def _stream_of(
        self,
        folder: DapTableFolder,
        batches: Sequence[DapBatch],
        schema: DapTableSchema,
        *,
        staged: bool,
        label: str,
    ) -> RecordStream:
        files = [path for batch in batches for path in folder.files_of(batch)]
        missing = [str(p) for p in files if not p.is_file()]
        if missing:
            jobs = [job_of(str(Path(p).relative_to(folder.path))) for p in missing]
            raise DapDataError(f"{label}: pulled files are missing: {missing[:5]}; {repull_remedy(jobs)}")
        mode: Literal["snapshot", "incremental"] = (
            "incremental" if staged and batches[0].kind == "incremental" else "snapshot"
        )
        decoder = RecordDecoder(schema, with_deleted=staged)
        return RecordStream(decoder, files, mode=mode, label=label, base=folder.path)

    def _copy_and_apply(
        self, cur: Any, stream: RecordStream, schema: DapTableSchema, target: str, *, replace: bool
    ) -> tuple[int, int]:
        """Stage the stream's rows, keep the last row of each key, then apply them. (upserted, deleted)."""
        stage = self.db.create_stage(cur, schema)
        self._copy(cur, stream, self.db.copy_statement(stage, stream.decoder, freeze=False, temporary=True))
        repeated = self.db.keep_last_per_key(cur, stage, schema)
        log.info(
            "%s: %d rows staged (%d earlier records of a repeated key dropped); %s",
            stream.label,
            stream.rows,
            repeated,
            "replacing the table's rows" if replace else "applying deletes and upserts",
        )
        if replace:
            deleted = self.db.delete_missing(cur, target, stage, schema)
        else:
            deleted = self.db.delete_marked(cur, target, stage, schema)
        upserted = self.db.upsert(cur, target, stage, schema)
        self.db.drop_stage(cur, stage)
        return upserted, deleted

    def _copy(self, cur: Any, stream: RecordStream, statement: str) -> int:
        self._stream = stream
        rows = self.db.copy(cur, statement, stream)
        self._stream = None
        return rows


def _counts(folder: DapTableFolder, batch: DapBatch, stream: RecordStream) -> BatchCounts:
    per_file = [stream.per_file.get(path, (0, 0)) for path in folder.files_of(batch)]
    return BatchCounts(sum(r for r, _ in per_file), sum(d for _, d in per_file))


def _data_error(err: BaseException, stream: RecordStream) -> DapDataError:
    """A value PostgreSQL refused during COPY, named by file, line and column (never the value)."""
    diag = getattr(err, "diag", None)
    context = getattr(diag, "context", None) or ""
    primary = getattr(diag, "message_primary", None) or str(err).splitlines()[0]
    primary = _QUOTED.sub("", primary).rstrip(": ")  # PostgreSQL quotes the value itself: leave it out
    match = _CONTEXT.search(context)
    if match is None:
        return DapDataError(f"{stream.label}: a value does not fit its column: {primary}")
    column = f": column {match.group(2)!r}" if match.group(2) else ""
    return DapDataError(f"{stream.label}: {stream.where(int(match.group(1)))}{column}: {primary}")
