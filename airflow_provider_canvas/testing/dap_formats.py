"""DAP's output formats for the emulator's job files: JSON Lines, TSV (PostgreSQL COPY) and CSV.

As DAP's published API document describes them: a header row of ``meta.*``, ``key.*`` and
``value.*`` names in tabular formats; TSV escapes with a backslash and writes NULL as ``\\N``; CSV
follows RFC 4180, writes NULL as nothing and an empty string as ``""``. Mode ``expanded`` lays a
nested object with fixed properties out as ``value.<name>.<sub>`` columns, ``condensed`` keeps it
as one JSON field; arrays and free-form objects are JSON in either mode.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from typing import Any

FORMATS = ("jsonl", "tsv", "csv")
#: The file name suffix of each format, before ``.gz`` (DAP's own object names end like this).
SUFFIX = {"jsonl": "json", "tsv": "tsv", "csv": "csv"}
_TSV_ESCAPES = str.maketrans(
    {"\\": "\\\\", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\v": "\\v"}
)

Record = dict[str, Any]
Lines = Callable[[Iterable[Record]], Iterable[str]]


def _leaves(name: str, schema: dict[str, Any], expanded: bool) -> list[tuple[str, tuple[str, ...]]]:
    """(column label, path into the value) for one value property."""
    nested = schema.get("type") == "object" and isinstance(schema.get("properties"), dict)
    if not (expanded and nested):
        return [(name, (name,))]
    out = []
    for sub, sub_schema in schema["properties"].items():
        out += [(f"{name}.{label}", (name, *path)) for label, path in _leaves(sub, sub_schema, expanded)]
    return out


def _pick(value: Any, path: Sequence[str]) -> Any:
    for step in path:
        if not isinstance(value, dict):
            return None
        value = value.get(step)
    return value


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    return str(value)


def renderer(
    fmt: str,
    key_names: Sequence[str],
    value_schema: dict[str, dict[str, Any]],
    *,
    incremental: bool,
    mode: str,
) -> Lines:
    """A function from records to the lines of one file (header first in tabular formats)."""
    if fmt == "jsonl":
        return lambda records: (
            json.dumps(r, separators=(",", ":"), ensure_ascii=False) + "\n" for r in records
        )
    meta = ["ts", "action"] if incremental else ["ts"]
    columns: list[tuple[str, str, tuple[str, ...]]] = [("meta", f"meta.{m}", (m,)) for m in meta]
    columns += [("key", f"key.{k}", (k,)) for k in key_names]
    for name, schema in value_schema.items():
        columns += [
            ("value", f"value.{label}", path) for label, path in _leaves(name, schema, mode == "expanded")
        ]
    header = [label for _, label, _ in columns]

    def cells(record: Record) -> list[Any]:
        return [_pick(record.get(part), path) for part, _, path in columns]

    if fmt == "tsv":

        def tsv(records: Iterable[Record]) -> Iterable[str]:
            yield "\t".join(header) + "\n"
            for record in records:
                row = ("\\N" if v is None else _text(v).translate(_TSV_ESCAPES) for v in cells(record))
                yield "\t".join(row) + "\n"

        return tsv

    def csv_lines(records: Iterable[Record]) -> Iterable[str]:
        yield ",".join(_csv_cell(label) for label in header) + "\r\n"
        for record in records:
            yield ",".join(_csv_cell(v) for v in cells(record)) + "\r\n"

    return csv_lines


def _csv_cell(value: Any) -> str:
    """RFC 4180, with DAP's rule: NULL is no characters at all, an empty string is ``""``."""
    if value is None:
        return ""
    text = _text(value)
    if text == "" or any(c in text for c in _CSV_SPECIAL):
        return '"' + text.replace('"', '""') + '"'
    return text


_CSV_SPECIAL = frozenset(',"\r\n\t')
