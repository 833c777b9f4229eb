"""Canvas SIS import: check the CSVs, upload them once, wait in the triggerer, judge the outcome.

Orchestration only: the HTTP calls are CanvasHook's, the payload is :mod:`._sis_package`'s, what the
task remembers across tries is :mod:`._sis_ledger`'s.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from airflow.sdk import Asset, AssetAlias
from airflow.sdk.configuration import conf

from airflow_provider_canvas.canvas.hooks.canvas import CanvasHook, normalize_account_id
from airflow_provider_canvas.canvas.hooks.sis import (
    SCOPE_CREATE_SIS_IMPORT,
    SCOPE_GET_SIS_IMPORT,
    SCOPE_LIST_SIS_IMPORTS,
)
from airflow_provider_canvas.canvas.hooks.sis_models import SIS_FINAL_STATES, SisOutcome
from airflow_provider_canvas.canvas.operators import _sis_ledger as ledger
from airflow_provider_canvas.canvas.operators._sis_package import SisPackage, build_package
from airflow_provider_canvas.canvas.operators.accounts import _CanvasOperator
from airflow_provider_canvas.common import airflow_access as metadata
from airflow_provider_canvas.common.locations import local_path
from airflow_provider_canvas.common.polling import Poll
from airflow_provider_canvas.exceptions import (
    LmsConfigurationError,
    LmsError,
    LmsUnavailableError,
    SisImportError,
    SisPayloadRefused,
)

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_provider_canvas.canvas.operators._jsonl import OutputPath

#: States of an earlier try's import that a retry does not wait for: it uploads again.
_RETRY_UPLOADS_AFTER = frozenset({"failed", "failed_with_messages", "aborted"})
_LOGGED_MESSAGES = 10


def canvas_sis_asset(conn_id: str, account_id: int | str, data_set: str) -> Asset:
    """The asset a SIS import of ``data_set`` into ``account_id`` updates; schedule on it."""
    return Asset(
        name=f"canvas-sis:{conn_id}:{account_id}:{data_set}",
        uri=f"canvas-sis://{conn_id}/{account_id}/{data_set}",
    )


def _is_template(value: Any) -> bool:
    return isinstance(value, str) and "{{" in value


class CanvasSisImportOperator(_CanvasOperator):
    """Import SIS CSVs into a Canvas root account, once, and fail unless Canvas imported them.

    Before upload: ``sources`` (one ZIP, or CSV files; local paths or object-storage URLs /
    ``ObjectStoragePath``) are streamed into one ZIP; every CSV must have the headers Canvas needs for
    its kind and at least one row, and no kind may have fewer than ``min_rows_ratio`` times the rows
    of the last import of the same data set that succeeded. A refusal sends nothing.

    Upload: the ZIP as the raw request body, streamed. A retried or cleared task first reads the
    record of its earlier try (an Airflow Variable, see :mod:`._sis_ledger`): if that try uploaded the
    same payload (same SHA-256) to the same account within ``reuse_window``, the task waits for that
    import instead of uploading again; if that try's answer was lost, the import is looked up in
    ``GET sis_imports``.

    Wait: in the triggerer with ``deferrable`` (default ``[operators] default_deferrable``), else in
    the task, until ``import_timeout``; ``workflow_state`` and ``progress`` are logged at each poll.

    Outcome: ``imported`` succeeds; ``imported_with_messages`` succeeds with the warnings counted
    and the first ones logged (fails with ``fail_on_warnings``); ``failed``,
    ``failed_with_messages`` and ``aborted`` fail with Canvas's errors; a ``change_threshold``
    refusal of batch-mode deletes fails saying how many would have gone. The ``errors_attachment``
    is downloaded to ``errors_dir`` (default: beside a local input). Returns (XCom) and puts on the
    asset event: ``import_id``, ``workflow_state``, ``counts``, ``statistics``, ``warning_count``,
    ``error_count``, ``rows`` (per CSV kind, as sent), ``sha256``, ``errors_file``.

    :param account_id: the root account (Canvas id or ``sis_account_id:...``) (templated).
    :param sources: a ZIP, or a list of CSV files (templated).
    :param data_set: what the shrink guard and the asset name the payload by; default
        ``diffing_data_set_identifier``, else ``term:<batch_mode_term_id>``, else the task id.
    :param batch_mode, batch_mode_term_id, multi_term_batch_mode, diffing_data_set_identifier,
        diffing_drop_status, change_threshold, skip_deletes, override_sis_stickiness,
        add_sis_stickiness, clear_sis_stickiness: Canvas's options of the same names.
    :param import_options: any further documented option (``diffing_user_remove_status`` ...).
    :param min_rows_ratio: refuse a payload with fewer rows of a kind than this fraction of the last
        good import's (None: no check).
    """

    template_fields: Sequence[str] = (
        "canvas_conn_id",
        "account_id",
        "sources",
        "diffing_data_set_identifier",
        "batch_mode_term_id",
        "data_set",
    )
    required_scopes = (SCOPE_CREATE_SIS_IMPORT, SCOPE_GET_SIS_IMPORT, SCOPE_LIST_SIS_IMPORTS)
    ui_color = "#dbe9f6"

    def __init__(
        self,
        *,
        account_id: int | str,
        sources: OutputPath | Sequence[OutputPath],
        source_conn_id: str | None = None,
        data_set: str | None = None,
        batch_mode: bool = False,
        batch_mode_term_id: str | None = None,
        multi_term_batch_mode: bool = False,
        diffing_data_set_identifier: str | None = None,
        diffing_drop_status: str | None = None,
        change_threshold: int | None = None,
        skip_deletes: bool = False,
        override_sis_stickiness: bool = False,
        add_sis_stickiness: bool = False,
        clear_sis_stickiness: bool = False,
        import_options: Mapping[str, Any] | None = None,
        min_rows_ratio: float | None = 0.5,
        fail_on_warnings: bool = False,
        errors_dir: str | os.PathLike[str] | None = None,
        reuse_window: timedelta = timedelta(hours=24),
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        poll_interval: float = 30.0,
        import_timeout: timedelta = timedelta(hours=6),
        **kwargs: Any,
    ) -> None:
        if batch_mode and not (batch_mode_term_id or multi_term_batch_mode):
            raise LmsConfigurationError("batch_mode needs batch_mode_term_id (or multi_term_batch_mode)")
        if multi_term_batch_mode and change_threshold is None:
            raise LmsConfigurationError("multi_term_batch_mode needs change_threshold (Canvas requires it)")
        if batch_mode and diffing_data_set_identifier:
            raise LmsConfigurationError("Canvas cannot combine batch_mode with diffing; choose one")
        if min_rows_ratio is not None and not 0 <= min_rows_ratio <= 1:
            raise LmsConfigurationError("min_rows_ratio must be between 0 and 1, or None")
        self.alias: AssetAlias | None = None
        if "outlets" not in kwargs:
            literal = not any(
                _is_template(v)
                for v in (account_id, data_set, diffing_data_set_identifier, batch_mode_term_id)
            )
            conn_id = kwargs.get("canvas_conn_id", CanvasHook.default_conn_name)
            if literal and not _is_template(conn_id):
                name = data_set or _default_data_set(
                    diffing_data_set_identifier, batch_mode_term_id, kwargs["task_id"]
                )
                kwargs["outlets"] = [canvas_sis_asset(conn_id, account_id, name)]
            else:
                self.alias = AssetAlias(name=f"canvas-sis:{kwargs['task_id']}")
                kwargs["outlets"] = [self.alias]
        super().__init__(**kwargs)
        self.account_id = account_id
        self.sources = sources
        self.source_conn_id = source_conn_id
        self.data_set = data_set
        self.diffing_data_set_identifier = diffing_data_set_identifier
        self.batch_mode_term_id = batch_mode_term_id
        self.options: dict[str, Any] = {
            "batch_mode": batch_mode,
            "multi_term_batch_mode": multi_term_batch_mode,
            "diffing_drop_status": diffing_drop_status,
            "change_threshold": change_threshold,
            "skip_deletes": skip_deletes,
            "override_sis_stickiness": override_sis_stickiness,
            "add_sis_stickiness": add_sis_stickiness,
            "clear_sis_stickiness": clear_sis_stickiness,
            **dict(import_options or {}),
        }
        self.min_rows_ratio = min_rows_ratio
        self.fail_on_warnings = fail_on_warnings
        self.errors_dir = errors_dir
        self.reuse_window = reuse_window
        self.deferrable = deferrable
        self.poll_interval = poll_interval
        self.import_timeout = import_timeout

    # Before the upload ------------------------------------------------------------------------

    def _all_options(self) -> dict[str, Any]:
        return {
            **self.options,
            "batch_mode_term_id": self.batch_mode_term_id,
            "diffing_data_set_identifier": self.diffing_data_set_identifier,
        }

    def _data_set(self) -> str:
        return self.data_set or _default_data_set(
            self.diffing_data_set_identifier, self.batch_mode_term_id, self.task_id
        )

    def _check_against_last_good(self, package: SisPackage, account_id: int | str) -> None:
        if self.min_rows_ratio is None:
            return
        last = ledger.read(ledger.last_good_key(self.canvas_conn_id, account_id, self._data_set()))
        if not last:
            self.log.info(
                "No earlier successful import of data set %r is recorded: no shrink check.", self._data_set()
            )
            return
        now = package.rows_by_kind()
        shrunk = {
            kind: (now.get(kind, 0), before)
            for kind, before in (last.get("rows") or {}).items()
            if before and now.get(kind, 0) < self.min_rows_ratio * before
        }
        if shrunk:
            details = "; ".join(
                f"{kind}: {n} rows, {before} last time" for kind, (n, before) in sorted(shrunk.items())
            )
            raise SisPayloadRefused(
                f"SIS payload for data set {self._data_set()!r} refused before upload: {details} (less than "
                f"min_rows_ratio {self.min_rows_ratio} of SIS import {last.get('import_id')}). A truncated "
                "extract would make Canvas drop what it lacks. Check the extract; if the drop is real, run "
                "once with min_rows_ratio=None."
            )

    # The upload, once -------------------------------------------------------------------------

    def execute(self, context: Context) -> dict[str, Any]:
        account_id = normalize_account_id(self.account_id)
        with self._canvas_calls(account_id):
            package = build_package(self.sources, conn_id=self.source_conn_id)
            try:
                self.log.info("SIS payload: %s", package.describe())
                self._check_against_last_good(package, account_id)
                body = self._find_or_start(context, account_id, package)
            finally:
                package.discard()
        sent = {"sha256": package.sha256, "rows": package.rows_by_kind(), "size": package.size}
        if body.get("workflow_state") in SIS_FINAL_STATES:
            return self._finish(context, account_id, body, sent)
        deadline = time.time() + self.import_timeout.total_seconds()
        if self.deferrable:
            from airflow_provider_canvas.canvas.triggers.progress import CanvasProgressTrigger

            self.log.info("Waiting in the triggerer for SIS import %s", body["id"])
            self.defer(
                trigger=CanvasProgressTrigger(
                    self.canvas_conn_id,
                    "sis_import",
                    account_id,
                    int(body["id"]),
                    poll_interval=self.poll_interval,
                    timeout_at=deadline,
                ),
                method_name="execute_complete",
                kwargs={"account_id": account_id, "sent": sent},
            )
        body = self._wait_in_task(account_id, body, deadline)
        return self._finish(context, account_id, body, sent)

    def _find_or_start(self, context: Context, account_id: int | str, package: SisPackage) -> dict[str, Any]:
        ti = context["ti"]
        key = ledger.upload_key(
            self.canvas_conn_id, account_id, ti.dag_id, ti.task_id, ti.run_id, getattr(ti, "map_index", -1)
        )
        earlier = ledger.read(key)
        if earlier and earlier.get("sha256") == package.sha256 and _age(earlier) < self.reuse_window:
            found = self._earlier_import(account_id, earlier)
            if found is not None:
                ledger.write(key, {**earlier, "import_id": found["id"]})
                return found
        elif earlier:
            self.log.info("The earlier try uploaded another payload (or long ago): uploading this one.")
        began = _now()
        record = {"sha256": package.sha256, "size": package.size, "began": began.isoformat()}
        ledger.write(key, record)
        self.log.info("Uploading %.1f MiB to account %s", package.size / 2**20, account_id)
        try:
            body = self.hook.start_sis_import(account_id, package.path, self._all_options())
        except LmsUnavailableError as err:
            # The upload may have landed although the answer did not: look before anyone sends again.
            found = self._lost_answer(account_id, record)
            if found is None:
                raise SisImportError(
                    f"the SIS upload failed ({err}) and Canvas lists no import created since "
                    f"{began:%H:%M:%S}; the next try uploads again"
                ) from err
            body = found
        ledger.write(key, {**record, "import_id": body["id"]})
        self.log.info("SIS import %s created (%s)", body["id"], body.get("workflow_state"))
        return body

    def _earlier_import(self, account_id: int | str, earlier: dict[str, Any]) -> dict[str, Any] | None:
        if earlier.get("import_id") is None:
            found = self._lost_answer(account_id, earlier)
            if found is None:
                self.log.info("The earlier try's upload never reached Canvas: uploading now.")
            return found
        body = self.hook.get_sis_import(account_id, int(earlier["import_id"]))
        if body.get("workflow_state") in _RETRY_UPLOADS_AFTER:
            self.log.warning(
                "The earlier try's SIS import %s ended %s: uploading the payload again.",
                body["id"],
                body["workflow_state"],
            )
            return None
        self.log.info(
            "An earlier try of this task uploaded the same payload (sha256 %s…) as SIS import %s, now %s: "
            "waiting for it instead of uploading again.",
            earlier["sha256"][:12],
            body["id"],
            body.get("workflow_state"),
        )
        return body

    def _lost_answer(self, account_id: int | str, record: dict[str, Any]) -> dict[str, Any] | None:
        """The import an upload whose answer was lost created: same options, created since it began."""
        since = (datetime.fromisoformat(record["began"]) - timedelta(seconds=60)).isoformat()
        options = self._all_options()
        candidates = [
            body
            for body in self.hook.list_sis_imports(account_id, created_since=since)
            if (body.get("diffing_data_set_identifier") or None) == options["diffing_data_set_identifier"]
            and (body.get("batch_mode_term_id") or None) == (options["batch_mode_term_id"] or None)
            and bool(body.get("batch_mode"))
            == bool(options["batch_mode"] or options["multi_term_batch_mode"])
        ]
        if len(candidates) > 1:
            raise SisImportError(
                f"the answer to an earlier SIS upload was lost and Canvas lists {len(candidates)} imports "
                f"({[c['id'] for c in candidates]}) with the same options since then; nothing was uploaded "
                "again. See Admin > SIS Import, then clear the task."
            )
        if candidates:
            self.log.warning(
                "The earlier upload's answer was lost; Canvas lists it as import %s.", candidates[0]["id"]
            )
            return candidates[0]
        return None

    # Waiting and the outcome ------------------------------------------------------------------

    def _wait_in_task(self, account_id: int | str, body: dict[str, Any], deadline: float) -> dict[str, Any]:
        def look() -> dict[str, Any] | None:
            nonlocal body
            body = self.hook.get_sis_import(account_id, int(body["id"]))
            self.log.info(
                "SIS import %s is %s, %s%%", body["id"], body.get("workflow_state"), body.get("progress")
            )
            return body if body.get("workflow_state") in SIS_FINAL_STATES else None

        waited = Poll(self.poll_interval, deadline, first_wait=True).until_in_task(
            look, what=f"SIS import {body['id']}", log=self.log
        )
        self.hook.close()
        if waited.status == "error":
            raise SisImportError(f"{waited.message}; a retry of this task waits for the same import")
        return body  # on timeout still unfinished: _finish says so

    def execute_complete(
        self, context: Context, event: dict[str, Any], account_id: int | str, sent: dict[str, Any]
    ) -> dict[str, Any]:
        body = event.get("object")
        if event.get("status") != "done" or not body:
            raise SisImportError(
                f"{event.get('message')}. An import stuck in 'importing' can be aborted in Admin > SIS "
                "Import (or PUT .../sis_imports/:id/abort); a retry of this task waits for the same import."
            )
        return self._finish(context, account_id, body, sent)

    def _finish(
        self, context: Context, account_id: int | str, body: dict[str, Any], sent: dict[str, Any]
    ) -> dict[str, Any]:
        outcome = SisOutcome.from_json(body)
        if outcome.state not in SIS_FINAL_STATES:
            raise SisImportError(
                f"SIS import {outcome.import_id} was still {outcome.state} ({body.get('progress')}%) after "
                f"import_timeout {self.import_timeout}; a retry of this task waits for the same import."
            )
        errors_file = self._save_errors(account_id, body)
        self._log_messages("warning", outcome.warnings)
        self._log_messages("error", outcome.errors)
        summary = {**outcome.summary(), **sent, "errors_file": errors_file}
        where = f"SIS import {outcome.import_id} into account {account_id}"
        if outcome.threshold_refusals:
            raise SisImportError(f"{where}: {'; '.join(outcome.threshold_refusals)}")
        if not outcome.succeeded:
            first = "; ".join(": ".join(e) for e in outcome.errors[:3]) or "Canvas gave no reason"
            raise SisImportError(
                f"{where} ended {outcome.state}: {first}"
                + (f" (all in {errors_file})" if errors_file else "")
            )
        if outcome.warnings and self.fail_on_warnings:
            raise SisImportError(
                f"{where} ended with {len(outcome.warnings)} warning(s) and fail_on_warnings is set"
            )
        if outcome.diffing_threshold_exceeded:
            self.log.warning(
                "%s: the files differed by more than change_threshold, so Canvas imported them whole "
                "without diffing (nothing was dropped).",
                where,
            )
        ledger.write(
            ledger.last_good_key(self.canvas_conn_id, account_id, self._data_set()),
            {
                "import_id": outcome.import_id,
                "rows": sent["rows"],
                "size": sent["size"],
                "at": _now().isoformat(),
            },
        )
        self.log.info("%s %s: counts %s", where, outcome.state, outcome.counts)
        self._emit_asset_event(context, account_id, summary)
        return summary

    def _log_messages(self, what: str, messages: list[list[str]]) -> None:
        for message in messages[:_LOGGED_MESSAGES]:
            self.log.warning("Canvas %s: %s", what, ": ".join(message))
        if len(messages) > _LOGGED_MESSAGES:
            self.log.warning("... and %d more %ss", len(messages) - _LOGGED_MESSAGES, what)

    def _save_errors(self, account_id: int | str, body: dict[str, Any]) -> str | None:
        attachment = body.get("errors_attachment")
        if not attachment or not attachment.get("url"):
            return None
        folder = self._errors_folder()
        target = folder / f"sis_import_{body['id']}_errors.csv"
        try:
            self.hook.download_attachment(attachment, target)
        except LmsError as err:
            self.log.error("Could not download the errors of SIS import %s: %s", body["id"], err)
            return None
        finally:
            self.hook.close()
        self.log.info("Canvas's errors and warnings of SIS import %s: %s", body["id"], target)
        return str(target)

    def _errors_folder(self) -> Path:
        if self.errors_dir is not None:
            return Path(self.errors_dir)
        first = (
            self.sources
            if isinstance(self.sources, (str, os.PathLike))
            else next(iter(cast(Sequence[Any], self.sources)), None)
        )
        local = local_path(first) if first is not None else None
        if local is not None:
            return local.parent
        return Path(metadata.state_dir()) / "sis_errors"

    def _emit_asset_event(self, context: Context, account_id: int | str, summary: dict[str, Any]) -> None:
        events = context.get("outlet_events") if hasattr(context, "get") else None
        if events is None:
            return
        extra = {
            "account_id": account_id,
            "data_set": self._data_set(),
            **{k: v for k, v in summary.items() if k != "errors_file"},
        }
        if self.alias is not None:
            events[self.alias].add(
                canvas_sis_asset(self.canvas_conn_id, account_id, self._data_set()), extra=extra
            )
        else:
            for outlet in self.outlets:
                if isinstance(outlet, Asset):
                    events[outlet].extra = extra


def _default_data_set(diffing: str | None, term: str | None, task_id: str) -> str:
    return diffing or (f"term:{term}" if term else task_id)


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _age(record: dict[str, Any]) -> timedelta:
    try:
        return _now() - datetime.fromisoformat(record["began"])
    except (KeyError, ValueError):
        return timedelta.max


__all__ = ["CanvasSisImportOperator", "canvas_sis_asset"]
