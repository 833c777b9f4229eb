"""The ZIP a SIS import uploads: built from CSV files (local or object storage) on the fly, checked first.

Each CSV is streamed into a temporary ZIP in 1 MiB blocks (never whole in memory) with fixed member
dates, so the same CSVs give the same bytes and the same SHA-256: the checksum by which a retried
task finds the import it already started. Before anything is uploaded every CSV must carry the
headers Canvas needs for its kind (Instructure's "SIS CSV Format") and hold at least one row.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import shutil
import tempfile
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, cast

from airflow_provider_canvas.canvas.operators._jsonl import OutputPath, resolve_path
from airflow_provider_canvas.common.locations import local_path
from airflow_provider_canvas.exceptions import LmsConfigurationError

_BLOCK = 2**20
#: ZIP member dates: fixed, so the same CSVs always make the same ZIP (and checksum).
_FIXED_DATE = (2000, 1, 1, 0, 0, 0)

#: How Canvas recognises each SIS CSV: all these headers (a tuple: any one of them), and the columns
#: a row of that kind must fill. Order matters: a file is the first kind whose headers it has.
SIS_CSV_KINDS: dict[str, tuple[tuple[Any, ...], tuple[tuple[str, ...], ...]]] = {
    "users": (("user_id", "login_id"), (("user_id",), ("login_id",), ("status",))),
    "enrollments": (
        (("course_id", "section_id"), ("user_id", "user_integration_id")),
        (("course_id", "section_id"), ("user_id", "user_integration_id"), ("role", "role_id"), ("status",)),
    ),
    "sections": (("section_id", "name"), (("section_id",), ("course_id",), ("name",), ("status",))),
    "courses": (("course_id", "short_name"), (("course_id",), ("short_name",), ("long_name",), ("status",))),
    "terms": (("term_id", "name"), (("term_id",), ("name",), ("status",))),
    "accounts": (("account_id", "parent_account_id"), (("account_id",), ("name",), ("status",))),
}


def csv_kind(headers: Iterable[str]) -> str | None:
    """The SIS CSV kind (``users``, ``enrollments`` ...) Canvas takes a file with these headers for."""
    names = {h.strip().lower() for h in headers}
    for kind, (recognised_by, _) in SIS_CSV_KINDS.items():
        if all(
            any(n in names for n in need) if isinstance(need, tuple) else need in names
            for need in recognised_by
        ):
            return kind
    return None


def missing_columns(kind: str, headers: Iterable[str]) -> list[str]:
    """The required columns of ``kind`` that ``headers`` lack (``a|b``: either one)."""
    names = {h.strip().lower() for h in headers}
    return ["|".join(need) for need in SIS_CSV_KINDS[kind][1] if not any(n in names for n in need)]


@dataclass(frozen=True)
class SisMember:
    name: str
    kind: str
    rows: int
    size: int  # uncompressed bytes


@dataclass(frozen=True)
class SisPackage:
    """A ZIP ready to upload: where, how big, its SHA-256, and what each CSV holds."""

    path: Path
    size: int
    sha256: str
    members: tuple[SisMember, ...]
    temporary: bool = field(default=False, repr=False)

    def rows_by_kind(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for member in self.members:
            counts[member.kind] = counts.get(member.kind, 0) + member.rows
        return counts

    def discard(self) -> None:
        if self.temporary:
            self.path.unlink(missing_ok=True)

    def describe(self) -> str:
        parts = ", ".join(f"{m.name}: {m.rows} {m.kind}" for m in self.members)
        return f"{self.size / 2**20:.1f} MiB ZIP, sha256 {self.sha256[:12]}…: {parts}"


def build_package(
    sources: OutputPath | Sequence[OutputPath], *, workdir: str | os.PathLike[str] | None = None,
    conn_id: str | None = None,
) -> SisPackage:  # fmt: skip
    """One ZIP of SIS CSVs from ``sources``: a ZIP (used as it is when local) or CSV files.

    Every CSV is checked (headers, at least one row) while it is read; a problem raises
    :class:`LmsConfigurationError` naming the file and what to fix, and nothing is kept.
    """
    items: list[OutputPath] = (
        [cast(OutputPath, sources)]
        if isinstance(sources, (str, os.PathLike)) or hasattr(sources, "protocol")
        else list(sources)
    )
    if not items:
        raise LmsConfigurationError("no SIS sources given: pass a ZIP or CSV files")
    names = [_name(item) for item in items]
    if len(items) == 1 and names[0].lower().endswith(".zip"):
        return _from_zip(items[0], workdir, conn_id)
    if any(not n.lower().endswith(".csv") for n in names):
        raise LmsConfigurationError(f"SIS sources must be one .zip or .csv files, got {names}")
    if len(set(names)) != len(names):
        raise LmsConfigurationError(f"two SIS CSVs share a file name: {names}; a ZIP needs unique names")
    handle, temp = tempfile.mkstemp(prefix="canvas-sis-", suffix=".zip", dir=workdir)
    os.close(handle)
    path = Path(temp)
    try:
        members = []
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=6) as archive:
            for item, name in zip(items, names, strict=True):
                info = zipfile.ZipInfo(name, _FIXED_DATE)
                info.compress_type = zipfile.ZIP_DEFLATED
                with _open(item, conn_id) as source, archive.open(info, "w") as target:
                    members.append(_copy_checked(name, source, target))
        return SisPackage(path, path.stat().st_size, _sha256(path), tuple(members), temporary=True)
    except BaseException:
        path.unlink(missing_ok=True)
        raise


def _from_zip(item: OutputPath, workdir: str | os.PathLike[str] | None, conn_id: str | None) -> SisPackage:
    local = local_path(item)
    temporary = local is None
    if local is None:  # an object store: copied down once, streamed
        handle, temp = tempfile.mkstemp(prefix="canvas-sis-", suffix=".zip", dir=workdir)
        with os.fdopen(handle, "wb") as out, _open(item, conn_id) as source:
            shutil.copyfileobj(source, out, _BLOCK)
        local = Path(temp)
    try:
        if not zipfile.is_zipfile(local):
            raise LmsConfigurationError(f"{_name(item)} is not a ZIP file")
        members = []
        with zipfile.ZipFile(local) as archive:
            for info in archive.infolist():
                if info.is_dir():
                    continue
                if not info.filename.lower().endswith(".csv"):
                    raise LmsConfigurationError(
                        f"{_name(item)} holds {info.filename!r}: Canvas reads .csv files only"
                    )
                with archive.open(info) as member:
                    members.append(_copy_checked(info.filename, member, None))
        if not members:
            raise LmsConfigurationError(f"{_name(item)} holds no CSV file")
        return SisPackage(local, local.stat().st_size, _sha256(local), tuple(members), temporary=temporary)
    except BaseException:
        if temporary:
            local.unlink(missing_ok=True)
        raise


def _copy_checked(name: str, source: IO[bytes], target: IO[bytes] | None) -> SisMember:
    """Copy ``source`` to ``target`` (None: only read) in blocks, checking headers and counting rows."""
    first = source.read(_BLOCK)
    text_head = first.decode("utf-8-sig", "replace")
    header_line = next(csv.reader(io.StringIO(text_head)), [])
    kind = csv_kind(header_line)
    if kind is None:
        raise LmsConfigurationError(
            f"{name}: Canvas would not recognise this CSV (headers {header_line[:8]}); see the SIS CSV "
            "Format: users.csv needs user_id and login_id, enrollments.csv course_id or section_id and "
            "user_id, courses.csv course_id and short_name, sections.csv section_id and name, ..."
        )
    missing = missing_columns(kind, header_line)
    if missing:
        raise LmsConfigurationError(f"{name} ({kind}): required column(s) {missing} are missing")
    size = newlines = 0
    last = b""
    block = first
    while block:
        if target is not None:
            target.write(block)
        size += len(block)
        newlines += block.count(b"\n")
        last = block
        block = source.read(_BLOCK)
    lines = newlines + (1 if last and not last.endswith(b"\n") else 0)
    rows = max(0, lines - 1)  # the header; a quoted field with a newline makes this an upper bound
    if rows == 0:
        raise LmsConfigurationError(
            f"{name} ({kind}) has a header and no rows: an empty extract is refused, since in batch mode "
            "or with diffing it would delete everything"
        )
    return SisMember(name, kind, rows, size)


def _open(item: OutputPath, conn_id: str | None) -> IO[bytes]:
    return cast(IO[bytes], resolve_path(item, conn_id).open("rb"))


def _name(item: OutputPath) -> str:
    return str(getattr(item, "name", None) or Path(str(item)).name)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(_BLOCK):
            digest.update(block)
    return digest.hexdigest()
