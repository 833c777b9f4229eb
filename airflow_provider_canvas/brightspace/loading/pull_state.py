"""What was pulled for a data set (a manifest beside its extracts) and what to pull or load next.

Why a manifest file and not Airflow state: task code may not write the metadata database
(Airflow 3 blocks the ORM in tasks), Variables are last-writer-wins with no compare-and-set, and
XCom belongs to one run. A ``manifest.json`` written atomically next to the files it describes is
moved, backed up and restored with them, so the two cannot disagree.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Literal

import pendulum

from airflow_provider_canvas.common.files import write_atomically
from airflow_provider_canvas.common.locations import (
    copy_to_object_store,
    storage_root,
)
from airflow_provider_canvas.common.times import parse_utc
from airflow_provider_canvas.exceptions import (
    DifferentialGapError,
    LmsConfigurationError,
    LmsError,
    TokenLockTimeout,
)

if TYPE_CHECKING:
    from airflow.sdk import ObjectStoragePath

    from airflow_provider_canvas.brightspace.hooks.models import BdsExtract

MANIFEST_NAME = "manifest.json"
RETENTION = timedelta(days=14)

#: ``first_run``: a full extract only when nothing was pulled yet, then differentials;
#: ``newer``: also whenever a full newer than the last one pulled is published (the weekly full).
FullPolicy = Literal["first_run", "newer"]
FULL_POLICIES = ("first_run", "newer")


def slug(data_set: str) -> str:
    """``"User Enrollments"`` -> ``"user_enrollments"``: folder, file and default table name."""
    value = re.sub(r"[^a-z0-9]+", "_", data_set.lower()).strip("_")
    if not value:
        raise LmsConfigurationError(f"data set name {data_set!r} has no letters or digits")
    return value


@dataclass(frozen=True)
class PulledExtract:
    """One extract in the manifest; ``file`` is relative to the data set's folder."""

    file: str
    bds_type: str
    created: str  # ISO-8601 UTC, as Brightspace dated the extract
    size: int
    version: str | None = None
    pulled_at: str | None = None

    @property
    def created_at(self) -> pendulum.DateTime:
        return parse_utc(self.created)

    @property
    def is_full(self) -> bool:
        return self.bds_type == "Full"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class DataSetFolder:
    """One data set's folder under the output root: a local directory or an ObjectStoragePath.

    Local folders get atomic renames and fsync; on object storage every object appears only when
    its upload completes, which gives the same all-or-nothing result.
    """

    def __init__(self, root: str | os.PathLike[str] | ObjectStoragePath, data_set: str) -> None:
        self.data_set = data_set
        self.slug = slug(data_set)
        base = storage_root(root)
        self.is_local = isinstance(base, Path)
        self.path: Any = base / self.slug

    @property
    def uri(self) -> str:
        return self.path.as_uri() if self.is_local else str(self.path)

    def __repr__(self) -> str:
        return f"DataSetFolder({self.uri!r})"

    # Manifest ---------------------------------------------------------------------------------

    def read_manifest(self) -> list[PulledExtract]:
        manifest = self.path / MANIFEST_NAME
        if not manifest.exists():
            return []
        try:
            document = json.loads(manifest.read_text())
            return [PulledExtract(**entry) for entry in document["extracts"]]
        except (ValueError, KeyError, TypeError) as err:
            raise LmsError(
                f"{self.uri}/{MANIFEST_NAME} is not a manifest this provider wrote "
                f"({type(err).__name__}: {err}); move it away to start over with a full extract"
            ) from None

    def write_manifest(self, entries: Sequence[PulledExtract]) -> None:
        document = json.dumps(
            {"data_set": self.data_set, "extracts": [e.to_dict() for e in entries]}, indent=2, sort_keys=True
        )
        if not self.is_local:
            (self.path / MANIFEST_NAME).write_text(document)
            return
        self.path.mkdir(parents=True, exist_ok=True)
        write_atomically(self.path / MANIFEST_NAME, document)

    def record(self, entries: Sequence[PulledExtract], new: PulledExtract) -> list[PulledExtract]:
        """Add ``new``, drop what a newer full makes useless, save; returns the new list."""
        kept = sorted({e.file: e for e in (*entries, new)}.values(), key=lambda e: e.created_at)
        fulls = [e for e in kept if e.is_full]
        if fulls:
            kept = [e for e in kept if e.created_at >= fulls[-1].created_at]
        self.write_manifest(kept)
        return kept

    # Files ------------------------------------------------------------------------------------

    @staticmethod
    def file_name(extract: BdsExtract) -> str:
        stamp = extract.created.format("YYYYMMDD[T]HHmmssSSS[Z]")
        return f"{extract.bds_type}/{slug(extract.data_set)}_{extract.bds_type.lower()}_{stamp}.zip"

    def local_file(self, name: str) -> Path:
        if not self.is_local:
            raise TypeError("not a local folder")
        return self.path / name

    def size_of(self, name: str) -> int | None:
        target = self.path / name
        return target.stat().st_size if target.exists() else None

    def upload(self, local: Path, name: str) -> None:
        copy_to_object_store(local, self.path / name)

    @contextmanager
    def open(self, name: str) -> Iterator[IO[bytes] | Path]:
        """A local path (zipfile opens it itself) or a seekable remote file object."""
        if self.is_local:
            yield self.path / name
        else:
            with (self.path / name).open("rb") as remote:
                yield remote

    @contextmanager
    def lock(self, timeout: float) -> Iterator[None]:
        """Serialise pulls of this folder on one host (manifest read-modify-write)."""
        if not self.is_local:
            yield  # object stores offer no lock: run one pull at a time (max_active_runs=1)
            return
        from airflow_provider_canvas.common import airflow_access as metadata
        from airflow_provider_canvas.tokens.locks import file_lock

        try:
            with file_lock(metadata.state_dir(), f"bds-pull:{self.path}", timeout):
                yield
        except TokenLockTimeout:
            raise LmsError(f"another pull of {self.uri} held its lock for {timeout:.0f}s") from None


def plan_pull(
    available: Sequence[BdsExtract],
    pulled: Sequence[PulledExtract],
    *,
    full: FullPolicy | str = "first_run",
    now: datetime | None = None,
    retention: timedelta = RETENTION,
) -> list[BdsExtract]:
    """The extracts to download, oldest first.

    Nothing pulled yet: the newest full and every differential after it. Otherwise every
    differential newer than the newest extract pulled, preceded by a newer full when
    ``full="newer"``. If the newest extract pulled is older than ``retention`` (differentials are
    kept 14 days) and no newer full replaces it, differentials were lost: raise
    :class:`DifferentialGapError` rather than carry on with a hole in the data.
    """
    if full not in FULL_POLICIES:
        raise LmsConfigurationError(f"full must be one of {FULL_POLICIES}, got {full!r}")
    now = now or pendulum.now("UTC")
    fulls = sorted((e for e in available if e.is_full), key=lambda e: e.created)
    diffs = sorted((e for e in available if not e.is_full), key=lambda e: e.created)
    name = available[0].data_set if available else "data set"
    take_full: BdsExtract | None
    if not pulled:
        if not fulls:
            raise LmsError(f"{name}: Brightspace lists no full extract to start from yet")
        take_full = fulls[-1]
    else:
        last_full = max((e.created_at for e in pulled if e.is_full), default=None)
        newer_full = fulls[-1] if fulls and (last_full is None or fulls[-1].created > last_full) else None
        take_full = newer_full if full == "newer" else None
    if take_full is not None:
        return [take_full, *(d for d in diffs if d.created > take_full.created)]
    last = max(e.created_at for e in pulled)
    if now - last > retention:
        raise DifferentialGapError(
            f"{name}: the newest extract pulled is from {last.to_iso8601_string()}, "
            f"{(now - last).days} days ago; Brightspace keeps differentials {retention.days} days, so "
            "changes in between are lost. Pull again with full='newer' to start over from the newest full "
            "extract (deletions made in the gap only show if the data set flags them)."
        )
    return [d for d in diffs if d.created > last]


def plan_load(pulled: Sequence[PulledExtract], loaded_until: datetime | None) -> list[PulledExtract]:
    """The pulled extracts a table still needs, oldest first: a newer full resets the chain."""
    chain = sorted(pulled, key=lambda e: e.created_at)
    fulls = [e for e in chain if e.is_full]
    if fulls and (loaded_until is None or fulls[-1].created_at > loaded_until):
        start = fulls[-1]
        return [start, *(e for e in chain if not e.is_full and e.created_at > start.created_at)]
    if loaded_until is None:
        raise LmsError("no full extract has been pulled: a table must start from one")
    return [e for e in chain if not e.is_full and e.created_at > loaded_until]
