"""Reading a Brightspace extract: the one CSV inside its ZIP, streamed, never unzipped whole."""

from __future__ import annotations

import csv
import io
import logging
import os
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, Any

from airflow_provider_canvas.common.zip_check import open_archive, single_member
from airflow_provider_canvas.exceptions import ExtractFormatError

log = logging.getLogger(__name__)

#: PostgreSQL truncates longer identifiers silently, which could merge two columns into one.
MAX_COLUMN_NAME_BYTES = 63
_STREAM_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, UnicodeDecodeError, OSError)


class ExtractCsv:
    """The CSV member of an extract, positioned after its header line.

    ``read(size)`` hands out text for ``COPY ... FROM STDIN (FORMAT csv)``; errors of the ZIP layer
    (bad CRC, truncated deflate stream, invalid UTF-8) become :class:`ExtractFormatError` and are
    kept in ``error`` (psycopg2 replaces an exception raised inside ``read`` by its own).
    """

    def __init__(
        self, name: str, member: str, stream: IO[str], *, progress_every_chars: int = 64 * 2**20
    ) -> None:
        self.name = name
        self.member = member
        self._stream = stream
        self._progress_every = progress_every_chars
        self._next_progress = progress_every_chars
        self.chars_read = 0
        self.error: ExtractFormatError | None = None
        self.header = self._read_header()

    def _read_header(self) -> list[str]:
        try:
            line = self._stream.readline()
        except _STREAM_ERRORS as err:
            raise self._format_error(err) from None
        row = next(csv.reader([line]), [])
        if not row:
            raise ExtractFormatError(f"{self.name}: the CSV {self.member!r} is empty (no header line)")
        header = [name.strip() for name in row]
        blank = [i + 1 for i, name in enumerate(header) if not name]
        if blank:
            raise ExtractFormatError(f"{self.name}: CSV header has blank column names at positions {blank}")
        duplicates = sorted({name for name in header if header.count(name) > 1})
        if duplicates:
            raise ExtractFormatError(f"{self.name}: CSV header repeats columns {duplicates}")
        too_long = [name for name in header if len(name.encode()) > MAX_COLUMN_NAME_BYTES]
        if too_long:
            raise ExtractFormatError(
                f"{self.name}: CSV column names longer than {MAX_COLUMN_NAME_BYTES} bytes: {too_long}"
            )
        return header

    def _format_error(self, err: BaseException) -> ExtractFormatError:
        return ExtractFormatError(
            f"{self.name}: the ZIP member {self.member!r} is corrupt or truncated "
            f"({type(err).__name__}: {err})"
        )

    def read(self, size: int = -1) -> str:
        try:
            chunk = self._stream.read(size)
        except _STREAM_ERRORS as err:
            self.error = self._format_error(err)
            raise self.error from None
        self.chars_read += len(chunk)
        if self.chars_read >= self._next_progress:
            log.info("%s: streamed %.0f MiB of CSV", self.name, self.chars_read / 2**20)
            self._next_progress += self._progress_every
        return chunk

    def readline(self, size: int = -1) -> str:  # psycopg2's copy_expert may ask for lines
        return self.read(size) if size > 0 else self._stream.readline()


@contextmanager
def open_extract_csv(
    source: str | os.PathLike[str] | IO[bytes], *, name: str | None = None, **options: Any
) -> Iterator[ExtractCsv]:
    """Open the single CSV of an extract ZIP for streaming (constant memory).

    Refuses, with :class:`ExtractFormatError`, a file that is not a readable ZIP (corrupt or
    truncated), a ZIP without exactly one file, member names that are absolute or climb with
    ``..``, and encrypted members. ``name`` labels errors and logs (default: the file name).
    """
    label = name or (
        os.path.basename(os.fspath(source)) if isinstance(source, (str, os.PathLike)) else "extract"
    )
    archive = open_archive(source, label)
    with archive:
        member = single_member(archive, label)
        try:
            raw = archive.open(member)
        except (*_STREAM_ERRORS, NotImplementedError) as err:
            raise ExtractFormatError(f"{label}: cannot open ZIP member {member.filename!r} ({err})") from None
        # utf-8-sig drops the byte-order mark Brightspace may write; newline="" keeps line breaks
        # inside quoted values as they are, for COPY to parse.
        with raw, io.TextIOWrapper(raw, encoding="utf-8-sig", newline="") as text:
            yield ExtractCsv(label, member.filename, text, **options)
