"""The PostgreSQL columns of a Canvas Data 2 table, from the JSON schema DAP serves for it.

DAP's schema (``schema-v<N>.json``: ``{"schema": ..., "version": N}``) describes one record with
three object properties: ``key`` (the primary key), ``value`` (the other columns) and ``meta``
(``ts``, ``action``). As in DAP's own database client, the properties of ``key`` and ``value``
become columns under their own names; ``meta.ts`` is kept as ``meta_ts``.

Types (the JSON schema's ``type`` and ``format``):

- integer: ``int16`` smallint, ``int32`` integer, ``int64`` (or no format) bigint
- number: ``float32`` real, ``float64`` (or none) double precision; ``multipleOf`` with a symmetric
  ``exclusiveMaximum`` (DAP's fixed-point decimals) numeric(p, s)
- boolean; string with ``format`` date-time timestamptz, date, time, duration interval, uuid,
  ipv4/ipv6 inet; other strings text
- enums: text. DAP adds enum values in new schema versions; a PostgreSQL enum type would need
  ``ALTER TYPE ... ADD VALUE``, whose new value cannot be used in the transaction that adds it, so
  a load could not add the value and store the rows that use it atomically.
- objects, arrays and unions of different types: jsonb, the value as DAP sent it.

Nullability: only key columns are NOT NULL. Optional properties (absent from ``required``, or
``null`` in ``type``/``oneOf``/``anyOf``) are noted, but a value column is never constrained, so a
new schema version never needs a constraint change.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from airflow_provider_canvas.exceptions import DapSchemaChangeError as DapSchemaChangeError  # 0.1 path
from airflow_provider_canvas.exceptions import DapSchemaError

META_TS_COLUMN = "meta_ts"
#: PostgreSQL truncates longer identifiers silently, which could merge two columns into one.
MAX_IDENTIFIER_BYTES = 63
Role = Literal["key", "value", "meta"]

_STRING_FORMATS = {
    "date-time": "timestamptz",
    "date": "date",
    "time": "time",
    "duration": "interval",
    "uuid": "uuid",
    "ipv4": "inet",
    "ipv6": "inet",
}
_INTEGER_FORMATS = {"int16": "smallint", "int32": "integer", "int64": "bigint"}
_NUMBER_FORMATS = {"float32": "real", "float64": "double precision"}


@dataclass(frozen=True)
class DapColumn:
    """One column: its name, PostgreSQL type, whether the record may omit it, and where it comes from."""

    name: str
    pg_type: str
    role: Role
    nullable: bool = True

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "type": self.pg_type, "role": self.role, "nullable": self.nullable}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DapColumn:
        return cls(data["name"], data["type"], data["role"], bool(data.get("nullable", True)))


@dataclass(frozen=True)
class DapTableSchema:
    """The columns of one table at one schema version: key columns first, then values, then ``meta_ts``."""

    version: int
    columns: tuple[DapColumn, ...]

    @property
    def keys(self) -> list[str]:
        return [c.name for c in self.columns if c.role == "key"]

    @property
    def values(self) -> list[str]:
        return [c.name for c in self.columns if c.role == "value"]

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]

    def column(self, name: str) -> DapColumn:
        for column in self.columns:
            if column.name == name:
                return column
        raise KeyError(name)

    def columns_json(self) -> str:
        return json.dumps([c.to_dict() for c in self.columns])


def read_schema_file(path: str | Path | Any) -> DapTableSchema:
    """Parse a ``schema-v<N>.json`` the pull wrote (DAP's answer to ``GET .../schema`` as it came).

    ``path`` may be an ObjectStoragePath (the pull's location on object storage).
    """
    try:
        document = json.loads((Path(path) if isinstance(path, str) else path).read_text())
    except (OSError, ValueError) as exc:
        raise DapSchemaError(
            f"{path}: not a readable JSON schema file ({exc}); pull the table again"
        ) from exc
    try:
        return parse_schema(document)
    except DapSchemaError as exc:
        raise DapSchemaError(f"{path}: {exc}") from None


def parse_schema(document: Mapping[str, Any]) -> DapTableSchema:
    """Columns of a versioned DAP schema ``{"schema": {...}, "version": N}``."""
    if not isinstance(document, Mapping) or not isinstance(document.get("schema"), Mapping):
        raise DapSchemaError('expected {"schema": {...}, "version": N} as DAP serves it')
    version = document.get("version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise DapSchemaError(f"the schema's version must be an integer, got {version!r}")
    schema = document["schema"]
    definitions = {**schema.get("definitions", {}), **schema.get("$defs", {})}
    properties = schema.get("properties")
    if not isinstance(properties, Mapping) or not isinstance(properties.get("key"), Mapping):
        raise DapSchemaError("the schema has no properties.key: not a DAP table schema")
    columns: list[DapColumn] = []
    for role in ("key", "value"):
        node = _resolve(properties.get(role) or {}, definitions)
        props = node.get("properties") or {}
        required = set(node.get("required") or [])
        for name, prop in props.items():
            pg_type, nullable = column_type(prop, definitions)
            if role == "key":
                nullable = False
            columns.append(DapColumn(name, pg_type, role, nullable or name not in required))
    if not any(c.role == "key" for c in columns):
        raise DapSchemaError("properties.key has no properties: the table would have no primary key")
    columns.append(DapColumn(META_TS_COLUMN, "timestamptz", "meta"))
    _check_names(columns)
    return DapTableSchema(version, tuple(columns))


def _check_names(columns: Sequence[DapColumn]) -> None:
    seen: set[str] = set()
    for column in columns:
        if len(column.name.encode()) > MAX_IDENTIFIER_BYTES or "\x00" in column.name or not column.name:
            raise DapSchemaError(
                f"column name {column.name[:80]!r} cannot be a PostgreSQL column (empty, NUL or over "
                f"{MAX_IDENTIFIER_BYTES} bytes)"
            )
        if column.name in seen:
            raise DapSchemaError(
                f"column {column.name!r} appears twice (key, value and {META_TS_COLUMN!r} "
                "share one namespace)"
            )
        seen.add(column.name)


def _resolve(node: Any, definitions: Mapping[str, Any]) -> Mapping[str, Any]:
    for _ in range(32):  # a chain of references, never a cycle
        if not isinstance(node, Mapping):
            raise DapSchemaError(f"expected a schema object, got {node!r:.80}")
        ref = node.get("$ref")
        if not isinstance(ref, str):
            return node
        name = ref.rsplit("/", 1)[-1]
        if not ref.startswith(("#/definitions/", "#/$defs/")) or name not in definitions:
            raise DapSchemaError(f"unresolvable reference {ref!r}")
        node = definitions[name]
    raise DapSchemaError("references nest too deeply (a cycle?)")


def column_type(node: Any, definitions: Mapping[str, Any] | None = None) -> tuple[str, bool]:
    """(PostgreSQL type, whether null is allowed) of one property's schema."""
    node = _resolve(node, definitions or {})
    alternatives = node.get("oneOf") or node.get("anyOf")
    if alternatives:
        resolved = [_resolve(n, definitions or {}) for n in alternatives]
        nullable = any(n.get("type") == "null" for n in resolved)
        types = {column_type(n, definitions)[0] for n in resolved if n.get("type") != "null"}
        return (types.pop() if len(types) == 1 else "jsonb"), nullable
    kind = node.get("type")
    nullable = False
    if isinstance(kind, list):
        nullable = "null" in kind
        kinds = [k for k in kind if k != "null"]
        if len(kinds) != 1:
            return "jsonb", nullable
        kind = kinds[0]
    if kind is None and "const" in node:
        kind = {bool: "boolean", int: "integer", float: "number", str: "string"}.get(type(node["const"]))
    if kind is None and "enum" in node:
        kind = "string"
    fmt = node.get("format")
    if kind == "integer":
        return _INTEGER_FORMATS.get(fmt) or _integer_by_range(node), nullable
    if kind == "number":
        return _NUMBER_FORMATS.get(fmt) or _decimal(node) or "double precision", nullable
    if kind == "boolean":
        return "boolean", nullable
    if kind == "string":
        return _STRING_FORMATS.get(fmt, "text"), nullable
    if kind in ("object", "array"):
        return "jsonb", nullable
    if kind == "null":
        return "jsonb", True
    raise DapSchemaError(f"property type {kind!r} is not a JSON schema type this loader maps")


def _integer_by_range(node: Mapping[str, Any]) -> str:
    bounds = node.get("enum") or [node.get("minimum"), node.get("maximum")]
    if all(isinstance(b, int) for b in bounds) and min(bounds) >= -(2**31) and max(bounds) < 2**31:
        return "integer"
    return "bigint"


def _decimal(node: Mapping[str, Any]) -> str | None:
    step, bound = node.get("multipleOf"), node.get("exclusiveMaximum")
    if not isinstance(step, int | float) or not isinstance(bound, int | float) or step <= 0 or bound <= 1:
        return None
    if node.get("exclusiveMinimum") != -bound:
        return None
    scale = max(0, -round(math.log10(step)))
    return f"numeric({round(math.log10(bound)) + scale}, {scale})"


# Schema versions -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class SchemaChange:
    """What a newer schema version does to a table the loader made from an older one."""

    added: tuple[DapColumn, ...] = ()
    problems: tuple[str, ...] = ()

    @property
    def breaking(self) -> bool:
        return bool(self.problems)


def compare(loaded: Sequence[DapColumn], new: DapTableSchema) -> SchemaChange:
    """Columns ``new`` adds to ``loaded``, and every change that adding columns cannot apply."""
    old = {c.name: c for c in loaded}
    problems: list[str] = []
    old_keys = [c.name for c in loaded if c.role == "key"]
    if old_keys != new.keys:
        problems.append(f"the key changed from {old_keys} to {new.keys}")
    for column in loaded:
        if column.name not in new.names:
            problems.append(f"column {column.name!r} was removed")
            continue
        now = new.column(column.name)
        if now.pg_type != column.pg_type:
            problems.append(f"column {column.name!r} changed type from {column.pg_type} to {now.pg_type}")
    added = tuple(c for c in new.columns if c.name not in old)
    return SchemaChange(added, tuple(problems))
