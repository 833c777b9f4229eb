"""The DAP JSON schema -> PostgreSQL column mapping, and how schema versions compare."""

from __future__ import annotations

import json

import pytest

from airflow_provider_canvas.canvas_data.loading.schema import (
    DapColumn,
    DapSchemaError,
    column_type,
    compare,
    parse_schema,
    read_schema_file,
)
from airflow_provider_canvas.testing.dap_files import table_schema

ID = {"id": {"type": "integer", "format": "int64"}}


@pytest.mark.parametrize(
    ("node", "expected"),
    [
        ({"type": "integer", "format": "int16"}, ("smallint", False)),
        ({"type": "integer", "format": "int32"}, ("integer", False)),
        ({"type": "integer", "format": "int64"}, ("bigint", False)),
        ({"type": "integer"}, ("bigint", False)),
        ({"type": "integer", "minimum": 0, "maximum": 100}, ("integer", False)),
        ({"type": "integer", "enum": [1, 2, 2**40]}, ("bigint", False)),
        ({"type": "number"}, ("double precision", False)),
        ({"type": "number", "format": "float32"}, ("real", False)),
        ({"type": "number", "format": "float64"}, ("double precision", False)),
        (
            {"type": "number", "multipleOf": 0.01, "exclusiveMaximum": 1e8, "exclusiveMinimum": -1e8},
            ("numeric(10, 2)", False),
        ),
        ({"type": "boolean"}, ("boolean", False)),
        ({"type": "string"}, ("text", False)),
        ({"type": "string", "format": "date-time"}, ("timestamptz", False)),
        ({"type": "string", "format": "date"}, ("date", False)),
        ({"type": "string", "format": "uuid"}, ("uuid", False)),
        ({"type": "string", "format": "ipv4"}, ("inet", False)),
        ({"type": "string", "enum": ["active", "deleted"]}, ("text", False)),
        ({"enum": ["a", "b"]}, ("text", False)),
        ({"type": "object", "properties": {"a": {"type": "integer"}}}, ("jsonb", False)),
        ({"type": "array", "items": {"type": "string"}}, ("jsonb", False)),
        ({"type": ["string", "null"], "format": "date-time"}, ("timestamptz", True)),
        ({"oneOf": [{"type": "integer", "format": "int32"}, {"type": "null"}]}, ("integer", True)),
        ({"anyOf": [{"type": "integer"}, {"type": "string"}]}, ("jsonb", False)),
        ({"type": ["integer", "string"]}, ("jsonb", False)),
    ],
)
def test_json_schema_types_map_to_postgres_types(node, expected):
    assert column_type(node) == expected


def test_columns_are_key_then_value_then_meta_ts_and_only_keys_are_not_null():
    schema = parse_schema(
        table_schema(
            ID, {"name": {"type": "string"}, "state": {"type": "string"}}, required=["name"], version=3
        )
    )
    assert schema.version == 3
    assert schema.names == ["id", "name", "state", "meta_ts"]
    assert schema.keys == ["id"]
    assert schema.column("id") == DapColumn("id", "bigint", "key", nullable=False)
    assert schema.column("name").nullable is False  # required
    assert schema.column("meta_ts") == DapColumn("meta_ts", "timestamptz", "meta")


def test_references_to_definitions_are_followed():
    document = table_schema(ID, {"state": {"$ref": "#/definitions/State"}})
    document["schema"]["definitions"] = {"State": {"type": "string", "enum": ["a"]}}
    assert parse_schema(document).column("state").pg_type == "text"
    document["schema"]["definitions"] = {}
    with pytest.raises(DapSchemaError, match="unresolvable reference '#/definitions/State'"):
        parse_schema(document)


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"version": 1}, "expected"),
        ({"schema": {"properties": {}}, "version": 1}, "no properties.key"),
        ({"schema": {"properties": {"key": {"properties": {}}}}, "version": 1}, "no primary key"),
        ({"schema": {"properties": {"key": {"properties": ID}}}, "version": "1"}, "must be an integer"),
        (table_schema(ID, {"id": {"type": "string"}}), "appears twice"),
        (table_schema(ID, {"meta_ts": {"type": "string"}}), "appears twice"),
        (table_schema(ID, {"x" * 64: {"type": "string"}}), "over 63 bytes"),
        (table_schema(ID, {"odd": {"type": "decimal"}}), "'decimal' is not a JSON schema type"),
    ],
)
def test_schemas_the_loader_cannot_map_are_refused_with_the_reason(document, message):
    with pytest.raises(DapSchemaError, match=message):
        parse_schema(document)


def test_a_schema_file_that_is_not_json_names_the_file(tmp_path):
    path = tmp_path / "schema-v1.json"
    path.write_text("{not json")
    with pytest.raises(DapSchemaError, match=r"schema-v1\.json: not a readable JSON schema file"):
        read_schema_file(path)
    path.write_text(json.dumps({"schema": {}, "version": 1}))
    with pytest.raises(DapSchemaError, match=r"schema-v1.json: the schema has no properties.key"):
        read_schema_file(path)


def _columns(value: dict, key: dict = ID) -> tuple[DapColumn, ...]:
    return parse_schema(table_schema(key, value)).columns


def test_a_newer_version_that_adds_columns_is_additive():
    v1 = _columns({"name": {"type": "string"}})
    v2 = parse_schema(table_schema(ID, {"name": {"type": "string"}, "email": {"type": "string"}}, version=2))
    change = compare(v1, v2)
    assert not change.breaking
    assert [c.name for c in change.added] == ["email"]
    assert not compare(v1, parse_schema(table_schema(ID, {"name": {"type": "string"}}, version=2))).added


def test_removed_columns_type_changes_and_key_changes_are_breaking_and_each_is_named():
    v1 = _columns({"name": {"type": "string"}, "n": {"type": "integer", "format": "int32"}})
    v2 = parse_schema(
        table_schema({"uuid": {"type": "string"}}, {"n": {"type": "integer", "format": "int64"}}, version=2)
    )
    change = compare(v1, v2)
    assert change.breaking
    assert change.problems == (
        "the key changed from ['id'] to ['uuid']",
        "column 'id' was removed",
        "column 'name' was removed",
        "column 'n' changed type from integer to bigint",
    )
