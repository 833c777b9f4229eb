"""Pulled JSON Lines -> COPY CSV: values, nulls, escapes, deletes; errors name file, line and column.

The CSV is what PostgreSQL reads with ``FORMAT csv, NULL 'null', ESCAPE '\\'``; the integration
tests load it into PostgreSQL and compare every value."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from airflow_provider_canvas.canvas_data.loading.records import RecordDecoder
from airflow_provider_canvas.canvas_data.loading.schema import parse_schema
from airflow_provider_canvas.canvas_data.loading.stream import RecordStream, prefetched
from airflow_provider_canvas.exceptions import DapDataError
from airflow_provider_canvas.testing.dap_files import delete, table_schema, upsert, write_jsonl_gz

DECIMAL = {"type": "number", "multipleOf": 0.01, "exclusiveMaximum": 1e6, "exclusiveMinimum": -1e6}
SCHEMA = parse_schema(
    table_schema(
        {"id": {"type": "integer", "format": "int64"}},
        {
            "name": {"type": "string"},
            "n": {"type": "integer", "format": "int32"},
            "score": {"type": "number"},
            "price": DECIMAL,
            "ok": {"type": "boolean"},
            "at": {"type": "string", "format": "date-time"},
            "extra": {"type": "object"},
        },
    )
)
TS = "2026-01-02T03:04:05.123Z"


def csv_line(record: dict | bytes, *, with_deleted: bool = False) -> bytes:
    line = record if isinstance(record, bytes) else json.dumps(record, separators=(",", ":")).encode()
    text = RecordDecoder(SCHEMA, with_deleted=with_deleted).row(line)
    assert text.endswith(b"\n") and text.count(b"\n") == 1 + text[:-1].count(b"\n")
    return text[:-1]


def test_values_become_csv_in_schema_column_order():
    record = upsert(
        {"id": 7},
        {
            "name": "Ann, Jr",
            "n": 3,
            "score": 0.5,
            "price": 12.34,
            "ok": True,
            "at": TS,
            "extra": {"a": [1, "x"]},
        },
        TS,
    )
    assert csv_line(record) == (
        b'7,"Ann, Jr",3,0.5,"12.34",true,"2026-01-02T03:04:05.123Z",'
        b'"{\\"a\\":[1,\\"x\\"]}","2026-01-02T03:04:05.123Z"'
    )


def test_absent_values_are_unquoted_null_and_a_null_string_stays_quoted():
    assert csv_line({"key": {"id": 1}, "value": {"name": "null", "ok": False}}) == (
        b'1,"null",null,null,null,false,null,null,null'
    )


def test_quotes_and_backslashes_use_csv_escapes_and_control_characters_are_written_raw():
    record = {"key": {"id": 1}, "value": {"name": 'say "hi" \\ then\ttab\nnew\rcr\x01 ],[ é'}}
    assert (
        csv_line(record).split(b",null")[0] == '1,"say \\"hi\\" \\\\ then\ttab\nnew\rcr\x01 ],[ é"'.encode()
    )


def test_decimals_keep_their_digits_and_nested_json_is_kept_as_sent():
    line = b'{"key":{"id":1},"value":{"price":0.1000000000000000055511151231257827,"extra":{"s":"a\\nb"}}}'
    fields = csv_line(line).split(b",")
    assert fields[4] == b'"0.1000000000000000055511151231257827"'  # not rounded through a float
    assert fields[7] == b'"{\\"s\\":\\"a\\\\nb\\"}"'  # the JSON text: its \n stays two characters


def test_a_delete_has_only_its_key_and_is_flagged():
    assert (
        csv_line(delete({"id": 9}, TS), with_deleted=True)
        == b'9,null,null,null,null,null,null,null,"' + TS.encode() + b'",true'
    )
    assert csv_line(upsert({"id": 9}, {}, TS), with_deleted=True).endswith(b",false")


def files(tmp_path: Path, *parts: list) -> list[Path]:
    paths = []
    for index, records in enumerate(parts):
        path = tmp_path / f"part-{index}.json.gz"
        write_jsonl_gz(path, records)
        paths.append(path)
    return paths


def stream_of(paths: list[Path], mode: str = "incremental", base: Path | None = None) -> RecordStream:
    decoder = RecordDecoder(SCHEMA, with_deleted=True)
    return RecordStream(decoder, paths, mode=mode, label="canvas.t", base=base)


def test_a_stream_counts_rows_and_deletes_per_file_and_maps_copy_rows_back(tmp_path):
    paths = files(
        tmp_path,
        [upsert({"id": i}, {"name": f"n{i}"}, TS) for i in range(3)],
        [delete({"id": 1}, TS), upsert({"id": 5}, {}, TS)],
    )
    stream = stream_of(paths, base=tmp_path)
    text = b"".join(stream.chunks())
    assert text.count(b"\n") == 5
    assert (stream.rows, stream.deletes) == (5, 1)
    assert stream.per_file == {paths[0]: (3, 0), paths[1]: (2, 1)}
    assert stream.where(1) == "part-0.json.gz line 1"
    assert stream.where(4) == "part-1.json.gz line 1"
    assert stream.where(5) == "part-1.json.gz line 2"


def test_blank_lines_are_skipped_without_shifting_line_numbers(tmp_path):
    path = tmp_path / "plain.jsonl"  # not gzip: read as is
    path.write_text('{"key":{"id":1}}\n\n  \n{"key":{"id":2}}')  # no newline at the end
    stream = stream_of([path])
    assert b"".join(stream.chunks()).count(b"\n") == 2
    assert stream.where(1).endswith("plain.jsonl line 1")
    assert stream.where(2).endswith("plain.jsonl line 4")


def test_deletes_in_a_snapshot_are_skipped_and_counted(tmp_path):
    paths = files(tmp_path, [upsert({"id": 1}, {}, TS), delete({"id": 2}, TS), upsert({"id": 3}, {}, TS)])
    stream = stream_of(paths, mode="snapshot", base=tmp_path)
    assert b"".join(stream.chunks()).count(b"\n") == 2
    assert (stream.rows, stream.skipped) == (2, 1)
    assert stream.where(2) == "part-0.json.gz line 3"


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (b'{"key":{"id":1},"value":{"n":"12"}}', r"line 2: column 'n': Expected `int \| null`, got `str`$"),
        (b'{"key":{"id":1},"value":{"ok":1}}', r"line 2: column 'ok': Expected `bool \| null`, got `int`$"),
        (b'{"key":{"id":"1"}}', r"line 2: column 'id': Expected `int`, got `str`$"),
        (b'{"key":{}}', r"line 2: column 'key': Object missing required field `id`$"),
        (b'{"value":{}}', r"line 2: Object missing required field `key`"),
        (b'{"key":{"id":1}', r"line 2: Input data was truncated"),
        (b'{"key":{"id":1},"value":{"name":"a\tb"}}', r"line 2: JSON is malformed: invalid character"),
    ],
)
def test_a_bad_record_names_file_line_and_column_but_never_the_value(tmp_path, line, message):
    path = tmp_path / "part-0.json.gz"
    path.write_bytes(gzip.compress(b'{"key":{"id":0}}\n' + line + b"\n"))
    stream = stream_of([path], base=tmp_path)
    with pytest.raises(DapDataError, match=r"^canvas.t: part-0.json.gz " + message) as caught:
        b"".join(stream.chunks())
    assert '"12"' not in str(caught.value)
    assert stream.error is caught.value


def test_a_truncated_gzip_file_is_named(tmp_path):
    path = files(tmp_path, [upsert({"id": i}, {"name": "x" * 100}, TS) for i in range(2000)])[0]
    path.write_bytes(path.read_bytes()[:-200])
    with pytest.raises(DapDataError, match=r"part-0\.json\.gz is not a complete gzip JSON Lines file"):
        b"".join(stream_of([path], base=tmp_path).chunks())


def test_chunks_are_bounded_and_read_like_a_file_for_psycopg2(tmp_path):
    paths = files(tmp_path, [upsert({"id": i}, {"name": "x" * 500}, TS) for i in range(8000)])
    sizes = [len(chunk) for chunk in stream_of(paths).chunks()]
    assert len(sizes) > 1 and max(sizes) < 2 * 2**20 + 10_000
    reader = stream_of(paths)
    assert b"".join(iter(lambda: reader.read(2**16), b"")).count(b"\n") == 8000


def test_prefetched_keeps_order_raises_the_producers_error_and_stops_when_the_consumer_does():
    import threading

    assert list(prefetched(iter([b"a", b"b", b"c"]))) == [b"a", b"b", b"c"]

    def failing():
        yield b"a"
        raise DapDataError("bad line")

    got = []
    with pytest.raises(DapDataError, match="bad line"):
        for chunk in prefetched(failing()):
            got.append(chunk)
    assert got == [b"a"]

    closed = threading.Event()

    def endless():
        try:
            while True:
                yield b"x"
        finally:
            closed.set()

    chunks = prefetched(endless(), depth=2)
    assert next(chunks) == b"x"
    chunks.close()  # the consumer stops: the producer thread ends and closes its source
    assert closed.wait(5)
    assert not any(t.name == "dap-copy-encoder" for t in threading.enumerate())
