"""The bytes of Brightspace export files: stored or generated ZIPs of CSV rows, served whole or by Range."""

from __future__ import annotations

import csv
import io
import math
import re
import struct
import threading
import zipfile
import zlib
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime, timezone
from typing import Any

from airflow_provider_canvas.testing.bds_values import row_template
from airflow_provider_canvas.testing.primitives import Response


class ZipSource:
    """Bytes of a served file, readable by range so nothing large is ever held in memory."""

    size: int = 0

    def iter_range(self, start: int, stop: int) -> Iterator[bytes]:
        raise NotImplementedError


class BytesSource(ZipSource):
    def __init__(self, data: bytes) -> None:
        self._data = data
        self.size = len(data)

    def iter_range(self, start: int, stop: int) -> Iterator[bytes]:
        view = memoryview(self._data)
        for offset in range(start, stop, 256 * 1024):
            yield bytes(view[offset : min(stop, offset + 256 * 1024)])


class CorruptSource(ZipSource):
    """Same length as the real file, but not a ZIP: DownloadSize stays consistent."""

    _PATTERN = b"this is not a zip archive, just bytes of the right length\n"

    def __init__(self, size: int) -> None:
        self.size = size

    def iter_range(self, start: int, stop: int) -> Iterator[bytes]:
        period = len(self._PATTERN)
        block = self._PATTERN * (256 * 1024 // period + 2)
        offset = start
        while offset < stop:
            phase = offset % period
            piece = block[phase : phase + min(stop - offset, 256 * 1024)]
            yield piece
            offset += len(piece)


class GeneratedZip(ZipSource):
    """A stored (uncompressed) ZIP of `rows_count` deterministic fixed-width CSV rows.

    Fixed-width rows make the exact size known up front and any byte offset computable, so a
    1 GB extract is listed with its exact DownloadSize and streamed (or resumed) in constant memory.
    """

    # Rows are rendered a block of 10,000 ids at a time: the block template holds a placeholder for the
    # high 8 id digits, and one C-speed bytes.replace() per block renders it (a 1 GB extract in seconds).
    _BLOCK = 10_000
    _HIGH = "\x00" * 8

    def __init__(
        self,
        member: str,
        columns: list[str],
        rows_count: int,
        id_start: int,
        created: datetime,
        types: Mapping[str, str] | None = None,
    ) -> None:
        for column in columns:
            if any(ch in column for ch in ',"\r\n\x00'):
                raise ValueError(f"generated rows need plain column names, got {column!r}")
        if id_start < 0 or id_start + rows_count >= 10**12:
            raise ValueError("generated row ids must fit in 12 digits")
        self._header = (",".join(columns) + "\r\n").encode("utf-8")
        # Every id is 12 digits and every other part of a cell is fixed: fixed-width rows.
        self._template = row_template(columns, types or {}, created)
        self._block_template: bytes | None = None
        self._id_start = id_start
        self._rows_count = rows_count
        self._row_len = len(self._template.format("0" * 12, "0000").encode("utf-8"))
        self._csv_len = len(self._header) + rows_count * self._row_len
        if self._csv_len >= 0xFFFFFFFF:
            raise ValueError("generated extracts are limited to 4 GiB (no ZIP64)")
        self._name = member.encode("utf-8")
        self._dos_time, self._dos_date = _dos_datetime(created)
        self._crc: int | None = None
        self._crc_lock = threading.Lock()
        self._local_len = 30 + len(self._name)
        self._central_len = 46 + len(self._name) + 22
        self.size = self._local_len + self._csv_len + self._central_len

    def _row_chunks(self, first_row: int, end_row: int) -> Iterator[bytes]:
        """CSV bytes of rows [first_row, end_row), one chunk per block of ids."""
        if self._block_template is None:
            lows = (f"{low:04d}" for low in range(self._BLOCK))
            rows = (self._template.format(f"{self._HIGH}{low}", low) for low in lows)
            self._block_template = "".join(rows).encode("utf-8")
        first_id, end_id = self._id_start + first_row, self._id_start + end_row
        for block in range(first_id // self._BLOCK, (end_id - 1) // self._BLOCK + 1):
            base = block * self._BLOCK
            data = self._block_template.replace(self._HIGH.encode(), b"%08d" % block)
            lo, hi = max(first_id, base) - base, min(end_id, base + self._BLOCK) - base
            yield data if (lo, hi) == (0, self._BLOCK) else data[lo * self._row_len : hi * self._row_len]

    def _iter_csv(self, start: int, stop: int) -> Iterator[bytes]:
        header_len = len(self._header)
        if start < header_len:
            yield self._header[start : min(stop, header_len)]
            start = header_len
        if start >= stop:
            return
        first_row = (start - header_len) // self._row_len
        end_row = min(self._rows_count, math.ceil((stop - header_len) / self._row_len))
        position = header_len + first_row * self._row_len
        for chunk in self._row_chunks(first_row, end_row):
            lo, hi = max(start, position) - position, min(stop, position + len(chunk)) - position
            yield chunk if (lo, hi) == (0, len(chunk)) else chunk[lo:hi]
            position += len(chunk)

    def _crc32(self) -> int:
        with self._crc_lock:
            if self._crc is None:
                # One pass on first download; headers need it, and it is cached afterwards.
                crc = 0
                for chunk in self._iter_csv(0, self._csv_len):
                    crc = zlib.crc32(chunk, crc)
                self._crc = crc
            return self._crc

    def _local_header(self) -> bytes:
        size = self._csv_len
        # signature, version needed, flags (UTF-8 names), method 0 = stored, time, date, crc, sizes, lengths
        fields = (20, 0x800, 0, self._dos_time, self._dos_date, self._crc32(), size, size, len(self._name), 0)
        return struct.pack("<4sHHHHHIIIHH", b"PK\x03\x04", *fields) + self._name

    def _trailer(self) -> bytes:
        size = self._csv_len
        # made by, needed, flags, method, time, date, crc, sizes, name/extra/comment lengths, disk,
        # internal attrs, external attrs (a regular 0644 file), offset of the local header (0).
        fields = (20, 20, 0x800, 0, self._dos_time, self._dos_date, self._crc32(), size, size)
        fields += (len(self._name), 0, 0, 0, 0, 0o100644 << 16, 0)
        central = struct.pack("<4sHHHHHHIIIHHHHHII", b"PK\x01\x02", *fields) + self._name
        end = struct.pack(
            "<4sHHHHIIH", b"PK\x05\x06", 0, 0, 1, 1, len(central), self._local_len + self._csv_len, 0
        )
        return central + end

    def iter_range(self, start: int, stop: int) -> Iterator[bytes]:
        segments: list[tuple[int, Callable[[int, int], Iterator[bytes]]]] = [
            (self._local_len, lambda a, b: iter((self._local_header()[a:b],))),
            (self._csv_len, self._iter_csv),
            (self._central_len, lambda a, b: iter((self._trailer()[a:b],))),
        ]
        offset = 0
        for length, produce in segments:
            lo, hi = max(start, offset), min(stop, offset + length)
            if lo < hi:
                yield from produce(lo - offset, hi - offset)
            offset += length


def _dos_datetime(moment: datetime) -> tuple[int, int]:
    moment = max(moment, datetime(1980, 1, 1, tzinfo=timezone.utc))
    dos_time = moment.hour << 11 | moment.minute << 5 | moment.second // 2
    dos_date = (moment.year - 1980) << 9 | moment.month << 5 | moment.day
    return dos_time, dos_date


def build_zip(members: list[tuple[str, bytes | str]], created: datetime) -> bytes:
    """An in-memory deflated ZIP; member names are written verbatim (bad-input tests need `../x`)."""
    buffer = io.BytesIO()
    stamp = max(created, datetime(1980, 1, 1, tzinfo=timezone.utc)).timetuple()[:6]
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members:
            info = zipfile.ZipInfo(name, date_time=stamp)
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, data)
    return buffer.getvalue()


def csv_bytes(columns: list[str], rows: list[dict[str, Any]]) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(columns)
    for row in rows:
        writer.writerow(["" if row.get(c) is None else str(row.get(c)) for c in columns])
    return out.getvalue().encode("utf-8")


def make_source(
    member: str,
    columns: list[str],
    rows: list[dict[str, Any]] | None,
    rows_count: int | None,
    row_id_start: int,
    created: datetime,
    zip_members: list[tuple[str, bytes | str]] | None,
    types: Mapping[str, str] | None = None,
) -> ZipSource:
    """A served file: `zip_members` verbatim, else `rows_count` generated rows (of `types`, column ->
    PostgreSQL type), else `rows` as one CSV."""
    if zip_members is not None:
        return BytesSource(build_zip(zip_members, created))
    if rows_count is not None:
        return GeneratedZip(member, columns, rows_count, row_id_start, created, types)
    return BytesSource(build_zip([(member, csv_bytes(columns, rows or []))], created))


def byte_range(header: str, size: int) -> tuple[int, int] | None:
    """The [start, stop) a `Range: bytes=...` header asks of `size` bytes, or None when unsatisfiable."""
    match = re.fullmatch(r"bytes=(\d*)-(\d*)", header.strip())
    start: int | None = None
    stop = size
    if match and match.group(1):
        start = int(match.group(1))
        if match.group(2):
            stop = min(size, int(match.group(2)) + 1)
    elif match and match.group(2):
        start = max(0, size - int(match.group(2)))  # suffix range: the last N bytes
    if start is None or start >= size or stop <= start:
        return None
    return start, stop


def file_response(
    source: ZipSource,
    filename: str,
    truncate_after: int | None,
    status: int = 200,
    start: int = 0,
    stop: int | None = None,
) -> Response:
    """A streamed ZIP attachment of bytes [start, stop) of `source`."""
    stop = source.size if stop is None else stop
    headers = {
        "Content-Type": "application/zip",
        "Content-Disposition": f'attachment; filename="{filename}"',
        "Accept-Ranges": "bytes",
    }
    return Response(
        status,
        headers=headers,
        stream=source.iter_range(start, stop),
        length=stop - start,
        truncate_after=truncate_after,
    )
