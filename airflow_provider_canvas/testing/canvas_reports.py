"""Canvas account reports and files for the emulator: report states over time, files on a second host.

A report moves ``created`` -> ``running`` (``progress``, ``current_line``) -> ``compiling`` ->
``complete`` (or ``error``, as Canvas ends a report whose parameters it cannot use or when told to
fail) over ``step_seconds`` steps. A file's ``url`` is on the Canvas host (``/files/:id/download``)
and answers 302 to a signed URL on the storage host, which refuses a request that carries a bearer
token, as S3 does.
"""

from __future__ import annotations

import csv
import io
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from airflow_provider_canvas.testing.canvas_sis import SisImports, _iso
from airflow_provider_canvas.testing.primitives import Request, Response, redirect_response
from airflow_provider_canvas.testing.signed_storage import SignedStorage

#: Provisioning report CSVs, per ``parameters[<kind>]``: the columns Canvas documents for them.
PROVISIONING_COLUMNS = {
    "users": [
        "canvas_user_id",
        "user_id",
        "integration_id",
        "login_id",
        "first_name",
        "last_name",
        "full_name",
        "sortable_name",
        "short_name",
        "email",
        "status",
        "created_by_sis",
    ],
    "courses": [
        "canvas_course_id",
        "course_id",
        "integration_id",
        "short_name",
        "long_name",
        "canvas_account_id",
        "account_id",
        "canvas_term_id",
        "term_id",
        "status",
        "start_date",
        "end_date",
        "course_format",
        "created_by_sis",
    ],
    "sections": [
        "canvas_section_id",
        "section_id",
        "canvas_course_id",
        "course_id",
        "integration_id",
        "name",
        "status",
        "start_date",
        "end_date",
        "canvas_account_id",
        "account_id",
        "created_by_sis",
    ],
    "enrollments": [
        "canvas_course_id",
        "course_id",
        "canvas_user_id",
        "user_id",
        "integration_id",
        "role",
        "role_id",
        "canvas_section_id",
        "section_id",
        "status",
        "canvas_associated_user_id",
        "associated_user_id",
        "created_by_sis",
        "base_role_type",
        "limit_section_privileges",
        "root_account",
    ],
}
_KIND_OF = {"users": "user", "courses": "course", "sections": "section", "enrollments": "enrollment"}
REPORT_TYPES = ("provisioning_csv", "sis_export_csv", "last_user_access_csv")


@dataclass
class StoredFile:
    """A Canvas file (an attachment): what the signed storage serves."""

    id: int
    display_name: str
    content: bytes = field(repr=False)
    uuid: str = field(default_factory=lambda: secrets.token_hex(8))

    @property
    def data_set(self) -> StoredFile:  # the storage's records call the file a data set
        return self

    @property
    def name(self) -> str:
        return self.display_name

    @property
    def bds_type(self) -> str:
        return "canvas_file"


@dataclass
class Report:
    id: int
    account_id: int
    report: str
    parameters: dict[str, str]
    created: float
    fail_with: str | None = None
    file: StoredFile | None = None


class CanvasFiles:
    """Files (SIS error attachments, report files) on the Canvas host, served from a second host."""

    def __init__(
        self, lock: threading.RLock, base_url: Callable[[], str], signed_url: Callable[[], str]
    ) -> None:
        self._lock = lock
        self._base_url = base_url
        self._signed_url = signed_url
        self.storage: SignedStorage[StoredFile] = SignedStorage(lock)
        self.files: dict[int, StoredFile] = {}
        self._next_id = 9001
        self.signed_url_ttl = 300

    def add(self, name: str, content: bytes) -> dict[str, Any]:
        with self._lock:
            stored = StoredFile(self._next_id, name, content)
            self.files[stored.id] = stored
            self._next_id += 1
        return self.to_json(stored)

    def to_json(self, stored: StoredFile) -> dict[str, Any]:
        url = f"{self._base_url()}/files/{stored.id}/download?download_frd=1&verifier={stored.uuid}"
        return {
            "id": stored.id,
            "uuid": stored.uuid,
            "display_name": stored.display_name,
            "filename": stored.display_name,
            "content-type": "text/csv" if stored.display_name.endswith(".csv") else "application/zip",
            "size": len(stored.content),
            "url": url,
        }

    def download(self, request: Request, file_id: int) -> Response | None:
        """``/files/:id/download``: the verifier stands in for a session; 302 to the storage host."""
        with self._lock:
            stored = self.files.get(file_id)
        if stored is None or request.arg("verifier") != stored.uuid:
            return None
        return redirect_response(self.storage.url_for(stored, self._signed_url(), self.signed_url_ttl))

    def owns(self, request: Request) -> bool:
        return self.storage.owns(request)

    def handle_signed(self, request: Request) -> Response:
        return self.storage.handle(request, True, _serve)


def _serve(request: Request, stored: StoredFile) -> Response:
    ctype = "text/csv" if stored.display_name.endswith(".csv") else "application/zip"
    return Response(200, stored.content, {"Content-Type": ctype})


class AccountReports:
    """Reports started on accounts; their files are built from the SIS objects when they complete."""

    def __init__(self, lock: threading.RLock, sis: SisImports, files: CanvasFiles) -> None:
        self._lock = lock
        self._sis = sis
        self._files = files
        self.step_seconds = 0.2
        self.fail_next_with: str | None = None  # the next report ends "error" with this message
        self.reports: dict[int, Report] = {}
        self._next_id = 501

    def start(self, account_id: int, report: str, parameters: dict[str, str]) -> Report:
        with self._lock:
            started = Report(self._next_id, account_id, report, parameters, time.time(), self.fail_next_with)
            self.fail_next_with = None
            self.reports[started.id] = started
            self._next_id += 1
            return started

    def to_json(self, report: Report) -> dict[str, Any]:
        with self._lock:
            status, progress = self._status(report)
            body: dict[str, Any] = {
                "id": report.id,
                "report": report.report,
                "status": status,
                "progress": progress,
                "parameters": report.parameters,
                "created_at": _iso(report.created),
                "started_at": _iso(report.created + self.step_seconds) if status != "created" else None,
                "ended_at": _iso(time.time()) if status in ("complete", "error") else None,
                "run_time": round(time.time() - report.created, 1),
                "current_line": 1000 * progress // 100,
                "file_url": None,
                "attachment": None,
            }
            if status == "complete" and report.file is not None:
                attachment = self._files.to_json(report.file)
                body["attachment"] = attachment
                body["file_url"] = attachment["url"]
            if status == "error":
                body["parameters"] = {**report.parameters, "extra_text": report.fail_with}
            return body

    def _status(self, report: Report) -> tuple[str, int]:
        steps = (time.time() - report.created) / self.step_seconds if self.step_seconds > 0 else 1e9
        if steps < 1:
            return "created", 0
        if steps < 3:
            return "running", int((steps - 1) * 45)
        if steps < 4:
            return "compiling", 95
        if report.fail_with is None and report.report not in REPORT_TYPES:
            report.fail_with = f"Report {report.report} is not available for this account"
        if report.fail_with is not None:
            return "error", 100
        if report.file is None:
            name, content = self._build(report)
            added = self._files.add(name, content)
            report.file = self._files.files[added["id"]]
        return "complete", 100

    def _build(self, report: Report) -> tuple[str, bytes]:
        """One CSV when one kind is asked for; a ZIP of CSVs otherwise (as Canvas does)."""
        kinds = [k for k in PROVISIONING_COLUMNS if report.parameters.get(k, "").lower() in ("1", "true")]
        kinds = kinds or ["users"]
        stamp = time.strftime("%d_%b_%Y", time.gmtime(report.created))
        parts = {f"{kind}_{report.id}_{stamp}.csv": self._csv(report, kind) for kind in kinds}
        if len(parts) == 1:
            return next(iter(parts.items()))
        import zipfile

        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            for name, content in parts.items():
                archive.writestr(name, content)
        return f"{report.report}_{report.id}.zip", buffer.getvalue()

    def _csv(self, report: Report, kind: str) -> bytes:
        columns = PROVISIONING_COLUMNS[kind]
        out = io.StringIO()
        writer = csv.DictWriter(out, columns, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        include_deleted = report.parameters.get("include_deleted", "").lower() in ("1", "true")
        term = report.parameters.get("enrollment_term_id", "").removeprefix("sis_term_id:")
        for number, obj in enumerate(self._sis.all_objects(report.account_id, _KIND_OF[kind]), start=1):
            if obj.status == "deleted" and not include_deleted:
                continue
            if term and kind in ("courses", "sections", "enrollments") and obj.term_id != term:
                continue
            row = dict(obj.row)
            row.update(status=obj.status, created_by_sis="true", term_id=obj.term_id or "")
            row[f"canvas_{_KIND_OF[kind]}_id"] = str(number)
            writer.writerow(row)
        return out.getvalue().encode()
