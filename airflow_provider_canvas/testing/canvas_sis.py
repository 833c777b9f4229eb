"""Canvas SIS imports for the emulator, as the "SIS Imports" and "SIS CSV Format" pages describe them.

An import moves through ``created`` -> ``importing`` (``progress`` rising) -> ``cleanup_batch`` (batch
mode) -> ``imported`` / ``imported_with_messages`` / ``failed_with_messages`` over ``step_seconds``
steps, judged when it is read, so an import nobody polls costs nothing. The CSVs are read when the
import first leaves ``created``: files are recognised by their headers, bad rows become warnings,
``diffing_data_set_identifier`` compares with the previous import of the data set (refused past
``change_threshold``), batch mode deletes what the term's earlier imports had and this one lacks
(refused past ``change_threshold``). The rules are written here from the documentation on purpose,
not imported from the provider: the emulator is the independent side of every test.
"""

from __future__ import annotations

import csv
import io
import os
import tempfile
import threading
import time
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

#: How Canvas recognises a CSV: the headers that must all be there (any one of a tuple).
_KINDS: tuple[tuple[str, str, tuple[Any, ...]], ...] = (
    ("user", "users", ("user_id", "login_id")),
    ("enrollment", "enrollments", (("course_id", "section_id"), ("user_id", "user_integration_id"))),
    ("section", "sections", ("section_id", "name")),
    ("course", "courses", ("course_id", "short_name")),
    ("term", "terms", ("term_id", "name")),
    ("account", "accounts", ("account_id", "parent_account_id")),
)
#: Per kind: the columns every row needs a value in, and how the row is keyed.
_REQUIRED: dict[str, tuple[tuple[str, ...], ...]] = {
    "user": (("user_id",), ("login_id",), ("status",)),
    "enrollment": (
        ("course_id", "section_id"),
        ("user_id", "user_integration_id"),
        ("role", "role_id"),
        ("status",),
    ),
    "section": (("section_id",), ("course_id",), ("name",), ("status",)),
    "course": (("course_id",), ("short_name",), ("long_name",), ("status",)),
    "term": (("term_id",), ("name",), ("status",)),
    "account": (("account_id",), ("name",), ("status",)),
}
_STATUSES: dict[str, tuple[str, ...]] = {
    "user": ("active", "deleted", "suspended"),
    "enrollment": ("active", "deleted", "completed", "inactive", "deleted_last_completed"),
    "section": ("active", "deleted"),
    "course": ("active", "deleted", "completed", "unpublished", "published"),
    "term": ("active", "deleted"),
    "account": ("active", "deleted"),
}
COUNT_KEYS = (
    "accounts",
    "terms",
    "abstract_courses",
    "courses",
    "sections",
    "xlists",
    "users",
    "enrollments",
    "groups",
    "group_memberships",
    "grade_publishing_results",
    "error_count",
    "warning_count",
)
_STAT_NAMES = {
    "user": "Pseudonym",
    "enrollment": "Enrollment",
    "section": "CourseSection",
    "course": "Course",
    "term": "EnrollmentTerm",
    "account": "Account",
}
FINAL_STATES = ("imported", "imported_with_messages", "failed", "failed_with_messages", "aborted")


def kind_of(headers: list[str]) -> tuple[str, str] | None:
    names = {h.strip().lower() for h in headers}
    for kind, plural, needed in _KINDS:
        if all(
            (any(n in names for n in need) if isinstance(need, tuple) else need in names) for need in needed
        ):
            return kind, plural
    return None


def row_key(kind: str, row: dict[str, str]) -> tuple[str, ...]:
    if kind == "enrollment":
        where = row.get("section_id") or row.get("course_id") or ""
        return (where, row.get("user_id") or row.get("user_integration_id") or "", row.get("role") or "")
    return (row.get(f"{kind}_id") or "",)


@dataclass
class SisObject:
    """One SIS-created row Canvas keeps (user, course, section, enrollment, term, account)."""

    kind: str
    row: dict[str, str]
    batch_id: int
    term_id: str | None
    status: str


@dataclass
class SisImport:
    id: int
    account_id: int
    created: float
    source: str  # the uploaded file, on disk
    size: int
    params: dict[str, str]
    user_id: int
    aborted: bool = False
    result: dict[str, Any] | None = field(default=None, repr=False)  # set when processed
    ended: float | None = None

    def flag(self, name: str) -> bool:
        return self.params.get(name, "").lower() in ("1", "true", "yes", "on")


class SisImports:
    """The SIS imports of the emulated Canvas and the objects they created, per root account."""

    def __init__(self, lock: threading.RLock, files: Callable[[str, bytes], dict[str, Any]]) -> None:
        self._lock = lock
        self._attach = files  # stores an errors CSV and returns its File JSON
        self.step_seconds = 0.2
        self.stuck_importing = False  # every import stays "importing" at progress 40 (seen in production)
        #: The next import ends ``fail_next_state`` ("failed", "failed_with_messages") with this error.
        self.fail_next_with_error: str | None = None
        self.fail_next_state = "failed"
        #: The next upload is stored and processed, but its answer is a 502 (a proxy timed out).
        self.lose_next_answer = False
        #: False: an upload is counted and dropped (benchmarks); its import then ends "failed".
        self.keep_uploads = True
        self.imports: dict[int, SisImport] = {}
        self.objects: dict[tuple[int, str, tuple[str, ...]], SisObject] = {}
        self.uploads: list[dict[str, Any]] = []  # what each POST brought: size, content type, params
        self._next_id = 1
        self._dir = tempfile.mkdtemp(prefix="canvas-emulator-sis-")

    # --------------------------------------------------------------- creation
    def create(
        self, account_id: int, user_id: int, body: bytes | str, params: dict[str, str], content_type: str
    ) -> SisImport:
        """``body``: the upload's bytes, or the path of a file the server spooled it to (taken over)."""
        with self._lock:
            import_id = self._next_id
            self._next_id += 1
        path = os.path.join(self._dir, f"sis_import_{import_id}")
        if not self.keep_uploads:
            size = os.path.getsize(body) if isinstance(body, str) else len(body)
            if isinstance(body, str):
                os.unlink(body)
        elif isinstance(body, str):
            os.replace(body, path)
            size = os.path.getsize(path)
        else:
            with open(path, "wb") as out:
                out.write(body)
            size = len(body)
        sis = SisImport(import_id, account_id, time.time(), path, size, dict(params), user_id)
        with self._lock:
            self.imports[import_id] = sis
            self.uploads.append(
                {"id": import_id, "size": size, "content_type": content_type, "params": params}
            )
        return sis

    def abort(self, sis: SisImport) -> None:
        with self._lock:
            if self._state(sis)[0] not in FINAL_STATES:
                sis.aborted = True
                sis.ended = time.time()

    # --------------------------------------------------------------- reading
    def to_json(self, sis: SisImport) -> dict[str, Any]:
        with self._lock:
            state, progress = self._state(sis)
            result = sis.result if state in FINAL_STATES or state == "cleanup_batch" else None
            finished = state in FINAL_STATES
            body: dict[str, Any] = {
                "id": sis.id,
                "created_at": _iso(sis.created),
                "updated_at": _iso(time.time()),
                "ended_at": _iso(sis.ended) if finished and sis.ended else None,
                "workflow_state": state,
                "progress": progress,
                "data": {
                    "import_type": sis.params.get("import_type") or "instructure_csv",
                    "supplied_batches": (result or {}).get("supplied_batches", []),
                    "counts": (result or {}).get("counts") if finished else None,
                },
                "statistics": (result or {}).get("statistics") if finished else None,
                "batch_mode": sis.flag("batch_mode") or None,
                "batch_mode_term_id": sis.params.get("batch_mode_term_id") or None,
                "multi_term_batch_mode": sis.flag("multi_term_batch_mode") or None,
                "skip_deletes": sis.flag("skip_deletes"),
                "override_sis_stickiness": sis.flag("override_sis_stickiness") or None,
                "add_sis_stickiness": sis.flag("add_sis_stickiness") or None,
                "clear_sis_stickiness": sis.flag("clear_sis_stickiness") or None,
                "diffing_data_set_identifier": sis.params.get("diffing_data_set_identifier") or None,
                "diffing_threshold_exceeded": bool((result or {}).get("diffing_threshold_exceeded")),
                "diffed_against_import_id": (result or {}).get("diffed_against_import_id"),
                "change_threshold": int(sis.params["change_threshold"])
                if sis.params.get("change_threshold")
                else None,
                "user": {"id": sis.user_id},
                "csv_attachments": [],
            }
            if finished and result:
                if result["warnings"]:
                    body["processing_warnings"] = result["warnings"]
                if result["errors"]:
                    body["processing_errors"] = result["errors"]
                if result.get("errors_attachment"):
                    body["errors_attachment"] = result["errors_attachment"]
            return body

    def _state(self, sis: SisImport) -> tuple[str, int]:
        """Where the import is now; the CSVs are processed when it first leaves ``created``."""
        if sis.aborted:
            return "aborted", 100 if sis.result else 0
        steps = (time.time() - sis.created) / self.step_seconds if self.step_seconds > 0 else 1e9
        if steps < 1:
            return "created", 0
        if sis.result is None:
            sis.result = self._process(sis)
        if sis.result.get("failed"):
            sis.ended = sis.ended or time.time()
            return sis.result["final_state"], 100
        if self.stuck_importing:
            return "importing", 40
        if steps < 5:
            return "importing", int((steps - 1) * 22)
        cleanup = sis.flag("batch_mode") or sis.flag("multi_term_batch_mode")
        if cleanup and steps < 6:
            return "cleanup_batch", int((steps - 5) * 100)
        if sis.ended is None:
            sis.ended = time.time()
            self._commit(sis)
        return sis.result["final_state"], 100

    # --------------------------------------------------------------- processing
    def _process(self, sis: SisImport) -> dict[str, Any]:
        if self.fail_next_with_error is not None:
            message, self.fail_next_with_error = self.fail_next_with_error, None
            return {
                "failed": True,
                "final_state": self.fail_next_state,
                "warnings": [],
                "errors": [["", message]],
                "supplied_batches": [],
                "counts": _zero_counts(),
                "statistics": None,
            }
        if not os.path.exists(sis.source):
            self.fail_next_with_error, self.fail_next_state = "the upload was not kept", "failed"
            return self._process(sis)
        warnings: list[list[str]] = []
        errors: list[list[str]] = []
        rows: dict[str, dict[tuple[str, ...], dict[str, str]]] = {}
        for name, text in _csv_members(sis.source, errors):
            reader = csv.reader(io.StringIO(text))
            headers = [h.strip().lower() for h in next(reader, [])]
            found = kind_of(headers)
            if found is None:
                errors.append([name, "Couldn't find Canvas CSV import headers"])
                continue
            kind = found[0]
            table = rows.setdefault(kind, {})
            for number, values in enumerate(reader, start=2):
                row = dict(zip(headers, (v.strip() for v in values), strict=False))
                problem = _row_problem(kind, row)
                if problem:
                    warnings.append([name, f"{problem} (line {number})"])
                    continue
                table[row_key(kind, row)] = row
        return self._apply(sis, rows, warnings, errors)

    def _apply(
        self,
        sis: SisImport,
        rows: dict[str, dict[tuple[str, ...], dict[str, str]]],
        warnings: list[list[str]],
        errors: list[list[str]],
    ) -> dict[str, Any]:
        counts = _zero_counts()
        for kind, table in rows.items():
            counts[_plural(kind)] = len(table)
        result: dict[str, Any] = {"rows": rows, "supplied_batches": sorted(rows), "deletes": {}}
        data_set = sis.params.get("diffing_data_set_identifier")
        threshold = int(sis.params["change_threshold"]) if sis.params.get("change_threshold") else None
        if data_set and not sis.flag("batch_mode"):
            previous = self._previous_of_data_set(sis, data_set)
            if previous is not None:
                change = abs(1 - sis.size / previous.size) * 100 if previous.size else 100.0
                if threshold is not None and change > threshold:
                    # Documented: past the threshold diffing is not performed; the whole file is imported.
                    result["diffing_threshold_exceeded"] = True
                    warnings.append(
                        [
                            "",
                            f"Diffing not performed because file size difference exceeded "
                            f"threshold: {change:.0f}% (change_threshold {threshold}%)",
                        ]
                    )
                else:
                    result["diffed_against_import_id"] = previous.id
                    result["deletes"] = self._diff_deletes(sis, previous, rows, counts)
        if sis.flag("batch_mode") and not sis.flag("skip_deletes"):
            result["deletes"] = self._batch_deletes(sis, rows, counts, threshold, errors)
        counts["warning_count"] = len(warnings)
        counts["error_count"] = len(errors)
        imported_something = any(rows.values())
        if errors and not imported_something:
            final = "failed_with_messages"
        elif errors or warnings:
            final = "imported_with_messages"
        else:
            final = "imported"
        result.update(warnings=warnings, errors=errors, counts=counts, final_state=final)
        if warnings or errors:
            lines = ["sis_import_id,file,message"] + [
                f"{sis.id},{_csv_cell(f)},{_csv_cell(m)}" for f, m in (errors + warnings)
            ]
            result["errors_attachment"] = self._attach(
                f"sis_errors_attachment_{sis.id}.csv", ("\n".join(lines) + "\n").encode()
            )
        result["statistics"] = self._statistics(sis, rows, result["deletes"])
        return result

    def _previous_of_data_set(self, sis: SisImport, data_set: str) -> SisImport | None:
        done = [
            other
            for other in self.imports.values()
            if other.id < sis.id
            and other.account_id == sis.account_id
            and other.params.get("diffing_data_set_identifier") == data_set
            and other.result is not None
            and other.ended is not None
            and not other.aborted
            and other.result.get("final_state") in ("imported", "imported_with_messages")
        ]
        return max(done, key=lambda o: o.id) if done else None

    def _diff_deletes(
        self,
        sis: SisImport,
        previous: SisImport,
        rows: dict[str, dict[tuple[str, ...], dict[str, str]]],
        counts: dict[str, int],
    ) -> dict[str, list[tuple[tuple[str, ...], str]]]:
        """Rows the last import of the data set had and this one lacks are dropped; unchanged rows skipped."""
        assert previous.result is not None
        drop = sis.params.get("diffing_drop_status") or "deleted"
        user_status = sis.params.get("diffing_user_remove_status") or "deleted"
        deletes: dict[str, list[tuple[tuple[str, ...], str]]] = {}
        for kind, before in previous.result["rows"].items():
            now = rows.get(kind, {})
            status = drop if kind == "enrollment" else user_status if kind == "user" else "deleted"
            gone = [(key, status) for key in before if key not in now]
            if gone and not sis.flag("skip_deletes"):
                deletes[kind] = gone
            unchanged = sum(1 for key, row in now.items() if before.get(key) == row)
            counts[_plural(kind)] = len(now) - unchanged + len(gone)
        return deletes

    def _batch_deletes(
        self,
        sis: SisImport,
        rows: dict[str, dict[tuple[str, ...], dict[str, str]]],
        counts: dict[str, int],
        threshold: int | None,
        errors: list[list[str]],
    ) -> dict[str, list[tuple[tuple[str, ...], str]]]:
        """Courses, sections and enrollments of the term from earlier imports that this one lacks."""
        term = sis.params.get("batch_mode_term_id", "").removeprefix("sis_term_id:")
        multi = sis.flag("multi_term_batch_mode")
        terms = {key[0] for key in rows.get("term", {})} if multi else {term}
        deletes: dict[str, list[tuple[tuple[str, ...], str]]] = {}
        with self._lock:
            for kind in ("course", "section", "enrollment"):
                existing = [
                    obj
                    for (acct, k, _), obj in self.objects.items()
                    if acct == sis.account_id
                    and k == kind
                    and obj.term_id in terms
                    and obj.status != "deleted"
                ]
                gone = [
                    row_key(kind, obj.row)
                    for obj in existing
                    if row_key(kind, obj.row) not in rows.get(kind, {})
                ]
                if not gone:
                    continue
                if threshold is not None and existing and len(gone) * 100 / len(existing) > threshold:
                    errors.append(
                        [
                            "",
                            f"{len(gone)} {_plural(kind)} would be deleted and exceeds the set "
                            f"threshold of {threshold}%",
                        ]
                    )
                    continue
                deletes[kind] = [(key, "deleted") for key in gone]
                counts[f"batch_{_plural(kind)}_deleted"] = len(gone)
        return deletes

    def _term_of(self, sis: SisImport, kind: str, row: dict[str, str]) -> str | None:
        if kind == "course":
            return row.get("term_id") or None
        course_id = row.get("course_id")
        if kind == "enrollment" and not course_id and row.get("section_id"):
            section = self.objects.get((sis.account_id, "section", (row["section_id"],)))
            course_id = section.row.get("course_id") if section else None
        course = self.objects.get((sis.account_id, "course", (course_id or "",)))
        return course.term_id if course else None

    def _commit(self, sis: SisImport) -> None:
        """What a finished import leaves in Canvas: its rows kept, its deletes applied."""
        assert sis.result is not None
        if sis.result["final_state"] not in ("imported", "imported_with_messages"):
            return
        for kind in ("term", "account", "user", "course", "section", "enrollment"):
            for key, row in sis.result["rows"].get(kind, {}).items():
                self.objects[(sis.account_id, kind, key)] = SisObject(
                    kind, row, sis.id, self._term_of(sis, kind, row), row.get("status", "active")
                )
        for kind, gone in sis.result["deletes"].items():
            for key, status in gone:
                obj = self.objects.get((sis.account_id, kind, key))
                if obj is not None:
                    obj.status = status

    def _statistics(
        self, sis: SisImport, rows: dict[str, Any], deletes: dict[str, list[Any]]
    ) -> dict[str, Any]:
        stats: dict[str, Any] = {}
        total = 0
        for kind, name in _STAT_NAMES.items():
            created = sum(1 for key in rows.get(kind, {}) if (sis.account_id, kind, key) not in self.objects)
            deleted = len(deletes.get(kind, []))
            stats[name] = {
                "created": created,
                "concluded": 0,
                "deactivated": 0,
                "restored": 0,
                "deleted": deleted,
            }
            total += created + deleted
        stats["total_state_changes"] = total
        return stats

    # --------------------------------------------------------------- for tests and reports
    def active(self, account_id: int, kind: str) -> list[SisObject]:
        with self._lock:
            return [
                obj
                for (acct, k, _), obj in self.objects.items()
                if acct == account_id and k == kind and obj.status not in ("deleted",)
            ]

    def all_objects(self, account_id: int, kind: str) -> Iterator[SisObject]:
        with self._lock:
            found = [obj for (acct, k, _), obj in self.objects.items() if acct == account_id and k == kind]
        yield from found


def _csv_members(path: str, errors: list[list[str]]) -> Iterator[tuple[str, str]]:
    """(name, text) of each CSV of the upload: the members of a ZIP, or the file itself."""
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                if info.is_dir() or not info.filename.lower().endswith(".csv"):
                    continue
                with archive.open(info) as member:
                    yield info.filename, member.read().decode("utf-8-sig", "replace")
        return
    with open(path, "rb") as handle:
        head = handle.read()
    try:
        yield "sis_import.csv", head.decode("utf-8-sig")
    except UnicodeDecodeError:
        errors.append(["sis_import.csv", "Invalid UTF-8"])


def _row_problem(kind: str, row: dict[str, str]) -> str | None:
    for need in _REQUIRED[kind]:
        if not any(row.get(column) for column in need):
            return f"No {' or '.join(need)} given for a {kind}"
    status = row.get("status", "").lower()
    if status not in _STATUSES[kind]:
        return f'Improper status "{row.get("status")}" for {kind} {row_key(kind, row)[0]}'
    return None


def _plural(kind: str) -> str:
    return next(plural for k, plural, _ in _KINDS if k == kind)


def _zero_counts() -> dict[str, int]:
    return dict.fromkeys(COUNT_KEYS, 0)


def _csv_cell(text: str) -> str:
    return '"' + text.replace('"', '""') + '"'


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")
