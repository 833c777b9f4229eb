"""The rows of a Canvas Data 2 batch's files, in order, as COPY CSV chunks that remember where rows came from.

Files are read block by block (gzip, or plain JSON Lines, 1 MiB at a time); each block's rows are
encoded together (:class:`~airflow_provider_canvas.canvas_data.loading.records.RecordDecoder`) and handed
out as one chunk, so memory does not grow with the file. PostgreSQL numbers the rows of a COPY;
:meth:`RecordStream.where` turns that number back into a file and line.
"""

from __future__ import annotations

import contextlib
import gzip
import logging
import queue
import threading
import time
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

from airflow_provider_canvas.canvas_data.loading.records import (
    CONTROL_HINT,
    Mode,
    RecordDecoder,
    describe,
)
from airflow_provider_canvas.canvas_data.loading.state import job_of, repull_remedy
from airflow_provider_canvas.exceptions import DapDataError

log = logging.getLogger(__name__)

#: Chunks encoded ahead of the COPY: what lets Python and the server work at once, and all it holds.
PREFETCH_CHUNKS = 4
_READ_BYTES = 2**20
_GZIP_MAGIC = b"\x1f\x8b"
_OPEN_BRACE = ord("{")


def prefetched(chunks: Iterator[bytes], depth: int = PREFETCH_CHUNKS) -> Iterator[bytes]:
    """``chunks``, produced by a thread up to ``depth`` ahead (memory: ``depth`` chunks).

    The thread encodes while this one waits for the server to take the last chunk, so on two
    cores the client and the server work at once. An error in the thread is raised here; when the
    consumer stops early, the thread stops at its next chunk.
    """
    ahead: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def offer(item: tuple[str, Any]) -> bool:
        """Queue ``item`` unless the consumer has stopped (then nobody would take it)."""
        while not stop.is_set():
            try:
                ahead.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for chunk in chunks:
                if not offer(("chunk", chunk)):
                    return
            offer(("end", None))
        except BaseException as err:  # handed to the consumer, which raises it
            offer(("error", err))
        finally:
            close = getattr(chunks, "close", None)
            if close is not None:
                close()  # the files it has open

    thread = threading.Thread(target=produce, name="dap-copy-encoder", daemon=True)
    thread.start()
    try:
        while True:
            kind, item = ahead.get()
            if kind == "chunk":
                yield item
            elif kind == "error":
                raise item
            else:
                return
    finally:
        stop.set()
        thread.join()


@contextlib.contextmanager
def _open(path: Any) -> Iterator[Any]:
    """The decompressed bytes of a local file or an ObjectStoragePath (one open, no second request)."""
    with path.open("rb") as raw:
        gzipped = raw.read(2) == _GZIP_MAGIC
        raw.seek(0)
        if not gzipped:
            yield raw
            return
        with gzip.GzipFile(fileobj=raw, mode="rb") as stream:
            yield stream


def _blocks(path: Any) -> Iterator[tuple[bytes, list[bytes]]]:
    """(data, its whole lines) of a gzip (or plain) JSON Lines file, a block at a time.

    ``data`` may end with the start of the next block's first line (read, not yet split off).
    """
    with _open(path) as stream:
        rest = b""
        while block := stream.read(_READ_BYTES):
            data = rest + block
            lines = data.split(b"\n")
            rest = lines.pop()
            yield data, lines
        if rest:
            yield rest, [rest]


@dataclass(frozen=True)
class _Segment:
    first_row: int  # the COPY row of the segment's first row (1-based, as PostgreSQL counts)
    file: str
    first_line: int


class RecordStream:
    """The rows of several files in order, as COPY CSV chunks; knows which file and line each came from.

    ``mode="snapshot"``: a ``D`` record (none are expected in a snapshot) is skipped with a warning.
    Counts (``rows``, ``deletes``, ``skipped``, ``per_file``) are final once ``chunks()`` is
    exhausted. An error raised while reading is also kept in ``error`` (psycopg2 replaces it).
    """

    def __init__(
        self,
        decoder: RecordDecoder,
        files: Sequence[Path],
        *,
        mode: Mode,
        label: str,
        base: Path | None = None,
    ) -> None:
        self.decoder = decoder
        self.files = list(files)
        self.mode = mode
        self.label = label
        self.base = base
        self.rows = 0
        self.deletes = 0
        self.skipped = 0
        self.error: BaseException | None = None
        #: (records, delete records) of each file, once it has been read
        self.per_file: dict[Path, tuple[int, int]] = {}
        self._segments: list[_Segment] = []
        self._iterator: Iterator[bytes] | None = None
        self._gap = False

    def _name(self, path: Path) -> str:
        # By text: object-storage paths cannot be made relative (fsspec paths are absolute).
        prefix = f"{str(self.base).rstrip('/')}/" if self.base is not None else None
        if prefix is not None and str(path).startswith(prefix):
            return str(path)[len(prefix) :]
        return str(path)

    def chunks(self) -> Iterator[bytes]:
        try:
            yield from self._chunks()
        except BaseException as err:
            self.error = err
            raise

    def _chunks(self) -> Iterator[bytes]:
        started = last_log = time.monotonic()
        for index, path in enumerate(self.files, 1):
            name = self._name(path)
            self._segments.append(_Segment(self.rows + 1, name, 1))
            self._gap = False  # a skipped line since the last segment: the next row starts a new one
            rows_before, deletes_before = self.rows, self.deletes
            try:
                number = 0
                for data, lines in _blocks(path):
                    encoded = self._encode_block(data, lines, name, number)
                    number += len(lines)
                    if encoded:
                        yield encoded  # about a block's worth (_READ_BYTES of JSON): bounded
                    if time.monotonic() - last_log >= 30:
                        last_log = time.monotonic()
                        log.info(
                            "%s: %d rows read (file %d of %d), %.0f s",
                            self.label,
                            self.rows,
                            index,
                            len(self.files),
                            last_log - started,
                        )
            except (OSError, EOFError, zlib.error) as err:
                raise DapDataError(
                    f"{self.label}: {name} is not a complete gzip JSON Lines file ({err}); "
                    f"{repull_remedy([job_of(name)])}"
                ) from None
            self.per_file[path] = (self.rows - rows_before, self.deletes - deletes_before)
        if self.skipped:
            log.warning("%s: %d delete records in a snapshot skipped", self.label, self.skipped)

    def _encode_block(self, data: bytes, lines: list[bytes], name: str, number: int) -> bytes:
        """One block's rows as CSV: one decode and one tuple a row, nothing per value."""
        rows = self._rows(lines, name, number)
        has_escapes = b"\\" in data and CONTROL_HINT.search(data) is not None
        return self.decoder.encode(rows, controls=has_escapes)

    def _rows(self, lines: list[bytes], name: str, number: int) -> list[tuple[Any, ...]]:
        decode, values = self.decoder.decode, self.decoder.values
        snapshot = self.mode == "snapshot"
        rows: list[tuple[Any, ...]] = []
        deletes = skipped = 0
        gap = self._gap
        for line in lines:
            number += 1
            if not line or (line[0] != _OPEN_BRACE and not line.strip()):  # a blank line: skipped
                gap = True
                continue
            try:
                record = decode(line)
            except (msgspec.ValidationError, msgspec.DecodeError) as err:
                raise DapDataError(f"{self.label}: {name} line {number}: {describe(err)}") from None
            meta = record.meta
            if meta is not None and meta.action == "D":
                if snapshot:
                    skipped += 1
                    gap = True
                    continue
                deletes += 1
            if gap:
                self._segments.append(_Segment(self.rows + len(rows) + 1, name, number))
                gap = False
            rows.append(values(record))
        self._gap = gap
        self.rows += len(rows)
        self.deletes += deletes
        self.skipped += skipped
        return rows

    def where(self, copy_line: int) -> str:
        """'file line N' of the row PostgreSQL numbered ``copy_line`` in this COPY."""
        found = None
        for segment in self._segments:
            if segment.first_row > copy_line:
                break
            found = segment
        if found is None:
            return f"COPY line {copy_line}"
        return f"{found.file} line {found.first_line + copy_line - found.first_row}"

    def read(self, size: int = -1) -> bytes:
        """For psycopg2's ``copy_expert``, which reads a file object."""
        if self._iterator is None:
            self._iterator = prefetched(self.chunks())
        return next(self._iterator, b"")
