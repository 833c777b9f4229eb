"""JSON Lines files written under a temporary name and published whole, on local disk or object storage."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import IO, TYPE_CHECKING, Any, TypeAlias

from airflow_provider_canvas.exceptions import LmsError

if TYPE_CHECKING:
    from airflow.sdk import ObjectStoragePath

log = logging.getLogger(__name__)

#: A local path, or anything :class:`airflow.sdk.ObjectStoragePath` accepts (``s3://``, ``file://`` ...).
OutputPath: TypeAlias = "str | os.PathLike[str] | ObjectStoragePath"


def resolve_path(path: OutputPath, conn_id: str | None = None) -> Path | ObjectStoragePath:
    """A :class:`pathlib.Path` for a local path; an ObjectStoragePath for a URL or one given as such."""
    if isinstance(path, str) and "://" not in path:
        return Path(path)
    if isinstance(path, os.PathLike):
        return Path(path)
    # Imported here: the object-storage layer (fsspec) is only needed when a URL is used.
    from airflow.sdk import ObjectStoragePath

    if isinstance(path, ObjectStoragePath):
        return path
    return ObjectStoragePath(str(path), conn_id=conn_id or None)


class JsonLinesWriter:
    """Write records to a temp file beside ``target``; on success move it to ``target`` in one step.

    Readers never see a half-written file under the final name: on any error the temp file is
    removed and ``target`` is left as it was. Local files are fsynced and replaced atomically;
    object stores get a rename (copy + delete on S3-like stores), or, where the store cannot
    rename, a copy whose size is checked before the temp object is deleted.
    """

    def __init__(
        self, target: OutputPath, *, conn_id: str | None = None, progress_every: int = 10_000
    ) -> None:
        self.target = resolve_path(target, conn_id)
        self.count = 0
        self.bytes_written = 0
        self.progress_every = progress_every
        self._temp = self.target.with_name(f".{self.target.name}.{uuid.uuid4().hex[:12]}.tmp")
        self._file: IO[str] | None = None

    def __enter__(self) -> JsonLinesWriter:
        self.target.parent.mkdir(parents=True, exist_ok=True)
        self._file = self._temp.open("w", encoding="utf-8")
        return self

    def write(self, record: Any) -> None:
        assert self._file is not None, "use JsonLinesWriter as a context manager"
        line = json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n"
        self._file.write(line)
        self.count += 1
        self.bytes_written += len(line.encode("utf-8"))
        if self.count % self.progress_every == 0:
            log.info("%s: %d records written so far", self.target, self.count)

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        file, self._file = self._file, None
        try:
            if file is not None:
                if exc_type is None:
                    file.flush()
                    _fsync(file)
                file.close()
            if exc_type is None:
                self._publish()
        finally:
            if self._temp.exists():
                self._temp.unlink()
        if exc_type is None:
            log.info("%s: %d records, %d bytes", self.target, self.count, self.bytes_written)

    def _publish(self) -> None:
        try:
            self._temp.replace(self.target)
            return
        except NotImplementedError:
            pass
        # A store without rename: copy, then make sure the copy is whole before the temp goes.
        self._temp.copy(self.target)
        size = self.target.stat().st_size
        if size != self.bytes_written:
            raise LmsError(f"{self.target}: copy holds {size} bytes, {self.bytes_written} were written")


def _fsync(file: IO[str]) -> None:
    # Without it a crash right after the rename can leave an empty file under the final name.
    # Not a local file (no fileno): the store makes the object durable on close.
    with contextlib.suppress(AttributeError, OSError, ValueError, NotImplementedError):
        os.fsync(file.fileno())


def read_json_lines(path: OutputPath, conn_id: str | None = None) -> Iterator[Any]:
    """The records of a JSON Lines file, one at a time."""
    with resolve_path(path, conn_id).open("r", encoding="utf-8") as file:
        for line in file:
            if line.strip():
                yield json.loads(line)
