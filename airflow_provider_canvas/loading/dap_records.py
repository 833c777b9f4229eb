"""Reading the pulled JSON Lines of a Canvas Data 2 table as ``COPY ... FROM STDIN`` text, streamed.

Each line (``{"key": {...}, "value": {...}, "meta": {"ts": ..., "action": ...}}``) is decoded by a
msgspec decoder built from the table's schema, which checks every value's JSON type as it parses
(an integer column refuses a string) and keeps nested objects, arrays and decimals as their raw
JSON text (no Python object for them). A row formatter, generated once per schema, writes the
COPY text line. Files are read gzip block by block and handed out in chunks of about
``CHUNK_CHARS``: memory does not grow with the file. msgspec comes with Airflow (its Task SDK
uses it); measured against letting PostgreSQL parse the JSON (``benchmarks/dap_load.py``).
"""

from __future__ import annotations

import gzip
import logging
import re
import time
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import msgspec

from airflow_provider_canvas.exceptions import LmsError
from airflow_provider_canvas.loading.dap_schema import DapColumn, DapTableSchema

log = logging.getLogger(__name__)

CHUNK_CHARS = 2**20
_READ_BYTES = 2**20
_NULL = "\\N"
_NEEDS_ESCAPE = re.compile(r"[\\\t\n\r]")
_GZIP_MAGIC = b"\x1f\x8b"
_INTEGER_TYPES = {"smallint", "integer", "bigint"}
_FLOAT_TYPES = {"real", "double precision"}
_RAW_TYPES = {"jsonb"}  # numeric too (exact digits), see _python_type
_TRAILING_AT = re.compile(r"[\s-]*at\s*$")
_PATH = re.compile(r"`\$\.(key|value|meta)\.?([^`]*)`")
Mode = Literal["snapshot", "incremental"]


class DapDataError(LmsError, ValueError):
    """A pulled file is not what DAP serves, or a value does not fit its column. Says file, line, column."""


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


def _raw(value: msgspec.Raw) -> str:
    text = bytes(value).decode()
    if not text or text == "null":
        return _NULL
    return _escape(text) if _NEEDS_ESCAPE.search(text) else text


def _python_type(column: DapColumn) -> Any:
    if column.pg_type in _RAW_TYPES or column.pg_type.startswith("numeric"):
        return msgspec.Raw
    if column.pg_type in _INTEGER_TYPES:
        return int
    if column.pg_type in _FLOAT_TYPES:
        return float
    if column.pg_type == "boolean":
        return bool
    return str  # text, and what PostgreSQL parses from a string (timestamptz, date, uuid, ...)


def _field(index: int, column: DapColumn, required: bool) -> tuple[Any, ...]:
    kind = _python_type(column)
    if kind is msgspec.Raw:
        return (f"f{index}", kind, msgspec.Raw(b"null"))
    if required:
        return (f"f{index}", kind)
    return (f"f{index}", kind | None, None)


def _expression(obj: str, index: int, column: DapColumn, required: bool) -> str:
    """One column's COPY text as an f-string part. Only our own names and indexes appear in it."""
    get = f"{obj}.f{index}"
    kind = _python_type(column)
    if kind is msgspec.Raw:
        return f"{{RAW({get})}}"
    if kind is str:
        escaped = "(ESC(x) if NEEDS(x) else x)"
        return (
            f"{{(ESC(x) if NEEDS(x := {get}) else x)}}"
            if required
            else f"{{NULL if (x := {get}) is None else {escaped}}}"
        )
    if kind is bool:
        return f"{{NULL if (x := {get}) is None else ('t' if x else 'f')}}"
    return f"{{{get}}}" if required else f"{{NULL if (x := {get}) is None else x}}"


class RecordDecoder:
    """Decodes one JSON line of a table's files and formats its COPY text row.

    ``copy_columns`` are the columns of each row, in order: the schema's columns, and with
    ``with_deleted`` a last boolean that is true for a ``meta.action = "D"`` record.
    """

    def __init__(self, schema: DapTableSchema, *, with_deleted: bool) -> None:
        keys = [c for c in schema.columns if c.role == "key"]
        values = [c for c in schema.columns if c.role == "value"]
        self.copy_columns = [*schema.names, *(["_dap_deleted"] if with_deleted else [])]
        key_type = msgspec.defstruct(
            "DapKey",
            [_field(i, c, True) for i, c in enumerate(keys)],
            rename={f"f{i}": c.name for i, c in enumerate(keys)},
        )
        value_type = msgspec.defstruct(
            "DapValue",
            [_field(i, c, False) for i, c in enumerate(values)],
            rename={f"f{i}": c.name for i, c in enumerate(values)},
        )
        meta_type = msgspec.defstruct("DapMeta", [("ts", str | None, None), ("action", str | None, None)])
        record_type = msgspec.defstruct(
            "DapRecord",
            [("key", key_type), ("value", value_type | None, None), ("meta", meta_type | None, None)],
        )
        self._decode = msgspec.json.Decoder(record_type).decode
        self._empty_value = value_type()
        parts = [_expression("k", i, c, True) for i, c in enumerate(keys)]
        parts += [_expression("v", i, c, False) for i, c in enumerate(values)]
        parts.append("{NULL if m is None or (x := m.ts) is None else (ESC(x) if NEEDS(x) else x)}")
        if with_deleted:
            parts.append("{'t' if deleted else 'f'}")
        source = 'def format_row(k, v, m, deleted):\n    return f"' + "\\t".join(parts) + '\\n"\n'
        namespace: dict[str, Any] = {
            "NULL": _NULL,
            "ESC": _escape,
            "NEEDS": _NEEDS_ESCAPE.search,
            "RAW": _raw,
        }
        exec(compile(source, "<dap-row-format>", "exec"), namespace)
        self._format = namespace["format_row"]

    def row(self, line: bytes) -> tuple[str, bool]:
        """(COPY text row, whether the record is a delete). Raises msgspec errors as they come."""
        record = self._decode(line)
        meta = record.meta
        deleted = meta is not None and meta.action == "D"
        value = record.value if record.value is not None else self._empty_value
        return self._format(record.key, value, meta, deleted), deleted


def _open(path: Path) -> Any:
    with open(path, "rb") as probe:
        gzipped = probe.read(2) == _GZIP_MAGIC
    return gzip.open(path, "rb") if gzipped else open(path, "rb")


def _lines(path: Path) -> Iterator[tuple[int, bytes]]:
    """(line number, line) of a gzip (or plain) JSON Lines file, read in blocks."""
    number = 0
    with _open(path) as stream:
        rest = b""
        while block := stream.read(_READ_BYTES):
            lines = (rest + block).split(b"\n")
            rest = lines.pop()
            for line in lines:
                number += 1
                yield number, line
        if rest:
            yield number + 1, rest


@dataclass(frozen=True)
class _Segment:
    first_row: int  # the COPY line of the segment's first row (1-based, as PostgreSQL counts)
    file: str
    first_line: int


class RecordStream:
    """The rows of several files in order, as COPY text chunks; knows which file and line each came from.

    ``mode="snapshot"``: a ``D`` record (none are expected in a snapshot) is skipped with a warning.
    Counts (``rows``, ``deletes``, ``skipped``) are final once ``chunks()`` is exhausted. An error
    raised while reading is also kept in ``error`` (psycopg2 replaces it with its own).
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

    def _name(self, path: Path) -> str:
        if self.base is not None and path.is_relative_to(self.base):
            return str(path.relative_to(self.base))
        return str(path)

    def chunks(self) -> Iterator[str]:
        try:
            yield from self._chunks()
        except BaseException as err:
            self.error = err
            raise

    def _chunks(self) -> Iterator[str]:
        row = self.decoder.row
        buffer: list[str] = []
        size = 0
        started = last_log = time.monotonic()
        for index, path in enumerate(self.files, 1):
            name = self._name(path)
            expected: tuple[str | None, int] = (None, 0)
            rows_before, deletes_before = self.rows, self.deletes
            try:
                for number, line in _lines(path):
                    if not line.strip():
                        continue
                    try:
                        text, deleted = row(line)
                    except (msgspec.ValidationError, msgspec.DecodeError) as err:
                        raise DapDataError(f"{self.label}: {name} line {number}: {_describe(err)}") from None
                    if deleted and self.mode == "snapshot":
                        self.skipped += 1
                        continue
                    if expected != (name, number):
                        self._segments.append(_Segment(self.rows + 1, name, number))
                    expected = (name, number + 1)
                    self.rows += 1
                    self.deletes += deleted
                    buffer.append(text)
                    size += len(text)
                    if size >= CHUNK_CHARS:
                        yield "".join(buffer)
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
            yield "".join(buffer)
        if self.skipped:
            log.warning("%s: %d delete records in a snapshot skipped", self.label, self.skipped)

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

    # psycopg2's copy_expert reads a file object.
    def read(self, size: int = -1) -> str:
        if not hasattr(self, "_iterator"):
            self._iterator = self.chunks()
        return next(self._iterator, "")


def _describe(err: Exception) -> str:
    """msgspec's message with the JSON path made a column name; msgspec never quotes the value."""
    message = str(err)
    match = _PATH.search(message)
    if match is None:
        return message
    column = match.group(2) or match.group(1)
    reason = _TRAILING_AT.sub("", message[: match.start()])
    return f"column {column!r}: {reason}"
