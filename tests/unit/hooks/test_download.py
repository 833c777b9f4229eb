"""The download engine on its own: no hook, no platform; an authorised GET and a session handed in."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping

import pytest
import requests

from airflow_provider_canvas.common.download import StreamingDownload
from airflow_provider_canvas.common.retry import RetryPolicy
from airflow_provider_canvas.exceptions import DownloadError


def _response(status: int, body: bytes, headers: dict[str, str] | None = None) -> requests.Response:
    response = requests.Response()
    response.status_code = status
    response.raw = _Raw(body)
    response.headers.update({"Content-Length": str(len(body)), **(headers or {})})
    response.url = "https://api.example/file"
    return response


class _Raw:
    def __init__(self, body: bytes) -> None:
        self._body = body

    def stream(self, chunk_size: int, decode_content: bool = True) -> Iterator[bytes]:
        yield self._body

    def close(self) -> None:
        return


Calls = list[tuple[str, Mapping[str, str]]]


def _engine(answers: list[requests.Response], calls: Calls) -> StreamingDownload:
    def authorised_get(url: str, headers: Mapping[str, str], scope: str | None) -> requests.Response:
        calls.append((url, dict(headers)))
        return answers.pop(0)

    return StreamingDownload(
        base_url="https://api.example",
        authorised_get=authorised_get,
        session=requests.Session(),
        timeout=(1.0, 1.0),
        retry=RetryPolicy(backoff_seconds=0.0, max_backoff_seconds=0.0),
        log=logging.getLogger("test"),
    )


def test_a_complete_body_lands_under_the_final_name_only(tmp_path):
    calls: Calls = []
    engine = _engine([_response(200, b"abc")], calls)

    done = engine.fetch("/file", tmp_path / "out.zip", expected_size=3)

    assert (done.size, done.attempts) == (3, 1)
    assert (tmp_path / "out.zip").read_bytes() == b"abc"
    assert calls == [("https://api.example/file", {})]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.zip"]


def test_a_size_other_than_announced_keeps_nothing_and_names_where_the_size_came_from(tmp_path):
    engine = _engine([_response(200, b"abc")], [])

    with pytest.raises(DownloadError, match="3 bytes but the listing's size is 4"):
        engine.fetch("/file", tmp_path / "out.zip", expected_size=4, size_name="the listing's size")

    assert list(tmp_path.iterdir()) == []
