"""Reading the pulled JSON Lines of a Canvas Data 2 table as ``COPY ... FROM STDIN`` CSV, streamed.

Each line (``{"key": {...}, "value": {...}, "meta": {"ts": ..., "action": ...}}``) is decoded by a
msgspec decoder built from the table's schema, which checks every value's JSON type as it parses
(an integer column refuses a string) and keeps nested objects, arrays and decimals as their raw
JSON text. A function generated once per schema puts a record's values in column order; msgspec
then encodes a whole block of rows as JSON arrays, which is CSV as PostgreSQL reads it with
``NULL 'null', ESCAPE '\\'`` once the brackets become line ends: strings come quoted with ``\\"``
and ``\\\\`` escapes, ``null`` unquoted. Only control characters (``\\n``, ``\\t``, ... in JSON)
have to be written raw, and only blocks whose source has such escapes pay for that pass.

So no value passes through Python code of ours, except nested JSON and decimals (one ``decode``).
Reading the files a block at a time is :mod:`~airflow_provider_canvas.canvas_data.loading.stream`'s job.
msgspec comes with Airflow (its Task SDK uses it). Measured against letting PostgreSQL parse the
JSON (``benchmarks/dap_load.py``).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from typing import Any, Literal

import msgspec

from airflow_provider_canvas.canvas_data.loading.schema import DapColumn, DapTableSchema
from airflow_provider_canvas.exceptions import DapDataError as DapDataError  # 0.1 path

log = logging.getLogger(__name__)

#: The last column of a staged row: true for a ``meta.action = "D"`` record.
DELETED_COLUMN = "_dap_deleted"
#: The COPY options the encoded rows are read with.
COPY_OPTIONS = "FORMAT csv, NULL 'null', ESCAPE '\\'"
_INTEGER_TYPES = {"smallint", "integer", "bigint"}
_FLOAT_TYPES = {"real", "double precision"}
#: A JSON escape of a control character in a source line (a false hit, e.g. ``\\n``, only costs time).
CONTROL_HINT = re.compile(rb"\\[nrtbf]|\\u00[01]")
_ESCAPE = re.compile(rb'\\(?:u00([01][0-9a-fA-F])|([nrtbf])|(["\\]))')
_CONTROLS = {b"n": b"\n", b"r": b"\r", b"t": b"\t", b"b": b"\b", b"f": b"\f"}
_TRAILING_AT = re.compile(r"[\s-]*at\s*$")
_PATH = re.compile(r"`\$\.(key|value|meta)\.?([^`]*)`")
Mode = Literal["snapshot", "incremental"]


def _raw_text(value: msgspec.Raw) -> str | None:
    """Nested JSON or a decimal as the text DAP sent (None for JSON null): PostgreSQL parses it."""
    text = bytes(value).decode()
    return None if not text or text == "null" else text


def _python_type(column: DapColumn) -> Any:
    if column.pg_type == "jsonb" or column.pg_type.startswith("numeric"):
        return msgspec.Raw  # kept as sent: no Python objects for nested JSON, every digit of a decimal
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


def _struct(name: str, columns: list[DapColumn], required: bool) -> Any:
    # gc=False: records hold no cycles, and a million need not be tracked by the cycle collector.
    return msgspec.defstruct(
        name,
        [_field(i, c, required) for i, c in enumerate(columns)],
        rename={f"f{i}": c.name for i, c in enumerate(columns)},
        gc=False,
    )


def _values_source(keys: list[DapColumn], values: list[DapColumn], with_deleted: bool) -> str:
    """The function that lists a record's values in column order. Only our own names and indexes."""
    items = [f"k.f{i}" for i in range(len(keys))]
    items += [f"RAW(v.f{i})" if _python_type(c) is msgspec.Raw else f"v.f{i}" for i, c in enumerate(values)]
    items.append("None if m is None else m.ts")
    if with_deleted:
        items.append("m is not None and m.action == 'D'")
    return (
        "def values(r):\n    k = r.key\n    v = r.value\n    if v is None:\n        v = EMPTY\n"
        f"    m = r.meta\n    return ({', '.join(items)},)\n"
    )


def _raw_control(match: re.Match[bytes]) -> bytes:
    code, letter, kept = match.groups()
    if kept is not None:
        return match.group(0)  # \" and \\ are what PostgreSQL's CSV reads with ESCAPE '\'
    return _CONTROLS[letter] if letter is not None else bytes([int(code, 16)])


class RecordDecoder:
    """Decodes the JSON lines of a table's files and encodes their rows as COPY CSV.

    ``copy_columns`` are the columns of each row, in order: the schema's columns, and with
    ``with_deleted`` a last boolean that is true for a ``meta.action = "D"`` record.
    """

    def __init__(self, schema: DapTableSchema, *, with_deleted: bool) -> None:
        keys = [c for c in schema.columns if c.role == "key"]
        values = [c for c in schema.columns if c.role == "value"]
        self.copy_columns = [*schema.names, *([DELETED_COLUMN] if with_deleted else [])]
        value_type = _struct("DapValue", values, False)
        meta_type = msgspec.defstruct(
            "DapMeta", [("ts", str | None, None), ("action", str | None, None)], gc=False
        )
        record_type = msgspec.defstruct(
            "DapRecord",
            [
                ("key", _struct("DapKey", keys, True)),
                ("value", value_type | None, None),
                ("meta", meta_type | None, None),
            ],
            gc=False,
        )
        # Any: the record type is made at run time from the table's schema.
        self.decode: Callable[[bytes], Any] = msgspec.json.Decoder(record_type).decode
        self._encode = msgspec.json.Encoder().encode
        namespace: dict[str, Any] = {"RAW": _raw_text, "EMPTY": value_type()}
        exec(compile(_values_source(keys, values, with_deleted), "<dap-row-values>", "exec"), namespace)
        #: ``values(record)``: the record's row, a tuple in ``copy_columns`` order.
        self.values: Any = namespace["values"]

    def encode(self, rows: Sequence[tuple[Any, ...]], *, controls: bool) -> bytes:
        """CSV lines of ``rows``, each ending with a newline. ``controls``: the source has control escapes."""
        if not rows:
            return b""
        out = self._encode(rows)  # [[...],[...],...]
        if out.count(b"],[") == len(rows) - 1:
            out = out.replace(b"],[", b"\n")
            body = memoryview(out)[2:-2]
        else:  # a value holds "],[" itself: one row at a time
            body = memoryview(b"\n".join(self._encode(row)[1:-1] for row in rows))
        if controls:
            body = memoryview(_ESCAPE.sub(_raw_control, body))  # raw newlines are fine in quoted CSV
        return b"".join((body, b"\n"))

    def row(self, line: bytes) -> bytes:
        """The CSV line of one JSON line (tests, and finding a bad line)."""
        return self.encode([self.values(self.decode(line))], controls=bool(CONTROL_HINT.search(line)))


def describe(err: Exception) -> str:
    """msgspec's message with the JSON path made a column name; msgspec never quotes the value."""
    message = str(err)
    match = _PATH.search(message)
    if match is None:
        return message
    column = match.group(2) or match.group(1)
    reason = _TRAILING_AT.sub("", message[: match.start()])
    return f"column {column!r}: {reason}"
