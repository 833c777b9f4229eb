"""The rows of a Canvas Data 2 batch's files, in order, as COPY CSV chunks that remember where rows came from.

Files are read block by block (gzip, or plain JSON Lines); each block's rows are encoded together
(:class:`~airflow_provider_canvas.loading.dap_records.RecordDecoder`) and handed out in chunks of
about ``CHUNK_BYTES``, so memory does not grow with the file. PostgreSQL numbers the rows of a COPY;
:meth:`RecordStream.where` turns that number back into a file and line.
"""

from __future__ import annotations

import gzip
import logging
import time
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

from airflow_provider_canvas.loading.dap_records import (
    CONTROL_HINT,
    DapDataError,
    Mode,
    RecordDecoder,
    describe,
)

log = logging.getLogger(__name__)

CHUNK_BYTES = 2**20
_READ_BYTES = 2**20
_GZIP_MAGIC = b"\x1f\x8b"
_OPEN_BRACE = ord("{")


def _open(path: Path) -> Any:
    with open(path, "rb") as probe:
        gzipped = probe.read(2) == _GZIP_MAGIC
    return gzip.open(path, "rb") if gzipped else open(path, "rb")


def _blocks(path: Path) -> Iterator[tuple[bytes, list[bytes]]]:
    """(block, its lines) of a gzip (or plain) JSON Lines file; a line never spans two blocks."""
    with _open(path) as stream:
        rest = b""
        while block := stream.read(_READ_BYTES):
            block = rest + block
            cut = block.rfind(b"\n") + 1
            rest = block[cut:]
            if cut:
                yield block[:cut], block[: cut - 1].split(b"\n")
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
        if self.base is not None and path.is_relative_to(self.base):
            return str(path.relative_to(self.base))
        return str(path)

    def chunks(self) -> Iterator[bytes]:
        try:
            yield from self._chunks()
        except BaseException as err:
            self.error = err
            raise

    def _chunks(self) -> Iterator[bytes]:
        buffer: list[bytes] = []
        size = 0
        started = last_log = time.monotonic()
        for index, path in enumerate(self.files, 1):
            name = self._name(path)
            self._segments.append(_Segment(self.rows + 1, name, 1))
            self._gap = False  # a skipped line since the last segment: the next row starts a new one
            rows_before, deletes_before = self.rows, self.deletes
            try:
                number = 0
                for block, lines in _blocks(path):
                    encoded = self._encode_block(block, lines, name, number)
                    number += len(lines)
                    buffer.append(encoded)
                    size += len(encoded)
                    if size >= CHUNK_BYTES:
                        yield b"".join(buffer)
                        buffer, size = [], 0
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
                    "pull the batch again"
                ) from None
            self.per_file[path] = (self.rows - rows_before, self.deletes - deletes_before)
        if buffer:
            yield b"".join(buffer)
        if self.skipped:
            log.warning("%s: %d delete records in a snapshot skipped", self.label, self.skipped)

    def _encode_block(self, block: bytes, lines: list[bytes], name: str, number: int) -> bytes:
        """One block's rows as CSV. The hot loop: one decode and one tuple a row, nothing per value."""
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
        has_escapes = b"\\" in block and CONTROL_HINT.search(block) is not None
        return self.decoder.encode(rows, controls=has_escapes)

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
            self._iterator = self.chunks()
        return next(self._iterator, b"")
